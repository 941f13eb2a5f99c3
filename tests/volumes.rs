//! The project at /work and volumes, end to end: the cwd mapping and
//! `work-dir`, ownership and file semantics across virtio-fs, every volume
//! kind, write modes, and confinement (nothing outside the shares is
//! reachable or changed). Each run checks many things, to keep boots few.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{assets, text, tree, Project};

fn ok(p: &Project, dir: &Path, args: &[&str]) -> (String, String) {
    let mut cmd = p.cella();
    cmd.current_dir(dir).args(args);
    let out = common::wait_output(cmd.spawn().expect("spawn cella"), common::TIMEOUT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "cella {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// The lines of `out` that start with `key=`, without the key.
fn field(out: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

const WORK_COMMANDS: &str = r#"  where: !Command
    container: base
    run: |
      echo "pwd=$(pwd)"
      echo "top=$(ls -a /work | tr '\n' ' ')"
      echo "owner=$(stat -c %u:%g /work/host.txt)"
      echo "read=$(cat /work/host.txt)"
      echo made > /work/sub/made.txt
      chmod 0600 /work/sub/made.txt
      touch -d '2001-02-03 04:05:06' /work/sub/made.txt
      echo "mtime=$(stat -c %Y /work/sub/made.txt)"
      mv /work/sub/made.txt /work/sub/renamed.txt
      ln -s renamed.txt /work/sub/link
      echo "via-link=$(cat /work/sub/link)"
      ln /work/sub/renamed.txt /work/sub/hard
      echo "nlink=$(stat -c %h /work/sub/hard)"
      dd if=/dev/zero of=/work/sub/synced bs=4096 count=4 conv=fsync 2>/dev/null && echo fsync=ok
      mkdir /work/sub/dir && rmdir /work/sub/dir && echo rmdir=ok
      echo "root-write=$(touch /etc/x 2>&1 || true)"
      touch /tmp/x && echo tmp-write=ok
      echo "cella-dir=$(ls /work/.cella 2>&1 || true)"
      echo "mkdir-cella=$(mkdir /work/.cella 2>&1 || true)"
  elsewhere: !Command
    container: base
    work-dir: sub
    run: echo "pwd=$(pwd)"
  writable: !Command
    container: base
    write-mode: transient-overlay
    run: |
      echo "before=$(cat /etc/new 2>&1)"
      echo new > /etc/new && echo "after=$(cat /etc/new)"
"#;

/// /work, the cwd mapping, ownership and file semantics, the read-only
/// root and the write modes.
#[test]
fn work_is_the_project_with_the_users_directory_and_ownership() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, WORK_COMMANDS);
    fs::create_dir_all(p.path().join("sub/deeper")).expect("mkdir");
    fs::write(p.path().join("host.txt"), "from host\n").expect("write");
    ok(&p, p.path(), &["_build", "base"]);

    let (out, _) = ok(&p, &p.path().join("sub/deeper"), &["where"]);
    assert_eq!(field(&out, "pwd"), "/work/sub/deeper");
    let top = field(&out, "top");
    assert!(
        top.contains("host.txt") && top.contains("cella.yaml"),
        "{out}"
    );
    assert!(
        !top.contains(".cella"),
        "the guest must not see .cella: {out}"
    );
    assert_eq!(
        field(&out, "owner"),
        "0:0",
        "project files are root's in the guest"
    );
    assert_eq!(field(&out, "read"), "from host");
    assert_eq!(field(&out, "mtime"), "981173106");
    assert_eq!(field(&out, "via-link"), "made");
    assert_eq!(field(&out, "nlink"), "2");
    assert_eq!(field(&out, "fsync"), "ok");
    assert_eq!(field(&out, "rmdir"), "ok");
    assert!(
        field(&out, "root-write").contains("Read-only file system"),
        "{out}"
    );
    assert_eq!(field(&out, "tmp-write"), "ok");
    assert!(field(&out, "cella-dir").contains("No such file"), "{out}");
    assert!(!field(&out, "mkdir-cella").is_empty(), "{out}");

    // What the guest did, seen from the host.
    let renamed = p.path().join("sub/renamed.txt");
    let meta = fs::metadata(&renamed).expect("renamed.txt on the host");
    // SAFETY: geteuid has no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "owned by the invoking user"
    );
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.mtime(), 981_173_106);
    assert_eq!(meta.nlink(), 2);
    assert_eq!(
        fs::read_link(p.path().join("sub/link")).expect("link"),
        PathBuf::from("renamed.txt")
    );
    assert_eq!(
        fs::metadata(p.path().join("sub/synced"))
            .expect("synced")
            .len(),
        16384
    );
    assert!(!p.path().join("sub/made.txt").exists());

    let (out, _) = ok(&p, p.path(), &["elsewhere"]);
    assert_eq!(field(&out, "pwd"), "/work/sub");

    let (out, _) = ok(&p, p.path(), &["writable"]);
    assert!(field(&out, "before").contains("No such file"), "{out}");
    assert_eq!(field(&out, "after"), "new");
    let (out, _) = ok(
        &p,
        p.path(),
        &[
            "_run",
            "-W",
            "base",
            "sh",
            "-c",
            "echo \"after=$(cat /etc/new 2>&1)\"; touch /etc/w && echo w=ok",
        ],
    );
    assert!(
        field(&out, "after").contains("No such file"),
        "writes vanish with the VM: {out}"
    );
    assert_eq!(field(&out, "w"), "ok");
}

const VOLUMES_YAML: &str = r#"containers:
  vols:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Text
        /data/snap/orig: "orig\n"
        /data/hidden/secret: "secret\n"
    volumes:
      /scratch: !Tmpfs
        size: 1Mi
        mode: 0o700
        subdirs: { a: { mode: 0o711 } }
        files: { f.txt: "tmpfs file\n" }
      /ro: !BindRO ./ro-data
      /rw: !BindRW /work/rw-data
      /data/hidden: !Empty
      /data/snap: !Snapshot
      /cache: !Persistent { name: cache, init-command: init-cache }
      /outside: !BindRO SHARED
commands:
  init-cache: !Command
    container: vols
    run: echo initialised >> /cache/log
  check: !Command
    container: vols
    volumes:
      /ro: !BindRO ./ro-data-2
    run: |
      echo "scratch=$(stat -c %a /scratch) $(stat -c %a /scratch/a) $(cat /scratch/f.txt)"
      echo "scratch-size=$(df -k /scratch | tail -1 | awk '{print $2}')"
      dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null || echo scratch-full=yes
      echo "ro=$(cat /ro/file)"
      echo "ro-write=$(touch /ro/new 2>&1 || true)"
      echo "rw=$(cat /rw/file)"
      echo guest > /rw/from-guest
      echo "hidden=$(ls -A /data/hidden | wc -l)"
      echo "hidden-write=$(touch /data/hidden/x 2>&1 || true)"
      echo "snap=$(cat /data/snap/orig 2>&1) $(cat /data/snap/new 2>&1)"
      echo new > /data/snap/new
      echo "cache=$(cat /cache/log | tr '\n' ' ')"
      echo run >> /cache/log
      echo "outside=$(cat /outside/shared.txt)"
"#;

/// Every volume kind, command volumes over the container's, a persistent
/// volume kept across runs and initialised once, and a bind outside the
/// project only with `--allow-host-path`.
#[test]
fn volumes_of_every_kind() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let shared = tempfile::tempdir().expect("shared dir");
    fs::write(shared.path().join("shared.txt"), "shared\n").expect("write");
    let yaml = VOLUMES_YAML.replace("SHARED", &shared.path().display().to_string());
    fs::write(p.path().join("cella.yaml"), yaml).expect("yaml");
    for (dir, content) in [("ro-data", "ro1"), ("ro-data-2", "ro2"), ("rw-data", "rw")] {
        fs::create_dir(p.path().join(dir)).expect("mkdir");
        fs::write(p.path().join(dir).join("file"), format!("{content}\n")).expect("write");
    }

    // Without permission, the bind outside the project is refused before
    // anything boots.
    let out = p.run(&["check"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("cella.yaml:")
            && stderr.contains("containers.vols.volumes./outside")
            && stderr.contains("--allow-host-path"),
        "{stderr}"
    );

    let allow = format!("--allow-host-path={}", shared.path().display());
    let (out, err) = ok(&p, p.path(), &[&allow, "check"]);
    assert!(err.contains("initialising volume \"cache\""), "{err}");
    assert_eq!(field(&out, "scratch"), "700 711 tmpfs file");
    assert_eq!(field(&out, "scratch-size"), "1024");
    assert_eq!(field(&out, "scratch-full"), "yes");
    assert_eq!(field(&out, "ro"), "ro2", "the command's volume wins");
    assert!(
        field(&out, "ro-write").contains("Read-only file system"),
        "{out}"
    );
    assert_eq!(field(&out, "rw"), "rw");
    assert_eq!(field(&out, "hidden"), "0");
    assert!(
        field(&out, "hidden-write").contains("Read-only file system"),
        "{out}"
    );
    assert_eq!(
        field(&out, "snap"),
        "orig cat: can't open '/data/snap/new': No such file or directory"
    );
    assert_eq!(field(&out, "cache"), "initialised ");
    assert_eq!(field(&out, "outside"), "shared");
    assert_eq!(
        fs::read_to_string(p.path().join("rw-data/from-guest")).expect("rw write"),
        "guest\n"
    );
    assert!(!p.path().join("ro-data-2/new").exists());

    // The second run has its permission from the user's settings file.
    let settings = p.path().join("settings.yaml");
    fs::write(
        &settings,
        format!("allow-host-paths: [{}]\n", shared.path().display()),
    )
    .expect("settings");
    let mut cmd = p.cella();
    cmd.env("CELLA_SETTINGS", &settings).arg("check");
    let out = common::wait_output(cmd.spawn().expect("spawn cella"), common::TIMEOUT);
    let (out, err) = (text(&out.stdout), text(&out.stderr));
    assert!(!err.contains("initialising"), "init runs once: {err}");
    assert_eq!(field(&out, "outside"), "shared", "{err}");
    assert_eq!(field(&out, "cache"), "initialised run ", "kept across runs");
    assert!(
        field(&out, "snap").starts_with("orig cat:"),
        "snapshot writes vanish: {out}"
    );
    assert_eq!(
        fs::read_to_string(p.path().join(".cella/volumes/cache/log")).expect("log"),
        "initialised\nrun\nrun\n"
    );
}

/// The guest reaches nothing on the host but its shares: `..`, symlinks
/// out of the project, hard links, renames across the boundary, /proc
/// tricks; names with a newline work; nothing outside the project changes.
#[test]
fn the_guest_cannot_reach_outside_its_shares() {
    let Some(a) = assets() else { return };
    let outer = tempfile::tempdir().expect("outer");
    fs::write(outer.path().join("secret"), "host-secret\n").expect("secret");
    let p = Project::new(a, CONFINE_COMMANDS);
    // The project's parent is a directory we own, to check it is untouched.
    let project = outer.path().join("project");
    fs::create_dir(&project).expect("project dir");
    for entry in fs::read_dir(p.path()).expect("ls") {
        let entry = entry.expect("entry");
        fs::rename(entry.path(), project.join(entry.file_name())).expect("move");
    }
    std::os::unix::fs::symlink("/etc", project.join("etc-link")).expect("symlink");
    std::os::unix::fs::symlink("..", project.join("up")).expect("symlink");
    std::os::unix::fs::symlink(outer.path().join("secret"), project.join("abs-link"))
        .expect("symlink");
    fs::write(project.join("host\nnewline"), "nl\n").expect("newline name");
    fs::write(project.join("file"), "inside\n").expect("file");
    let before = snapshot_outside(outer.path(), &project);
    let host_passwd = fs::read("/etc/passwd").expect("passwd");

    let mut cmd = p.cella();
    cmd.current_dir(&project).args(["confine"]);
    let out = common::wait_output(cmd.spawn().expect("spawn"), common::TIMEOUT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("host-secret"),
        "the host's secret leaked:\n{stdout}"
    );
    assert_eq!(field(&stdout, "dotdot"), "guest-root", "{stdout}");
    assert!(
        field(&stdout, "abs-link").contains("No such file"),
        "{stdout}"
    );
    assert_ne!(
        field(&stdout, "etc-link").as_bytes(),
        host_passwd.trim_ascii_end()
    );
    assert_eq!(field(&stdout, "up"), "guest-root", "{stdout}");
    assert!(!field(&stdout, "hardlink-out").is_empty(), "{stdout}");
    assert!(!field(&stdout, "rename-out").is_empty(), "{stdout}");
    assert_eq!(field(&stdout, "newline-read"), "nl");
    assert_eq!(field(&stdout, "proc-cwd"), "/work");
    assert!(
        field(&stdout, "mknod").contains("not permitted"),
        "{stdout}"
    );
    assert_eq!(field(&stdout, "still-there"), "inside");
    assert_eq!(field(&stdout, "proc-link"), "guest-root", "{stdout}");
    assert!(
        field(&stdout, "secret-dotdot").contains("No such file"),
        "{stdout}"
    );
    assert!(
        field(&stdout, "secret-up").contains("No such file"),
        "{stdout}"
    );

    assert_eq!(
        fs::read_to_string(project.join("guest\nnewline")).expect("guest newline name"),
        "g\n"
    );
    assert_eq!(fs::read("/etc/passwd").expect("passwd"), host_passwd);
    assert_eq!(
        snapshot_outside(outer.path(), &project),
        before,
        "outside the project changed"
    );
    assert_eq!(
        fs::read_to_string(project.join("file")).expect("file"),
        "inside\n"
    );
}

const CONFINE_COMMANDS: &str = r#"  confine: !Command
    container: base
    run: |
      echo guest-root > /tmp/marker
      echo "dotdot=$(cat /work/../tmp/marker 2>&1)"
      echo "secret-dotdot=$(cat /work/../secret 2>&1)"
      echo "abs-link=$(cat /work/abs-link 2>&1)"
      echo "etc-link=$(cat /work/etc-link/passwd 2>&1)"
      echo "up=$(cat /work/up/tmp/marker 2>&1)"
      echo "secret-up=$(cat /work/up/secret 2>&1)"
      echo "hardlink-out=$(ln /tmp/marker /work/hl 2>&1)"
      echo "rename-out=$(mv /work/file /work/../file 2>&1)"
      echo "still-there=$(cat /work/file)"
      echo "newline-read=$(cat '/work/host
      newline')"
      printf 'g\n' > '/work/guest
      newline'
      echo "proc-cwd=$(readlink /proc/self/cwd)"
      echo "proc-root=$(ls /proc/self/root/work/../ | tr '\n' ' ')"
      ln -s /proc/self/root /work/proc-root-link 2>/dev/null
      echo "proc-link=$(cat /work/proc-root-link/tmp/marker 2>&1)"
      echo "mknod=$(mknod /work/dev c 1 1 2>&1)"
"#;

/// Every path under `dir` except `skip`, with its size and mtime.
fn snapshot_outside(dir: &Path, skip: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut out: Vec<_> = tree(dir)
        .into_iter()
        .filter(|p| !p.starts_with(skip))
        .map(|p| {
            let m = fs::symlink_metadata(&p).expect("stat");
            (p, m.len(), m.mtime())
        })
        .collect();
    out.sort();
    out
}
