//! Warm snapshots (a VM saved with a run's image mounted and its program
//! read): made by the second run of a program in an image, restored by the
//! later ones, which must see what a run from the plain snapshot sees (the
//! host's current /work, their own randomness and clock, nothing an earlier
//! run left), and a damaged or concurrent one must cost nothing but speed.
//!
//! Each test has a cache of its own, seeded with a copy of the shared
//! plain snapshot, so that the warm snapshots it counts are its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{assets, text, tree, wait_output, Project, TIMEOUT};

/// Everything a run shows of its start: random bytes, the clock, /work's
/// file, /tmp, the image's /bin/cat; on both streams, with a status.
const COMMANDS: &str = r##"  probe: !Command
    container: base
    run: |
      head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"; echo
      date +%s
      at=$(od -An -tx8 -w16 -v /proc/$$/auxv | awk '$1 == "0000000000000019" { print $2 }')
      dd if=/proc/$$/mem bs=1 skip=$((0x$at)) count=16 2>/dev/null | od -An -tx1 | tr -d " \n"; echo
      cat /work/note.txt
      ls -A /tmp; echo "tmp listed"
      head -c 4 /bin/cat | tail -c 3; echo
      echo "to stderr" >&2
      touch /tmp/left-behind; sleep 1000 >/dev/null 2>&1 &
      exit 3
  attack: !Command
    container: base
    write-mode: transient-overlay
    run: |
      rm -f /bin/cat; echo "#!/bin/sh" > /bin/cat; echo "echo pwned" >> /bin/cat
      chmod +x /bin/cat; echo x > /tmp/left-behind; sync
"##;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A project with a cache of its own that holds a copy of the shared
/// plain snapshot (made by a run in the shared cache first, if missing).
fn project(commands: &str) -> Option<(Project, tempfile::TempDir)> {
    let a = assets()?;
    let mut p = Project::new(a, commands);
    let out = p.run(&["_run", "base", "true"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let own = tempfile::tempdir().expect("tempdir");
    let plain = own.path().join("snapshots");
    std::fs::create_dir(&plain).expect("mkdir");
    for s in snapshot_files(&p.cache.join("snapshots")) {
        let cp = std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(&s)
            .arg(plain.join(s.file_name().expect("name")))
            .status()
            .expect("cp");
        assert!(cp.success());
    }
    p.cache = own.path().to_path_buf();
    std::fs::write(p.path().join("note.txt"), "first\n").expect("write");
    Some((p, own))
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v.sort();
    v
}

fn warm_files(p: &Project) -> Vec<PathBuf> {
    snapshot_files(&p.cache.join("warm"))
}

/// Runs `args` with CELLA_STATS; the output and how the VM started.
fn run(p: &Project, args: &[&str]) -> (Output, &'static str) {
    let mut cmd = p.cella();
    cmd.env("CELLA_STATS", "1").args(args);
    let out = wait_output(cmd.spawn().expect("spawn"), TIMEOUT);
    let stderr = text(&out.stderr);
    let start = if stderr.contains("s restored warm\n") {
        "warm"
    } else if stderr.contains("s restored\n") {
        "restored"
    } else {
        "booted"
    };
    (out, start)
}

/// A probe's output: (random hex and the shell's AT_RANDOM bytes, guest
/// clock, the rest of stdout, stderr without cella-stats lines).
fn probe(out: &Output) -> (String, u64, String, String) {
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let random = lines.next().expect("random").to_owned();
    assert_eq!(random.len(), 32, "{stdout}");
    let clock = lines.next().expect("date").trim().parse().expect("date");
    let at_random = lines.next().expect("AT_RANDOM").to_owned();
    assert_eq!(at_random.len(), 32, "{stdout}");
    let random = format!("{random} {at_random}");
    let rest: Vec<&str> = lines.collect();
    let stderr: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("cella-stats:"))
        .map(str::to_owned)
        .collect();
    (random, clock, rest.join("\n"), stderr.join("\n"))
}

#[test]
fn warm_runs_match_plain_ones_and_start_fresh() {
    let Some((p, _own)) = project(COMMANDS) else {
        return;
    };
    let project_before = tree(p.path());

    // The first run of `probe` only notes that it was asked for.
    let (first, start) = run(&p, &["probe"]);
    assert_eq!(start, "restored");
    assert!(warm_files(&p).is_empty(), "made on the first run");
    let (r1, _, rest1, err1) = probe(&first);
    assert_eq!(
        rest1, "first\ntmp listed\nELF",
        "the image's /bin/cat, an empty /tmp"
    );
    assert_eq!(err1, "to stderr");

    // The second makes the warm snapshot, before its spec goes out.
    let (second, start) = run(&p, &["probe"]);
    assert_eq!(start, "restored");
    assert!(text(&second.stderr).contains("warm snapshot saved"));
    assert_eq!(warm_files(&p).len(), 1);
    let (r2, _, rest2, err2) = probe(&second);
    assert_eq!(
        (rest2.as_str(), err2.as_str()),
        (rest1.as_str(), err1.as_str())
    );

    // An attacker's runs in between: its writes to the root and /tmp
    // and its processes die with its VM.
    for _ in 0..2 {
        let out = p.run(&["attack"], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    std::fs::write(p.path().join("note.txt"), "changed on the host\n").expect("write");

    // Later runs start warm, with the host's /work of now, their own
    // randomness and clock, and nothing an earlier run left.
    let mut randoms = vec![r1, r2];
    for _ in 0..2 {
        let before = now();
        let (out, start) = run(&p, &["probe"]);
        let after = now();
        assert_eq!(start, "warm", "{}", text(&out.stderr));
        // Held ready in the snapshot: forked and exec'd before this run.
        assert!(
            text(&out.stderr).contains("s workload released\n"),
            "{}",
            text(&out.stderr)
        );
        let (random, clock, rest, err) = probe(&out);
        assert_eq!(rest, "changed on the host\ntmp listed\nELF");
        assert_eq!(err, err1, "the same stderr as a plain run");
        assert!(
            (before - 1..=after + 1).contains(&clock),
            "guest clock {clock}, host {before}..{after}"
        );
        // Neither the kernel's random bytes nor the program's AT_RANDOM
        // are another run's.
        for part in random.split(' ') {
            assert!(
                !randoms.iter().any(|r| r.contains(part)),
                "{part} seen before: {randoms:?}"
            );
        }
        randoms.push(random);
    }
    // The probe's and the attack's, each holding its run ready, and one
    // of `sh` in this image, made by the attack's first run (whose own
    // was only asked for then).
    assert_eq!(warm_files(&p).len(), 3, "one warm snapshot for one run");
    // Turned off, a run starts from the plain snapshot, with the same output.
    let mut cmd = p.cella();
    cmd.env("CELLA_WARM", "0")
        .env("CELLA_STATS", "1")
        .arg("probe");
    let out = wait_output(cmd.spawn().expect("spawn"), TIMEOUT);
    assert!(text(&out.stderr).contains(" s restored\n"));
    let (_, _, rest, err) = probe(&out);
    assert_eq!(
        (rest.as_str(), err.as_str()),
        ("changed on the host\ntmp listed\nELF", "to stderr")
    );
    // The runs wrote nothing to the project but its .cella/ (a project
    // without a cella.lock gets none from runs), and nothing to the cache
    // but snapshots, their locks and markers.
    let written: Vec<_> = tree(p.path())
        .into_iter()
        .filter(|f| !project_before.contains(f) && !f.starts_with(p.path().join(".cella")))
        .collect();
    assert!(written.is_empty(), "written to the project: {written:?}");
    for f in tree(&p.cache) {
        let name = f.strip_prefix(&p.cache).expect("in the cache");
        let kind = f.extension().and_then(|x| x.to_str()).unwrap_or("");
        let dir = name
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str());
        let verified = name.starts_with("warm/verified");
        let expected = f.is_dir() || verified || ["snap", "lock", "seen"].contains(&kind);
        assert!(
            expected && matches!(dir, Some("snapshots" | "warm")),
            "unexpected in the cache: {}",
            name.display()
        );
    }
}

#[test]
fn new_programs_and_images_get_their_own_and_damage_falls_back() {
    let Some((p, _own)) = project("") else { return };
    let ok = |args: &[&str], start: &str| {
        let (out, started) = run(&p, args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(started, start, "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    for start in ["restored", "restored", "warm"] {
        assert_eq!(
            ok(&["_run", "base", "cat", "/work/note.txt"], start),
            "first\n"
        );
    }
    assert_eq!(warm_files(&p).len(), 1);
    // Another program of the same image: a warm snapshot of its own.
    for start in ["restored", "restored", "warm"] {
        ok(&["_run", "base", "ls", "/work"], start);
    }
    assert_eq!(warm_files(&p).len(), 2);
    // The same image rebuilt: the same bytes, the same warm snapshot.
    let out = p.run(&["_build", "--force", "base"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        ok(&["_run", "base", "cat", "/work/note.txt"], "warm"),
        "first\n"
    );
    // Another image: its runs start over.
    let yaml = std::fs::read_to_string(p.path().join("cella.yaml")).expect("read");
    let yaml = yaml.replace(
        "commands:",
        "  other:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    - !Text { /etc/other: other }\ncommands:",
    );
    std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");
    for start in ["restored", "restored", "warm"] {
        assert_eq!(ok(&["_run", "other", "cat", "/etc/other"], start), "other");
    }
    assert_eq!(warm_files(&p).len(), 3);
    // A damaged warm snapshot: one warning, the run goes on from the plain
    // one, and the next run makes a good one again.
    let newest = warm_files(&p)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .expect("newest");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, b"\xff\xfe\xfd", 4096 + 100).expect("patch");
    let (out, start) = run(&p, &["_run", "other", "cat", "/etc/other"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(start, "restored");
    assert_eq!(text(&out.stdout), "other");
    let warnings: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("cella: warning"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("discarding snapshot") && warnings[0].contains("checksum"),
        "{warnings:?}"
    );
    assert!(text(&out.stderr).contains("warm snapshot saved"));
    assert_eq!(ok(&["_run", "other", "cat", "/etc/other"], "warm"), "other");

    // An image file that is not what the project's store says (a forged
    // .cella/): it never starts warm, nor makes a warm snapshot.
    let images = p.path().join(".cella/images");
    for entry in std::fs::read_dir(&images).expect("images").flatten() {
        let erofs = entry.path().join("rootfs.erofs");
        let info = std::fs::read_to_string(entry.path().join("image.json")).unwrap_or_default();
        if info.contains("\"other\"") {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&erofs)
                .expect("open");
            let len = f.metadata().expect("stat").len();
            // The last block: erofs leaves padding there.
            std::os::unix::fs::FileExt::write_all_at(&f, b"forged", len - 16).expect("patch");
        }
    }
    for _ in 0..3 {
        let (out, started) = run(&p, &["_run", "other", "cat", "/etc/other"]);
        assert_eq!(started, "restored", "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("warm snapshot saved"));
    }
    assert_eq!(warm_files(&p).len(), 3);

    // `_cache` reports them; `_clean` drops those of images it removes.
    let out = p.run(&["_cache"], None);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("warm snapshots: ") && listing.contains("in 3 file(s)"),
        "{listing}"
    );
    let out = p.run(&["_clean", "--all"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(warm_files(&p).is_empty(), "{:?}", warm_files(&p));
    let out = p.run(&["_cache", "--drop"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(snapshot_files(&p.cache.join("snapshots")).is_empty());
}

#[test]
fn concurrent_runs_share_and_make_one_warm_snapshot() {
    let Some((p, _own)) = project("") else { return };
    // One command, so one warm snapshot that holds it ready.
    let script = "echo run-$(cat /work/note.txt); exit 3";
    let all = |n: usize| -> Vec<&'static str> {
        let children: Vec<_> = (0..n)
            .map(|_| {
                let mut cmd = p.cella();
                cmd.env("CELLA_STATS", "1")
                    .args(["_run", "base", "sh", "-c", script]);
                cmd.spawn().expect("spawn")
            })
            .collect();
        children
            .into_iter()
            .enumerate()
            .map(|(i, child)| {
                let out = wait_output(child, TIMEOUT);
                let stderr = text(&out.stderr);
                assert_eq!(out.status.code(), Some(3), "run {i}: {stderr}");
                assert_eq!(text(&out.stdout), "run-first\n");
                assert!(!stderr.contains("cella:"), "run {i}: {stderr}");
                if stderr.contains("s restored warm\n") {
                    "warm"
                } else {
                    "restored"
                }
            })
            .collect()
    };
    all(1);
    // Three at once after the first: one makes it, none fails.
    all(3);
    assert_eq!(warm_files(&p).len(), 1);
    let starts = all(3);
    assert_eq!(starts, ["warm"; 3]);
}

/// A `!Supervise` run asked for again is held ready too: both children
/// stopped before their first instruction in their own roots, released
/// with their own random bytes, the host's /work of now and their output
/// and status as in a plain run.
#[test]
fn supervised_runs_are_held_ready_too() {
    let commands = r#"  pair: !Supervise
    mode: wait-all
    children:
      one: !Command
        container: base
        run: |
          echo "one $(cat /work/note.txt) $(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' ')"
      two: !Command
        container: base
        run: |
          at=$(od -An -tx8 -w16 -v /proc/$$/auxv | awk '$1 == "0000000000000019" { print $2 }')
          echo "two $(dd if=/proc/$$/mem bs=1 skip=$((0x$at)) count=16 2>/dev/null | od -An -tx1 | tr -d ' \n')"
          exit 4
"#;
    let Some((p, _own)) = project(commands) else {
        return;
    };
    let mut seen: Vec<String> = Vec::new();
    for (i, want) in ["restored", "restored", "warm", "warm"].iter().enumerate() {
        if i == 3 {
            std::fs::write(p.path().join("note.txt"), "later\n").expect("write");
        }
        let (out, start) = run(&p, &["pair"]);
        let stderr = text(&out.stderr);
        assert_eq!(start, *want, "run {i}: {stderr}");
        assert_eq!(out.status.code(), Some(4), "run {i}: {stderr}");
        let note = if i == 3 { "later" } else { "first" };
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 2, "run {i}: {stdout}");
        assert!(
            stdout.contains(&format!("one {note} ")) && stdout.contains("two "),
            "run {i}: {stdout}"
        );
        if *want == "warm" {
            assert!(
                stderr.contains("s children released\n"),
                "run {i}: {stderr}"
            );
        }
        // Each child's random bytes and AT_RANDOM are its own, run after run.
        for line in text(&out.stdout).lines() {
            let random = line.rsplit(' ').next().expect("random").to_owned();
            assert!(random.len() >= 16, "{line}");
            assert!(!seen.contains(&random), "{random} seen before: {seen:?}");
            seen.push(random);
        }
    }
    assert_eq!(warm_files(&p).len(), 1, "{:?}", warm_files(&p));
}

/// An attacker's way around the guest's checks: a program path that is
/// not under /work as a string, but leads there (`/proc/self/cwd` is the
/// run's /work). The host's FUSE server sees the guest look beneath the
/// share while it readies the run: the snapshot is not saved, the spec is
/// marked so that no later run tries again, and every run runs the
/// script /work holds then.
#[test]
fn a_run_that_reads_work_before_it_starts_is_never_held_ready() {
    let commands = "  linked: !Command\n    container: base\n    run: [/proc/self/cwd/tool.sh]\n";
    let Some((p, _own)) = project(commands) else {
        return;
    };
    let tool = p.path().join("tool.sh");
    let write_tool = |word: &str| {
        std::fs::write(
            &tool,
            format!("#!/bin/sh\necho {word} $(cat /work/note.txt)\n"),
        )
        .expect("write");
        let mut perm = std::fs::metadata(&tool).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&tool, perm).expect("chmod");
    };
    let unfit = || {
        std::fs::read_dir(p.cache.join("warm"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "unfit"))
                    .count()
            })
            .unwrap_or(0)
    };
    for (i, (word, want)) in [
        ("one", "restored"),
        ("two", "restored"),
        ("three", "restored"),
        ("four", "warm"),
    ]
    .into_iter()
    .enumerate()
    {
        write_tool(word);
        let (out, start) = run(&p, &["linked"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {i}: {stderr}");
        assert_eq!(text(&out.stdout), format!("{word} first\n"), "run {i}");
        assert_eq!(start, want, "run {i}: {stderr}");
        // Only the run that readied it (and was caught) released its
        // program; no later run starts from such a snapshot.
        assert_eq!(
            stderr.contains("workload released"),
            i == 1,
            "run {i}: {stderr}"
        );
        match i {
            // Readied, caught, not saved.
            1 => {
                assert!(!stderr.contains("warm snapshot saved"), "{stderr}");
                assert_eq!(unfit(), 1);
            }
            // The image's warm snapshot of the program instead.
            2 => assert!(stderr.contains("warm snapshot saved"), "{stderr}"),
            _ => {}
        }
    }
    assert_eq!(warm_files(&p).len(), 1, "{:?}", warm_files(&p));
}
