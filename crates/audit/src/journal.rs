//! The journal: an append-only file of framed records, the audit log's source of truth (the
//! entries, and the signed checkpoints, each in its own file).
//!
//! The bytes on disk are described in [`frame`]: a versioned file header, then frames carrying
//! a magic number, the length, the record's index and a checksum over all of them, so zeros,
//! stale bytes or a repeated earlier frame never read as the next record. Appends are written
//! and then made durable with `fdatasync` before anyone is told; a crash can therefore only
//! leave a torn *last* write, which was never acknowledged, and which [`Journal::open`] cuts
//! off with a warning naming the file and the bytes cut.

pub mod frame;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use frame::MAX_RECORD_BYTES;
use frame::{FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_OVERHEAD, FileId, Layout, Parsed};

/// Most bytes one append writes before its `fdatasync`. A crash can tear at most the last
/// such write, so a damaged tail longer than this is not a torn append but damage to data that
/// was acknowledged: the journal then refuses to open rather than cut it off.
pub const MAX_WRITE_BYTES: usize = 8 * 1024 * 1024;

/// Longest tail a crash can leave: one write, plus the frame that took it over
/// [`MAX_WRITE_BYTES`].
const MAX_TORN_BYTES: u64 =
    MAX_WRITE_BYTES as u64 + MAX_RECORD_BYTES as u64 + FRAME_OVERHEAD as u64;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Damage before the tail: records that may have been acknowledged do not read back.
    #[error(
        "{path}: damaged at byte {offset} ({why}) with {tail} bytes after it; this is not a torn last write, so nothing is cut off; restore the file from a backup"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Bytes from there to the end of the file.
        tail: u64,
        /// What was found there.
        why: String,
    },
    /// The file does not start with a journal header of any known version.
    #[error(
        "{path}: not a kinbridge journal (its first bytes are no journal header); check the data directory, or restore the file from a backup"
    )]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// A record that no frame may hold: empty, or longer than [`MAX_RECORD_BYTES`].
    #[error(
        "{path}: refusing to append a record of {len} bytes (a record holds 1 to {MAX_RECORD_BYTES} bytes)"
    )]
    RecordSize {
        /// The file.
        path: PathBuf,
        /// The record's length.
        len: usize,
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
    /// The id in the file's header, bound into every frame's checksum.
    id: FileId,
    /// Bytes of the header and the valid frames.
    len: u64,
    /// Index of the next record appended: the number of records in the file.
    next_index: u64,
}

/// What opening a journal found.
pub struct Recovered {
    /// The journal, positioned for appending.
    pub journal: Journal,
    /// Every intact record, in order, with the offset of its frame.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes of a torn tail that were cut off.
    pub truncated: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, reads every intact frame and cuts off a torn
    /// tail (with a warning naming the file and the bytes cut). A file in the version 1 format
    /// is converted to the current one (written aside, synced, renamed over the original).
    pub fn open(path: &Path) -> Result<Recovered, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        // A conversion a crash interrupted: the original is still in place.
        let aside = conversion_path(path);
        if aside.exists() {
            std::fs::remove_file(&aside).map_err(io)?;
        }
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
        match frame::layout(&bytes) {
            Layout::New => {
                if !bytes.is_empty() {
                    warn_cut(path, bytes.len() as u64, 0, "a file header cut short");
                    file.set_len(0).map_err(io)?;
                }
                let id: FileId = rand::random();
                file.write_all(&frame::file_header(&id)).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(Recovered {
                    journal: Journal {
                        path: path.to_path_buf(),
                        file,
                        id,
                        len: frame::FILE_HEADER_BYTES as u64,
                        next_index: 0,
                    },
                    records: Vec::new(),
                    truncated: bytes.len() as u64,
                })
            }
            Layout::V2(id) => {
                let parsed = frame::parse_v2(&bytes, &id);
                let truncated = check_tail(path, bytes.len() as u64, &parsed)?;
                if truncated > 0 {
                    file.set_len(parsed.valid).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                file.seek(SeekFrom::End(0)).map_err(io)?;
                Ok(Recovered {
                    journal: Journal {
                        path: path.to_path_buf(),
                        file,
                        id,
                        len: parsed.valid,
                        next_index: parsed.records.len() as u64,
                    },
                    records: parsed.records,
                    truncated,
                })
            }
            Layout::V1 => {
                let parsed = frame::parse_v1(&bytes);
                let truncated = check_tail(path, bytes.len() as u64, &parsed)?;
                drop(file);
                convert(path, parsed, truncated)
            }
            Layout::Unknown => Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Appends `records` and makes them durable, in writes of at most [`MAX_WRITE_BYTES`]
    /// each followed by `fdatasync`. Returns the offset of each frame. An empty record or one
    /// longer than [`MAX_RECORD_BYTES`] is refused before anything is written.
    pub fn append(&mut self, records: &[Vec<u8>]) -> Result<Vec<u64>, JournalError> {
        if let Some(bad) = records
            .iter()
            .find(|r| r.is_empty() || r.len() > MAX_RECORD_BYTES as usize)
        {
            return Err(JournalError::RecordSize {
                path: self.path.clone(),
                len: bad.len(),
            });
        }
        let mut offsets = Vec::with_capacity(records.len());
        let mut buf = Vec::new();
        let mut in_buf = 0u64;
        for record in records {
            offsets.push(self.len + buf.len() as u64);
            frame::encode_frame(&mut buf, &self.id, self.next_index + in_buf, record);
            in_buf += 1;
            if buf.len() >= MAX_WRITE_BYTES {
                self.write_durably(&buf, in_buf)?;
                buf.clear();
                in_buf = 0;
            }
        }
        if !buf.is_empty() {
            self.write_durably(&buf, in_buf)?;
        }
        Ok(offsets)
    }

    /// Writes `buf`, holding `count` frames, and syncs it.
    fn write_durably(&mut self, buf: &[u8], count: u64) -> Result<(), JournalError> {
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
        self.next_index += count;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the record of the frame at `offset` of a current-format journal `file` (an offset
/// [`Journal::open`] or [`Journal::append`] returned).
pub fn read_record_at(file: &File, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if header[..4] != FRAME_MAGIC || len == 0 || len > MAX_RECORD_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no journal frame at byte {offset}"),
        ));
    }
    let mut record = vec![0u8; len as usize];
    file.read_exact_at(&mut record, offset + FRAME_HEADER_BYTES as u64)?;
    Ok(record)
}

/// Parses a whole journal file of either format; returns the intact records (with the offset
/// of each frame) and the length of the intact prefix. For tools and tests that read a
/// journal without opening it.
pub fn parse_frames(bytes: &[u8]) -> (Vec<(u64, Vec<u8>)>, u64) {
    let parsed = match frame::layout(bytes) {
        Layout::V2(id) => frame::parse_v2(bytes, &id),
        Layout::V1 => frame::parse_v1(bytes),
        Layout::New | Layout::Unknown => Parsed::default(),
    };
    (parsed.records, parsed.valid)
}

/// Returns the bytes to cut after the intact prefix, with a warning, or refuses when there
/// are more than a torn write can leave.
fn check_tail(path: &Path, file_len: u64, parsed: &Parsed) -> Result<u64, JournalError> {
    let cut = file_len - parsed.valid;
    if cut == 0 {
        return Ok(0);
    }
    let why = parsed.stopped.as_deref().unwrap_or("unreadable bytes");
    if cut > MAX_TORN_BYTES {
        return Err(JournalError::Damaged {
            path: path.to_path_buf(),
            offset: parsed.valid,
            tail: cut,
            why: why.to_owned(),
        });
    }
    warn_cut(path, cut, parsed.valid, why);
    Ok(cut)
}

fn warn_cut(path: &Path, cut: u64, at: u64, why: &str) {
    tracing::warn!(
        file = %path.display(),
        cut_bytes = cut,
        at_byte = at,
        "{}: cutting off {cut} bytes at its end ({why}): the torn tail of a write that was never acknowledged",
        path.display()
    );
}

/// Where a version 1 file is converted before it replaces the original.
fn conversion_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".converting");
    PathBuf::from(name)
}

/// Rewrites the intact records of a version 1 journal in the current format: written aside,
/// synced, renamed over the original, and the directory synced, so a crash leaves either the
/// original or the converted file, never a mix.
fn convert(path: &Path, parsed: Parsed, truncated: u64) -> Result<Recovered, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let id: FileId = rand::random();
    let mut bytes = frame::file_header(&id);
    let mut records = Vec::with_capacity(parsed.records.len());
    for (index, (_, record)) in parsed.records.into_iter().enumerate() {
        let offset = bytes.len() as u64;
        frame::encode_frame(&mut bytes, &id, index as u64, &record);
        records.push((offset, record));
    }
    let aside = conversion_path(path);
    let mut out = OpenOptions::new()
        .mode(0o600)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&aside)
        .map_err(io)?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(io)?;
    drop(out);
    std::fs::rename(&aside, path).map_err(io)?;
    sync_parent(path).map_err(io)?;
    tracing::info!(
        file = %path.display(),
        records = records.len(),
        "{}: converted from the version 1 frame format to version 2 ({} records)",
        path.display(),
        records.len()
    );
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(Recovered {
        journal: Journal {
            path: path.to_path_buf(),
            file,
            id,
            len: bytes.len() as u64,
            next_index: records.len() as u64,
        },
        records,
        truncated,
    })
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
