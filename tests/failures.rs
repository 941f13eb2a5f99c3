//! Bad input and broken guests: each gets a clear error and exit status
//! 125, never a hang, and nothing is written outside the project's .cella/.

mod common;

use std::path::Path;

use common::{assets, text, tree, Project};

const COMMANDS: &str = "  hello: !Command\n    container: base\n    run: [echo, hi]\n";

/// Runs cella in `p` and checks: exit 125, a first line naming `expect`,
/// and no file created or changed outside .cella/.
fn fails_cleanly(p: &Project, args: &[&str], expect: &str) -> String {
    let outside = |dir: &Path| -> Vec<_> {
        tree(dir)
            .into_iter()
            .filter(|f| !f.starts_with(dir.join(".cella")))
            .map(|f| {
                (
                    f.clone(),
                    std::fs::symlink_metadata(&f).ok().map(|m| m.len()),
                )
            })
            .collect()
    };
    let before = outside(p.path());
    let out = p.run(args, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    let first = error_line(&stderr);
    assert!(first.contains(expect), "expected {expect:?} in: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(before, outside(p.path()), "files outside .cella/ changed");
    stderr
}

/// The `error: ` line; only a build's own `cella: ` lines may come before it.
fn error_line(stderr: &str) -> &str {
    let mut lines = stderr.lines();
    let first = lines
        .by_ref()
        .find(|l| !l.starts_with("cella: "))
        .unwrap_or_default();
    assert!(first.starts_with("error: "), "stderr: {stderr}");
    first
}

/// A project for config-only failures: no guest boots, so the assets may be fake.
fn project(yaml: &str) -> Project {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cella.yaml"), yaml).expect("write");
    std::fs::write(dir.path().join("rootfs.tar"), [0u8; 1024]).expect("write tar");
    let assets = common::Assets {
        kernel: "/nonexistent/kernel".into(),
        init: "/nonexistent/init".into(),
        rootfs: dir.path().join("rootfs.tar"),
    };
    Project {
        dir,
        assets,
        mode: common::Mode::Restored,
        cache: common::shared_cache(),
    }
}

#[test]
fn malformed_yaml_names_the_line() {
    let p = project("containers:\n  base:\n    setup: [!Tar {url: ./rootfs.tar}\ncommands: {}\n");
    fails_cleanly(&p, &["hello"], "cella.yaml:4:");
}

#[test]
fn unknown_tag_names_file_line_and_field() {
    let p = project("containers:\n  base:\n    setup:\n    - !Tarr {url: ./rootfs.tar}\n");
    fails_cleanly(
        &p,
        &[],
        "cella.yaml:4:7: containers.base.setup[0]: unknown tag !Tarr",
    );
}

#[test]
fn unknown_container_names_file_line_and_field() {
    let p = project(
        "containers:\n  base:\n    setup: [!Tar {url: ./rootfs.tar}]\ncommands:\n  hello: !Command\n    container: nope\n    run: [true]\n",
    );
    fails_cleanly(
        &p,
        &["hello"],
        "cella.yaml:6:16: commands.hello.container: unknown container \"nope\"",
    );
}

#[test]
fn unknown_container_on_the_command_line() {
    let p = project("containers:\n  base:\n    setup: [!Tar {url: ./rootfs.tar}]\n");
    fails_cleanly(&p, &["_run", "nope", "true"], "unknown container \"nope\"");
}

#[test]
fn missing_tarball_names_file_line_and_field() {
    let p = project(
        "containers:\n  base:\n    setup:\n    - !Tar {url: ./gone.tar}\ncommands:\n  \
         hi: !Command\n    description: says hi\n    container: base\n    run: [true]\n",
    );
    // Listing reads no input file (as vagga's): it works without the tarball.
    for args in [&[][..], &["_list"][..]] {
        let out = p.run(args, None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("says hi"),
            "{}",
            text(&out.stdout)
        );
    }
    for args in [
        &["_run", "base", "true"][..],
        &["hi"][..],
        &["_build", "base"][..],
        &["_version_hash", "base"][..],
    ] {
        fails_cleanly(
            &p,
            args,
            "cella.yaml:4:18: containers.base.setup[0].url: no such file",
        );
    }
}

/// A tarball with one hostile entry, added by `add`.
fn hostile_tar(path: &Path, add: impl FnOnce(&mut tar::Builder<std::fs::File>)) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("create"));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "etc/", std::io::empty())
        .expect("dir");
    add(&mut b);
    b.finish().expect("finish");
}

fn link(b: &mut tar::Builder<std::fs::File>, kind: tar::EntryType, name: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, name, target).expect("link");
}

/// Adds a hostile entry to a tarball being built.
type AddEntry = dyn FnOnce(&mut tar::Builder<std::fs::File>);

#[test]
fn hostile_tarballs_are_refused_with_the_step_and_entry() {
    let cases: [(&str, Box<AddEntry>); 3] = [
        (
            "..",
            Box::new(|b| {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_size(4);
                // set_path refuses "..", so write the raw name like a hostile tool would.
                let name = b"etc/../../evil";
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &b"evil"[..]).expect("append");
            }),
        ),
        (
            "symlink",
            Box::new(|b| {
                link(
                    b,
                    tar::EntryType::Symlink,
                    "etc/escape",
                    "../../../etc/passwd",
                )
            }),
        ),
        (
            "hard link",
            Box::new(|b| link(b, tar::EntryType::Link, "etc/passwd", "/etc/passwd")),
        ),
    ];
    for (what, add) in cases {
        let p = project("containers:\n  base:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n");
        hostile_tar(&p.path().join("rootfs.tar"), add);
        let stderr = fails_cleanly(&p, &["_run", "base", "true"], "step 1/1 (!Tar at ");
        assert!(stderr.contains("cella.yaml:4:7)"), "{what}: {stderr}");
        assert!(stderr.contains("rootfs.tar"), "{what}: {stderr}");
        let images = p.path().join(".cella/images");
        let left: Vec<_> = tree(&images);
        assert!(
            left.iter().all(|f| f.is_dir()),
            "{what}: a partial image was left: {left:?}"
        );
    }
}

#[test]
fn setup_schema_errors_name_file_line_and_field() {
    let cases = [
        (
            "containers:\n  a:\n    setup:\n    - !Container b\n  b:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n    - !Build {container: a, source: /x}\n",
            "cella.yaml:8:7: containers.b.setup[1]: containers form a cycle: b -> a -> b",
        ),
        (
            "containers:\n  a:\n    setup:\n    - !Container nope\n",
            "cella.yaml:4:7: containers.a.setup[0]: unknown container \"nope\"",
        ),
        (
            "containers:\n  a:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n    - !Shell \"x\"\n",
            "cella.yaml:5:7: containers.a.setup[1]: unknown tag !Shell",
        ),
        (
            "containers:\n  a:\n    setup:\n    - !Copy {source: ., path: /x, mode: 1}\n",
            "cella.yaml:4:35: containers.a.setup[0].mode: unknown field",
        ),
    ];
    for (yaml, expect) in cases {
        let p = project(yaml);
        fails_cleanly(&p, &["_build", "a"], expect);
        assert!(
            !p.path().join(".cella").exists(),
            "{expect}: .cella was created"
        );
    }
}

/// Volume and command settings that are wrong, or that cella.yaml alone
/// may not decide, fail before anything boots or is written.
#[test]
fn volume_errors_name_file_line_and_field() {
    let base = "containers:\n  base:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n";
    let cases = [
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    write-mode: sometimes\n",
            "cella.yaml:9:17: commands.c.write-mode: unknown write mode \"sometimes\", expected read-only, transient-overlay or transient-hard-link-copy",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    volumes:\n      /v: !Persistent {name: v, init-command: nope}\n",
            "cella.yaml:10:47: commands.c.volumes./v.init-command: unknown command \"nope\"",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    volumes:\n      /etc2: !BindRO /etc\n",
            "cella.yaml:10:14: commands.c.volumes./etc2: host path /etc is outside the project; allow it with --allow-host-path /etc",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    volumes:\n      /up: !BindRW ../\n",
            "cella.yaml:10:12: commands.c.volumes./up: \"../\" climbs out of the project directory",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    volumes:\n      /s: !BindRW .cella\n",
            "is cella's own state, which no guest may see",
        ),
    ];
    for (commands, expect) in cases {
        let p = project(&format!("{base}{commands}"));
        std::fs::create_dir_all(p.path().join(".cella")).expect("mkdir .cella");
        let env_settings = p.path().join("no-settings.yaml");
        let mut cmd = p.cella();
        cmd.env("CELLA_SETTINGS", &env_settings).arg("c");
        let out = common::wait_output(cmd.spawn().expect("spawn"), common::TIMEOUT);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            error_line(&stderr).contains(expect),
            "expected {expect:?} in: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn store_and_checksum_errors_are_clear() {
    // A .cella that is not a directory: the store says what it is.
    let p = project("containers:\n  base:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n");
    std::fs::write(p.path().join(".cella"), "not a dir").expect("write");
    let stderr = fails_cleanly(&p, &["_build", "base"], ".cella is not a directory");
    assert!(stderr.contains("cella keeps its images there"), "{stderr}");

    // A tarball whose sha256 is not the one the step names.
    let sum = "0".repeat(64);
    let p = project(&format!(
        "containers:\n  base:\n    setup:\n    - !Tar {{url: ./rootfs.tar, sha256: {sum}}}\n"
    ));
    let stderr = fails_cleanly(&p, &["_build", "base"], "step 1/1 (!Tar at ");
    assert!(
        stderr.contains(&format!("not {sum} as the step says")),
        "{stderr}"
    );
    assert!(tree(&p.path().join(".cella/images"))
        .iter()
        .all(|f| f.is_dir()));
}

#[test]
fn missing_kernel_then_corrupt_image_fail_clearly() {
    let Some(mut a) = assets() else { return };
    let real_kernel = std::mem::replace(&mut a.kernel, "/nonexistent/vmlinux".into());
    let mut p = Project::new(a, COMMANDS);
    // No kernel: a clear error before any VM exists (the image is built first).
    let stderr = fails_cleanly(&p, &["hello"], "/nonexistent/vmlinux");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A corrupt image: the guest cannot mount its root and says so.
    let images: Vec<_> = tree(&p.path().join(".cella/images"))
        .into_iter()
        .filter(|f| f.ends_with("rootfs.erofs"))
        .collect();
    assert!(!images.is_empty(), "the image was not built");
    for img in &images {
        let len = std::fs::metadata(img).expect("stat").len() as usize;
        std::fs::write(img, vec![0x5a; len]).expect("corrupt");
    }
    p.assets.kernel = real_kernel;
    let stderr = fails_cleanly(&p, &["hello"], "guest-init failed");
    assert!(stderr.contains("vda"), "names the device: {stderr}");
}

#[test]
fn guest_kernel_panic_is_reported_not_hung() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, COMMANDS);
    let mut cmd = p.cella();
    // No init at all: the kernel panics with "No working init found".
    cmd.env("CELLA_KERNEL_ARGS", "rdinit=/nonexistent init=/nonexistent")
        .arg("hello");
    let out = common::wait_output(cmd.spawn().expect("spawn"), common::TIMEOUT);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        error_line(&stderr).contains("panic"),
        "names the panic: {stderr}"
    );
}

#[test]
fn process_model_errors_name_file_line_and_field() {
    let base = "containers:\n  base:\n    setup:\n    - !Tar {url: ./rootfs.tar}\n";
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    prerequisites: [nope]\n",
            &["c"],
            "cella.yaml:9:21: commands.c.prerequisites[0]: unknown command \"nope\"",
        ),
        (
            "commands:\n  c: !Supervise\n    children:\n      a: !Command {container: base, run: [true], cpus: 2}\n",
            &["c"],
            "commands.c.children.a.cpus: set it on the !Supervise command: its children share one VM",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    environ-file: missing.env\n",
            &["c"],
            "cella.yaml:9:19: commands.c.environ-file: cannot read missing.env",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n    environ-file: bad.env\n",
            &["c"],
            "cella.yaml:9:19: commands.c.environ-file: bad.env:2: expected NAME=VALUE, found a line without `=`",
        ),
        (
            "commands:\n  c: !Supervise\n    children:\n      a: !Command {container: base, run: [true]}\n",
            &["c", "--only", "b"],
            "c: no child or tag named \"b\" (it has: a)",
        ),
        (
            "commands:\n  c: !Command\n    container: base\n    run: [true]\n",
            &["--memory", "1Mi", "c"],
            "memory must be between 64Mi and 3Gi",
        ),
    ];
    for (commands, args, expect) in cases {
        let p = project(&format!("{base}{commands}"));
        std::fs::write(p.path().join("bad.env"), "A=1\noops\n").expect("bad.env");
        fails_cleanly(&p, args, expect);
    }
}
