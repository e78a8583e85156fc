#!/usr/bin/env python3
"""Import circles inside a crate: the graph of its modules, an arrow wherever a module names
another by `crate::x` or its parent by `super::`, and the strongly connected components of
more than one module. Exits 1 if any crate given (its `src` directory) has one.
MODGRAPH=-v prints the arrows. Run by .ci/run; see docs/ARCHITECTURE.md, Invariants."""
import os,re,sys
def modname(root,path):
    rel=os.path.relpath(path,root)[:-3]
    parts=rel.split(os.sep)
    if parts[-1] in ('lib','main'): parts=parts[:-1]
    if parts and parts[-1]=='mod': parts=parts[:-1]
    return '::'.join(parts) or 'crate'
def strip_comments(s):
    s=re.sub(r'//[^\n]*','',s)
    return s
def graph(root):
    mods={}
    for d,_,fs in os.walk(root):
        for f in fs:
            if f.endswith('.rs'):
                p=os.path.join(d,f); mods[modname(root,p)]=p
    edges=set()
    for m,p in mods.items():
        s=strip_comments(open(p).read())
        s=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',s,flags=re.S)
        targets=set()
        # crate::a::b and use crate::{a, b::c}
        for mm in re.finditer(r'crate::\{([^}]*)\}',s):
            for item in mm.group(1).split(','):
                item=item.strip()
                if item: targets.add(item.split('::')[0])
        for mm in re.finditer(r'crate::([a-z_][a-z0-9_]*)',s):
            targets.add(mm.group(1))
        if re.search(r'\bsuper::',s) and '::' in m:
            targets.add(m.rsplit('::',1)[0])
        for t in targets:
            # resolve to longest module
            if t in mods and t!=m and not m.startswith(t+'::') :
                edges.add((m,t))
            elif t in mods and m.startswith(t+'::'):
                edges.add((m,t))
    return mods,edges
def sccs(nodes,edges):
    adj={n:[] for n in nodes}
    for a,b in edges: adj[a].append(b)
    idx={};low={};st=[];on=set();out=[];c=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in adj[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: out.append(sorted(comp))
    for n in nodes:
        if n not in idx: sc(n)
    return out
if __name__=='__main__':
    bad=0
    for root in sys.argv[1:]:
        mods,edges=graph(root)
        cyc=sccs(list(mods),edges)
        print(f"{root}: {len(mods)} modules, {len(edges)} import arrows, circles: {cyc if cyc else 'none'}")
        if '-v' in os.environ.get('MODGRAPH',''):
            for a,b in sorted(edges): print(f"  {a} -> {b}")
        bad|=bool(cyc)
    sys.exit(1 if bad else 0)
