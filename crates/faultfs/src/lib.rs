//! A fault-injecting FUSE file system over a real directory, for kinbridge's durability tests:
//! it drops every write not yet fsynced (a power cut), returns `ENOSPC` past a byte budget (a
//! full disk), fails an `fsync` with `EIO` once, and tears or reorders the last write.
//!
//! The model follows LazyFS (Ramos et al., "When Amnesia Strikes", VLDB 2024): data writes stay
//! in the file system's own page cache (in memory, per file; reads see them) and reach the
//! backing file only when that file is fsynced (or fdatasynced), or when the cache passes
//! 256 MiB and is written back whole, as the kernel's dirty-page write-back would. Metadata
//! operations (create, mkdir, rename, unlink, rmdir, truncate, chmod, fallocate) go straight
//! through to the backing directory: they are durable at once, so a power cut here loses data,
//! never names. That is kinder than ext4 (which may lose a rename not followed by an fsync of
//! its directory) and is documented in docs/durability.md. A directory fsync is counted and
//! succeeds.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use kinbridge_faultfs::{Cut, FaultFs};
//! let mounted = FaultFs::mount("/tmp/backing".as_ref(), "/tmp/mnt".as_ref())?;
//! let faults = mounted.faults();
//! // ... run a process on /tmp/mnt, SIGKILL it ...
//! faults.power_cut(Cut::Clean)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod cache;
mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier};

use crate::cache::Cache;
use crate::fs::{FaultFilesystem, Shared};

/// How a power cut treats the writes not yet fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every unsynced write is lost.
    Clean,
    /// Every unsynced write is lost, except the first half of the last one (of all files),
    /// which reaches the disk: a torn write.
    TearLast,
    /// A random subset of the unsynced writes reaches the disk (each with probability one
    /// half, drawn from `seed`): the disk wrote them back in its own order and lost power
    /// part way.
    Reorder {
        /// Seed of the draw; the same seed over the same writes persists the same subset.
        seed: u64,
    },
}

/// What the file system has seen and done since it was mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data writes accepted (each cached until an fsync).
    pub writes: u64,
    /// Bytes those writes carried.
    pub bytes_written: u64,
    /// fsync and fdatasync calls, files and directories.
    pub fsyncs: u64,
    /// Faults injected: power cuts, failed fsyncs and writes refused for space.
    pub faults_injected: u64,
    /// Times the whole cache was written back because it was too large.
    pub write_backs: u64,
    /// Writes not yet fsynced, now.
    pub unsynced_writes: u64,
    /// Bytes of those writes.
    pub unsynced_bytes: u64,
}

/// The fault file system; [`FaultFs::mount`] starts one.
#[derive(Debug)]
pub struct FaultFs;

/// FUSE request threads: the node's sled flusher, its payload writer and its readers may each
/// wait on a request at once.
const THREADS: usize = 4;

/// How long [`Mounted`]'s drop waits for the FUSE threads to end after the (lazy) unmount.
const JOIN_BOUND: Duration = Duration::from_secs(5);

impl FaultFs {
    /// Mounts a fault file system over `backing` (an existing directory, whose content it shows
    /// and changes) at `mountpoint` (an existing empty directory), serving it from background
    /// threads until the returned [`Mounted`] is dropped.
    ///
    /// As root it mounts with mount(2); otherwise through `fusermount3`. Fails if FUSE is not
    /// available (see [`unavailable_reason`]).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        let shared = Arc::new(Shared::new(Cache::new(&backing)?));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("kinbridge-faultfs".to_owned()),
            MountOption::Subtype("faultfs".to_owned()),
        ];
        config.n_threads = Some(THREADS);
        config.clone_fd = true;
        let session = fuser::spawn_mount(
            FaultFilesystem {
                shared: shared.clone(),
            },
            &mountpoint,
            &config,
        )?;
        let notifier = session.notifier();
        // The FUSE connection's number is the minor of the mount's device: it names the
        // connection's `abort` file under /sys/fs/fuse/connections, used by the drop.
        let connection = std::fs::metadata(&mountpoint)
            .ok()
            .map(|m| rustix::fs::minor(std::os::unix::fs::MetadataExt::dev(&m)));
        Ok(Mounted {
            session: Some(session),
            mountpoint,
            connection,
            faults: Faults { shared, notifier },
        })
    }
}

/// A mounted fault file system. Dropping it unmounts it (lazily if a process still holds a
/// file there) and never hangs.
#[derive(Debug)]
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    connection: Option<u32>,
    faults: Faults,
}

impl Mounted {
    /// A handle that injects faults and reads the counters; it may outlive the mount.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts now, reporting an unmount error (dropping does the same silently).
    pub fn unmount(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A lazy unmount (MNT_DETACH) succeeds even while a process holds a file open: the
        // name goes at once, the connection when the last file closes.
        let unmounted =
            rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
                .or_else(|e| {
                    // Not root: the setuid helper may unmount.
                    let status = std::process::Command::new("fusermount3")
                        .args(["-u", "-z", "--"])
                        .arg(&self.mountpoint)
                        .status();
                    match status {
                        Ok(s) if s.success() => Ok(()),
                        _ => Err(e),
                    }
                });
        // Where fusectl is mounted, abort the connection so that a process still holding a
        // file gets errors rather than a file system nobody serves.
        if let Some(connection) = self.connection {
            let abort = format!("/sys/fs/fuse/connections/{connection}/abort");
            if Path::new(&abort).exists() {
                let _ = std::fs::write(abort, "1");
            }
        }
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(session.join());
        });
        // The threads end once the kernel ends the connection; if a process still holds a
        // file, they serve it until it closes, on their own.
        let _ = wait.recv_timeout(JOIN_BOUND);
        unmounted
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// Injects faults into a mounted fault file system and reads its counters. Cloneable; every
/// clone acts on the same file system.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
    notifier: Notifier,
}

impl Faults {
    /// Cuts the power: every write not yet fsynced is discarded, except what `cut` lets
    /// through. Meant for when the processes using the file system are dead (SIGKILLed): a file
    /// still open then reads the reverted content.
    pub fn power_cut(&self, cut: Cut) -> io::Result<()> {
        let touched = self.shared.cache().power_cut(cut)?;
        self.shared
            .counters
            .faults_injected
            .fetch_add(1, Ordering::Relaxed);
        // The kernel may hold pages and sizes of the lost writes; it must read them anew.
        // Outside the cache lock: the kernel may need a request served to drop a page.
        for ino in touched {
            let _ = self.notifier.inval_inode(INodeNo(ino), 0, 0);
        }
        Ok(())
    }

    /// Sets a budget of bytes for the whole file system (apparent sizes of its regular files,
    /// unsynced writes included): a write or fallocate that would grow it past the budget fails
    /// with `ENOSPC`, and `statfs`/`statvfs` report the free space from the same budget. `None`
    /// lifts it.
    pub fn set_space_limit(&self, limit: Option<u64>) -> io::Result<()> {
        self.shared.cache().set_limit(limit)
    }

    /// Makes the next fsync or fdatasync of a file fail with `EIO` and, as Linux does, drop that
    /// file's unsynced writes: an fsync retried after it succeeds, without the data. As Linux
    /// does too (since 4.13), every other descriptor open on that file when it failed gets
    /// `EIO` once at its own next fsync, whichever descriptor the failed fsync came through.
    pub fn fail_next_fsync(&self) {
        self.shared.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    /// Writes every unsynced write to the backing files, as sync(2) would.
    pub fn sync_all(&self) -> io::Result<()> {
        self.shared.cache().write_back_all()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        let (unsynced_writes, unsynced_bytes) = self.shared.cache().unsynced();
        Stats {
            writes: counters.writes.load(Ordering::Relaxed),
            bytes_written: counters.bytes_written.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            faults_injected: counters.faults_injected.load(Ordering::Relaxed),
            write_backs: counters.write_backs.load(Ordering::Relaxed),
            unsynced_writes,
            unsynced_bytes,
        }
    }
}

/// Why a fault file system cannot be mounted here, or `None` if it can: `/dev/fuse` must open,
/// and the caller must be root or have `fusermount3`.
pub fn unavailable_reason() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse cannot be opened: {e}"));
    }
    let root = rustix::process::geteuid().is_root();
    let helper = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").exists())
    });
    if !root && !helper {
        return Some("not root and no fusermount3 on PATH (Debian: apt-get install fuse3)".into());
    }
    None
}

/// For tests that need FUSE: `true` if FUSE is available; otherwise prints why and returns
/// `false` (the test then skips), or panics if the environment variable
/// `KINBRIDGE_REQUIRE_FUSE=1` says FUSE must be there (CI sets it).
pub fn fuse_available_or_skip(test: &str) -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) => {
            if std::env::var("KINBRIDGE_REQUIRE_FUSE").is_ok_and(|v| v == "1") {
                panic!("{test}: KINBRIDGE_REQUIRE_FUSE=1 but FUSE is unavailable: {reason}");
            }
            println!(
                "skipping {test}: FUSE is unavailable ({reason}); set KINBRIDGE_REQUIRE_FUSE=1 to fail instead"
            );
            false
        }
    }
}
