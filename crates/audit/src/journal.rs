//! The journal: an append-only file of framed records, the audit log's source of truth.
//!
//! A frame is `u32be length || record || u32be CRC-32 of the record`. Appends are written and
//! then made durable with `fdatasync` before anyone is told; a crash can therefore only leave
//! a torn *last* frame, which was never acknowledged, and which [`Journal::open`] cuts off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest record accepted: an audit entry or a checkpoint note is far smaller; a larger
/// length field can only be damage.
pub const MAX_RECORD_BYTES: u32 = 1024 * 1024;

/// Most bytes one append writes before its `fdatasync`. A crash can tear at most the last
/// such write, so a damaged tail longer than this is not a torn append but damage to data that
/// was acknowledged: the journal then refuses to open rather than cut it off.
pub const MAX_WRITE_BYTES: usize = 8 * 1024 * 1024;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Damage before the tail: records that may have been acknowledged do not read back.
    #[error(
        "{path}: damaged at byte {offset} with {tail} bytes after it; this is not a torn last write, so nothing is cut off; restore the file from a backup"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Bytes from there to the end of the file.
        tail: u64,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An open journal file.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of valid frames.
    len: u64,
}

/// What opening a journal found.
pub struct Recovered {
    /// The journal, positioned for appending.
    pub journal: Journal,
    /// Every intact record, in order, with the offset of its frame.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes of a torn or damaged tail that were cut off.
    pub truncated: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, reads every intact frame and cuts off a torn
    /// tail.
    pub fn open(path: &Path) -> Result<Recovered, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        // 0600 whatever the umask: the node's data directory is its user's alone.
        let mut file = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        if created {
            sync_parent(path).map_err(io)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, valid) = parse_frames(&bytes);
        let truncated = bytes.len() as u64 - valid;
        if truncated > (MAX_WRITE_BYTES as u64) + u64::from(MAX_RECORD_BYTES) + 8 {
            return Err(JournalError::Damaged {
                path: path.to_path_buf(),
                offset: valid,
                tail: truncated,
            });
        }
        if truncated > 0 {
            file.set_len(valid).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Recovered {
            journal: Journal {
                path: path.to_path_buf(),
                file,
                len: valid,
            },
            records,
            truncated,
        })
    }

    /// Appends `records` and makes them durable, in writes of at most [`MAX_WRITE_BYTES`]
    /// each followed by `fdatasync`. Returns the offset of each frame.
    pub fn append(&mut self, records: &[Vec<u8>]) -> Result<Vec<u64>, JournalError> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut buf = Vec::new();
        for record in records {
            offsets.push(self.len + buf.len() as u64);
            buf.extend_from_slice(&(record.len() as u32).to_be_bytes());
            buf.extend_from_slice(record);
            buf.extend_from_slice(&crc32fast::hash(record).to_be_bytes());
            if buf.len() >= MAX_WRITE_BYTES {
                self.write_durably(&buf)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            self.write_durably(&buf)?;
        }
        Ok(offsets)
    }

    fn write_durably(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        if let Err(e) = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no half-written frame behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses frames from the start of `bytes`; returns the intact records and the length of the
/// intact prefix.
pub fn parse_frames(bytes: &[u8]) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if len > MAX_RECORD_BYTES || bytes.len() - at - 8 < len as usize {
            break;
        }
        let start = at + 4;
        let end = start + len as usize;
        let crc = u32::from_be_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
        if crc32fast::hash(&bytes[start..end]) != crc {
            break;
        }
        records.push((at as u64, bytes[start..end].to_vec()));
        at = end + 4;
    }
    (records, at as u64)
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.log");
        {
            let mut r = Journal::open(&path).expect("open");
            assert!(r.records.is_empty());
            r.journal
                .append(&[b"one".to_vec(), b"two".to_vec()])
                .expect("append");
            r.journal.append(&[b"three".to_vec()]).expect("append");
        }
        // A crash mid-append: half a frame at the end.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0, 0, 0, 9, b'x', b'y']).expect("write");
        drop(f);
        let mut r = Journal::open(&path).expect("reopen");
        let got: Vec<_> = r.records.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(r.truncated, 6);
        r.journal
            .append(&[b"four".to_vec()])
            .expect("append after recovery");
        drop(r);
        let r = Journal::open(&path).expect("reopen");
        assert_eq!(r.records.len(), 4);
        assert_eq!(r.truncated, 0);
    }

    #[test]
    fn a_damaged_frame_ends_the_intact_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.log");
        let mut r = Journal::open(&path).expect("open");
        r.journal
            .append(&[b"alpha".to_vec(), b"beta".to_vec()])
            .expect("append");
        drop(r);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        let (records, valid) = parse_frames(&bytes);
        assert_eq!(records.len(), 1);
        assert_eq!(valid, 13);
    }
}
