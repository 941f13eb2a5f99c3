//! Running out of memory, reported instead of hanging. With no swap, a
//! guest whose anonymous memory fills its RAM first evicts the page cache,
//! program text included, and refaults it from the image for minutes
//! before the kernel's OOM killer acts (on an emulating host, every refault
//! is emulated work). So guest-init watches MemAvailable while the workload
//! runs and, like earlyoom, kills the largest process when it falls below
//! a floor; the kernel's own OOM kills are counted from /dev/kmsg. Either
//! way the host is told.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use guest_init::{GuestMsg, MAX_OOM_VICTIMS, MAX_VICTIM_NAME};

use crate::sys;

/// How often MemAvailable is read while the workload runs.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// The poll timeout that goes with [`INTERVAL`].
pub const POLL_MS: libc::c_int = INTERVAL.as_millis() as libc::c_int;

/// The floor: 5% of RAM, at least 4 MiB.
fn floor_kib(total_kib: u64) -> u64 {
    (total_kib / 20).max(4 * 1024)
}

/// A field of /proc/meminfo in KiB.
fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Whether a kernel log record says the OOM killer killed a process; its pid and name.
fn kernel_victim(record: &str) -> Option<(libc::pid_t, String)> {
    // "Out of memory: Killed process 123 (dd) total-vm:…" (also
    // "Memory cgroup out of memory: Killed process …").
    let rest = record.split_once("of memory: Killed process ")?.1;
    let (pid, rest) = rest.split_once(" (")?;
    let name = rest.split_once(')')?.0;
    Some((pid.parse().ok()?, name.to_string()))
}

#[derive(Debug)]
pub struct Watchdog {
    kmsg: Option<RawFd>,
    floor_kib: u64,
    last: Instant,
    /// Pid and name of each process killed for memory.
    victims: Vec<(libc::pid_t, String)>,
    /// When the last victim was killed: its memory is freed as it exits,
    /// which takes a while; nothing else is killed meanwhile.
    dying: Option<Instant>,
}

/// The longest wait for a victim to exit before the next may be chosen.
const DYING_GRACE: Duration = Duration::from_secs(10);

impl Watchdog {
    /// Starts watching: the kernel log from now on, MemAvailable from the next check.
    pub fn new() -> Watchdog {
        let kmsg = sys::open("/dev/kmsg", libc::O_RDONLY | libc::O_NONBLOCK).ok();
        if let Some(fd) = kmsg {
            // SAFETY: lseek only moves the fd's position in the log.
            unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        }
        let total = sys::read_text("/proc/meminfo")
            .ok()
            .and_then(|m| meminfo_kib(&m, "MemTotal"))
            .unwrap_or(0);
        Watchdog {
            kmsg,
            floor_kib: floor_kib(total),
            last: Instant::now(),
            victims: Vec::new(),
            dying: None,
        }
    }

    /// Reads MemAvailable if it is time, and kills the largest process
    /// when it is below the floor.
    pub fn check(&mut self) {
        if self.last.elapsed() < INTERVAL {
            return;
        }
        self.last = Instant::now();
        let available = sys::read_text("/proc/meminfo")
            .ok()
            .and_then(|m| meminfo_kib(&m, "MemAvailable"));
        let low = available.is_some_and(|kib| kib < self.floor_kib);
        // A victim's memory comes back only as its exit unmaps it (slowly,
        // where the guest kernel is emulated): wait for that before
        // choosing another.
        if let Some(since) = self.dying {
            if low && since.elapsed() < DYING_GRACE {
                return;
            }
            self.dying = None;
        }
        if low {
            if let Some((pid, name)) = largest_process() {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.victims.push((pid, name));
                self.dying = Some(Instant::now());
            }
        }
    }

    /// The report for the host, if anything was killed for memory.
    pub fn report(mut self) -> Option<GuestMsg> {
        if let Some(fd) = self.kmsg.take() {
            let mut buf = [0u8; 8192];
            // Each read returns one record; EAGAIN at the end of the log.
            while let Ok(n @ 1..) = read_record(fd, &mut buf) {
                if let Some((pid, name)) = kernel_victim(&String::from_utf8_lossy(&buf[..n])) {
                    // The kernel may have got to one of ours first.
                    if !self.victims.iter().any(|(p, _)| *p == pid) {
                        self.victims.push((pid, name));
                    }
                }
            }
            sys::close(fd);
        }
        // The host takes a bounded report: the count, and the first names.
        (!self.victims.is_empty()).then(|| GuestMsg::OutOfMemory {
            kills: self.victims.len() as u64,
            victims: self
                .victims
                .drain(..)
                .take(MAX_OOM_VICTIMS)
                .map(|(_, name)| shorten(name))
                .collect(),
        })
    }
}

/// `name` cut to [`MAX_VICTIM_NAME`] bytes, on a character boundary.
fn shorten(mut name: String) -> String {
    let mut end = name.len().min(MAX_VICTIM_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// One /dev/kmsg record; EPIPE (records overwritten meanwhile) is skipped.
fn read_record(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sys::read(fd, buf) {
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            other => return other,
        }
    }
}

/// A process's resident pages; 0 when it has none or is gone.
fn resident_pages(pid: libc::pid_t) -> u64 {
    sys::read_small_file(&format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The process with the most resident pages, PID 1 aside, and its name.
fn largest_process() -> Option<(libc::pid_t, String)> {
    let mut best: Option<(u64, libc::pid_t)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let resident = resident_pages(pid);
        if resident > 0 && best.is_none_or(|(r, _)| resident > r) {
            best = Some((resident, pid));
        }
    }
    let (_, pid) = best?;
    let name = sys::read_small_file(&format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| format!("pid {pid}"));
    Some((pid, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_kernel_records() {
        let meminfo = "MemTotal:          53948 kB\nMemFree:  100 kB\nMemAvailable:    2100 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(53948));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(2100));
        assert_eq!(meminfo_kib(meminfo, "Mem"), None);
        assert_eq!(floor_kib(53948), 4096);
        assert_eq!(floor_kib(256 * 1024), 256 * 1024 / 20);
        assert_eq!(
            kernel_victim("3,411,5123,-;Out of memory: Killed process 77 (dd) total-vm:41000kB"),
            Some((77, "dd".into()))
        );
        assert_eq!(
            kernel_victim("3,1,2,-;Memory cgroup out of memory: Killed process 9 (x y) a"),
            Some((9, "x y".into()))
        );
        assert_eq!(
            kernel_victim("6,2,3,-;oom_reaper: reaped process 77 (dd)"),
            None
        );
    }

    #[test]
    fn the_report_is_bounded() {
        let mut w = Watchdog::new();
        if let Some(fd) = w.kmsg.take() {
            sys::close(fd);
        }
        for pid in 0..100 {
            w.victims.push((pid, "é".repeat(MAX_VICTIM_NAME)));
        }
        let Some(GuestMsg::OutOfMemory { kills, victims }) = w.report() else {
            panic!("no report");
        };
        assert_eq!((kills, victims.len()), (100, MAX_OOM_VICTIMS));
        assert!(victims.iter().all(|v| v.len() <= MAX_VICTIM_NAME));
    }

    #[test]
    fn finds_a_process_on_this_host() {
        // Some process other than PID 1 has resident pages: this test's.
        assert!(largest_process().is_some());
    }
}
