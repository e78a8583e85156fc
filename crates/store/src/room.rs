//! The free-space guard: before a write that grows the store (a submission, a received
//! envelope, a payload), the store checks that the volume of its directory keeps more than a
//! reserve free, and refuses the write while it does not.
//!
//! The reserve exists so that what must still be written on a nearly full disk can be:
//! refusals in the audit log, the outcomes of deliveries already queued, acknowledgements of
//! what was accepted before. A write that fails for want of space after all would leave sled
//! with its global error set (sled 0.34 keeps it until the database is opened again) and the
//! store failed ([`crate::failure`]); refusing early is what lets the node resume by itself
//! once space is freed. The free space is read with `statvfs` at most once a second; an
//! episode of refusals is logged once when it starts and once when it ends.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kinbridge_core::sync::lock;

/// The default reserve: writes that grow the store are refused while less is free.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// How long a free-space reading is trusted.
const READING_TTL: Duration = Duration::from_secs(1);

/// A refusal for want of space: where, how much is free and how much is kept in reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// The store's directory, on the volume that is full.
    pub dir: PathBuf,
    /// Bytes free there (for an unprivileged writer), when last read.
    pub free: u64,
    /// The reserve the node keeps.
    pub reserve: u64,
}

/// The guard of one store directory.
pub struct Room {
    dir: PathBuf,
    reserve: u64,
    state: Mutex<Reading>,
}

/// The last reading and the episode it is in.
#[derive(Default)]
struct Reading {
    /// When the free space was last read, and what it was (`None`: it could not be read).
    at: Option<(Instant, Option<u64>)>,
    /// Whether writes are being refused now (an episode is under way).
    full: bool,
    /// Whether a failed reading was already reported.
    unreadable_reported: bool,
}

impl Room {
    /// A guard of `dir` keeping `reserve` bytes free (0: no guard).
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reserve,
            state: Mutex::new(Reading::default()),
        }
    }

    /// The directory guarded.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The reserve kept.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Bytes free on the volume of the store's directory, read at most [`READING_TTL`] ago;
    /// `None` if they cannot be read.
    pub fn free_bytes(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        self.read(&mut state)
    }

    /// `Ok` if a write that grows the store may go ahead; otherwise how full the volume is.
    /// A volume whose free space cannot be read is not refused (said once in the log).
    pub fn check(&self) -> Result<(), NoRoom> {
        if self.reserve == 0 {
            return Ok(());
        }
        let mut state = lock(&self.state);
        let Some(free) = self.read(&mut state) else {
            return Ok(());
        };
        let full = free < self.reserve;
        if full != state.full {
            state.full = full;
            if full {
                tracing::error!(
                    dir = %self.dir.display(),
                    free_bytes = free,
                    reserve_bytes = self.reserve,
                    "the node's disk is nearly full: refusing submissions and deliveries that would grow the store until space is freed (deliveries already queued still go out)"
                );
            } else {
                tracing::info!(
                    dir = %self.dir.display(),
                    free_bytes = free,
                    reserve_bytes = self.reserve,
                    "disk space freed: the node takes submissions and deliveries again"
                );
            }
        }
        if full {
            Err(NoRoom {
                dir: self.dir.clone(),
                free,
                reserve: self.reserve,
            })
        } else {
            Ok(())
        }
    }

    /// The free space, read again if the last reading is older than [`READING_TTL`].
    fn read(&self, state: &mut Reading) -> Option<u64> {
        if let Some((at, free)) = state.at
            && at.elapsed() < READING_TTL
        {
            return free;
        }
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(vfs) => {
                let unit = if vfs.f_frsize > 0 {
                    vfs.f_frsize
                } else {
                    vfs.f_bsize
                };
                Some(vfs.f_bavail.saturating_mul(unit))
            }
            Err(e) => {
                if !state.unreadable_reported {
                    state.unreadable_reported = true;
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free space of the store's volume; the free-space guard is not checking it");
                }
                None
            }
        };
        state.at = Some((Instant::now(), free));
        free
    }
}

/// `bytes` for a person: in MiB, or GiB from 10 GiB on.
pub fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes >= 10 * GIB {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{} MiB", bytes.div_ceil(MIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let huge = Room::new(dir.path(), u64::MAX);
        let refused = huge.check().expect_err("refused");
        assert_eq!(refused.reserve, u64::MAX);
        assert_eq!(refused.dir, dir.path());
        assert!(huge.free_bytes().is_some_and(|f| f == refused.free));
        assert!(Room::new(dir.path(), 0).check().is_ok());
        assert!(Room::new(dir.path(), 1).check().is_ok());
    }

    #[test]
    fn sizes_read_as_a_person_writes_them() {
        assert_eq!(human(256 * 1024 * 1024), "256 MiB");
        assert_eq!(human(1), "1 MiB");
        assert_eq!(human(20 * 1024 * 1024 * 1024), "20 GiB");
    }
}
