//! A benchmark's child processes (nodes, the echo baseline): started with a ready line, read
//! from /proc while they run, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest a process may take to say it is ready.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// A child process that printed its ready line; killed on drop.
pub struct Process {
    child: Child,
    ready: String,
}

impl Process {
    /// Starts `cmd` with its standard error appended to `log`, and waits (bounded) for the
    /// first line on its standard output. Its standard input stays open until it is dropped.
    pub fn start(mut cmd: Command, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(READY_WAIT)
            .expect("the process printed its ready line in time");
        Self { child, ready }
    }

    /// The address after `key` (e.g. `local=`) in the ready line.
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in '{}'", self.ready))
            .parse()
            .expect("address")
    }

    /// The word after `key` (e.g. `metrics=`) in the ready line, if there is one.
    #[allow(dead_code)]
    pub fn ready_word(&self, key: &str) -> Option<&str> {
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
    }

    /// CPU seconds (user + system) the process has used so far, from /proc.
    pub fn cpu_seconds(&self, ticks_per_second: f64) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name: state is the first, utime the 12th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / ticks_per_second
    }

    /// Resident memory in bytes (`VmRSS` in /proc), 0 if it cannot be read.
    #[allow(dead_code)]
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024)
    }

    /// Open file descriptors (entries of /proc/PID/fd), 0 if they cannot be read.
    #[allow(dead_code)]
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second, as /proc counts CPU time.
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
