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
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "stderr: {stderr}");
    assert!(first.contains(expect), "expected {expect:?} in: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(before, outside(p.path()), "files outside .cella/ changed");
    stderr
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
    let p = project("containers:\n  base:\n    setup:\n    - !Tar {url: ./gone.tar}\n");
    fails_cleanly(
        &p,
        &["_run", "base", "true"],
        "cella.yaml:4:18: containers.base.setup[0].url: no such file",
    );
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
        let stderr = fails_cleanly(
            &p,
            &["_run", "base", "true"],
            "cella.yaml:4:7: containers.base.setup[0]",
        );
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
        .filter(|f| f.is_file())
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
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("panic"), "names the panic: {stderr}");
}
