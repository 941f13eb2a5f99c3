//! A hostile checkout, as an attacker would write it: symlinks in the
//! project, a shipped `.cella/` full of links, and a guest that plants
//! links through /work for the next run. cella must refuse each with a
//! clear error (exit 125), read no host file outside the project, write
//! and delete nothing outside it, and print no secret.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assets, text, tree, Project};

const SECRET: &str = "host-secret-7f3a";

/// A project inside `outer`, beside the host files an attacker wants.
struct Hostile {
    p: Project,
    outer: tempfile::TempDir,
    project: PathBuf,
}

impl Hostile {
    fn new() -> Option<Hostile> {
        let a = assets()?;
        let outer = tempfile::tempdir().expect("outer");
        let o = outer.path();
        fs::write(o.join("secret"), format!("{SECRET}\n")).expect("secret");
        fs::write(o.join("secret.env"), format!("TOKEN={SECRET}\n")).expect("env");
        fs::create_dir(o.join("victim")).expect("victim");
        fs::write(o.join("victim/keep"), "keep\n").expect("keep");
        // A tarball outside the project: importing it would leak it.
        fs::copy(&a.rootfs, o.join("outside.tar")).expect("outside tar");
        // Names that cella's store would have matched and removed.
        let id = "e".repeat(64);
        fs::create_dir(o.join("victim").join(&id)).expect("id dir");
        fs::write(o.join("victim").join(format!("{id}.1")), "x").expect("id file");
        let p = Project::new(a, "");
        let project = o.join("project");
        fs::create_dir(&project).expect("project");
        for e in fs::read_dir(p.path()).expect("ls") {
            let e = e.expect("entry");
            fs::rename(e.path(), project.join(e.file_name())).expect("move");
        }
        Some(Hostile { p, outer, project })
    }

    fn o(&self) -> &Path {
        self.outer.path()
    }

    fn yaml(&self, body: &str) {
        fs::write(self.project.join("cella.yaml"), body).expect("cella.yaml");
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.p.cella();
        cmd.current_dir(&self.project).args(args);
        common::wait_output(cmd.spawn().expect("spawn"), common::TIMEOUT)
    }

    /// Runs cella and checks it refused with a one-line-first error naming
    /// `needle`, exit 125, without the secret anywhere in its output.
    fn refused(&self, args: &[&str], needle: &str) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(125), "{args:?}\n{stdout}\n{stderr}");
        assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in\n{stderr}"
        );
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{stdout}{stderr}"
        );
        stderr
    }

    /// Every path outside the project with its size, mtime and (for
    /// files) content: what must not change.
    fn outside(&self) -> Vec<(PathBuf, u64, i64, Vec<u8>)> {
        let mut out: Vec<_> = tree(self.o())
            .into_iter()
            .filter(|p| !p.starts_with(&self.project))
            .map(|p| {
                let m = fs::symlink_metadata(&p).expect("stat");
                let data = if m.is_file() {
                    fs::read(&p).expect("read")
                } else {
                    Vec::new()
                };
                (p, m.len(), m.mtime(), data)
            })
            .collect();
        out.sort();
        out
    }
}

const BASE: &str = "containers:\n  base:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n";

/// Links in the checkout: every host path cella.yaml names is refused
/// when it is, or goes through, a symlink. None of these boots a VM.
#[test]
fn links_in_the_checkout_are_refused() {
    let Some(h) = Hostile::new() else { return };
    let pr = &h.project;
    symlink(h.o().join("outside.tar"), pr.join("linked.tar")).expect("link");
    symlink(h.o(), pr.join("up")).expect("link");
    symlink(h.o().join("victim"), pr.join("victim-link")).expect("link");
    symlink(h.o().join("secret"), pr.join("secret-link")).expect("link");
    symlink(h.o().join("secret.env"), pr.join("dev.env")).expect("link");
    fs::create_dir(pr.join("src")).expect("src");
    let before = h.outside();

    // !Tar: the file itself a link, or a link on the way.
    h.yaml("containers:\n  c:\n    setup:\n    - !Tar { url: ./linked.tar }\n");
    h.refused(
        &["_build", "c"],
        "cella.yaml:4:19: containers.c.setup[0].url",
    );
    h.yaml("containers:\n  c:\n    setup:\n    - !Tar { url: up/outside.tar }\n");
    let e = h.refused(&["_build", "c"], "is a symbolic link");
    assert!(e.contains("/project/up"), "the link is named: {e}");
    // !Copy and !Depends.
    h.yaml(&format!(
        "{BASE}    - !Copy {{ source: victim-link, path: /v }}\n"
    ));
    h.refused(&["_build", "base"], "is a symbolic link");
    h.yaml(&format!("{BASE}    - !Depends secret-link\n"));
    h.refused(&["_version_hash", "base"], "is a symbolic link");
    // environ-file: refused, and its content never shown.
    h.yaml(&format!(
        "{BASE}commands:\n  t: !Command\n    container: base\n    environ-file: dev.env\n    run: [env]\n"
    ));
    h.refused(&["t"], "environ-file");
    // A bind through a link.
    h.yaml(&format!(
        "{BASE}    volumes:\n      /v: !BindRW victim-link\ncommands:\n  t: !Command\n    container: base\n    run: [ls, /v]\n"
    ));
    h.refused(&["t"], "is a symbolic link");
    // cella.yaml itself a link to a host file.
    fs::remove_file(pr.join("cella.yaml")).expect("rm");
    symlink(h.o().join("secret"), pr.join("cella.yaml")).expect("link");
    h.refused(&[], "cella.yaml is a symbolic link");
    assert_eq!(h.outside(), before, "outside the project changed");
}

/// A shipped `.cella/`: the state directory a link, or links inside it
/// where cella keeps its images, temporaries and volumes.
#[test]
fn a_shipped_cella_directory_of_links_is_refused() {
    let Some(h) = Hostile::new() else { return };
    let pr = &h.project;
    let before = h.outside();
    h.yaml(&format!(
        "{BASE}    volumes:\n      /db: !Persistent db\ncommands:\n  t: !Command\n    container: base\n    run: [touch, /db/planted]\n  c: !Command\n    container: base\n    volumes: {{ /c: !CacheDir cc }}\n    run: [touch, /c/planted]\n"
    ));
    // .cella itself a link: nothing may be created where it points.
    symlink(h.o().join("victim"), pr.join(".cella")).expect("link");
    h.refused(&["_build", "base"], ".cella is a symbolic link");
    h.refused(&["_clean", "--all"], ".cella is a symbolic link");
    fs::remove_file(pr.join(".cella")).expect("rm");
    // Links inside: images/ and tmp/ pointing at a directory holding
    // names a cleanup would remove.
    fs::create_dir(pr.join(".cella")).expect(".cella");
    symlink(h.o().join("victim"), pr.join(".cella/images")).expect("link");
    symlink(h.o().join("victim"), pr.join(".cella/tmp")).expect("link");
    h.refused(&["_clean", "--all"], "is a symbolic link");
    h.refused(&["_build", "base"], "is a symbolic link");
    fs::remove_file(pr.join(".cella/images")).expect("rm");
    fs::remove_file(pr.join(".cella/tmp")).expect("rm");
    // A persistent volume that is a link: the guest must not write there.
    fs::create_dir(pr.join(".cella/volumes")).expect("volumes");
    symlink(h.o().join("victim"), pr.join(".cella/volumes/db")).expect("link");
    let e = h.refused(&["t"], "persistent volume \"db\"");
    assert!(e.contains("directory"), "{e}");
    // A cache directory that is a link, or whose parent is.
    fs::remove_file(pr.join(".cella/volumes/db")).expect("rm");
    fs::create_dir(pr.join(".cella/cache")).expect("cache");
    symlink(h.o().join("victim"), pr.join(".cella/cache/cc")).expect("link");
    h.refused(&["c"], "cache directory \"cc\"");
    fs::remove_file(pr.join(".cella/cache/cc")).expect("rm");
    fs::remove_dir(pr.join(".cella/cache")).expect("rm");
    symlink(h.o().join("victim"), pr.join(".cella/cache")).expect("link");
    h.refused(&["c"], "cache directory \"cc\"");
    assert!(!h.o().join("victim/planted").exists());
    assert!(!h.o().join("victim/cc").exists());
    assert_eq!(h.outside(), before, "outside the project changed");
    // The build left .cella private and usable.
    let mode = fs::metadata(pr.join(".cella")).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// The guest plants links through /work for the next cella run: one VM
/// run, then every later host access through them is refused.
#[test]
fn links_the_guest_plants_are_not_followed_later() {
    let Some(h) = Hostile::new() else { return };
    let o = h.o().display().to_string();
    fs::create_dir(h.project.join("data")).expect("data");
    fs::write(h.project.join("dev.env"), "A=1\n").expect("env");
    h.yaml(&format!(
        "{BASE}commands:\n  plant: !Command\n    container: base\n    run:\n    - sh\n    - -c\n    - |\n      rm -rf /work/data /work/dev.env /work/rootfs.tar\n      ln -s {o}/victim /work/data\n      ln -s {o}/secret.env /work/dev.env\n      ln -s {o}/outside.tar /work/rootfs.tar\n      echo planted\n  t: !Command\n    container: base\n    environ-file: dev.env\n    run: [env]\n  b: !Command\n    container: base\n    volumes: {{ /d: !BindRW data }}\n    run: [touch, /d/planted]\n"
    ));
    let before = h.outside();
    let out = h.run(&["plant"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "planted");
    assert!(fs::symlink_metadata(h.project.join("data"))
        .expect("data")
        .is_symlink());
    // The rootfs tarball is now a link: every build refuses it (listing
    // and --no-build runs never read it).
    h.refused(&["_run", "base", "true"], "rootfs.tar is a symbolic link");
    h.refused(&["_build", "base"], "rootfs.tar is a symbolic link");
    fs::remove_file(h.project.join("rootfs.tar")).expect("rm");
    fs::copy(h.o().join("outside.tar"), h.project.join("rootfs.tar")).expect("tar");
    h.refused(&["--no-build", "t"], "environ-file");
    h.refused(&["--no-build", "b"], "is a symbolic link");
    assert!(!h.o().join("victim/planted").exists());
    assert_eq!(h.outside(), before, "outside the project changed");
}
