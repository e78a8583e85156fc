//! Group commit: one thread makes the store durable for every writer waiting at that moment.
//!
//! sled 0.34's `flush()` writes its log with `sync_file_range` on Linux, which neither syncs
//! file metadata nor flushes the disk's write cache (sled #1351, #1077, #1452). After each
//! flush this thread therefore calls `fdatasync` on sled's data file, which does both. And
//! `flush_async()` hangs under concurrent callers (sled #1308), so only this one thread ever
//! flushes, with the blocking call, off the async runtime. See docs/durability.md.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

/// A waiter: told once everything written before it asked is durable.
type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the group-commit thread. Dropping it stops the thread and waits for it, so the
/// store's files are released when the store is dropped.
pub struct Committer {
    /// Requests to the thread; `None` once dropping.
    tx: Option<std_mpsc::Sender<Waiter>>,
    /// The thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread for `db`, whose files live in `dir`.
    pub fn start(db: sled::Db, dir: &Path) -> std::io::Result<Self> {
        let data_file = File::open(dir.join("db"))?;
        let (tx, rx) = std_mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("kinbridge-commit".into())
            .spawn(move || commit_loop(&db, &data_file, &rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Returns once every write made before this call is on stable storage.
    pub async fn commit(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let sender = self
            .tx
            .as_ref()
            .ok_or_else(|| "the commit thread has stopped".to_owned())?;
        sender
            .send(tx)
            .map_err(|_| "the commit thread has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the commit thread has stopped".to_owned())?
    }
}

fn commit_loop(db: &sled::Db, data_file: &File, rx: &std_mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = db
            .flush()
            .map_err(|e| format!("sled flush failed: {e}"))
            .and_then(|_| {
                data_file
                    .sync_data()
                    .map_err(|e| format!("fdatasync failed: {e}"))
            });
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
