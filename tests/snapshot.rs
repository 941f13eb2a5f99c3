//! The snapshot path on its own: fresh clock and randomness per restored
//! run, a corrupt snapshot falling back to a cold boot, and many runs
//! restored from one snapshot at once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{assets, text, wait_output, Project, TIMEOUT};

const COMMANDS: &str = r#"  fresh: !Command
    container: base
    run: [sh, -c, 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"; echo; date +%s']
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v
}

/// Makes sure the project's snapshot cache has the snapshot (this run may
/// create it).
fn warm(p: &Project) {
    let out = p.run(&["_run", "base", "true"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Runs `fresh` restored: its random hex, the guest's clock and the host
/// clock before and after.
fn fresh(p: &Project) -> (String, u64, u64, u64) {
    let before = now();
    let mut cmd = p.cella();
    // The plain snapshot's path: not a warm snapshot that holds the run.
    cmd.env("CELLA_STATS", "1")
        .env("CELLA_WARM", "0")
        .arg("fresh");
    let out = wait_output(cmd.spawn().expect("spawn"), TIMEOUT);
    let after = now();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("restored=true"), "not restored: {stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // guest-init's own phases, in the order they happen.
    let phases: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("cella-stats: guest +"))
        .filter_map(|l| l.split_once(" s ").map(|(_, name)| name))
        .collect();
    assert_eq!(
        phases,
        [
            "clock and entropy set",
            "shares mounted",
            "root switched",
            "volumes mounted",
            "workload spawned",
            "workload reaped"
        ],
        "{stderr}"
    );
    let mut lines = stdout.lines();
    let random = lines.next().expect("random line").to_string();
    assert_eq!(random.len(), 32, "16 random bytes in hex: {stdout}");
    let clock = lines
        .next()
        .expect("date line")
        .trim()
        .parse()
        .expect("date");
    (random, clock, before, after)
}

#[test]
fn restored_runs_get_fresh_randomness_and_the_current_clock() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, COMMANDS);
    warm(&p);

    let (r1, c1, b1, a1) = fresh(&p);
    let (r2, c2, b2, a2) = fresh(&p);
    assert_ne!(r1, r2, "two runs from one snapshot share a random seed");
    // The snapshot was taken earlier: a stale clock would lag behind.
    assert!(
        (b1 - 1..=a1 + 1).contains(&c1),
        "guest clock {c1}, host {b1}..{a1}"
    );
    assert!(
        (b2 - 1..=a2 + 1).contains(&c2),
        "guest clock {c2}, host {b2}..{a2}"
    );
}

#[test]
fn corrupt_snapshot_falls_back_to_a_cold_boot_with_a_warning() {
    let Some(a) = assets() else { return };
    let mut p = Project::new(a, COMMANDS);
    // Give this test a copy of the shared snapshot.
    warm(&p);
    let shared = snapshots(&p.cache);
    assert!(!shared.is_empty(), "no snapshot in {}", p.cache.display());
    let own = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(own.path().join("snapshots")).expect("mkdir");
    for s in &shared {
        let copy = own
            .path()
            .join("snapshots")
            .join(s.file_name().expect("name"));
        let cp = std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(s)
            .arg(&copy)
            .status()
            .expect("cp");
        assert!(cp.success());
        // Flip bytes in the saved state (it starts at the second page).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, b"\xff\xfe\xfd", 4096 + 100).expect("patch");
    }
    p.cache = own.path().to_path_buf();

    let out = p.run(&["_run", "base", "sh", "-c", "echo booted; exit 7"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}");
    assert_eq!(text(&out.stdout), "booted\n");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning line: {stderr}");
    assert!(
        warnings[0].starts_with("cella: warning: discarding snapshot")
            && warnings[0].contains("checksum"),
        "{stderr}"
    );
    // The cold boot made a good snapshot in its place.
    let (random, ..) = fresh(&p);
    assert_eq!(random.len(), 32);
}

#[test]
fn twenty_concurrent_runs_restore_from_one_snapshot() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, COMMANDS);
    warm(&p);
    let children: Vec<_> = (0..20)
        .map(|i| {
            let mut cmd = p.cella();
            cmd.args(["_run", "base", "sh", "-c", "echo run-$0; exit $(($0 % 4))"])
                .arg(i.to_string());
            cmd.spawn().expect("spawn")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = wait_output(child, TIMEOUT);
        assert_eq!(
            out.status.code(),
            Some(i as i32 % 4),
            "run {i}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
        assert!(
            text(&out.stderr).is_empty(),
            "run {i}: {}",
            text(&out.stderr)
        );
    }
}

/// The run that makes the snapshot has its stdin at EOF from the start
/// (/dev/null); the snapshot must not keep that: a later restored run
/// still reads its own stdin.
#[test]
fn a_template_made_without_stdin_leaves_later_runs_their_stdin() {
    let Some(a) = assets() else { return };
    let mut p = Project::new(a, COMMANDS);
    let own = tempfile::tempdir().expect("tempdir");
    p.cache = own.path().to_path_buf();
    let out = p.run(&["_run", "base", "true"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        snapshots(own.path()).len(),
        1,
        "the first run made no snapshot"
    );
    let out = p.run(&["_run", "base", "cat"], Some(b"piped in\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "piped in\n", "{}", text(&out.stderr));
}
