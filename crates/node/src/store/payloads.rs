//! The payload store: each envelope's payload and its salt in a file of its own, apart from
//! sled, so a purge (consent withdrawal, retention) really removes the bytes. sled is
//! log-structured: an overwritten value lingers in its segments until they are cleaned, so
//! personal data never goes into sled at all.
//!
//! A file is named by the envelope digest (hex) and holds `u32be len(salt) || salt || payload`.
//! It is written to a temporary name, fsynced, renamed and the directory fsynced; a purge
//! overwrites it with zeros, fsyncs, unlinks it and fsyncs the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Threads writing and syncing the files of one batch at once.
const SYNC_THREADS: usize = 8;

/// Files of payloads.
pub struct PayloadStore {
    dir: PathBuf,
}

impl PayloadStore {
    /// Opens (or creates) the store in `dir`, removing temporary files a crash left.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, digest: &[u8]) -> PathBuf {
        self.dir.join(format!("{}.payload", hex::encode(digest)))
    }

    /// Stores `payload` and `salt` for the envelope with `digest`, durably.
    pub fn put(&self, digest: &[u8], payload: &[u8], salt: &[u8]) -> io::Result<()> {
        self.put_all(&[(digest, payload, salt)])
    }

    /// Stores several `(digest, payload, salt)`, durably: each file is written and synced
    /// (several at once, so the file system can commit them together), then all are renamed
    /// into place and the directory is synced once.
    pub fn put_all<D, P, S>(&self, items: &[(D, P, S)]) -> io::Result<()>
    where
        D: AsRef<[u8]> + Sync,
        P: AsRef<[u8]> + Sync,
        S: AsRef<[u8]> + Sync,
    {
        if items.is_empty() {
            return Ok(());
        }
        let write = |(digest, payload, salt): &(D, P, S)| -> io::Result<(PathBuf, PathBuf)> {
            let path = self.path(digest.as_ref());
            let tmp = path.with_extension("tmp");
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let salt = salt.as_ref();
            file.write_all(&(salt.len() as u32).to_be_bytes())?;
            file.write_all(salt)?;
            file.write_all(payload.as_ref())?;
            file.sync_all()?;
            Ok((tmp, path))
        };
        let written: Vec<(PathBuf, PathBuf)> = if items.len() == 1 {
            vec![write(&items[0])?]
        } else {
            let per_thread = items.len().div_ceil(SYNC_THREADS);
            std::thread::scope(|scope| {
                let workers: Vec<_> = items
                    .chunks(per_thread)
                    .map(|chunk| scope.spawn(move || chunk.iter().map(write).collect::<Vec<_>>()))
                    .collect();
                let mut written = Vec::with_capacity(items.len());
                for worker in workers {
                    let done = worker
                        .join()
                        .map_err(|_| io::Error::other("a payload writer thread panicked"))?;
                    for file in done {
                        written.push(file?);
                    }
                }
                Ok::<_, io::Error>(written)
            })?
        };
        for (tmp, path) in &written {
            fs::rename(tmp, path)?;
        }
        File::open(&self.dir)?.sync_all()
    }

    /// The payload and salt of the envelope with `digest`, or `None` if there is none (never
    /// stored, or purged).
    pub fn get(&self, digest: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let bytes = match fs::read(self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let damaged = || io::Error::new(io::ErrorKind::InvalidData, "damaged payload file");
        let len = bytes.get(..4).ok_or_else(damaged)?;
        let salt_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let salt = bytes.get(4..4 + salt_len).ok_or_else(damaged)?.to_vec();
        let payload = bytes[4 + salt_len..].to_vec();
        Ok(Some((payload, salt)))
    }

    /// Removes the payload of the envelope with `digest`: overwritten with zeros, then
    /// unlinked, both made durable. `false` if there was none.
    pub fn purge(&self, digest: &[u8]) -> io::Result<bool> {
        let path = self.path(digest);
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
        File::open(&self.dir)?.sync_all()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no file left"
        );
    }
}
