//! The payload store: each envelope's payload and its salt, apart from sled, so a purge
//! (consent withdrawal, retention) really removes the bytes. sled is log-structured: an
//! overwritten value lingers in its segments until they are cleaned, so personal data never
//! goes into sled at all.
//!
//! Payloads are appended to segment files, `segment-<n>.log`, as records:
//!
//! ```text
//! magic 0xB5 | state (0 live, 1 purged) | digest (32) | u32be salt length | u32be payload length
//!   | u32be CRC-32 of digest, salt and payload | salt | payload
//! ```
//!
//! A batch of payloads is one write and one `fdatasync`, and writers waiting at the same time
//! share that `fdatasync` (group commit). The index (digest → place) is kept in memory and
//! rebuilt from the segments at open. A purge first marks the record purged and syncs, then
//! overwrites its salt, payload and checksum with zeros in place and syncs again; a segment
//! whose records are all purged is deleted. So a purged payload's bytes are gone from the
//! file, not merely unlinked. A crash can leave only the unsynced tail of the newest segment
//! torn: it was never acknowledged, and is cut off at open. A purge the crash interrupted is
//! finished at open.
//!
//! Stores written by an earlier release hold one file per payload, `<digest hex>.payload`
//! (`u32be salt length || salt || payload`); these are still read and purged.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kinbridge_core::sync::lock;

const MAGIC: u8 = 0xB5;
const LIVE: u8 = 0;
const PURGED: u8 = 1;
/// Bytes of a record before its salt.
const HEADER: u64 = 1 + 1 + 32 + 4 + 4 + 4;
/// A new segment is started once the current one reaches this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest salt or payload a record may claim: anything larger is damage.
const MAX_PART: u32 = 16 * 1024 * 1024;

type Digest = [u8; 32];

/// Where a payload is.
#[derive(Debug, Clone, Copy)]
struct Place {
    segment: u32,
    offset: u64,
    salt_len: u32,
    payload_len: u32,
}

impl Place {
    fn end(&self) -> u64 {
        self.offset + HEADER + u64::from(self.salt_len) + u64::from(self.payload_len)
    }
}

struct Segment {
    file: Arc<File>,
    /// Bytes written.
    len: u64,
    /// Bytes known durable.
    synced: u64,
    /// Live records in it.
    live: usize,
}

struct Inner {
    index: HashMap<Digest, Place>,
    segments: BTreeMap<u32, Segment>,
    current: u32,
    /// Set once a sync failed: the kernel may have dropped the unsynced pages, so nothing
    /// written since can be trusted to be durable, and the store takes no more writes.
    failed: Option<String>,
}

/// Payloads, in segment files.
pub struct PayloadStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held while syncing: writers waiting behind it find their bytes synced already.
    sync: Mutex<()>,
}

fn damaged(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn digest_of(digest: &[u8]) -> io::Result<Digest> {
    digest
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a digest is 32 bytes"))
}

fn checksum(digest: &[u8], salt: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(digest);
    h.update(salt);
    h.update(payload);
    h.finalize()
}

fn segment_name(n: u32) -> String {
    format!("segment-{n:08}.log")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl PayloadStore {
    /// Opens (or creates) the store in `dir`: removes temporary files a crash left (from the
    /// one-file-per-payload layout), cuts off a torn tail, finishes interrupted purges and
    /// rebuilds the index.
    pub fn open(dir: &Path) -> io::Result<Self> {
        crate::private_files::create_dir(dir)?;
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(n) = name
                .strip_prefix("segment-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut index = HashMap::new();
        let mut segments = BTreeMap::new();
        let newest = numbers.last().copied();
        for n in numbers {
            let path = dir.join(segment_name(n));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let (len, live) = recover(&file, n, Some(n) == newest, &mut index)
                .map_err(|e| damaged(format!("{}: {e}", path.display())))?;
            if live == 0 && Some(n) != newest {
                drop(file);
                fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            }
            segments.insert(
                n,
                Segment {
                    file: Arc::new(file),
                    len,
                    synced: len,
                    live,
                },
            );
        }
        let current = match newest {
            Some(n) => n,
            None => {
                let segment = new_segment(dir, 1)?;
                segments.insert(1, segment);
                1
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                index,
                segments,
                current,
                failed: None,
            }),
            sync: Mutex::new(()),
        })
    }

    fn legacy_path(&self, digest: &[u8]) -> PathBuf {
        self.dir.join(format!("{}.payload", hex::encode(digest)))
    }

    /// Stores `payload` and `salt` for the envelope with `digest`, durably.
    pub fn put(&self, digest: &[u8], payload: &[u8], salt: &[u8]) -> io::Result<()> {
        self.put_all(&[(digest, payload, salt)])
    }

    /// Stores several `(digest, payload, salt)`, durably: one write and one sync for all
    /// (shared with other writers syncing at the same moment). A digest already stored is
    /// not written again: a digest names the exact envelope, so its payload is the same.
    pub fn put_all<D, P, S>(&self, items: &[(D, P, S)]) -> io::Result<()>
    where
        D: AsRef<[u8]>,
        P: AsRef<[u8]>,
        S: AsRef<[u8]>,
    {
        // The furthest byte of each segment that must be durable before returning.
        let mut wait: BTreeMap<u32, u64> = BTreeMap::new();
        {
            let mut inner = lock(&self.inner);
            if let Some(reason) = &inner.failed {
                return Err(io::Error::other(reason.clone()));
            }
            let mut buffer = Vec::new();
            let mut start = None;
            let mut added = 0;
            for (digest, payload, salt) in items {
                let digest = digest_of(digest.as_ref())?;
                let (payload, salt) = (payload.as_ref(), salt.as_ref());
                if let Some(place) = inner.index.get(&digest) {
                    let end = wait.entry(place.segment).or_default();
                    *end = (*end).max(place.end());
                    continue;
                }
                let too_big = |n: usize| u32::try_from(n).ok().filter(|n| *n <= MAX_PART);
                let (Some(salt_len), Some(payload_len)) =
                    (too_big(salt.len()), too_big(payload.len()))
                else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a payload or salt is too large to store",
                    ));
                };
                if start.is_none() {
                    let current = inner.current;
                    if inner.segments[&current].len >= SEGMENT_BYTES {
                        self.rotate(&mut inner)?;
                    }
                    start = Some(inner.segments[&inner.current].len);
                }
                let offset = start.unwrap_or_default() + buffer.len() as u64;
                buffer.push(MAGIC);
                buffer.push(LIVE);
                buffer.extend_from_slice(&digest);
                buffer.extend_from_slice(&salt_len.to_be_bytes());
                buffer.extend_from_slice(&payload_len.to_be_bytes());
                buffer.extend_from_slice(&checksum(&digest, salt, payload).to_be_bytes());
                buffer.extend_from_slice(salt);
                buffer.extend_from_slice(payload);
                let place = Place {
                    segment: inner.current,
                    offset,
                    salt_len,
                    payload_len,
                };
                inner.index.insert(digest, place);
                added += 1;
            }
            if let Some(start) = start {
                let current = inner.current;
                let written = {
                    let segment = inner
                        .segments
                        .get_mut(&current)
                        .ok_or_else(|| io::Error::other("the current segment is gone"))?;
                    let written = segment.file.write_all_at(&buffer, start);
                    if written.is_ok() {
                        segment.len = start + buffer.len() as u64;
                        segment.live += added;
                    }
                    written
                };
                if let Err(e) = written {
                    // Nothing of the batch is indexed once the write failed. Part of it may
                    // be in the file past the segment's length (a full disk takes some bytes
                    // of a write): the store takes no more writes, and the next open cuts
                    // that tail off.
                    inner
                        .index
                        .retain(|_, p| !(p.segment == current && p.offset >= start));
                    let reason = format!("payload store write failed: {e}");
                    inner.failed = Some(reason.clone());
                    return Err(io::Error::new(e.kind(), reason));
                }
                let end = wait.entry(current).or_default();
                *end = (*end).max(start + buffer.len() as u64);
            }
        }
        for (segment, end) in wait {
            self.sync_to(segment, end)?;
        }
        Ok(())
    }

    /// Starts a new segment, after syncing the current one in full: only the newest segment
    /// can ever have an unsynced tail.
    fn rotate(&self, inner: &mut Inner) -> io::Result<()> {
        let current = inner.current;
        if let Some(file) = inner.segments.get(&current).map(|s| Arc::clone(&s.file)) {
            sync_or_fail(&file, inner)?;
            if let Some(segment) = inner.segments.get_mut(&current) {
                segment.synced = segment.len;
            }
        }
        let next = current + 1;
        inner.segments.insert(next, new_segment(&self.dir, next)?);
        inner.current = next;
        Ok(())
    }

    /// Returns once the first `end` bytes of `segment` are durable.
    fn sync_to(&self, segment: u32, end: u64) -> io::Result<()> {
        let _syncing = lock(&self.sync);
        let (file, target) = {
            let inner = lock(&self.inner);
            if let Some(reason) = &inner.failed {
                return Err(io::Error::other(reason.clone()));
            }
            match inner.segments.get(&segment) {
                Some(s) if s.synced >= end => return Ok(()),
                Some(s) => (Arc::clone(&s.file), s.len),
                // Deleted: every record in it was purged, so nothing of it is needed.
                None => return Ok(()),
            }
        };
        if let Err(e) = file.sync_data() {
            let reason = format!("payload store sync failed: {e}");
            lock(&self.inner).failed = Some(reason.clone());
            return Err(io::Error::other(reason));
        }
        if let Some(s) = lock(&self.inner).segments.get_mut(&segment) {
            s.synced = s.synced.max(target);
        }
        Ok(())
    }

    /// Why the store takes no more writes, if a write or sync failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner).failed.clone()
    }

    /// The payload and salt of the envelope with `digest`, or `None` if there is none (never
    /// stored, or purged).
    pub fn get(&self, digest: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let key = digest_of(digest)?;
        let found = {
            let inner = lock(&self.inner);
            inner.index.get(&key).and_then(|place| {
                inner
                    .segments
                    .get(&place.segment)
                    .map(|s| (Arc::clone(&s.file), *place))
            })
        };
        if let Some((file, place)) = found {
            let mut bytes = vec![
                0u8;
                (HEADER + u64::from(place.salt_len) + u64::from(place.payload_len))
                    as usize
            ];
            file.read_exact_at(&mut bytes, place.offset)?;
            let record = Record::parse(&bytes).ok_or_else(|| damaged("damaged payload record"))?;
            if record.state == PURGED && record.digest == key {
                // Purged while this read was under way.
                return Ok(None);
            }
            if record.state != LIVE || record.digest != key || !record.intact(&bytes) {
                return Err(damaged("damaged payload record"));
            }
            let h = HEADER as usize;
            let salt = bytes[h..h + place.salt_len as usize].to_vec();
            let payload = bytes[h + place.salt_len as usize..].to_vec();
            return Ok(Some((payload, salt)));
        }
        self.get_legacy(digest)
    }

    fn get_legacy(&self, digest: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let bytes = match fs::read(self.legacy_path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = bytes
            .get(..4)
            .ok_or_else(|| damaged("damaged payload file"))?;
        let salt_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let salt = bytes
            .get(4..4 + salt_len)
            .ok_or_else(|| damaged("damaged payload file"))?
            .to_vec();
        let payload = bytes[4 + salt_len..].to_vec();
        Ok(Some((payload, salt)))
    }

    /// Removes the payload of the envelope with `digest`: marked purged, then its bytes
    /// overwritten with zeros, each made durable; a segment left with no live record is
    /// deleted. `false` if there was none.
    pub fn purge(&self, digest: &[u8]) -> io::Result<bool> {
        let key = digest_of(digest)?;
        let mut found = false;
        {
            let mut inner = lock(&self.inner);
            if let Some(place) = inner.index.get(&key).copied() {
                let segment = inner
                    .segments
                    .get(&place.segment)
                    .ok_or_else(|| io::Error::other("the payload's segment is gone"))?;
                let file = Arc::clone(&segment.file);
                if let Some(reason) = &inner.failed {
                    return Err(io::Error::other(reason.clone()));
                }
                file.write_all_at(&[PURGED], place.offset + 1)?;
                sync_or_fail(&file, &mut inner)?;
                // The record is purged from here on, even if the zeroing is cut short: it is
                // finished at the next open.
                inner.index.remove(&key);
                zero(&file, &place)?;
                sync_or_fail(&file, &mut inner)?;
                found = true;
                let current = inner.current;
                if let Some(s) = inner.segments.get_mut(&place.segment) {
                    s.live = s.live.saturating_sub(1);
                    if s.live == 0 && place.segment != current {
                        inner.segments.remove(&place.segment);
                        fs::remove_file(self.dir.join(segment_name(place.segment)))?;
                        sync_dir(&self.dir)?;
                    }
                }
            }
        }
        Ok(self.purge_legacy(digest)? || found)
    }

    fn purge_legacy(&self, digest: &[u8]) -> io::Result<bool> {
        let path = self.legacy_path(digest);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new().write(true).open(&path)?;
        file.write_all(&vec![0u8; len as usize])?;
        file.sync_all()?;
        drop(file);
        fs::remove_file(&path)?;
        sync_dir(&self.dir)?;
        Ok(true)
    }
}

/// `fdatasync` of `file`; a failure is latched in `inner`, as in [`PayloadStore::sync_to`].
fn sync_or_fail(file: &File, inner: &mut Inner) -> io::Result<()> {
    file.sync_data().map_err(|e| {
        let reason = format!("payload store sync failed: {e}");
        inner.failed = Some(reason.clone());
        io::Error::other(reason)
    })
}

/// Overwrites the checksum, salt and payload of the record at `place` with zeros.
fn zero(file: &File, place: &Place) -> io::Result<()> {
    let from = place.offset + HEADER - 4;
    let len = 4 + u64::from(place.salt_len) + u64::from(place.payload_len);
    file.write_all_at(&vec![0u8; len as usize], from)
}

fn new_segment(dir: &Path, n: u32) -> io::Result<Segment> {
    // 0600 whatever the umask: a segment holds children's data.
    let file = crate::private_files::file_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(segment_name(n)))?;
    sync_dir(dir)?;
    Ok(Segment {
        file: Arc::new(file),
        len: 0,
        synced: 0,
        live: 0,
    })
}

/// A record's header, read.
struct Record {
    state: u8,
    digest: Digest,
    salt_len: u32,
    payload_len: u32,
    crc: u32,
}

impl Record {
    /// The header at the start of `bytes`, if it is one.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let h = bytes.get(..HEADER as usize)?;
        let u32_at = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let record = Self {
            state: h[1],
            digest: h[2..34].try_into().ok()?,
            salt_len: u32_at(34),
            payload_len: u32_at(38),
            crc: u32_at(42),
        };
        let plausible = h[0] == MAGIC
            && (record.state == LIVE || record.state == PURGED)
            && record.salt_len <= MAX_PART
            && record.payload_len <= MAX_PART;
        plausible.then_some(record)
    }

    fn body_len(&self) -> u64 {
        u64::from(self.salt_len) + u64::from(self.payload_len)
    }

    /// Whether `bytes` (the whole record) match the checksum.
    fn intact(&self, bytes: &[u8]) -> bool {
        let h = HEADER as usize;
        let salt = &bytes[h..h + self.salt_len as usize];
        let payload = &bytes[h + self.salt_len as usize..];
        checksum(&self.digest, salt, payload) == self.crc
    }
}

/// Reads segment `n` into `index`; returns its length and its live records. In the newest
/// segment, a torn record and everything after it are cut off (never acknowledged); in an
/// older one, which was synced in full before the next began, a bad record is damage. A
/// record marked purged whose bytes are not all zero (a purge cut short) is zeroed.
fn recover(
    file: &File,
    n: u32,
    newest: bool,
    index: &mut HashMap<Digest, Place>,
) -> io::Result<(u64, usize)> {
    let file_len = file.metadata()?.len();
    let mut reader = io::BufReader::with_capacity(1 << 16, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut offset = 0u64;
    let mut live = 0;
    let mut header = [0u8; HEADER as usize];
    while offset < file_len {
        let torn = |what: &str| -> io::Result<(u64, usize)> {
            if !newest {
                return Err(damaged(format!("{what} at byte {offset}")));
            }
            tracing::warn!(
                segment = n,
                offset,
                dropped_bytes = file_len - offset,
                "cutting off the payload store's unsynced tail left by a crash"
            );
            file.set_len(offset)?;
            file.sync_data()?;
            Ok((offset, live))
        };
        if file_len - offset < HEADER {
            return torn("a short record header");
        }
        reader.read_exact(&mut header)?;
        let Some(record) = Record::parse(&header) else {
            return torn("a record header that does not parse");
        };
        let end = offset + HEADER + record.body_len();
        if end > file_len {
            return torn("a record longer than the file");
        }
        let mut body = vec![0u8; record.body_len() as usize];
        reader.read_exact(&mut body)?;
        let place = Place {
            segment: n,
            offset,
            salt_len: record.salt_len,
            payload_len: record.payload_len,
        };
        if record.state == LIVE {
            let mut whole = header.to_vec();
            whole.extend_from_slice(&body);
            if !record.intact(&whole) {
                return torn("a record whose checksum does not match");
            }
            index.insert(record.digest, place);
            live += 1;
        } else if record.crc != 0 || body.iter().any(|b| *b != 0) {
            zero(file, &place)?;
            file.sync_data()?;
        }
        offset = end;
    }
    Ok((offset, live))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn contains(dir: &Path, needle: &[u8]) -> bool {
        fs::read_dir(dir).expect("dir").any(|e| {
            let bytes = fs::read(e.expect("entry").path()).expect("read");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    }

    #[test]
    fn put_get_purge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PayloadStore::open(dir.path()).expect("open");
        store.put(&[1; 32], b"the payload", &[7; 32]).expect("put");
        assert_eq!(
            store.get(&[1; 32]).expect("get"),
            Some((b"the payload".to_vec(), vec![7; 32]))
        );
        assert!(store.purge(&[1; 32]).expect("purge"));
        assert_eq!(store.get(&[1; 32]).expect("get"), None);
        assert!(!store.purge(&[1; 32]).expect("purge again"));
        assert!(!contains(dir.path(), b"the payload"), "no byte of it left");
    }

    #[test]
    fn a_batch_survives_reopening_and_purges_stay_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let items: Vec<([u8; 32], Vec<u8>, Vec<u8>)> = (0..50u8)
            .map(|i| {
                (
                    [i; 32],
                    format!("PERSONAL-{i:03}").into_bytes(),
                    vec![i; 32],
                )
            })
            .collect();
        {
            let store = PayloadStore::open(dir.path()).expect("open");
            store.put_all(&items).expect("put all");
            // The same digest again is not written twice.
            store.put_all(&items[..3]).expect("again");
            assert!(store.purge(&[7; 32]).expect("purge"));
        }
        let store = PayloadStore::open(dir.path()).expect("reopen");
        for (digest, payload, salt) in &items {
            let got = store.get(digest).expect("get");
            if digest[0] == 7 {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some((payload.clone(), salt.clone())));
            }
        }
        assert!(!contains(dir.path(), b"PERSONAL-007"));
        assert!(contains(dir.path(), b"PERSONAL-008"));
        assert_eq!(files(dir.path()), vec!["segment-00000001.log"]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_an_interrupted_purge_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(segment_name(1));
        {
            let store = PayloadStore::open(dir.path()).expect("open");
            store
                .put(&[1; 32], b"FIRST-PAYLOAD", &[1; 32])
                .expect("put");
            store
                .put(&[2; 32], b"SECOND-PAYLOAD", &[2; 32])
                .expect("put");
        }
        // A purge of the first cut short after marking it; a half-written third record.
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&[PURGED], 1).expect("mark");
        let len = file.metadata().expect("meta").len();
        file.write_all_at(&[MAGIC, LIVE, 3, 3, 3], len)
            .expect("torn");
        drop(file);
        let store = PayloadStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(&[1; 32]).expect("get"), None);
        assert_eq!(
            store.get(&[2; 32]).expect("get"),
            Some((b"SECOND-PAYLOAD".to_vec(), vec![2; 32]))
        );
        assert_eq!(
            fs::metadata(&path).expect("meta").len(),
            len,
            "tail cut off"
        );
        assert!(
            !contains(dir.path(), b"FIRST-PAYLOAD"),
            "the purge was finished"
        );
        // And it takes writes after the cut.
        store.put(&[4; 32], b"FOURTH", &[4; 32]).expect("put");
        drop(store);
        let store = PayloadStore::open(dir.path()).expect("reopen");
        assert!(store.get(&[4; 32]).expect("get").is_some());
    }

    #[test]
    fn a_segment_with_nothing_live_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PayloadStore::open(dir.path()).expect("open");
        store.put(&[1; 32], b"OLD", &[1; 32]).expect("put");
        {
            let mut inner = lock(&store.inner);
            store.rotate(&mut inner).expect("rotate");
        }
        store.put(&[2; 32], b"NEW", &[2; 32]).expect("put");
        assert_eq!(
            files(dir.path()),
            vec!["segment-00000001.log", "segment-00000002.log"]
        );
        assert!(store.purge(&[1; 32]).expect("purge"));
        assert_eq!(files(dir.path()), vec!["segment-00000002.log"]);
        assert!(store.get(&[2; 32]).expect("get").is_some());
    }

    #[test]
    fn payloads_of_the_one_file_layout_are_read_and_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir
            .path()
            .join(format!("{}.payload", hex::encode([9u8; 32])));
        let mut bytes = 32u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[5; 32]);
        bytes.extend_from_slice(b"LEGACY-PAYLOAD");
        fs::write(&legacy, bytes).expect("legacy file");
        fs::write(dir.path().join("x.tmp"), b"half").expect("tmp");
        let store = PayloadStore::open(dir.path()).expect("open");
        assert!(
            !dir.path().join("x.tmp").exists(),
            "temporary files removed"
        );
        assert_eq!(
            store.get(&[9; 32]).expect("get"),
            Some((b"LEGACY-PAYLOAD".to_vec(), vec![5; 32]))
        );
        assert!(store.purge(&[9; 32]).expect("purge"));
        assert!(!legacy.exists());
        assert_eq!(store.get(&[9; 32]).expect("get"), None);
    }
}
