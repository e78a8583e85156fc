//! A TCP proxy for tests of bad networks: it listens on 127.0.0.1:0 and forwards every
//! connection to a node's peer port, byte for byte (mutual TLS runs end to end through it),
//! with faults the test turns on and off while it runs: latency, a black hole, a reset after
//! so many more bytes, a partition, and healing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the sending node) to the node behind the proxy: requests.
    ToNode,
    /// From the node behind the proxy back to the client: answers.
    FromNode,
}

/// The faults in force.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Added to every chunk's trip, each way.
    delay: Duration,
    /// Bytes that arrive are thrown away; connections stay open.
    blackhole: bool,
    /// New connections are refused (reset at once) and open ones black-holed.
    partitioned: bool,
}

/// What the test and the connections share.
#[derive(Default)]
struct Shared {
    target: Mutex<Option<SocketAddr>>,
    faults: Mutex<Faults>,
    /// An armed reset: the direction it counts and the bytes still let through.
    reset: Mutex<Option<(Direction, u64)>>,
    /// How to cut each open connection.
    open: Mutex<Vec<watch::Sender<bool>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    discarded: AtomicU64,
    to_node: AtomicU64,
    from_node: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded.
    pub accepted: u64,
    /// Connections refused during a partition.
    pub refused: u64,
    /// Connections cut by an armed reset.
    pub resets: u64,
    /// Bytes thrown away by a black hole or a partition.
    pub discarded: u64,
    /// Bytes forwarded to the node (requests).
    pub to_node: u64,
    /// Bytes forwarded from the node (answers).
    pub from_node: u64,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 with no target yet (see [`Proxy::forward_to`]); connections
    /// that arrive before there is one are refused.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self { addr, shared, task }
    }

    /// A handle that can set the target from outside an async context (a config tweak).
    pub fn target_setter(&self) -> impl Fn(SocketAddr) + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move |addr| {
            assert!(
                addr.ip().is_loopback(),
                "the proxy forwards to loopback only"
            );
            *lock(&shared.target) = Some(addr);
        }
    }

    /// Forwards new connections to `target` (a loopback address).
    pub fn forward_to(&self, target: SocketAddr) {
        (self.target_setter())(target);
    }

    /// Adds `delay` to every chunk's trip, each way (zero: none).
    pub fn delay(&self, delay: Duration) {
        lock(&self.shared.faults).delay = delay;
    }

    /// Black-holes every connection: bytes stop flowing (those that arrive are thrown away),
    /// connections stay open.
    pub fn drop_traffic(&self) {
        lock(&self.shared.faults).blackhole = true;
    }

    /// Closes the connection carrying the next bytes in `direction` (both sides, with a
    /// reset) once `bytes` more have gone that way; one shot.
    pub fn reset_after(&self, direction: Direction, bytes: u64) {
        *lock(&self.shared.reset) = Some((direction, bytes));
    }

    /// Whether an armed reset has not fired yet.
    pub fn reset_armed(&self) -> bool {
        lock(&self.shared.reset).is_some()
    }

    /// Refuses new connections and black-holes the open ones until [`Proxy::heal`].
    pub fn partition(&self) {
        lock(&self.shared.faults).partitioned = true;
    }

    /// Ends the delay, the black hole and the partition (a reset armed stays armed).
    /// Connections that lost bytes in a black hole are not repaired: their TLS fails on the
    /// next bytes and the client connects again, as after a middlebox lost their state.
    pub fn heal(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }

    /// Cuts every open connection now (both sides, with a reset), as a link going down does.
    pub fn sever(&self) {
        for cut in lock(&self.shared.open).drain(..) {
            let _ = cut.send(true);
        }
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            resets: s.resets.load(Ordering::SeqCst),
            discarded: s.discarded.load(Ordering::SeqCst),
            to_node: s.to_node.load(Ordering::SeqCst),
            from_node: s.from_node.load(Ordering::SeqCst),
        }
    }
}

/// Closes `stream` with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, from)) = listener.accept().await else {
            continue;
        };
        if !from.ip().is_loopback() {
            reset(client);
            continue;
        }
        let target = *lock(&shared.target);
        let partitioned = lock(&shared.faults).partitioned;
        let Some(target) = target.filter(|_| !partitioned) else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(client);
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(target).await else {
                reset(client);
                return;
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            connection(client, upstream, shared).await;
        });
    }
}

/// Forwards one connection both ways until both sides are done or it is cut.
async fn connection(client: TcpStream, upstream: TcpStream, shared: Arc<Shared>) {
    let (cut_tx, cut_rx) = watch::channel(false);
    {
        let mut open = lock(&shared.open);
        open.retain(|c| !c.is_closed());
        open.push(cut_tx.clone());
    }
    let (client_read, client_write) = client.into_split();
    let (node_read, node_write) = upstream.into_split();
    let to_node = pump(
        Direction::ToNode,
        client_read,
        node_write,
        Arc::clone(&shared),
        cut_tx.clone(),
        cut_rx.clone(),
    );
    let from_node = pump(
        Direction::FromNode,
        node_read,
        client_write,
        shared,
        cut_tx,
        cut_rx,
    );
    let (a, b) = tokio::join!(to_node, from_node);
    if let (Some((r1, w1)), Some((r2, w2))) = (a, b) {
        // Cut: both sockets close with a reset.
        for stream in [r1.reunite(w2), r2.reunite(w1)].into_iter().flatten() {
            reset(stream);
        }
    }
}

/// One direction of a connection: a reader that takes chunks as they arrive (throwing them
/// away in a black hole) and a writer that sends each one when its delay is over. Returns the
/// halves when the connection was cut, so that both sides can be reset.
async fn pump(
    direction: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    cut_tx: watch::Sender<bool>,
    mut cut_rx: watch::Receiver<bool>,
) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader_shared = Arc::clone(&shared);
    let mut reader_cut = cut_rx.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = reader_cut.wait_for(|cut| *cut) => break,
            };
            let faults = *lock(&reader_shared.faults);
            if faults.blackhole || faults.partitioned {
                reader_shared
                    .discarded
                    .fetch_add(n as u64, Ordering::SeqCst);
                continue;
            }
            if tx
                .send((Instant::now() + faults.delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
        // End of stream: the writer sends what is queued, then a FIN.
        drop(tx);
        from
    };
    let writer = async move {
        let mut cut = false;
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = cut_rx.wait_for(|cut| *cut) => { cut = true; None }
            };
            let Some((due, chunk)) = next else { break };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = cut_rx.wait_for(|cut| *cut) => { cut = true; break }
            }
            let take = {
                let mut armed = lock(&shared.reset);
                match *armed {
                    Some((d, left)) if d == direction => {
                        if chunk.len() as u64 >= left {
                            *armed = None;
                            Some(left as usize)
                        } else {
                            *armed = Some((d, left - chunk.len() as u64));
                            None
                        }
                    }
                    _ => None,
                }
            };
            let bytes = take.map_or(&chunk[..], |n| &chunk[..n]);
            if to.write_all(bytes).await.is_err() {
                cut = true;
                break;
            }
            let count = match direction {
                Direction::ToNode => &shared.to_node,
                Direction::FromNode => &shared.from_node,
            };
            count.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            if take.is_some() {
                shared.resets.fetch_add(1, Ordering::SeqCst);
                cut = true;
                break;
            }
        }
        if cut {
            let _ = cut_tx.send(true);
        } else {
            let _ = to.shutdown().await;
        }
        (to, cut)
    };
    let (from, (to, cut)) = tokio::join!(reader, writer);
    cut.then_some((from, to))
}
