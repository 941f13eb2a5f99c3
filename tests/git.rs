//! vagga's `!Git` and `!GitInstall`: a repository served by `git daemon`
//! on the loopback, fetched by the host's git behind the helpers' wall.
//! Written as an attacker would: the repository plants a link out, asks
//! for `export-subst`/`export-ignore`, and the project tries ext::, file://,
//! an unpinned git:// URL and a loopback server without the user's leave.
//! Nothing outside the project may change. The `!Git` image is read back
//! through `_pack_image` (no VM); `!GitInstall` boots one build VM.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, cella_with, tar_member, text, tree, wait_output, Project};

/// `git daemon` on 127.0.0.1, stopped by pid when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// git in `dir`, with no configuration of the user's.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// A repository with two commits on `main`; the first's id and the tip's.
fn repository(dir: &Path) -> (String, String) {
    git(dir, &["init", "-q", "-b", "main"]);
    fs::write(dir.join("hello.txt"), "first\n").expect("write");
    fs::write(dir.join("subst.txt"), "$Format:%H$\n").expect("write");
    fs::write(dir.join("ignored.txt"), "kept\n").expect("write");
    // Committed as "$Id$\n"; archived with these attributes it would be
    // "$Id: <blob id> $\r\n".
    fs::write(dir.join("ident.txt"), "$Id$\n").expect("write");
    fs::write(
        dir.join(".gitattributes"),
        "subst.txt export-subst\nignored.txt export-ignore\nident.txt ident eol=crlf\n",
    )
    .expect("write");
    fs::create_dir(dir.join("tools")).expect("mkdir");
    fs::write(
        dir.join("tools/install.sh"),
        "echo installed > /installed\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).expect("link");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "first"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    fs::write(dir.join("hello.txt"), "tip\n").expect("write");
    git(dir, &["commit", "-q", "-am", "tip"]);
    (first, git(dir, &["rev-parse", "HEAD"]))
}

fn daemon(base: &Path) -> (Daemon, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            "--export-all",
            &format!("--base-path={}", base.display()),
        ])
        .arg(base)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    let d = Daemon(child);
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "git daemon did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, port)
}

#[test]
fn git_steps_fetch_one_commit_behind_the_wall() {
    let Some(a) = assets() else { return };
    let served = tempfile::tempdir().expect("served");
    let repo = served.path().join("repo.git");
    fs::create_dir(&repo).expect("mkdir");
    let (first, tip) = repository(&repo);
    let (_daemon, port) = daemon(served.path());
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let pwned = served.path().join("pwned");

    let p = Project::new(a, "");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "containers:\n  src:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    \
             - !Git {{ url: '{url}', revision: {first}, path: /opt/repo }}\n    \
             - !Git {{ url: '{url}', revision: {tip}, branch: main, path: /opt/tip }}\n  \
             inst:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    \
             - !GitInstall {{ url: '{url}', revision: {first}, subdir: tools, script: sh install.sh }}\n",
        ),
    )
    .expect("yaml");
    // The shared cache: its VM snapshots spare each run a cold boot.
    let cache = p.cache.clone();
    let closed = p.path().join("closed.yaml");
    fs::write(&closed, "").expect("settings");
    let open = p.path().join("open.yaml");
    fs::write(&open, "network: {allow-addresses: [127.0.0.1/32]}\n").expect("settings");
    let before = tree(p.path());
    let served_before = tree(served.path());

    // Refused when loaded: one line naming the file, line and field.
    let bad = tempfile::tempdir().expect("bad");
    for (url, why) in [
        (url.clone(), "is not authenticated"),
        (
            format!("ext::sh -c touch% {}", pwned.display()),
            "remote helpers (ext::, fd::) run commands",
        ),
        (
            format!("file://{}", repo.display()),
            "a local repository is the host's",
        ),
    ] {
        fs::write(
            bad.path().join("cella.yaml"),
            format!("containers:\n  x:\n    setup:\n    - !Git {{ url: '{url}', path: /x }}\n"),
        )
        .expect("yaml");
        let child = p
            .cella()
            .current_dir(bad.path())
            .env("CELLA_SETTINGS", &open)
            .env("CELLA_CACHE_DIR", &cache)
            .args(["_build", "x"])
            .spawn()
            .expect("cella");
        let out = wait_output(child, Duration::from_secs(60));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{url}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: {}:4:19: containers.x.setup[0].url: ",
                bad.path().join("cella.yaml").display()
            )) && err.contains(why),
            "{url}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
    }
    assert_eq!(tree(bad.path()), vec![bad.path().join("cella.yaml")]);

    // A loopback server needs the user's leave.
    let (status, _, err) = cella_with(&p, &closed, &cache, &["_build", "src"]);
    assert_ne!(status, Some(0), "{err}");
    assert!(err.contains("127.0.0.1 is a loopback address"), "{err}");

    let (status, _, err) = cella_with(&p, &open, &cache, &["_build", "src"]);
    assert_eq!(status, Some(0), "{err}");
    let root = p.path().join("root.tar");
    let root_arg = root.to_str().expect("utf-8");
    // The container's image as a tarball at `root`, and its `tar -tv` listing.
    let pack = |container: &str| -> String {
        let (status, _, err) = cella_with(
            &p,
            &open,
            &cache,
            &["_pack_image", "-f", root_arg, container],
        );
        assert_eq!(status, Some(0), "{err}");
        let listing = Command::new("tar")
            .args(["-tvf", root_arg])
            .output()
            .expect("tar");
        text(&listing.stdout)
    };
    let listing = pack("src");
    // The pinned commit, not the tip; the tree as committed, whatever
    // its .gitattributes ask; no .git.
    assert_eq!(
        tar_member(&root, "opt/repo/hello.txt").as_deref(),
        Some("first\n")
    );
    assert_eq!(
        tar_member(&root, "opt/tip/hello.txt").as_deref(),
        Some("tip\n")
    );
    assert_eq!(
        tar_member(&root, "opt/repo/subst.txt").as_deref(),
        Some("$Format:%H$\n")
    );
    assert_eq!(
        tar_member(&root, "opt/repo/ignored.txt").as_deref(),
        Some("kept\n")
    );
    assert_eq!(
        tar_member(&root, "opt/repo/ident.txt").as_deref(),
        Some("$Id$\n")
    );
    assert!(
        listing.contains("opt/repo/link -> /etc/passwd"),
        "{listing}"
    );
    // Modes as committed, not git archive's default umask 002.
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line(" opt/repo/hello.txt").starts_with("-rw-r--r--"),
        "{listing}"
    );
    assert!(
        line(" opt/repo/tools/").starts_with("drwxr-xr-x"),
        "{listing}"
    );
    assert!(!listing.contains(".git/"), "{listing}");
    fs::remove_file(&root).expect("rm");

    // !GitInstall: the script runs in the tree's subdir, the tree is gone after.
    let (status, _, err) = cella_with(&p, &open, &cache, &["_build", "inst"]);
    assert_eq!(status, Some(0), "{err}");
    let listing = pack("inst");
    assert_eq!(
        tar_member(&root, "installed").as_deref(),
        Some("installed\n")
    );
    assert!(!listing.contains("cella-gitinstall"), "{listing}");
    fs::remove_file(&root).expect("rm");

    // Nothing outside the project changed; the served repository neither.
    assert!(!pwned.exists());
    assert_eq!(tree(served.path()), served_before);
    // cella's own: its state and the lock file of what was built.
    let (state, lock) = (p.path().join(".cella"), p.path().join("cella.lock"));
    let outside = |t: Vec<std::path::PathBuf>| -> Vec<_> {
        t.into_iter()
            .filter(|f| !f.starts_with(&state) && *f != lock)
            .collect()
    };
    assert_eq!(outside(tree(p.path())), outside(before));
}
