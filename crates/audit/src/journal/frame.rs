//! The journal's bytes on disk: a versioned file header, then frames that zeros, stale bytes
//! or a copy of an earlier frame cannot pass for the next record.
//!
//! ```text
//! file header:  "kbjrnl" 0x00 0x02 || file id (16 random bytes)
//! frame:        "KBFR" || u32be length || u64be index || record || u32be CRC-32
//! ```
//!
//! The CRC-32 covers the file id, the frame magic, the length, the index and the record, so a
//! frame only reads back in the file it was written to, at the position it was written to: a
//! zero-filled tail has no magic, a frame repeated from earlier has the wrong index, and a
//! frame left over from another journal (stale blocks) has another file's id. A length of 0 is
//! never written and never read.
//!
//! Files written before this format (version 1: `u32be length || record || u32be CRC-32`, no
//! header) are still read, with a zero-length frame taken as the end of the intact prefix;
//! [`super::Journal::open`] converts them to this format.

/// The first bytes of a journal file: a name and the format version (2).
pub const FILE_MAGIC: [u8; 8] = *b"kbjrnl\x00\x02";
/// Bytes of the random file id after [`FILE_MAGIC`].
pub const FILE_ID_BYTES: usize = 16;
/// Bytes of the file header.
pub const FILE_HEADER_BYTES: usize = FILE_MAGIC.len() + FILE_ID_BYTES;
/// The first bytes of every frame: never zero, so zero filler is never a frame.
pub const FRAME_MAGIC: [u8; 4] = *b"KBFR";
/// Bytes of a frame before its record: magic, length, index.
pub const FRAME_HEADER_BYTES: usize = 4 + 4 + 8;
/// Bytes a frame adds to its record: the header and the checksum.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_BYTES + 4;
/// Largest record accepted: an audit entry or a checkpoint note is far smaller; a larger
/// length field can only be damage.
pub const MAX_RECORD_BYTES: u32 = 1024 * 1024;

/// The random id in a journal's header, bound into every frame's checksum.
pub type FileId = [u8; FILE_ID_BYTES];

/// The header of a new journal file with id `id`.
pub fn file_header(id: &FileId) -> Vec<u8> {
    let mut header = FILE_MAGIC.to_vec();
    header.extend_from_slice(id);
    header
}

/// Appends the frame of `record`, the `index`th record of the file `id`, to `out`.
pub fn encode_frame(out: &mut Vec<u8>, id: &FileId, index: u64, record: &[u8]) {
    // A record's length is checked against MAX_RECORD_BYTES before it gets here.
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(&checksum(id, len, index, record).to_be_bytes());
}

fn checksum(id: &FileId, len: u32, index: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(id);
    h.update(&FRAME_MAGIC);
    h.update(&len.to_be_bytes());
    h.update(&index.to_be_bytes());
    h.update(record);
    h.finalize()
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// No bytes, or the start of a header a crash cut short: a new file.
    New,
    /// A version 2 file with this id.
    V2(FileId),
    /// A version 1 file (no header; its first frame's length starts with a zero byte).
    V1,
    /// Neither: not a journal, or its header is damaged.
    Unknown,
}

/// Reads the layout from the start of a file.
pub fn layout(bytes: &[u8]) -> Layout {
    if bytes.len() < FILE_HEADER_BYTES {
        let n = bytes.len().min(FILE_MAGIC.len());
        if bytes[..n] == FILE_MAGIC[..n] {
            return Layout::New;
        }
    } else if bytes[..FILE_MAGIC.len()] == FILE_MAGIC {
        let mut id = [0u8; FILE_ID_BYTES];
        id.copy_from_slice(&bytes[FILE_MAGIC.len()..FILE_HEADER_BYTES]);
        return Layout::V2(id);
    }
    // A version 1 file starts with a length of at most MAX_RECORD_BYTES (< 2^24).
    if bytes.first() == Some(&0) {
        Layout::V1
    } else {
        Layout::Unknown
    }
}

/// The intact prefix of a file.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every intact record, in order, with the offset of its frame.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Length of the intact prefix, header included.
    pub valid: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Reads the frames of a version 2 file (`bytes` is the whole file, header included).
pub fn parse_v2(bytes: &[u8], id: &FileId) -> Parsed {
    let mut parsed = Parsed {
        valid: FILE_HEADER_BYTES as u64,
        ..Parsed::default()
    };
    let mut at = FILE_HEADER_BYTES;
    let stop = |parsed: &mut Parsed, why: String| parsed.stopped = Some(why);
    while at < bytes.len() {
        let rest = &bytes[at..];
        let index = parsed.records.len() as u64;
        if rest.len() < FRAME_OVERHEAD {
            stop(
                &mut parsed,
                format!("{} bytes, too short for a frame", rest.len()),
            );
            break;
        }
        if rest[..4] != FRAME_MAGIC {
            let what = if rest.iter().all(|b| *b == 0) {
                "zeros"
            } else {
                "bytes that are not a frame"
            };
            stop(
                &mut parsed,
                format!("{what} where frame {index} should start"),
            );
            break;
        }
        let len = be_u32(&rest[4..]);
        if len == 0 || len > MAX_RECORD_BYTES {
            stop(&mut parsed, format!("frame {index} claims {len} bytes"));
            break;
        }
        let end = FRAME_HEADER_BYTES + len as usize;
        if rest.len() < end + 4 {
            stop(&mut parsed, format!("frame {index} is cut short"));
            break;
        }
        let record = &rest[FRAME_HEADER_BYTES..end];
        let found = be_u64(&rest[8..]);
        if checksum(id, len, found, record) != be_u32(&rest[end..]) {
            stop(&mut parsed, format!("frame {index} fails its checksum"));
            break;
        }
        if found != index {
            stop(
                &mut parsed,
                format!("a frame of index {found} where frame {index} should be (a repeat?)"),
            );
            break;
        }
        parsed.records.push((at as u64, record.to_vec()));
        at += end + 4;
        parsed.valid = at as u64;
    }
    parsed
}

/// Reads the frames of a version 1 file. A zero-length frame ends the intact prefix: it is
/// what zeros read as (the CRC-32 of nothing is 0), and no record was ever empty.
pub fn parse_v1(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let index = parsed.records.len();
        if rest.len() < 8 {
            parsed.stopped = Some(format!("{} bytes, too short for a frame", rest.len()));
            break;
        }
        let len = be_u32(rest);
        if len == 0 || len > MAX_RECORD_BYTES || rest.len() - 8 < len as usize {
            parsed.stopped = Some(format!("frame {index} claims {len} bytes"));
            break;
        }
        let end = 4 + len as usize;
        if crc32fast::hash(&rest[4..end]) != be_u32(&rest[end..]) {
            parsed.stopped = Some(format!("frame {index} fails its checksum"));
            break;
        }
        parsed.records.push((at as u64, rest[4..end].to_vec()));
        at += end + 4;
        parsed.valid = at as u64;
    }
    parsed
}
