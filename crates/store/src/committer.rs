//! Group commit: one thread makes the store durable for every writer waiting at that moment.
//!
//! sled 0.34's `flush()` writes its log with `sync_file_range` on Linux, which neither syncs
//! file metadata nor flushes the disk's write cache (sled #1351, #1077, #1452). After each
//! flush this thread therefore calls `fdatasync` on sled's data file, which does both. And
//! `flush_async()` hangs under concurrent callers (sled #1308), so only this one thread ever
//! flushes, with the blocking call, off the async runtime. See docs/durability.md.
//!
//! A commit that fails latches the store's [`Failure`]: its waiters are told, and every later
//! commit is refused at once, never flushed again (a second `fdatasync` that succeeds after
//! a failed one proves nothing: the kernel may have dropped the pages in between).

use std::fs::File;
use std::path::Path;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use crate::failure::Failure;

/// A waiter: told once everything written before it asked is durable.
type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the group-commit thread. Dropping it stops the thread and waits for it, so the
/// store's files are released when the store is dropped.
pub struct Committer {
    /// Requests to the thread; `None` once dropping.
    tx: Option<std_mpsc::Sender<Waiter>>,
    /// The thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Latched by the first failed commit.
    failure: Failure,
    /// Tests: the next commit fails as an `fdatasync` returning EIO would.
    #[cfg(test)]
    pub(crate) fail_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Committer {
    /// Starts the thread for `db`, whose files live in `dir`; a failed commit latches
    /// `failure`.
    pub fn start(db: sled::Db, dir: &Path, failure: Failure) -> std::io::Result<Self> {
        let data_file = File::open(dir.join("db"))?;
        let (tx, rx) = std_mpsc::channel::<Waiter>();
        #[cfg(test)]
        let fail_next = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commit = Commit {
            db,
            data_file,
            failure: failure.clone(),
            #[cfg(test)]
            fail_next: std::sync::Arc::clone(&fail_next),
        };
        let thread = std::thread::Builder::new()
            .name("kinbridge-commit".into())
            .spawn(move || commit.run(&rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            failure,
            #[cfg(test)]
            fail_next,
        })
    }

    /// Returns once every write made before this call is on stable storage; fails at once if
    /// an earlier commit failed.
    pub async fn commit(&self) -> Result<(), String> {
        if let Some(reason) = self.failure.reason() {
            return Err(reason.to_owned());
        }
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

/// What the commit thread holds.
struct Commit {
    db: sled::Db,
    data_file: File,
    failure: Failure,
    #[cfg(test)]
    fail_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Commit {
    fn run(&self, rx: &std_mpsc::Receiver<Waiter>) {
        while let Ok(first) = rx.recv() {
            let mut waiters = vec![first];
            waiters.extend(rx.try_iter());
            let result = match self.failure.reason() {
                // Never flushed again once a commit failed.
                Some(reason) => Err(reason.to_owned()),
                None => self.flush(),
            };
            if let Err(e) = &result {
                self.failure.fail(format!("store commit: {e}"));
            }
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    fn flush(&self) -> Result<(), String> {
        #[cfg(test)]
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err("fdatasync failed: Input/output error (os error 5)".into());
        }
        self.db
            .flush()
            .map_err(|e| format!("sled flush failed: {e}"))?;
        self.data_file
            .sync_data()
            .map_err(|e| format!("fdatasync failed: {e}"))
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
