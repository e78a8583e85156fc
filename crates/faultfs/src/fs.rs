//! The FUSE face of the fault file system: each kernel request becomes a call on the [`Cache`]
//! (data writes, reads, fsyncs) or the same operation on the backing directory (metadata).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{FallocateFlags, OFlags};

use crate::cache::{Cache, Written};

/// How long the kernel may keep an entry or attributes: zero, because a power cut changes files
/// behind its back (their sizes shrink) and a stale size would show bytes that were lost.
const TTL: Duration = Duration::ZERO;

/// Block size reported by `stat` and `statfs`.
const BLOCK: u32 = 4096;

/// The counters behind [`crate::Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) faults_injected: AtomicU64,
    pub(crate) write_backs: AtomicU64,
}

/// What the file system and its [`crate::Faults`] handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cache: Mutex<Cache>,
    pub(crate) counters: Counters,
    /// Set by `Faults::fail_next_fsync`, taken by the next file fsync.
    pub(crate) fail_next_fsync: AtomicBool,
    next_fh: AtomicU64,
    /// Write-back errors, as Linux reports them (`errseq_t`, since 4.13): a count of failed
    /// write-backs per inode, and for each open file handle its inode and the count it has
    /// already reported. Every descriptor open when an fsync failed sees `EIO` once at its own
    /// next fsync, whoever called the fsync that failed.
    errors: Mutex<Errors>,
}

/// Failed write-backs by inode, and what each open handle has reported of them.
#[derive(Debug, Default)]
struct Errors {
    by_inode: HashMap<u64, u64>,
    handles: HashMap<u64, (u64, u64)>,
}

impl Shared {
    pub(crate) fn new(cache: Cache) -> Shared {
        Shared {
            cache: Mutex::new(cache),
            counters: Counters::default(),
            fail_next_fsync: AtomicBool::new(false),
            next_fh: AtomicU64::new(1),
            errors: Mutex::new(Errors::default()),
        }
    }

    fn errors(&self) -> MutexGuard<'_, Errors> {
        self.errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new handle on `ino`: it reports only the write-back errors that come after it.
    fn opened(&self, ino: u64) -> FileHandle {
        let fh = self.fh();
        let mut errors = self.errors();
        let seen = errors.by_inode.get(&ino).copied().unwrap_or(0);
        errors.handles.insert(fh.0, (ino, seen));
        fh
    }

    fn closed(&self, fh: FileHandle) {
        self.errors().handles.remove(&fh.0);
    }

    /// A write-back of `ino` failed: every handle on it has an error to report.
    fn write_back_failed(&self, ino: u64, reported_by: FileHandle) {
        let mut errors = self.errors();
        let count = errors.by_inode.entry(ino).or_insert(0);
        *count += 1;
        let count = *count;
        if let Some(h) = errors.handles.get_mut(&reported_by.0) {
            h.1 = count;
        }
    }

    /// Whether `fh` has a write-back error not yet reported; it is reported now.
    fn take_error(&self, fh: FileHandle) -> bool {
        let mut errors = self.errors();
        let Some(&(ino, seen)) = errors.handles.get(&fh.0) else {
            return false;
        };
        let count = errors.by_inode.get(&ino).copied().unwrap_or(0);
        if count > seen {
            errors.handles.insert(fh.0, (ino, count));
            true
        } else {
            false
        }
    }

    /// The cache; a panic in another request does not make it unusable.
    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fh(&self) -> FileHandle {
        FileHandle(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }
}

/// The [`Filesystem`] FUSE drives.
pub(crate) struct FaultFilesystem {
    pub(crate) shared: std::sync::Arc<Shared>,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr(ino: u64, meta: &Metadata, size: u64) -> FileAttr {
    let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks().max(size.div_ceil(512)),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: BLOCK,
        flags: 0,
    }
}

fn flag(flags: i32, which: OFlags) -> bool {
    flags & which.bits() as i32 != 0
}

impl FaultFilesystem {
    fn attr_of(cache: &Cache, ino: u64) -> io::Result<FileAttr> {
        let (meta, size) = cache.metadata(ino)?;
        Ok(attr(ino, &meta, size))
    }

    fn entry(&self, parent: INodeNo, name: &OsStr) -> io::Result<FileAttr> {
        let mut cache = self.shared.cache();
        let path = cache.path(parent.0)?.join(name);
        let meta = std::fs::symlink_metadata(&path)?;
        let ino = cache.inode_for(path, &meta);
        Self::attr_of(&cache, ino)
    }

    #[allow(clippy::too_many_arguments)]
    fn set_attr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> io::Result<FileAttr> {
        let mut cache = self.shared.cache();
        let path = cache.path(ino);
        if let Some(mode) = mode {
            let perms = std::fs::Permissions::from_mode(mode & 0o7777);
            match cache.open_file(ino)? {
                Some(file) => file.set_permissions(perms)?,
                None => std::fs::set_permissions(path.as_ref().map_err(clone_err)?, perms)?,
            }
        }
        if uid.is_some() || gid.is_some() {
            match cache.open_file(ino)? {
                Some(file) => std::os::unix::fs::fchown(file.as_ref(), uid, gid)?,
                None => std::os::unix::fs::lchown(path.as_ref().map_err(clone_err)?, uid, gid)?,
            }
        }
        if let Some(size) = size {
            cache.truncate(ino, size)?;
        }
        if atime.is_some() || mtime.is_some() {
            let file = match cache.open_file(ino)? {
                Some(file) => file,
                None => std::sync::Arc::new(File::open(path.as_ref().map_err(clone_err)?)?),
            };
            let now = SystemTime::now();
            let pick = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => now,
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(pick(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(pick(t));
            }
            file.set_times(times)?;
        }
        Self::attr_of(&cache, ino)
    }
}

fn clone_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl Filesystem for FaultFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.entry(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e.into()),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Self::attr_of(&self.shared.cache(), ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e.into()),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.set_attr(ino.0, mode, uid, gid, size, atime, mtime) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e.into()),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let mut cache = self.shared.cache();
            let path = cache.path(parent.0)?.join(name);
            DirBuilder::new().mode(mode & !umask).create(&path)?;
            let meta = std::fs::symlink_metadata(&path)?;
            let ino = cache.inode_for(path, &meta);
            Self::attr_of(&cache, ino)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e.into()),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let mut cache = self.shared.cache();
            let path = cache.path(parent.0)?.join(name);
            let meta = std::fs::symlink_metadata(&path)?;
            std::fs::remove_file(&path)?;
            let len = if meta.is_file() { meta.len() } else { 0 };
            cache.removing(meta.ino(), meta.nlink(), len, false);
            Ok::<_, io::Error>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let mut cache = self.shared.cache();
            let path = cache.path(parent.0)?.join(name);
            let meta = std::fs::symlink_metadata(&path)?;
            std::fs::remove_dir(&path)?;
            cache.removing(meta.ino(), meta.nlink(), 0, true);
            Ok::<_, io::Error>(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut cache = self.shared.cache();
            let from = cache.path(parent.0)?.join(name);
            let to = cache.path(newparent.0)?.join(newname);
            let victim = std::fs::symlink_metadata(&to).ok();
            if flags.contains(RenameFlags::RENAME_NOREPLACE) && victim.is_some() {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::EXIST.raw_os_error(),
                ));
            }
            if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::INVAL.raw_os_error(),
                ));
            }
            let moved = std::fs::symlink_metadata(&from)?;
            std::fs::rename(&from, &to)?;
            if let Some(victim) = victim
                && victim.ino() != moved.ino()
            {
                let len = if victim.is_file() { victim.len() } else { 0 };
                cache.removing(victim.ino(), victim.nlink(), len, victim.is_dir());
            }
            cache.renamed(&from, &to);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            let mut cache = self.shared.cache();
            cache.open(ino.0)?;
            if flag(flags.0, OFlags::TRUNC)
                && let Err(e) = cache.truncate(ino.0, 0)
            {
                cache.release(ino.0);
                return Err(e);
            }
            Ok::<_, io::Error>(())
        })();
        match result {
            Ok(()) => reply.opened(self.shared.opened(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(e.into()),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let mut cache = self.shared.cache();
            let path = cache.path(parent.0)?.join(name);
            let mut options = OpenOptions::new();
            options.read(true).write(true).mode(mode & !umask & 0o7777);
            if flag(flags, OFlags::EXCL) {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let file = options.open(&path)?;
            let ino = cache.created(path, file)?;
            if flag(flags, OFlags::TRUNC) {
                cache.truncate(ino, 0)?;
            }
            Self::attr_of(&cache, ino)
        })();
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                self.shared.opened(attr.ino.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e.into()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shared.cache().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e.into()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self.shared.cache().write(ino.0, offset, data);
        match written {
            Ok(how) => {
                let counters = &self.shared.counters;
                counters.writes.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_written
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if how == Written::CachedAndWrittenBack {
                    counters.write_backs.fetch_add(1, Ordering::Relaxed);
                }
                reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            Err(e) => {
                if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
                    self.shared
                        .counters
                        .faults_injected
                        .fetch_add(1, Ordering::Relaxed);
                }
                reply.error(e.into());
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not make data durable; only fsync does.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.cache().release(ino.0);
        self.shared.closed(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.shared.cache();
        if self.shared.fail_next_fsync.swap(false, Ordering::SeqCst) {
            // As Linux does after a failed write-back: the dirty pages are dropped (marked
            // clean), so a retried fsync "succeeds" without the data ("fsyncgate", 2018); the
            // other descriptors open on the file see the error at their next fsync.
            let _ = cache.drop_unsynced(ino.0);
            self.shared.write_back_failed(ino.0, fh);
            self.shared
                .counters
                .faults_injected
                .fetch_add(1, Ordering::Relaxed);
            reply.error(Errno::EIO);
            return;
        }
        let written = cache.write_back(ino.0);
        if self.shared.take_error(fh) {
            reply.error(Errno::EIO);
            return;
        }
        match written {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.cache().path(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e.into()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = (|| {
            let cache = self.shared.cache();
            let path = cache.path(ino.0)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
                (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
            ];
            let mut listed = Vec::new();
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
                let backing_ino = std::os::unix::fs::DirEntryExt::ino(&entry);
                let ino = cache.known_inode(backing_ino).unwrap_or(backing_ino);
                listed.push((ino, kind, entry.file_name()));
            }
            listed.sort_by(|a, b| a.2.cmp(&b.2));
            entries.extend(listed);
            Ok::<_, io::Error>(entries)
        })();
        match result {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata operations reach the backing directory at once: nothing to write back.
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let cache = self.shared.cache();
        match rustix::fs::statvfs(cache.backing()) {
            Ok(st) => match cache.limit() {
                Some(limit) => {
                    let block = u64::from(BLOCK);
                    let free = limit.saturating_sub(cache.used()) / block;
                    reply.statfs(
                        limit / block,
                        free,
                        free,
                        st.f_files,
                        st.f_ffree,
                        BLOCK,
                        255,
                        BLOCK,
                    );
                }
                None => reply.statfs(
                    st.f_blocks,
                    st.f_bfree,
                    st.f_bavail,
                    st.f_files,
                    st.f_ffree,
                    u32::try_from(st.f_bsize).unwrap_or(BLOCK),
                    u32::try_from(st.f_namemax).unwrap_or(255),
                    u32::try_from(st.f_frsize).unwrap_or(BLOCK),
                ),
            },
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut cache = self.shared.cache();
            if mode == 0 {
                cache.reserve(ino.0, offset, length)?;
            }
            let file = cache.open_file(ino.0)?.ok_or_else(|| {
                io::Error::from_raw_os_error(rustix::io::Errno::BADF.raw_os_error())
            })?;
            let flags = FallocateFlags::from_bits_retain(mode as u32);
            rustix::fs::fallocate(file.as_ref(), flags, offset, length)
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }
}
