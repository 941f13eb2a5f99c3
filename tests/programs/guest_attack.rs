//! A hostile workload for tests/guest_protocol.rs: run as root in the
//! guest, it takes guest-init's (PID 1's) control-port fd with
//! pidfd_open + pidfd_getfd and speaks the host protocol itself, or floods
//! the host with output. Built by the test with `rustc -O -C
//! target-feature=+crt-static`, so it needs no crate and no libc in the image.
//!
//! Modes (the first argument):
//! - `forge`: as a child of a `!Supervise` group with a child "db":
//!   ChildEnded reports for "db" and for a child that does not exist and
//!   an OutOfMemory report, all carrying terminal escape sequences;
//! - `flood-control LINE`: LINE (JSON, without the newline) from several
//!   threads, as fast as the port takes it, forever;
//! - `flood-output`: stdout and stderr as fast as they go, forever;
//! SIGTERM, SIGINT and SIGQUIT are ignored in every mode.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

extern "C" {
    fn syscall(number: i64, ...) -> i64;
    fn signal(signum: i32, handler: usize) -> usize;
}

const SYS_PIDFD_OPEN: i64 = 434;
const SYS_PIDFD_GETFD: i64 = 438;
const SIG_IGN: usize = 1;

/// PID 1's control port (the port with id 0: `/dev/vportNp0`), as our own fd.
fn control_port() -> File {
    let mut target = None;
    for entry in std::fs::read_dir("/proc/1/fd").expect("/proc/1/fd") {
        let entry = entry.expect("entry");
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if link.contains("vport") && link.ends_with("p0") {
            target = entry.file_name().to_str().and_then(|s| s.parse::<i64>().ok());
            eprintln!("attack: PID 1 fd {target:?} is {link}");
        }
    }
    let fd = target.expect("PID 1 holds no control port");
    // SAFETY: plain system calls with integer arguments.
    let pidfd = unsafe { syscall(SYS_PIDFD_OPEN, 1i64, 0i64) };
    assert!(pidfd >= 0, "pidfd_open failed");
    // SAFETY: as above.
    let ours = unsafe { syscall(SYS_PIDFD_GETFD, pidfd, fd, 0i64) };
    assert!(ours >= 0, "pidfd_getfd failed");
    // SAFETY: pidfd_getfd returned a new fd that nothing else owns.
    unsafe { File::from_raw_fd(ours as i32) }
}

fn flood(mut w: File, chunk: Vec<u8>) -> ! {
    loop {
        let _ = w.write_all(&chunk);
    }
}

fn main() {
    for sig in [2, 3, 15] {
        // SAFETY: ignoring a signal has no memory effects.
        unsafe { signal(sig, SIG_IGN) };
    }
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("forge") => {
            // Run as a child of a `!Supervise` group named "db" and
            // "attacker": the group has started by the time this runs.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let mut port = control_port();
            let lines = [
                // Accepted once (db is a child that has not ended): shown escaped.
                r#"{"ChildEnded":{"name":"db","status":0,"stopped":false,"message":"\u001b]0;owned\u0007\u001b[2K\rcella: all tests passed"}}"#,
                // Accepted once, while the workload runs: shown escaped.
                r#"{"OutOfMemory":{"kills":3,"victims":["\u001b]0;pwned\u0007","\u001b[31mred"]}}"#,
                // Not a child of this run: the run ends.
                r#"{"ChildEnded":{"name":"\u001b]0;ghost\u0007","status":0,"stopped":false,"message":null}}"#,
            ];
            for line in lines {
                port.write_all(format!("{line}\n").as_bytes()).expect("write");
            }
            println!("attack: forged");
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        Some("flood-control") => {
            let line = format!("{}\n", args.get(2).expect("LINE"));
            let chunk = line.repeat((32 << 10) / line.len()).into_bytes();
            let port = control_port();
            for _ in 0..3 {
                let w = port.try_clone().expect("dup");
                let chunk = chunk.clone();
                std::thread::spawn(move || flood(w, chunk));
            }
            println!("attack: flooding the control port");
            flood(port, chunk);
        }
        Some("flood-output") => {
            println!("attack: flooding stdout and stderr");
            let line = b"flood flood flood flood flood flood flood flood flood flood\n";
            let chunk = line.repeat((32 << 10) / line.len());
            // SAFETY: fds 1 and 2 are open for the workload; each File
            // owns a dup, so closing it leaves the original alone.
            let (out, err) = unsafe {
                (
                    File::from_raw_fd(syscall(32, 1i64) as i32),
                    File::from_raw_fd(syscall(32, 2i64) as i32),
                )
            };
            let c = chunk.clone();
            std::thread::spawn(move || flood(err, c));
            flood(out, chunk);
        }
        _ => {
            eprintln!("usage: attack forge | flood-control LINE | flood-output");
            std::process::exit(2);
        }
    }
}
