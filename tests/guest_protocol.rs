//! A hostile guest against cella's host end, as an attacker would write
//! it: a root workload (tests/programs/guest_attack.rs, built here) takes
//! guest-init's control port with pidfd_getfd and forges reports carrying
//! terminal escapes, floods the port, or floods its output; a build step
//! sends more changes than an image may have. cella must stay in charge:
//! end the run with a clear error or contain the attack, act on
//! `--timeout` and SIGTERM at once, and print no raw control character
//! that came from the guest.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{assets, text, wait_output, Project, TIMEOUT};

/// The attack program, compiled once per test run: static, so it runs in
/// the busybox image.
fn attack() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let out = dir.join("guest_attack");
            let tmp = dir.join(format!("guest_attack.{}", std::process::id()));
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/guest_attack.rs");
            let status = Command::new("rustc")
                .args(["-O", "-C", "target-feature=+crt-static"])
                .args([
                    "-C",
                    "strip=symbols",
                    "-C",
                    "panic=abort",
                    "--edition",
                    "2021",
                ])
                .arg("-o")
                .arg(&tmp)
                .arg(&src)
                .status()
                .expect("run rustc");
            assert!(status.success(), "cannot build {}", src.display());
            std::fs::rename(&tmp, &out).expect("rename");
            out
        })
        .clone()
}

/// A project with the attack program at /work/attack.
fn project(commands: &str) -> Option<Project> {
    let p = Project::new(assets()?, commands);
    std::fs::copy(attack(), p.path().join("attack")).expect("copy the attack");
    Some(p)
}

/// No raw escape or bell, the bytes that retitle, recolour or rewrite a
/// terminal, in what cella printed as its own.
fn assert_no_raw_controls(stderr: &[u8]) {
    for b in [0x1b, 0x07] {
        assert!(
            !stderr.contains(&b),
            "raw {b:#04x} from the guest on cella's stderr:\n{}",
            text(stderr)
        );
    }
}

const GROUP: &str = r#"  group: !Supervise
    children:
      db: !Command
        container: base
        run: 'sleep 600'
      attacker: !Command
        container: base
        run: [/work/attack, forge]
"#;

/// A child of a supervised run forges guest-init's reports: one for a
/// sibling and an out-of-memory report, which cella takes and shows
/// escaped; then one for a child that does not exist, which ends the run.
#[test]
fn forged_reports_are_shown_escaped_and_a_foreign_one_ends_the_run() {
    let Some(p) = project(GROUP) else { return };
    let out = p.run(&["group"], None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    for want in [
        r"cella: db: \e]0;owned\x07\e[2K\rcella: all tests passed (status 0)",
        r"cella: the guest ran out of memory: killed \e]0;pwned\x07, \e[31mred, 1 more to free",
        r#"error: the guest broke the protocol: ChildEnded for "\e]0;ghost\x07", which is not a child of this run"#,
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
    assert_no_raw_controls(&out.stderr);
}

/// A running cella whose output is read as it comes: the first 64 KiB
/// and the last 64 KiB of each stream are kept (a flood is megabytes),
/// with the moment each of some markers first appeared on either.
struct Watched {
    child: std::process::Child,
    seen: Arc<Mutex<Vec<Option<Instant>>>>,
    readers: [std::thread::JoinHandle<Stream>; 2],
}

#[derive(Default)]
struct Stream {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: usize,
}

const KEEP: usize = 64 << 10;

fn watch(mut cmd: Command, markers: &'static [&'static [u8]]) -> Watched {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cella");
    let seen = Arc::new(Mutex::new(vec![None; markers.len()]));
    let read = |mut r: Box<dyn Read + Send>, seen: Arc<Mutex<Vec<Option<Instant>>>>| {
        std::thread::spawn(move || {
            let mut s = Stream::default();
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                s.total += n;
                let room = KEEP.saturating_sub(s.head.len());
                s.head.extend_from_slice(&buf[..n.min(room)]);
                s.tail.extend_from_slice(&buf[..n]);
                if s.tail.len() > 2 * KEEP {
                    s.tail.drain(..s.tail.len() - KEEP);
                }
                let mut seen = seen.lock().expect("lock");
                for (i, marker) in markers.iter().enumerate() {
                    if seen[i].is_none() && s.head.windows(marker.len()).any(|w| w == *marker) {
                        seen[i] = Some(Instant::now());
                    }
                }
            }
            s
        })
    };
    let out = Box::new(child.stdout.take().expect("stdout"));
    let err = Box::new(child.stderr.take().expect("stderr"));
    let readers = [read(out, seen.clone()), read(err, seen.clone())];
    Watched {
        child,
        seen,
        readers,
    }
}

impl Watched {
    /// When marker `i` appeared, if it has.
    fn seen(&self, i: usize) -> Option<Instant> {
        self.seen.lock().expect("lock")[i]
    }

    /// Waits for marker `i`; fails the test, with what cella said, if
    /// cella ends first.
    fn wait_for(mut self, i: usize) -> (Self, Instant) {
        let start = Instant::now();
        loop {
            if let Some(at) = self.seen(i) {
                return (self, at);
            }
            let exited = self.child.try_wait().expect("wait").is_some();
            if exited || start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                let (code, _, out, err) = self.finish();
                panic!(
                    "marker {i} never came; cella: {code:?}\nstdout: {}\nstderr: {}",
                    text(&out.head),
                    text(&err.tail)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for cella (bounded); its exit code, when it exited, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, Instant, Stream, Stream) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!("cella did not finish within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let ended = Instant::now();
        let [out, err] = self.readers.map(|r| r.join().expect("reader"));
        (status.code(), ended, out, err)
    }
}

/// A flood of final messages with an impossible status: the first one
/// ends the run, whatever follows it.
#[test]
fn a_control_flood_of_bad_statuses_ends_the_run_at_once() {
    let Some(p) = project("") else { return };
    let line = r#"{"Exited":{"code":999}}"#;
    let mut cmd = p.cella();
    cmd.args([
        "--timeout",
        "60",
        "_run",
        "base",
        "/work/attack",
        "flood-control",
        line,
    ]);
    let (run, attacked) = watch(cmd, &[b"attack: PID 1 fd"]).wait_for(0);
    let (code, ended, _, err) = run.finish();
    let shown = text(&err.tail);
    assert_eq!(code, Some(125), "{shown}");
    assert!(
        shown.contains("error: the guest broke the protocol: exit status 999, not in 0..=255"),
        "{shown}"
    );
    let secs = (ended - attacked).as_secs_f64();
    eprintln!("cella ended the run {secs:.2} s after the attack began");
    assert!(secs < 5.0, "cella took {secs} s to end the run");
    assert_no_raw_controls(&err.tail);
}

/// The workload floods stdout and stderr from two threads, ignoring
/// SIGTERM, SIGINT and SIGQUIT: `--timeout` still stops it on time,
/// and so do three SIGTERMs (as three Ctrl-C). One after the other, so
/// that the two floods do not compete for the CPU.
#[test]
fn timeout_and_sigterm_act_under_an_output_flood() {
    let Some(p) = project("") else { return };

    // CELLA_STATS marks the moment the run spec goes out, when the
    // timer starts. 15 s: on a loaded 2-core host the flood may take
    // several seconds to begin.
    let mut cmd = p.cella();
    cmd.env("CELLA_STATS", "1");
    cmd.args([
        "--timeout",
        "15",
        "_run",
        "base",
        "/work/attack",
        "flood-output",
    ]);
    let (run, sent) = watch(cmd, &[b"run spec sent", b"attack: flooding"]).wait_for(0);
    let seen = run.seen.clone();
    let (code, ended, out, err) = run.finish();
    let flooding = seen.lock().expect("lock")[1];
    let shown = text(&err.tail);
    assert_eq!(code, Some(124), "{shown}");
    assert!(shown.contains("(--timeout); stopping the VM"), "{shown}");
    let flooding = flooding.expect("the flood had not begun when the timeout came");
    let secs = (ended - sent).as_secs_f64();
    eprintln!(
        "cella ended {secs:.2} s after the run spec went out, {:.2} s into the flood, with {} + {} bytes of it passed on",
        (ended - flooding).as_secs_f64(),
        out.total,
        err.total
    );
    assert!(secs < 16.0, "cella ended {secs} s after --timeout 15 began");

    let mut cmd = p.cella();
    cmd.args(["_run", "base", "/work/attack", "flood-output"]);
    let (run, _) = watch(cmd, &[b"attack: flooding"]).wait_for(0);
    // A few seconds of flood first.
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    for _ in 0..3 {
        // SAFETY: kill has no memory effects; the pid is our child's.
        unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, ended, out, err) = run.finish();
    let shown = text(&err.tail);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{shown}");
    assert!(
        shown.contains("cella: stopping the VM (3 stop signals)"),
        "{shown}"
    );
    let secs = (ended - signalled).as_secs_f64();
    eprintln!("cella stopped {secs:.2} s after the first of three SIGTERMs");
    assert!(
        secs < 3.0,
        "cella took {secs} s to stop after the first SIGTERM"
    );
    assert!(out.total > 64 << 10, "only {} bytes of flood", out.total);
}

/// A build step whose changes are larger than `limits.image` (the user's
/// settings): the build fails with a clear error, and the export file in
/// .cella/tmp never grew past the limit.
#[test]
fn a_build_export_past_the_image_limit_fails() {
    let Some(p) = project("") else { return };
    let yaml = std::fs::read_to_string(p.path().join("cella.yaml")).expect("read");
    let yaml = yaml.replace(
        "commands:\n",
        "  big:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    - !Sh \"dd if=/dev/zero of=/big bs=1M count=5\"\ncommands:\n",
    );
    std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");
    let settings = tempfile::tempdir().expect("tempdir");
    let file = settings.path().join("settings.yaml");
    std::fs::write(&file, "limits:\n  image: 4Mi\n").expect("settings");
    // Watch the export file while the build runs.
    let tmp = p.path().join(".cella/tmp");
    let (stop, stopped) = mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || {
        let mut largest = 0;
        while stopped.try_recv().is_err() {
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let len = entry.metadata().map_or(0, |m| m.len());
                largest = largest.max(len);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        largest
    });
    let child = p
        .cella()
        .env("CELLA_SETTINGS", &file)
        .args(["_build", "big"])
        .spawn()
        .expect("spawn cella");
    let out = wait_output(child, TIMEOUT);
    let _ = stop.send(());
    let largest = watcher.join().expect("watcher");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("the build VM sent more than 4Mi (limits.image in "),
        "{err}"
    );
    assert!(largest <= 4 << 20, "an export file of {largest} bytes");
}
