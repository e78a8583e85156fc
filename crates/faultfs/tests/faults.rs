//! The fault file system mounted for real (FUSE) over a temporary directory: power cuts lose
//! exactly the unsynced writes, a torn write keeps a prefix, the byte budget gives `ENOSPC` and
//! statvfs agrees, a failed fsync fails once, and an unmount with a file open does not hang.
//! Needs root (or fusermount3) and /dev/fuse: skips with a printed reason otherwise, fails if
//! KINBRIDGE_REQUIRE_FUSE=1.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use kinbridge_faultfs::{Cut, FaultFs, Mounted, fuse_available_or_skip};

struct Fixture {
    // Field order: the mount goes before the directories under it.
    mounted: Mounted,
    mnt: tempfile::TempDir,
    backing: tempfile::TempDir,
}

fn mount(test: &str) -> Option<Fixture> {
    if !fuse_available_or_skip(test) {
        return None;
    }
    let backing = tempfile::tempdir().expect("backing dir");
    let mnt = tempfile::tempdir().expect("mount dir");
    let mounted = FaultFs::mount(backing.path(), mnt.path()).expect("mount the fault file system");
    Some(Fixture {
        mounted,
        mnt,
        backing,
    })
}

impl Fixture {
    fn at(&self, name: &str) -> std::path::PathBuf {
        self.mnt.path().join(name)
    }
    fn backing_bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.backing.path().join(name)).expect("read the backing file")
    }
}

fn read(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path)
        .expect("open")
        .read_to_end(&mut data)
        .expect("read");
    data
}

#[test]
fn an_unsynced_write_is_lost_in_a_power_cut_and_a_synced_one_is_kept() {
    let Some(fx) = mount("an_unsynced_write_is_lost_in_a_power_cut_and_a_synced_one_is_kept")
    else {
        return;
    };
    let mut file = File::create(fx.at("log")).expect("create");
    file.write_all(b"synced;").expect("write");
    file.sync_all().expect("fsync");
    file.write_all(b"unsynced").expect("write");
    drop(file);
    assert_eq!(
        read(&fx.at("log")),
        b"synced;unsynced",
        "reads see cached writes"
    );
    assert_eq!(
        fx.backing_bytes("log"),
        b"synced;",
        "only the fsynced write is on disk"
    );

    let faults = fx.mounted.faults();
    let before = faults.stats();
    assert!(before.writes >= 2 && before.fsyncs >= 1, "{before:?}");
    assert_eq!(before.unsynced_bytes, 8);
    faults.power_cut(Cut::Clean).expect("power cut");
    assert_eq!(read(&fx.at("log")), b"synced;");
    assert_eq!(std::fs::metadata(fx.at("log")).expect("stat").len(), 7);
    assert_eq!(faults.stats().unsynced_writes, 0);

    // A new file never fsynced keeps its name (metadata is durable) but loses its data.
    std::fs::write(fx.at("fresh"), b"data").expect("write");
    faults.power_cut(Cut::Clean).expect("power cut");
    assert_eq!(read(&fx.at("fresh")), b"");
}

#[test]
fn a_torn_write_keeps_the_first_half_of_the_last_write() {
    let Some(fx) = mount("a_torn_write_keeps_the_first_half_of_the_last_write") else {
        return;
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(fx.at("segment"))
        .expect("create");
    file.write_all_at(&[b'a'; 1024], 0).expect("write");
    file.sync_data().expect("fdatasync");
    file.write_all_at(&[b'x'; 10], 2000).expect("write");
    file.write_all_at(&[b'b'; 100], 1024).expect("write");
    drop(file);
    fx.mounted.faults().power_cut(Cut::TearLast).expect("cut");
    let mut want = vec![b'a'; 1024];
    want.extend_from_slice(&[b'b'; 50]);
    assert_eq!(read(&fx.at("segment")), want);
}

#[test]
fn a_reordered_cut_persists_the_same_subset_for_the_same_seed() {
    let Some(fx) = mount("a_reordered_cut_persists_the_same_subset_for_the_same_seed") else {
        return;
    };
    let faults = fx.mounted.faults();
    let mut results = Vec::new();
    for round in 0..2 {
        let file = File::create(fx.at(&format!("r{round}"))).expect("create");
        for i in 0..64u64 {
            file.write_all_at(b"z", i).expect("write");
        }
        drop(file);
        faults.power_cut(Cut::Reorder { seed: 42 }).expect("cut");
        results.push(read(&fx.at(&format!("r{round}"))));
    }
    let kept = results[0].iter().filter(|&&b| b == b'z').count();
    assert!(kept > 0 && kept < 64, "a subset persists: {kept} of 64");
    assert_eq!(results[0], results[1], "the same seed, the same subset");
}

#[test]
fn past_the_space_budget_writes_fail_with_enospc_and_statvfs_agrees() {
    let Some(fx) = mount("past_the_space_budget_writes_fail_with_enospc_and_statvfs_agrees") else {
        return;
    };
    let faults = fx.mounted.faults();
    std::fs::write(fx.at("existing"), vec![1u8; 10_000]).expect("write");
    faults
        .set_space_limit(Some(10_000 + 64 * 1024))
        .expect("limit");
    let st = rustix::fs::statvfs(fx.mnt.path()).expect("statvfs");
    assert_eq!(
        st.f_blocks * st.f_frsize,
        10_000 + 64 * 1024 - (10_000 + 64 * 1024) % 4096
    );
    assert_eq!(st.f_bavail * st.f_frsize, 64 * 1024);

    let mut file = File::create(fx.at("big")).expect("create");
    let mut written = 0usize;
    let err = loop {
        match file.write(&[7u8; 4096]) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written <= 64 * 1024, "the budget was not enforced");
    };
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::NOSPC.raw_os_error())
    );
    assert_eq!(written, 64 * 1024);
    let st = rustix::fs::statvfs(fx.mnt.path()).expect("statvfs");
    assert_eq!(st.f_bavail, 0, "statvfs reports the disk full");
    // Overwriting needs no space; deleting frees it.
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(&[8u8; 4096]).expect("overwrite");
    drop(file);
    std::fs::remove_file(fx.at("existing")).expect("unlink");
    let st = rustix::fs::statvfs(fx.mnt.path()).expect("statvfs");
    assert_eq!(
        st.f_bavail * st.f_frsize,
        8192,
        "10 000 bytes freed, in whole blocks"
    );
    faults.set_space_limit(None).expect("lift");
    std::fs::write(fx.at("after"), vec![0u8; 200_000]).expect("no budget any more");
    assert!(faults.stats().faults_injected >= 1);
}

#[test]
fn a_failed_fsync_returns_eio_once_and_drops_that_files_writes() {
    let Some(fx) = mount("a_failed_fsync_returns_eio_once_and_drops_that_files_writes") else {
        return;
    };
    let faults = fx.mounted.faults();
    let mut file = File::create(fx.at("db")).expect("create");
    file.write_all(b"first").expect("write");
    faults.fail_next_fsync();
    let err = file.sync_all().expect_err("the injected failure");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::IO.raw_os_error())
    );
    file.sync_all().expect("a retried fsync succeeds ...");
    assert_eq!(
        fx.backing_bytes("db"),
        b"",
        "... without the data (fsyncgate)"
    );
    file.write_all(b"second").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    faults.power_cut(Cut::Clean).expect("cut");
    // The lost write left a hole of 5 bytes before the second one.
    assert_eq!(read(&fx.at("db")), b"\0\0\0\0\0second");
}

#[test]
fn every_descriptor_open_on_the_file_sees_a_failed_fsync_once() {
    let Some(fx) = mount("every_descriptor_open_on_the_file_sees_a_failed_fsync_once") else {
        return;
    };
    let faults = fx.mounted.faults();
    let eio = Some(rustix::io::Errno::IO.raw_os_error());
    // As sled's flusher and the node's committer each hold a descriptor on sled's file.
    let mut writer = File::create(fx.at("db")).expect("create");
    let committer = File::open(fx.at("db")).expect("open");
    writer.write_all(b"unsynced").expect("write");
    faults.fail_next_fsync();
    assert_eq!(writer.sync_all().expect_err("injected").raw_os_error(), eio);
    // The other descriptor did not call the fsync that failed, and is told all the same.
    assert_eq!(
        committer
            .sync_data()
            .expect_err("the failure is reported to every descriptor")
            .raw_os_error(),
        eio
    );
    committer.sync_data().expect("reported once");
    writer.sync_all().expect("reported once to the caller too");
    // A descriptor opened after the failure does not see it.
    File::open(fx.at("db"))
        .expect("open")
        .sync_all()
        .expect("no old error for a new descriptor");
    assert_eq!(
        fx.backing_bytes("db"),
        b"",
        "the failed write-back lost the data"
    );
}

#[test]
fn names_and_directories_pass_through() {
    let Some(fx) = mount("names_and_directories_pass_through") else {
        return;
    };
    std::fs::create_dir_all(fx.at("a/b")).expect("mkdir");
    std::fs::write(fx.at("a/b/tmp"), b"v1").expect("write");
    File::open(fx.at("a/b/tmp"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    std::fs::rename(fx.at("a/b/tmp"), fx.at("a/b/conf")).expect("rename");
    File::open(fx.at("a/b"))
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
    std::fs::rename(fx.at("a"), fx.at("c")).expect("rename dir");
    assert_eq!(read(&fx.at("c/b/conf")), b"v1");
    let names: Vec<_> = std::fs::read_dir(fx.at("c/b"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["conf"]);
    assert_eq!(fx.backing_bytes("c/b/conf"), b"v1");
    std::fs::remove_file(fx.at("c/b/conf")).expect("unlink");
    std::fs::remove_dir(fx.at("c/b")).expect("rmdir");
    let file = File::create(fx.at("trunc")).expect("create");
    file.set_len(3).expect("ftruncate");
    assert_eq!(read(&fx.at("trunc")), b"\0\0\0");
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_ref()))
}

#[test]
fn unmounting_with_a_file_open_does_not_hang() {
    let Some(fx) = mount("unmounting_with_a_file_open_does_not_hang") else {
        return;
    };
    let mnt = fx.mounted.mountpoint().to_path_buf();
    let mut held = File::create(fx.at("held")).expect("create");
    held.write_all(b"x").expect("write");
    assert!(is_mounted(&mnt));
    let start = Instant::now();
    drop(fx.mounted);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the unmount took {:?}",
        start.elapsed()
    );
    assert!(!is_mounted(&mnt), "the mount is gone");
    drop(held);
    drop(fx.mnt);
    drop(fx.backing);
}
