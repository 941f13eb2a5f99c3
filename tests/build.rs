//! Containers built from setup steps: each step checked inside a booted
//! guest, versioning (what rebuilds and what doesn't), the store's
//! atomicity under kill -9 and concurrent builds, byte-identical rebuilds,
//! and the errors of a failing step. Builds that run programs boot build
//! VMs restored from the shared snapshot cache, so boots stay few.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{assets, text, wait_output, Assets, Project, TIMEOUT};

/// A project with the test rootfs at ./rootfs.tar and `yaml` as cella.yaml.
fn project(assets: Assets, yaml: &str) -> Project {
    let p = Project::new(assets, "");
    fs::write(p.path().join("cella.yaml"), yaml).expect("write cella.yaml");
    p
}

fn ok(p: &Project, args: &[&str]) -> (String, String) {
    let out = p.run(args, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "cella {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

fn version(p: &Project, name: &str) -> String {
    let (stdout, _) = ok(p, &["_version_hash", name]);
    let id = stdout.trim().to_owned();
    assert_eq!(id.len(), 64, "{stdout}");
    id
}

fn images(p: &Project) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p.path().join(".cella/images"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const FULL: &str = r#"containers:
  full:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Env { GREETING: hello from env }
    - !Sh |
        echo "$GREETING" > /etc/greeting
        chmod 0640 /etc/greeting
        chown 12:34 /etc/greeting
        ln -s /etc/greeting /etc/greeting.link
        ln /etc/greeting /etc/greeting.hard
        mknod /etc/null c 1 3
        rm /bin/vi
        mkdir -p /opt/tree/sub && echo deep > /opt/tree/sub/file
        echo "epoch=$SOURCE_DATE_EPOCH"
        echo to-stderr >&2
        cat /work/dep.txt > /from-work
        pwd > /build-cwd
        echo by-build > /work/by-build.txt
        ls -a /work | grep -c '^\.cella$' > /sees-state || true
    - !Cmd [sh, -c, "echo cmd > /cmd.out"]
    - !Text { /etc/motd: "hi from text\n" }
    - !Copy { source: files, path: /srv }
    - !Copy { source: files, path: /only-sh, include-regex: '\.sh$', umask: 0o077 }
    - !EnsureDir /var/lib/made/here
    - !Remove /opt/tree
    - !Depends dep.txt
  child:
    setup:
    - !Container full
    - !Sh "echo child >> /etc/greeting"
  extract:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Build { container: full, source: /srv, path: /from-full }
"#;

fn write_inputs(dir: &Path) {
    fs::create_dir_all(dir.join("files/sub")).expect("mkdir");
    fs::write(dir.join("files/run.sh"), "#!/bin/sh\necho run\n").expect("write");
    fs::write(dir.join("files/sub/data.txt"), "data\n").expect("write");
    fs::write(dir.join("dep.txt"), "v1\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("files/run.sh"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
}

#[test]
fn every_step_lands_in_the_image() {
    let Some(a) = assets() else { return };
    let p = project(a, FULL);
    write_inputs(p.path());

    let (stdout, stderr) = ok(&p, &["_build", "full"]);
    // stdout is the command's alone: the steps' own stdout goes to stderr.
    assert_eq!(stdout, "", "{stderr}");
    assert!(stderr.lines().any(|l| l == "epoch=0"), "{stderr}");
    // One line per step, the programs' output live and in order.
    for line in [
        "cella: building container full",
        "cella: full [1/10] !Tar ./rootfs.tar",
        "cella: full [3/10] !Sh echo \"$GREETING\" > /etc/greeting …",
        "cella: full [4/10] !Cmd sh -c echo cmd > /cmd.out",
        "cella: full [7/10] !Copy files to /only-sh",
        "cella: built full in",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    let banner = stderr.find("[3/10] !Sh").expect("banner");
    let output = stderr.find("epoch=0").expect("step output");
    let next = stderr.find("[4/10] !Cmd").expect("next banner");
    assert!(banner < output && output < next, "{stderr}");
    assert!(stderr.contains("to-stderr"), "{stderr}");

    let script = r#"
        cd /
        stat -c '%n %a %u:%g %F' etc/greeting etc/greeting.link etc/null srv srv/run.sh srv/sub/data.txt only-sh/run.sh var/lib/made/here etc/motd
        stat -c '%h %Y' etc/greeting
        cat etc/greeting etc/greeting.hard cmd.out etc/motd srv/sub/data.txt
        readlink etc/greeting.link
        ls only-sh
        test -e bin/vi || echo vi-removed
        test -e opt/tree || echo tree-removed
        test -e only-sh/sub/data.txt || echo data-not-included
        cat from-work build-cwd sees-state
        ls -A work
    "#;
    let (stdout, _) = ok(&p, &["_run", "full", "sh", "-c", script]);
    let expected = "\
etc/greeting 640 12:34 regular file
etc/greeting.link 777 0:0 symbolic link
etc/null 644 0:0 character special file
srv 775 0:0 directory
srv/run.sh 775 0:0 regular file
srv/sub/data.txt 664 0:0 regular file
only-sh/run.sh 700 0:0 regular file
var/lib/made/here 755 0:0 directory
etc/motd 644 0:0 regular file
2 0
hello from env
hello from env
cmd
hi from text
data
/etc/greeting
run.sh
vi-removed
tree-removed
data-not-included
v1
/work
0
";
    // The build saw the project at /work, as vagga's builds do, and ran
    // there; not .cella/; what it wrote there is in the project.
    assert!(stdout.starts_with(expected), "{stdout}");
    let listed: Vec<&str> = stdout[expected.len()..].lines().collect();
    assert!(listed.contains(&"by-build.txt"), "{stdout}");
    assert!(!listed.contains(&".cella"), "{stdout}");
    assert_eq!(
        fs::read_to_string(p.path().join("by-build.txt")).expect("by-build"),
        "by-build\n"
    );

    // Built on another image, and a path copied out of one.
    let (stdout, _) = ok(&p, &["_run", "child", "cat", "/etc/greeting"]);
    assert_eq!(stdout, "hello from env\nchild\n");
    let (stdout, _) = ok(&p, &["_run", "extract", "cat", "/from-full/sub/data.txt"]);
    assert_eq!(stdout, "data\n");

    // A cache hit builds nothing.
    let (_, stderr) = ok(&p, &["_build", "child"]);
    assert!(!stderr.contains("building"), "{stderr}");
}

#[test]
fn versions_follow_steps_inputs_and_parents() {
    let Some(a) = assets() else { return };
    let yaml = r#"containers:
  base:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Text { /etc/x: "1" }
    - !Copy { source: files, path: /srv }
    - !Depends dep.txt
  child:
    setup:
    - !Container base
    - !EnsureDir /y
"#;
    let p = project(a, yaml);
    write_inputs(p.path());
    let base = version(&p, "base");
    let child = version(&p, "child");
    assert_eq!(version(&p, "base"), base, "stable");
    assert_ne!(base, child);

    // mtime alone changes nothing.
    let now = fs::File::options()
        .append(true)
        .open(p.path().join("dep.txt"))
        .expect("open");
    now.set_modified(SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    assert_eq!(version(&p, "base"), base, "touch");

    type Change<'a> = (&'a str, &'a dyn Fn(&Path));
    let changes: [Change; 3] = [
        ("!Depends file", &|d| {
            fs::write(d.join("dep.txt"), "v2\n").expect("w")
        }),
        ("!Copy file", &|d| {
            fs::write(d.join("files/sub/data.txt"), "x\n").expect("w")
        }),
        ("step", &|d| {
            let y = fs::read_to_string(d.join("cella.yaml")).expect("r");
            fs::write(d.join("cella.yaml"), y.replace("\"1\"", "\"2\"")).expect("w")
        }),
    ];
    let mut seen = vec![base.clone()];
    let mut seen_child = vec![child];
    for (what, change) in changes {
        change(p.path());
        let (b, c) = (version(&p, "base"), version(&p, "child"));
        assert!(!seen.contains(&b), "{what} did not change base's id");
        assert!(
            !seen_child.contains(&c),
            "{what} in the parent did not change child's id"
        );
        seen.push(b);
        seen_child.push(c);
    }

    // Host-only steps build without a VM; a second build reuses the image.
    let (_, stderr) = ok(&p, &["_build", "child"]);
    assert!(
        stderr.contains("building container base") && stderr.contains("building container child"),
        "{stderr}"
    );
    let (_, stderr) = ok(&p, &["_build", "child"]);
    assert!(!stderr.contains("building"), "{stderr}");
    assert_eq!(images(&p).len(), 2);

    // --unused keeps what the config uses; --all removes the rest.
    fs::write(p.path().join("dep.txt"), "v3\n").expect("w");
    ok(&p, &["_build", "base"]);
    assert_eq!(images(&p).len(), 3);
    ok(&p, &["_clean", "--unused"]);
    let kept = images(&p);
    assert_eq!(kept, {
        let mut v = vec![version(&p, "base")];
        v.sort();
        v
    });
    ok(&p, &["_clean", "--all"]);
    assert!(images(&p).is_empty());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn fails(p: &Project, args: &[&str], status: i32) -> (String, String) {
    let out = p.run(args, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(status),
        "cella {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// Clean rebuilds give the same bytes, and cella.lock holds a build to
/// them: `_build --locked` rebuilds to the locked bytes and refuses a
/// changed input, a kernel other than the lock's or a changed image;
/// `_verify` rebuilds from scratch and finds a tampered image. A lock a
/// project plants (a link out of it) is neither followed nor written.
#[test]
fn clean_builds_give_identical_images_and_the_lock_holds_them() {
    let Some(a) = assets() else { return };
    let yaml = r#"containers:
  repro:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Sh "mkdir -p /a/b && echo x > /a/b/c && touch /a/new && hostname > /a/host && id -u > /a/uid"
    - !Copy { source: files, path: /srv }
    - !Text { /etc/t: t }
  plain:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Text { /etc/u: u }
"#;
    let kernel = fs::read(&a.kernel).expect("kernel");
    let rootfs = fs::read(&a.rootfs).expect("rootfs");
    let p = project(a, yaml);
    write_inputs(p.path());
    let lock_path = p.path().join("cella.lock");
    let (first, stderr) = ok(&p, &["_build", "repro", "--print-digest"]);
    assert!(stderr.contains("cella: wrote cella.lock"), "{stderr}");
    let lock_text = fs::read_to_string(&lock_path).expect("cella.lock");
    let lock: serde_json::Value = serde_json::from_str(&lock_text).expect("lock json");
    let entry = &lock["containers"]["repro"];
    assert_eq!(entry["sha256"].as_str(), Some(first.trim()), "{lock_text}");
    assert_eq!(entry["image"].as_str(), Some(version(&p, "repro").as_str()));
    assert_eq!(
        entry["setup"][0]["Tar"]["content"].as_str(),
        Some(sha256_hex(&rootfs).as_str())
    );
    let locked_kernel = sha256_hex(&kernel);
    assert_eq!(
        entry["built-with"]["kernel"].as_str(),
        Some(locked_kernel.as_str())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&lock_path).expect("lock").permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    // Once there is a lock, the builds runs make are recorded in it.
    assert!(lock["containers"]["plain"].is_null(), "{lock_text}");
    ok(&p, &["_run", "plain", "cat", "/etc/u"]);
    let lock_text = fs::read_to_string(&lock_path).expect("cella.lock");
    let lock: serde_json::Value = serde_json::from_str(&lock_text).expect("lock json");
    assert!(
        lock["containers"]["plain"]["sha256"].is_string(),
        "{lock_text}"
    );
    assert!(
        lock["containers"]["plain"]["built-with"].is_null(),
        "{lock_text}"
    );

    ok(&p, &["_clean", "--all"]);
    // Host files touched and the clock moved on: the locked rebuild gives
    // the same bytes, and leaves the lock as it was.
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(p.path().join("files/run.sh"), "#!/bin/sh\necho run\n").expect("w");
    let (second, _) = ok(&p, &["_build", "repro", "--locked", "--print-digest"]);
    assert_eq!(first.trim().len(), 64, "{first}");
    assert_eq!(first, second);
    assert_eq!(fs::read_to_string(&lock_path).expect("lock"), lock_text);
    let (stdout, _) = ok(
        &p,
        &[
            "--no-build",
            "_run",
            "repro",
            "sh",
            "-c",
            "cat /a/host; stat -c %Y /a/new",
        ],
    );
    assert_eq!(stdout, "cella\n0\n");

    // A rebuild from scratch in a store of its own: the same bytes.
    let (stdout, _) = ok(&p, &["_verify"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("plain: ok: "), "{stdout}");
    assert!(
        lines[1].starts_with("repro: ok: rebuilt from scratch, sha256 ")
            && lines[1].contains("the same as .cella/'s image"),
        "{stdout}"
    );
    let verify_dir = p.path().join(".cella/verify");
    assert_eq!(fs::read_dir(&verify_dir).expect("verify dir").count(), 0);

    // A changed image file: _verify and --locked find it.
    let image = p.path().join(format!(
        ".cella/images/{}/rootfs.erofs",
        version(&p, "repro")
    ));
    let original = fs::read(&image).expect("image");
    let mut tampered = original.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    fs::write(&image, &tampered).expect("tamper");
    let (stdout, _) = fails(&p, &["_verify", "repro"], 1);
    assert!(
        stdout.starts_with("repro: TAMPERED: .cella/images/"),
        "{stdout}"
    );
    let (_, stderr) = fails(&p, &["_build", "repro", "--locked"], 125);
    assert!(
        stderr.contains(&format!(
            "the image of container \"repro\" has sha256 {}, and cella.lock says {}",
            sha256_hex(&tampered),
            first.trim()
        )),
        "{stderr}"
    );
    fs::write(&image, &original).expect("restore");

    // A changed input: named with its place in cella.yaml, nothing built.
    fs::write(p.path().join("files/run.sh"), "#!/bin/sh\necho changed\n").expect("w");
    let (_, stderr) = fails(&p, &["_build", "repro", "--locked"], 125);
    let want = format!(
        "error: cella.lock does not match containers.repro.setup[2] ({}:6:7): !Copy: content is ",
        p.path().join("cella.yaml").display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(!stderr.contains("building container"), "{stderr}");
    assert_eq!(fs::read_to_string(&lock_path).expect("lock"), lock_text);
    let (stdout, _) = fails(&p, &["_verify"], 1);
    assert!(stdout.starts_with("plain: ok: "), "{stdout}");
    assert!(
        stdout.contains("\nrepro: DIFFERS: cella.lock does not match"),
        "{stdout}"
    );
    write_inputs(p.path());

    // A lock the project made a link to a file outside it: not read, not
    // written through, and the build goes on with a warning.
    let outside = tempfile::NamedTempFile::new().expect("outside");
    fs::write(outside.path(), "outside\n").expect("w");
    fs::remove_file(&lock_path).expect("rm");
    std::os::unix::fs::symlink(outside.path(), &lock_path).expect("link");
    let (_, stderr) = ok(&p, &["_build", "repro"]);
    assert!(
        stderr.contains("warning: cella.lock not updated"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(outside.path()).expect("r"), "outside\n");
    assert!(fs::symlink_metadata(&lock_path)
        .expect("link")
        .file_type()
        .is_symlink());
    let (_, stderr) = fails(&p, &["_build", "repro", "--locked"], 125);
    assert!(stderr.contains("cella.lock"), "{stderr}");
    fs::remove_file(&lock_path).expect("rm link");

    // A lock made with another kernel: refused before a build, by name.
    ok(&p, &["_clean", "--all"]);
    let other = lock_text.replace(&locked_kernel, &"0".repeat(64));
    fs::write(&lock_path, &other).expect("lock");
    let (_, stderr) = fails(&p, &["_build", "repro", "--locked"], 125);
    assert!(
        stderr.contains(
            "would be built on other programs than cella.lock records: it was built by cella "
        ) && stderr.contains(&format!(
            "with kernel sha256 000000000000… (this cella's: {}…)",
            &locked_kernel[..12]
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("building container"), "{stderr}");
}

#[test]
fn a_failing_step_names_itself_and_shows_its_stderr() {
    let Some(a) = assets() else { return };
    let yaml = "containers:\n  bad:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    - !Sh \"echo oops >&2; exit 3\"\n";
    let p = project(a, yaml);
    let out = p.run(&["_build", "bad"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("error line");
    let want = format!(
        "error: building container \"bad\": step 2/2 (!Sh at {}:5:7) failed: `/bin/sh -exc 'echo oops >&2; exit 3'` exited with status 3",
        p.path().join("cella.yaml").display()
    );
    assert_eq!(error, want);
    assert!(stderr.contains("oops"), "{stderr}");
    assert!(images(&p).is_empty());
    // --no-build refuses what was never built.
    let out = p.run(&["--no-build", "_run", "bad", "true"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("was never built"),
        "{}",
        text(&out.stderr)
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `cella _build NAME`, returned a second into NAME's second step (a
/// `!Sh`).
fn build_into_its_step(p: &Project, name: &str) -> std::process::Child {
    let mut child = p.cella();
    child.args(["_build", name]).stderr(Stdio::piped());
    let mut child = child.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader};
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("[2/2] !Sh") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(TIMEOUT)
        .expect("the build never reached its !Sh step");
    std::thread::sleep(Duration::from_secs(1));
    child
}

#[test]
fn killed_and_concurrent_builds_leave_one_good_image() {
    let Some(a) = assets() else { return };
    // Make sure build VMs restore quickly, so the deadline below holds.
    let p = Project::new(a, "");
    ok(&p, &["_run", "base", "true"]);
    // The step sleeps until `deadline` (the guest clock is the host's):
    // the first build is killed in it; later ones pass straight through.
    let deadline = now_secs() + 45;
    let yaml = format!(
        "containers:\n  slow:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    - !Sh \"while [ $(date +%s) -lt {deadline} ]; do sleep 1; done; echo done > /done\"\n  \
         stubborn:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    - !Sh \"trap '' TERM INT; while [ $(date +%s) -lt {deadline} ]; do sleep 1; done\"\n"
    );
    fs::write(p.path().join("cella.yaml"), yaml).expect("write");

    let mut child = build_into_its_step(&p, "slow");
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        now_secs() < deadline,
        "the build reached its step too late to be killed in it"
    );
    let slow = version(&p, "slow");
    assert!(!images(&p).contains(&slow), "a killed build left an image");
    let out = p.run(&["--no-build", "_run", "slow", "true"], None);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));

    // One SIGTERM stops a build at once, even when its step ignores the
    // signal (apt-get and dpkg hold it back): nothing is kept of it.
    let mut child = build_into_its_step(&p, "stubborn");
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("a build went on for 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(now_secs() < deadline, "the step ended by itself");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let stubborn = version(&p, "stubborn");
    assert!(
        !images(&p).contains(&stubborn),
        "an interrupted build left an image"
    );

    while now_secs() <= deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two builds at once: one builds, the other waits and reuses it.
    let spawn = || {
        let mut c = p.cella();
        c.args(["_build", "slow", "--print-digest"]);
        c.spawn().expect("spawn")
    };
    let (one, two) = (spawn(), spawn());
    let start = Instant::now();
    let (one, two) = (wait_output(one, TIMEOUT), wait_output(two, TIMEOUT));
    assert!(start.elapsed() < TIMEOUT);
    for out in [&one, &two] {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    assert_eq!(one.stdout, two.stdout);
    let builders = [&one, &two]
        .iter()
        .filter(|o| text(&o.stderr).contains("building container slow"))
        .count();
    assert_eq!(builders, 1);
    assert_eq!(images(&p).iter().filter(|i| **i == slow).count(), 1);
    assert!(
        fs::read_dir(p.path().join(".cella/tmp")).map_or(0, |d| d.count()) == 0,
        "leftovers"
    );
    let (stdout, _) = ok(&p, &["_run", "slow", "cat", "/done"]);
    assert_eq!(stdout, "done\n");
}

/// A tarball whose only top entry is `pkg-1.0/`, with an install script
/// and a subdirectory.
fn pkg_tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in [
        (
            "pkg-1.0/install.sh",
            0o755,
            &b"#!/bin/sh\nset -e\nmkdir -p \"$1\"\necho installed > \"$1/hello\"\n"[..],
        ),
        ("pkg-1.0/sub/marker", 0o644, &b"m\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// vagga's `!TarInstall`: the archive unpacked in /tmp, its script run
/// in its only top directory (or in `subdir`), and nothing of it left.
#[test]
fn tar_install_runs_its_script_in_the_archive() {
    let Some(a) = assets() else { return };
    let p = project(
        a,
        "containers:\n  installed:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    \
         - !TarInstall { url: ./pkg.tar, script: './install.sh /usr/local/share/pkg' }\n    \
         - !TarInstall { url: ./pkg.tar, subdir: pkg-1.0/sub, script: 'pwd > /where; cat marker >> /where' }\n",
    );
    fs::write(p.path().join("pkg.tar"), pkg_tarball()).expect("write");
    let (_, stderr) = ok(&p, &["_build", "installed"]);
    assert!(stderr.contains("[2/7] !Tar ./pkg.tar"), "{stderr}");
    let (stdout, _) = ok(
        &p,
        &[
            "_run",
            "installed",
            "sh",
            "-c",
            "cat /usr/local/share/pkg/hello /where",
        ],
    );
    assert_eq!(stdout, "installed\n/.cella-tarinstall-2/pkg-1.0/sub\nm\n");
    // The unpacked archives are not in the image (a run's /tmp is a
    // tmpfs of its own, so look at the image itself).
    let root = p.path().join("root.tar");
    ok(
        &p,
        &[
            "_pack_image",
            "-f",
            root.to_str().expect("utf-8"),
            "installed",
        ],
    );
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&root)
        .output()
        .expect("tar");
    let listing = text(&listing.stdout);
    assert!(listing.contains("usr/local/share/pkg/hello"), "{listing}");
    assert!(!listing.contains("cella-tarinstall"), "{listing}");
}
