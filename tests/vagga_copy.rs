//! vagga's `!Copy` on a real guest (issue 22): its default modes and
//! umask, the build epoch as mtime, `rules` (globs, vagga's default
//! rules, `no-default-rules`), `preserve-permissions`, `preserve-times`,
//! and `!Depends` with rules; written as an attacker's project would be:
//! links out of the project in the source, rules that name them, a
//! set-uid file. All the copies are host steps, so one VM (the `_run`)
//! checks them all.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::{assets, text, tree, Project};

const SECRET: &str = "host-secret-c0py";

const YAML: &str = r#"containers:
  all:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Copy { source: /work/app, path: /regex }
    - !Copy
      source: /work/app
      path: /rules
      rules: ['/*.py', '/pkg/', '!*.pyc', '/outdir/secret', '/outside', '/empty/', '/missing/']
    - !Copy
      source: app
      path: /perms
      rules: ['/']
      no-default-rules: true
      preserve-permissions: true
      preserve-times: true
    - !Copy { source: app/run.sh, path: /one.sh, umask: 0o022 }
    - !Copy { source: app, path: /none, rules: ['!*.o'] }
    - !Copy { source: /rules/pkg, path: /rules/pkg/again, rules: ['/*.py'] }
    - !Copy { source: /etc/passwd, path: /etc/passwd.copy, owner-uid: 7, preserve-times: true }
  plain:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Copy { source: app, path: /rules, rules: ['/*.py'] }
  nosuch:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Copy { source: /no/such, path: /x }
  dep:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Depends { path: app, rules: ['/pkg/', '!*.pyc'] }
commands:
  ls: !Command
    container: all
    run: |
      cd /
      find regex rules perms none | sort
      stat -c '%n %a %u:%g %Y' regex regex/run.sh regex/main.py regex/secret.txt \
        regex/setuid regex/empty rules rules/pkg perms/secret.txt perms/setuid \
        perms/run.sh one.sh
      stat -c '%n %Y' perms/main.py perms/pkg
      readlink perms/outside; readlink perms/outdir
      grep -rl host-secret regex rules perms none one.sh || echo no-secret
      stat -c '%n %a %u:%g %Y' rules/pkg/again/mod.py etc/passwd.copy
      cmp etc/passwd etc/passwd.copy && echo same-content
      [ "$(stat -c %Y etc/passwd)" = "$(stat -c %Y etc/passwd.copy)" ] && echo same-time
"#;

fn write_app(app: &Path, outer: &Path) {
    let file = |name: &str, body: &str, mode: u32| {
        let path = app.join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, body).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    file("main.py", "print('hi')\n", 0o644);
    file("main.pyc", "bytecode\n", 0o644);
    file("run.sh", "#!/bin/sh\necho run\n", 0o755);
    file("secret.txt", "private\n", 0o600);
    file("setuid", "#!/bin/sh\n", 0o4755);
    file(".git/config", "[core]\n", 0o644);
    file("notes.txt~", "backup\n", 0o644);
    file("pkg/__init__.py", "", 0o644);
    file("pkg/mod.py", "x = 1\n", 0o644);
    file("pkg/mod.pyc", "bytecode\n", 0o644);
    fs::create_dir(app.join("empty")).expect("mkdir");
    fs::create_dir(app.join("missing")).expect("mkdir");
    // Links out of the project: copied as links, never followed.
    symlink(outer.join("secret"), app.join("outside")).expect("symlink");
    symlink(outer, app.join("outdir")).expect("symlink");
    let t = UNIX_EPOCH + Duration::from_secs(1_234_567_890);
    fs::File::options()
        .write(true)
        .open(app.join("main.py"))
        .and_then(|f| f.set_modified(t))
        .expect("mtime");
}

fn run(p: &Project, args: &[&str]) -> (Option<i32>, String, String) {
    let out = p.run(args, None);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn version(p: &Project, name: &str) -> String {
    let (status, stdout, stderr) = run(p, &["_version_hash", name]);
    assert_eq!(status, Some(0), "{stderr}");
    stdout.trim().to_owned()
}

#[test]
fn copy_modes_rules_and_times_as_vagga() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let d = p.path();
    let outer = tempfile::tempdir().expect("outer");
    fs::write(outer.path().join("secret"), format!("{SECRET}\n")).expect("secret");
    let outer_before = tree(outer.path());
    fs::remove_file(d.join("cella.yaml")).expect("rm");
    fs::write(d.join("vagga.yaml"), YAML).expect("vagga.yaml");
    write_app(&d.join("app"), outer.path());

    let (status, stdout, stderr) = run(&p, &["ls"]);
    assert_eq!(status, Some(0), "{stderr}");
    // As vagga: rules that only leave files out copy nothing, with a
    // warning; with `/` alone, empty directories are not copied either.
    assert!(
        stderr.contains("warning: !Copy app: every rule leaves files out"),
        "{stderr}"
    );
    let outer_path = outer.path().display().to_string();
    let expected = format!(
        "\
none
perms
perms/.git
perms/.git/config
perms/main.py
perms/main.pyc
perms/notes.txt~
perms/outdir
perms/outside
perms/pkg
perms/pkg/__init__.py
perms/pkg/mod.py
perms/pkg/mod.pyc
perms/run.sh
perms/secret.txt
perms/setuid
regex
regex/empty
regex/main.py
regex/main.pyc
regex/missing
regex/outdir
regex/outside
regex/pkg
regex/pkg/__init__.py
regex/pkg/mod.py
regex/pkg/mod.pyc
regex/run.sh
regex/secret.txt
regex/setuid
rules
rules/empty
rules/main.py
rules/missing
rules/outside
rules/pkg
rules/pkg/__init__.py
rules/pkg/again
rules/pkg/again/__init__.py
rules/pkg/again/mod.py
rules/pkg/mod.py
regex 775 0:0 0
regex/run.sh 775 0:0 0
regex/main.py 664 0:0 0
regex/secret.txt 664 0:0 0
regex/setuid 775 0:0 0
regex/empty 775 0:0 0
rules 775 0:0 0
rules/pkg 775 0:0 0
perms/secret.txt 600 0:0 {secret_mtime}
perms/setuid 4755 0:0 {setuid_mtime}
perms/run.sh 755 0:0 {run_mtime}
one.sh 755 0:0 0
perms/main.py 1234567890
perms/pkg {pkg_mtime}
{outer_path}/secret
{outer_path}
no-secret
rules/pkg/again/mod.py 664 0:0 0
etc/passwd.copy PASSWD_MODE 7:0 PASSWD_TIME
same-content
same-time
",
        secret_mtime = mtime(&d.join("app/secret.txt")),
        setuid_mtime = mtime(&d.join("app/setuid")),
        run_mtime = mtime(&d.join("app/run.sh")),
        pkg_mtime = mtime(&d.join("app/pkg")),
    );
    // The lines that depend on the rootfs's /etc/passwd.
    let passwd = stdout
        .lines()
        .find(|l| l.starts_with("etc/passwd.copy "))
        .unwrap_or_default()
        .to_owned();
    let fields: Vec<&str> = passwd.split(' ').collect();
    let expected = expected
        .replace("PASSWD_MODE", fields.get(1).unwrap_or(&""))
        .replace("PASSWD_TIME", fields.get(3).unwrap_or(&""));
    assert!(
        ["664", "775"].contains(fields.get(1).unwrap_or(&"")),
        "{passwd}"
    );
    assert_eq!(stdout, expected, "{stderr}");
    // A source missing from the image fails its step, naming it.
    let (status, _, stderr) = run(&p, &["_build", "nosuch"]);
    assert_ne!(status, Some(0), "{stderr}");
    assert!(
        stderr.contains("/no/such: no such file or directory in the image"),
        "{stderr}"
    );

    // preserve-times: an mtime joins the id; without it, it does not.
    let (all, plain, dep) = (version(&p, "all"), version(&p, "plain"), version(&p, "dep"));
    let touched = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(d.join("app/main.py"))
        .and_then(|f| f.set_modified(touched))
        .expect("touch");
    assert_ne!(version(&p, "all"), all);
    assert_eq!(version(&p, "plain"), plain);
    // What the rules leave out does not version the image; what they take does.
    fs::write(d.join("app/pkg/mod.pyc"), "other bytecode\n").expect("write");
    fs::write(d.join("app/.git/config"), "[other]\n").expect("write");
    assert_eq!(version(&p, "dep"), dep);
    fs::write(d.join("app/pkg/mod.py"), "x = 2\n").expect("write");
    assert_ne!(version(&p, "dep"), dep);

    // Bad rules: one line naming the file, line and field, exit 125, nothing built.
    for (rules, field, needle) in [
        ("['pkg']", "rules[0]", "does not start with `/`"),
        ("['/[z-a]']", "rules[0]", "invalid range"),
    ] {
        let yaml = format!(
            "containers:\n  bad:\n    setup:\n    - !Copy {{ source: app, path: /x, rules: {rules} }}\n"
        );
        fs::write(d.join("vagga.yaml"), yaml).expect("vagga.yaml");
        let (status, _, stderr) = run(&p, &["_build", "bad"]);
        assert_eq!(status, Some(125), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("vagga.yaml:4:") && stderr.contains(field),
            "{stderr}"
        );
        assert!(stderr.contains(needle), "{stderr}");
    }
    assert_eq!(
        tree(outer.path()),
        outer_before,
        "something changed outside"
    );
    assert_eq!(
        fs::read_to_string(outer.path().join("secret")).expect("secret"),
        format!("{SECRET}\n")
    );
}

fn mtime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).expect("stat").mtime()
}
