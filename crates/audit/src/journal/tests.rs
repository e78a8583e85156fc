//! The journal on real files: what a crash or filler leaves at the tail is cut with the right
//! count and never read as a record; damage further back is refused; version 1 files convert.

use super::*;
use rand::{RngCore, SeedableRng};

fn records(r: &Recovered) -> Vec<Vec<u8>> {
    r.records.iter().map(|(_, v)| v.clone()).collect()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).expect("open");
    f.write_all(bytes).expect("write");
}

/// A journal at `path` holding `one`, `two`, `three`; returns the offset of each frame.
fn three(path: &Path) -> Vec<u64> {
    let mut r = Journal::open(path).expect("open");
    assert!(r.records.is_empty());
    let mut offsets = r
        .journal
        .append(&[b"one".to_vec(), b"two".to_vec()])
        .expect("append");
    offsets.extend(r.journal.append(&[b"three".to_vec()]).expect("append"));
    offsets
}

fn the_three() -> Vec<Vec<u8>> {
    vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
}

/// Appends `tail` to a journal of three records, reopens it, and checks that exactly `tail`
/// is cut, no record is added, and appends after it read back.
fn tail_is_cut(tail: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    three(&path);
    let intact = std::fs::metadata(&path).expect("stat").len();
    append_bytes(&path, tail);
    let mut r = Journal::open(&path).expect("reopen");
    assert_eq!(records(&r), the_three());
    assert_eq!(r.truncated, tail.len() as u64);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), intact);
    r.journal
        .append(&[b"four".to_vec()])
        .expect("append after recovery");
    drop(r);
    let r = Journal::open(&path).expect("reopen");
    let mut want = the_three();
    want.push(b"four".to_vec());
    assert_eq!(records(&r), want);
    assert_eq!(r.truncated, 0);
}

#[test]
fn appends_survive_reopen_and_half_a_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let offsets = three(&path);
    let r = Journal::open(&path).expect("reopen");
    assert_eq!(records(&r), the_three());
    assert_eq!(
        r.records.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        offsets
    );
    let file = File::open(&path).expect("open");
    assert_eq!(read_record_at(&file, offsets[2]).expect("read"), b"three");
    drop(r);
    // A crash mid-append: half a frame at the end.
    let mut half = Vec::new();
    frame::encode_frame(&mut half, &[0; 16], 3, b"four");
    half.truncate(10);
    tail_is_cut(&half);
}

#[test]
fn four_kib_of_zeros_are_cut_not_read_as_entries() {
    tail_is_cut(&[0; 4096]);
}

#[test]
fn eight_zero_bytes_are_cut() {
    tail_is_cut(&[0; 8]);
}

#[test]
fn a_repeated_earlier_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let offsets = three(&path);
    let bytes = std::fs::read(&path).expect("read");
    // The whole frame of record 1 ("two"), byte for byte, again at the end.
    let repeat = bytes[offsets[1] as usize..offsets[2] as usize].to_vec();
    assert_eq!(repeat.len(), FRAME_OVERHEAD + 3);
    drop(bytes);
    tail_is_cut(&repeat);
    // And in the file it came from.
    append_bytes(&path, &repeat);
    let r = Journal::open(&path).expect("reopen");
    assert_eq!(records(&r), the_three());
    assert_eq!(r.truncated, repeat.len() as u64);
}

#[test]
fn a_frame_of_another_journal_at_the_right_index_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    three(&a);
    let mut rb = Journal::open(&b).expect("open");
    let offsets = rb
        .journal
        .append(&[b"x".to_vec(), b"y".to_vec(), b"z".to_vec(), b"w".to_vec()])
        .expect("append");
    drop(rb);
    // Frame 3 of b has the index a expects next, but b's file id under its checksum.
    let stale = std::fs::read(&b).expect("read")[offsets[3] as usize..].to_vec();
    append_bytes(&a, &stale);
    let r = Journal::open(&a).expect("reopen");
    assert_eq!(records(&r), the_three());
    assert_eq!(r.truncated, stale.len() as u64);
}

#[test]
fn random_bytes_are_cut() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for len in [1usize, 19, 20, 4096] {
        let mut tail = vec![0u8; len];
        rng.fill_bytes(&mut tail);
        tail_is_cut(&tail);
    }
}

#[test]
fn a_damaged_frame_ends_the_intact_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let offsets = three(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    // One byte of the record "two".
    bytes[offsets[1] as usize + FRAME_HEADER_BYTES] ^= 0xff;
    let (got, valid) = parse_frames(&bytes);
    assert_eq!(got.len(), 1);
    assert_eq!(valid, offsets[1]);
}

#[test]
fn damage_further_back_than_one_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let big = vec![7u8; MAX_RECORD_BYTES as usize];
    let mut r = Journal::open(&path).expect("open");
    let offsets = r.journal.append(&vec![big; 10]).expect("append");
    drop(r);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[offsets[0] as usize + FRAME_HEADER_BYTES] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let err = Journal::open(&path).map(|_| ()).expect_err("must refuse");
    assert!(
        matches!(&err, JournalError::Damaged { offset, why, .. } if *offset == offsets[0] && why.contains("checksum")),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "nothing is cut");
}

#[test]
fn a_version_1_file_is_read_and_converted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let mut v1 = Vec::new();
    for record in the_three() {
        v1.extend_from_slice(&(record.len() as u32).to_be_bytes());
        v1.extend_from_slice(&record);
        v1.extend_from_slice(&crc32fast::hash(&record).to_be_bytes());
    }
    // Zeros at its end read as empty version 1 frames: they are cut, not kept.
    v1.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &v1).expect("write");
    let mut r = Journal::open(&path).expect("open");
    assert_eq!(records(&r), the_three());
    assert_eq!(r.truncated, 4096);
    assert!(!conversion_path(&path).exists());
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes[..8], frame::FILE_MAGIC);
    r.journal.append(&[b"four".to_vec()]).expect("append");
    drop(r);
    let r = Journal::open(&path).expect("reopen");
    assert_eq!(records(&r).len(), 4);
    assert_eq!(r.truncated, 0);
    assert_eq!(
        read_record_at(&r.journal.file, r.records[3].0).expect("read"),
        b"four"
    );
}

#[test]
fn a_header_cut_short_starts_the_file_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    std::fs::write(&path, &frame::FILE_MAGIC[..5]).expect("write");
    let mut r = Journal::open(&path).expect("open");
    assert!(r.records.is_empty());
    assert_eq!(r.truncated, 5);
    r.journal.append(&[b"one".to_vec()]).expect("append");
    drop(r);
    assert_eq!(
        records(&Journal::open(&path).expect("reopen")),
        vec![b"one".to_vec()]
    );
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    std::fs::write(&path, b"hello, not a journal").expect("write");
    let err = Journal::open(&path).map(|_| ()).expect_err("must refuse");
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
}

#[test]
fn empty_and_oversized_records_are_refused_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.log");
    let mut r = Journal::open(&path).expect("open");
    for bad in [Vec::new(), vec![1u8; MAX_RECORD_BYTES as usize + 1]] {
        let err = r
            .journal
            .append(&[b"ok".to_vec(), bad])
            .expect_err("must refuse");
        assert!(matches!(err, JournalError::RecordSize { .. }), "{err}");
    }
    r.journal.append(&[b"ok".to_vec()]).expect("append");
    drop(r);
    assert_eq!(
        records(&Journal::open(&path).expect("reopen")),
        vec![b"ok".to_vec()]
    );
}
