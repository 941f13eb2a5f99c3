//! Limits on what a project or its guest can make the host write or hold,
//! tried as an attacker would: a guest filling /work (`limits.write`), a
//! tarball declaring a huge sparse file (`limits.image`), a build step
//! making a very deep path (bounded trees), a cella.yaml of aliases
//! (`limits.config`). Each is contained or refused with a clear error,
//! and nothing outside the project changes.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, text, tree, wait_output, Project, TIMEOUT};

/// Moves `p`'s files into `outer/project`: the project then has a parent
/// directory of the test's own, whose other contents must not change.
fn nest(p: &Project, outer: &Path) -> PathBuf {
    let project = outer.join("project");
    fs::create_dir(&project).expect("project dir");
    for entry in fs::read_dir(p.path()).expect("ls") {
        let entry = entry.expect("entry");
        fs::rename(entry.path(), project.join(entry.file_name())).expect("move");
    }
    project
}

/// Every path under `dir` but those under `skip`, with size and mtime.
fn snapshot(dir: &Path, skip: &Path) -> Vec<(PathBuf, u64, i64)> {
    tree(dir)
        .into_iter()
        .filter(|p| !p.starts_with(skip))
        .map(|p| {
            let m = fs::symlink_metadata(&p).expect("stat");
            (p, m.len(), m.mtime())
        })
        .collect()
}

/// Bytes allocated on the host under `dir`, `.cella` left out.
fn allocated(dir: &Path) -> u64 {
    tree(dir)
        .iter()
        .filter(|p| !p.starts_with(dir.join(".cella")))
        .map(|p| fs::symlink_metadata(p).map_or(0, |m| m.blocks() * 512))
        .sum()
}

/// The value of the `name=` line a guest script printed.
fn field(stdout: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in:\n{stdout}"))
        .to_owned()
}

const FILL: &str = r#"
fallocate -l 5G /work/big 2>/tmp/e; echo "big=$?:$(cat /tmp/e)"
echo "big-size=$(stat -c %s /work/big 2>&1)"
fallocate -l 8160k /work/pre; echo "pre=$?"
mkdir /work/many
i=0
while [ $i -lt 3000 ]; do true > /work/many/f$i || break; i=$((i+1)); done
echo "files=$i:"
dd if=/dev/zero of=/work/dd bs=64k count=16 2>/tmp/e; echo "dd=$?:$(cat /tmp/e | tr '\n' ' ')"
echo "df=$(df -k /work | tail -1)"
"#;

/// The issue's attack: a guest `fallocate -l 5G` in /work, then writes and
/// new files past a quota of 8 MiB set in the user's settings. The guest
/// gets ENOSPC for each, /work grows by about the quota, nothing outside
/// the project changes.
#[test]
fn a_guest_cannot_write_past_the_quota() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let outer = tempfile::tempdir().expect("outer");
    let project = nest(&p, outer.path());
    let settings = outer.path().join("settings.yaml");
    fs::write(&settings, "limits: {write: 8Mi}\n").expect("settings");
    let before = snapshot(outer.path(), &project);
    let used_before = allocated(&project);

    let started = Instant::now();
    let mut cmd = p.cella();
    cmd.current_dir(&project)
        .env("CELLA_SETTINGS", &settings)
        .args(["_run", "base", "sh", "-c", FILL]);
    let out = wait_output(cmd.spawn().expect("spawn"), TIMEOUT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("the run took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let big = field(&stdout, "big");
    assert!(
        big.starts_with("1:") && big.contains("No space left on device"),
        "{stdout}"
    );
    assert_eq!(field(&stdout, "big-size"), "0", "{stdout}");
    assert_eq!(field(&stdout, "pre"), "0", "{stdout}");
    // 32 KiB were left, less a directory: about 50 names at 512 bytes
    // and their length.
    let files = field(&stdout, "files");
    let (count, why) = files.split_once(':').expect("files=N:error");
    let count: u64 = count.parse().expect("a count");
    assert!((40..60).contains(&count), "{stdout}");
    // The shell, not the command, reports a redirection it cannot make.
    assert!(why.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "can't create /work/many/f{count}: No space left on device"
        )),
        "{stderr}"
    );
    let dd = field(&stdout, "dd");
    assert!(
        dd.starts_with("1:") && dd.contains("No space left on device"),
        "{stdout}"
    );
    // The guest sees no room left.
    let df = field(&stdout, "df");
    assert_eq!(df.split_whitespace().nth(3), Some("0"), "{stdout}");

    let grown = allocated(&project) - used_before;
    assert!(
        grown <= (8 << 20) + (256 << 10),
        "/work grew by {grown} bytes"
    );
    assert!(grown >= 7 << 20, "/work grew by {grown} bytes");
    assert_eq!(fs::metadata(project.join("big")).expect("big").len(), 0);
    assert_eq!(snapshot(outer.path(), &project), before, "outside changed");
}

/// cella with `args` in `dir`, bounded, with default settings and a cache
/// of its own (these runs boot no VM).
fn cella_no_vm(dir: &Path, args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_cella"))
        .current_dir(dir)
        .args(args)
        .env("CELLA_SETTINGS", "/nonexistent/cella-settings.yaml")
        .env("CELLA_CACHE_DIR", dir.join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cella");
    let out = wait_output(child, Duration::from_secs(120));
    (out.status.code(), text(&out.stderr), started.elapsed())
}

/// The issue's tarball: 1.5 KiB declaring a GNU-sparse 1 TiB file. The
/// build fails at once naming the entry, and leaves nothing behind.
#[test]
fn a_huge_sparse_tar_entry_fails_the_build_at_once() {
    let outer = tempfile::tempdir().expect("outer");
    let project = outer.path().join("project");
    fs::create_dir(&project).expect("project");
    // As an attacker makes it: a 1 TiB file of holes, archived by GNU tar.
    let src = outer.path().join("src");
    fs::create_dir_all(src.join("var")).expect("src");
    let huge = fs::File::create(src.join("var/huge")).expect("huge");
    huge.set_len(1 << 40).expect("truncate");
    let tar = std::process::Command::new("tar")
        .args(["--sparse", "-cf"])
        .arg(project.join("sparse.tar"))
        .args(["-C"])
        .arg(&src)
        .arg("var/huge")
        .status()
        .expect("tar");
    assert!(tar.success());
    fs::remove_dir_all(&src).expect("rm src");
    assert!(fs::metadata(project.join("sparse.tar")).expect("tar").len() < 64 << 10);
    fs::write(
        project.join("cella.yaml"),
        "containers:\n  sparse:\n    setup:\n    - !Tar { url: ./sparse.tar }\n",
    )
    .expect("cella.yaml");
    let before = snapshot(outer.path(), &project.join(".cella"));

    let (status, stderr, took) = cella_no_vm(&project, &["_build", "sparse"]);
    eprintln!("{stderr}");
    assert_eq!(status, Some(125), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(stderr.contains("entry \"var/huge\""), "{stderr}");
    assert!(
        stderr.contains("a sparse file of 1099511627776 bytes (0 in the archive), stored whole"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "the image would be larger than 16Gi (limits.image in /nonexistent/cella-settings.yaml)"
        ),
        "{stderr}"
    );
    let tmp = project.join(".cella/tmp");
    let left: Vec<_> = fs::read_dir(&tmp).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "left in .cella/tmp: {left:?}");
    assert!(allocated(&project.join(".cella")) < 1 << 20);
    assert_eq!(
        snapshot(outer.path(), &project.join(".cella")),
        before,
        "outside .cella/ changed"
    );
}

/// A cella.yaml of 100 KiB whose aliases expand to 1.25 GiB of text:
/// refused quickly by bytes, at the alias that passes the limit.
#[test]
fn an_alias_bomb_is_refused_by_bytes() {
    let dir = tempfile::tempdir().expect("dir");
    let long = "x".repeat(64 << 10);
    let mut yaml = format!("x-big: &big \"{long}\"\nx-bomb: [");
    yaml.push_str(&["*big"; 20_000].join(", "));
    yaml.push_str("]\ncommands: {}\n");
    assert!(yaml.len() < 256 << 10);
    fs::write(dir.path().join("cella.yaml"), &yaml).expect("cella.yaml");
    let (status, stderr, took) = cella_no_vm(dir.path(), &[]);
    eprintln!("{stderr}");
    assert_eq!(status, Some(125), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.contains("cella.yaml:2:"), "{stderr}");
    assert!(
        first.contains("more than 16Mi of text after expanding aliases (limits.config in /nonexistent/cella-settings.yaml)"),
        "{stderr}"
    );
}

/// A build step that makes a path longer than an image takes, relative
/// directory by relative directory: the build fails with a clear error
/// naming the start of the path, and no image or temporary is left.
/// (Deeper than 256 levels is refused the same way; making such a path
/// here takes minutes of emulated guest time, so unit tests cover it.)
#[test]
fn a_very_long_path_fails_the_build() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let outer = tempfile::tempdir().expect("outer");
    let project = nest(&p, outer.path());
    fs::write(
        project.join("cella.yaml"),
        r#"containers:
  long:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Sh |
        n=$(printf 'n%.0s' $(seq 255))
        mkdir /opt && cd /opt
        # The shell's own cd gives up on the last one: cwd would be too long.
        for i in $(seq 16); do mkdir $n; cd $n || true; done
"#,
    )
    .expect("cella.yaml");
    let before = snapshot(outer.path(), &project.join(".cella"));
    let started = Instant::now();
    let mut cmd = p.cella();
    cmd.current_dir(&project).args(["_build", "long"]);
    let out = wait_output(cmd.spawn().expect("spawn"), TIMEOUT);
    let stderr = text(&out.stderr);
    eprintln!(
        "the build took {:.1} s\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("the path is longer than 4094 bytes, the most an image takes"),
        "{stderr}"
    );
    assert!(stderr.contains("opt/nnnnnnnn"), "{stderr}");
    assert!(stderr.contains("… (4099 bytes)"), "{stderr}");
    let tmp = project.join(".cella/tmp");
    let left: Vec<_> = fs::read_dir(&tmp).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "left in .cella/tmp: {left:?}");
    assert!(!project.join(".cella/images/long").exists());
    assert_eq!(
        snapshot(outer.path(), &project.join(".cella")),
        before,
        "outside .cella/ changed"
    );
}
