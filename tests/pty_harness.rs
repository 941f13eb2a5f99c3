//! The pty harness of tests/common on its own, against ordinary host
//! programs (sh, stty): sizes, resizes, typing, exit, the terminal's mode
//! after exit, and the diagnostics of a failed expectation. Boots no VM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pty::Pty;

const T: Duration = Duration::from_secs(10);

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

#[test]
fn size_typing_and_exit() {
    let mut p = Pty::spawn(
        sh("stty size; tty >/dev/null && echo has-tty; read x; echo got:$x; exit 7"),
        24,
        80,
    );
    p.expect("24 80", T).unwrap();
    p.expect("has-tty", T).unwrap();
    p.send(b"hello\n");
    // The terminal echoes the line, then the program answers.
    let seen = p.expect("got:hello", T).unwrap();
    assert!(seen.contains("hello\r\n"), "no echo in {seen:?}");
    let status = p.wait(T).expect("sh exits");
    assert_eq!(status.code(), Some(7), "output:\n{}", p.output());
}

#[test]
fn resize_signals_the_foreground_group() {
    // sleep runs in the foreground group too and ignores SIGWINCH; sh runs
    // the trap once it returns.
    let mut p = Pty::spawn(
        sh("trap 'stty size; exit 0' WINCH; stty size; echo ready; while :; do sleep 0.05; done"),
        24,
        80,
    );
    p.expect("24 80", T).unwrap();
    p.expect("ready", T).unwrap();
    p.resize(30, 100);
    p.expect("30 100", T).unwrap();
    assert!(p.wait(T).expect("sh exits").success());
    // A second program on another pty sees its own size.
    let mut q = Pty::spawn(sh("stty size"), 50, 132);
    q.expect("50 132", T).unwrap();
    assert!(q.wait(T).expect("sh exits").success());
}

#[test]
fn terminal_mode_is_visible_during_and_after_the_run() {
    let canon = libc::ICANON | libc::ECHO;
    let mut p = Pty::spawn(
        sh("read go; s=$(stty -g); stty raw -echo; echo raw; read x; stty \"$s\"; echo restored:$x"),
        24,
        80,
    );
    assert_eq!(p.slave_termios_lflag() & canon, canon, "starts cooked");
    p.send(b"go\n");
    p.expect("raw", T).unwrap();
    assert_eq!(p.slave_termios_lflag() & canon, 0, "raw while running");
    // Raw mode: no echo, and no CR-to-NL translation, so end with \n.
    p.send(b"abc\n");
    let seen = p.expect("restored:abc", T).unwrap();
    assert!(!seen.contains("abc\r\n"), "echoed in raw mode: {seen:?}");
    assert!(p.wait(T).expect("sh exits").success());
    assert_eq!(p.slave_termios_lflag() & canon, canon, "restored");

    // And a program that leaves the terminal raw is caught after it exits.
    let mut q = Pty::spawn(sh("stty -icanon -echo; echo left-raw"), 24, 80);
    q.expect("left-raw", T).unwrap();
    assert!(q.wait(T).expect("sh exits").success());
    assert_eq!(q.slave_termios_lflag() & canon, 0);
}

#[test]
fn failures_report_the_output_seen() {
    // Output that ends without the needle fails at once, not at the timeout.
    let mut p = Pty::spawn(sh("echo some-output"), 24, 80);
    let start = Instant::now();
    let err = p
        .expect("never-printed", Duration::from_secs(30))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(20), "{err}");
    assert!(err.contains("some-output"), "{err}");
    assert!(p.wait(T).expect("sh exits").success());

    // A needle that never comes from a live program times out.
    let mut q = Pty::spawn(sh("echo waiting; sleep 30"), 24, 80);
    let err = q
        .expect("never-printed", Duration::from_millis(500))
        .unwrap_err();
    assert!(
        err.contains("timed out") && err.contains("waiting"),
        "{err}"
    );
    // And wait gives up, killing it.
    let start = Instant::now();
    assert!(q.wait(Duration::from_millis(300)).is_none());
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn lots_of_output_never_blocks_the_child() {
    // Far more than a pty buffers, and nothing expected: wait drains it.
    let mut p = Pty::spawn(sh("yes line | head -n 100000; echo end-of-it"), 24, 80);
    assert!(p.wait(T).expect("sh exits").success());
    assert!(p.output().ends_with("end-of-it\r\n"), "tail: {:?}", {
        let o = p.output();
        o[o.len().saturating_sub(100)..].to_string()
    });
    // Output kept after expect consumed part of it.
    let mut q = Pty::spawn(sh("echo one; echo two"), 24, 80);
    assert_eq!(q.expect("one", T).unwrap(), "one");
    q.expect("two", T).unwrap();
    assert!(q.wait(T).expect("sh exits").success());
}
