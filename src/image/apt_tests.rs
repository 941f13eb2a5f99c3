//! Tests of `apt`: the plan, and the scratch root cella writes from an image tree.

use super::*;

#[test]
fn simulated_plan_becomes_dpkg_steps_in_apts_order() {
    let plan = "NOTE: This is only a simulation!
Inst libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst passwd [1:4.13+dfsg1-1] (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])
Conf libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Conf passwd (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])
Remv old-thing [1.0]
Inst tzdata (2026b-0+deb12u1 Debian:12.15/oldstable [all])
Conf tzdata (2026b-0+deb12u1 Debian:12.15/oldstable [all])
";
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        plan_ops(plan).expect("plan"),
        [
            DpkgOp::Unpack(strings(&[
                "libssl3_3.0.22-1~deb12u2_amd64.deb",
                "passwd_1%3a4.13+dfsg1-1+deb12u2_amd64.deb"
            ])),
            DpkgOp::Configure(strings(&["libssl3", "passwd"])),
            DpkgOp::Remove(strings(&["old-thing"])),
            DpkgOp::Unpack(strings(&["tzdata_2026b-0+deb12u1_all.deb"])),
            DpkgOp::Configure(strings(&["tzdata"])),
        ]
    );
}

#[test]
fn odd_names_in_a_plan_are_refused() {
    for line in [
        "Inst ../../etc/x (1 a [amd64])",
        "Inst x (1/../../y a [amd64])",
        "Inst x (1 a [amd64/../z])",
        "Conf -x (1 a [amd64])",
        "Remv $(reboot) [1]",
    ] {
        assert!(plan_ops(line).is_err(), "{line}");
    }
}

use super::super::erofs::ImageWriter;
use super::super::tree::{Inode, Meta};

/// An image tree with `files` (path, content) and `links` (path, target).
fn image(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> (tempfile::NamedTempFile, Tree) {
    let work = tempfile::NamedTempFile::new().expect("work");
    let mut tree = Tree::new();
    let mut w = ImageWriter::append_to(work.as_file()).expect("writer");
    for (path, data) in files {
        let f = w.write_file_data(&mut &data[..]).expect("data");
        let inode = Inode {
            meta: Meta::default(),
            kind: Kind::File(f),
        };
        tree.insert(path.as_bytes(), inode, &Meta::implicit_dir())
            .expect("insert");
    }
    for (path, target) in links {
        let inode = Inode {
            meta: Meta::default(),
            kind: Kind::Symlink(target.as_bytes().to_vec()),
        };
        tree.insert(path.as_bytes(), inode, &Meta::implicit_dir())
            .expect("insert");
    }
    (work, tree)
}

fn open_guard() -> AddressGuard {
    AddressGuard::with_host_addresses(&[], Vec::new())
}

/// Every file under `dir`, relative, with its content; fails on a link.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let t = e.file_type().expect("type");
            assert!(
                !t.is_symlink(),
                "a link on the host: {}",
                e.path().display()
            );
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .expect("rel")
                    .display()
                    .to_string();
                out.push((
                    rel,
                    String::from_utf8_lossy(&fs::read(e.path()).expect("read")).into_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_host_apt_root_is_written_by_cella_alone() {
    let (work, tree) = image(
        &[
            ("/etc/apt/sources.list", b"deb http://1.1.1.1/debian bookworm main\n"),
            (
                "/etc/apt/sources.list.d/x.sources",
                b"Types: deb\nURIs: https://[2a04:4e42::644]/apt\nSuites: stable\nComponents: main\nSigned-By: /usr/share/keyrings/x.gpg\n",
            ),
            ("/etc/apt/sources.list.d/notes.txt", b"deb http://ignored.example/ a main\n"),
            ("/usr/share/keyrings/x.gpg", b"KEY-X"),
            ("/etc/apt/trusted.gpg.d/debian.asc", b"KEY-DEBIAN"),
            ("/etc/apt/apt.conf.d/99pwn", b"APT::Update::Pre-Invoke {\"touch /tmp/pwned\";};\n"),
            ("/etc/apt/auth.conf.d/x.conf", b"machine x login a password b\n"),
            ("/etc/apt/preferences.d/pin", b"Package: *\nPin: release a=stable\nPin-Priority: 900\n"),
            ("/var/lib/dpkg/status", b"Package: base-files\nStatus: install ok installed\n"),
            ("/root/.ssh/id_rsa", b"SECRET"),
        ],
        &[
            // A key that is a link: followed inside the image only.
            ("/etc/apt/trusted.gpg.d/ssh.gpg", "/root/.ssh/id_rsa"),
            ("/etc/apt/trusted.gpg.d/rel.gpg", "../../../usr/share/keyrings/x.gpg"),
            ("/etc/apt/trusted.gpg.d/host.gpg", "/nonexistent-on-purpose"),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let apt = export_root(&tree, work.as_file(), &root, &open_guard()).expect("export");
    let written = files(&root);
    let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/preferences.d/cella.pref",
            "etc/sources.list.d/cella.sources",
            "etc/trusted.gpg.d/0.asc",
            "etc/trusted.gpg.d/1.gpg",
            "etc/trusted.gpg.d/2.gpg",
            "extended_states",
            "keyrings/1-0.gpg",
            "status",
        ]
    );
    let content = |name: &str| &written.iter().find(|(n, _)| n == name).expect(name).1;
    // In the image's own order: debian.asc, rel.gpg, ssh.gpg.
    assert_eq!(content("etc/trusted.gpg.d/0.asc"), "KEY-DEBIAN");
    assert_eq!(content("etc/trusted.gpg.d/1.gpg"), "KEY-X");
    assert_eq!(
        content("etc/trusted.gpg.d/2.gpg"),
        "SECRET",
        "the image's own file"
    );
    assert_eq!(content("keyrings/1-0.gpg"), "KEY-X");
    let sources = content("etc/sources.list.d/cella.sources");
    assert!(
        sources.contains("URIs: http://1.1.1.1/debian\nSuites: bookworm\n"),
        "{sources}"
    );
    assert!(
        sources.contains(&format!("Signed-By: {}/keyrings/1-0.gpg\n", root.display())),
        "{sources}"
    );
    assert!(!sources.contains("ignored"), "{sources}");
    assert_eq!(apt.key.len(), 16);

    let lists = dir.path().join("lists");
    let conf = apt_conf(&root, &lists, &dir.path().join("archives"));
    for line in conf.lines() {
        assert!(!line.contains("Invoke") && !line.contains("Pre-"), "{line}");
    }
    assert!(conf.contains("Acquire::http::AllowRedirect \"false\";"));
    // What apt makes of it: nothing from the host's or the image's
    // apt.conf.d (this host's has DPkg::Post-Invoke in docker-clean).
    fs::write(root.join("apt.conf"), &conf).expect("conf");
    if let Ok(out) = Command::new("apt-config")
        .arg("dump")
        .env("APT_CONFIG", root.join("apt.conf"))
        .output()
    {
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{dump}");
        assert!(!dump.contains("Invoke"), "{dump}");
        assert!(!dump.contains("/etc/apt"), "{dump}");
        assert!(
            dump.contains(&format!("Dir::Etc \"{}/etc/\"", root.display())),
            "{dump}"
        );
    }
}

#[test]
fn bad_images_are_refused_before_apt_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status: (&str, &[u8]) = ("/var/lib/dpkg/status", b"");
    let refuse = |files: &[(&str, &[u8])], guard: &AddressGuard| {
        let (work, tree) = image(files, &[]);
        let root = dir
            .path()
            .join(format!("r{}", files.len() + files[0].1.len()));
        let _ = fs::remove_dir_all(&root);
        match export_root(&tree, work.as_file(), &root, guard) {
            Ok(_) => panic!("accepted {files:?}"),
            Err(e) => e.to_string(),
        }
    };
    let e = refuse(
        &[
            ("/etc/apt/sources.list", b"deb http://127.0.0.1:9/ a main\n"),
            status,
        ],
        &open_guard(),
    );
    assert!(e.contains("127.0.0.1 is a loopback address"), "{e}");
    let e = refuse(
        &[
            (
                "/etc/apt/sources.list",
                b"deb http://169.254.169.254/ a main\n",
            ),
            status,
        ],
        &open_guard(),
    );
    assert!(e.contains("link-local"), "{e}");
    let e = refuse(
        &[("/etc/apt/sources.list", b"deb file:/srv a main\n"), status],
        &open_guard(),
    );
    assert!(
        e.contains("etc/apt/sources.list:1: cella passes apt only http"),
        "{e}"
    );
    let e = refuse(
        &[("/etc/apt/sources.list", b"# none\n"), status],
        &open_guard(),
    );
    assert!(e.contains("names no apt source"), "{e}");
    let e = refuse(
        &[
            (
                "/etc/apt/sources.list",
                b"deb [signed-by=/nope.gpg] http://1.1.1.1/ a main\n",
            ),
            status,
        ],
        &open_guard(),
    );
    assert!(e.contains("keyring /nope.gpg"), "{e}");
    let big = vec![b'#'; MAX_TEXT as usize + 1];
    let e = refuse(&[("/etc/apt/sources.list", &big), status], &open_guard());
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    let e = refuse(
        &[("/etc/apt/sources.list", b"deb http://x/ a main\n")],
        &open_guard(),
    );
    assert!(e.contains("no /var/lib/dpkg/status"), "{e}");
    // Allowed by the user, the same source passes.
    let allowed = AddressGuard::with_host_addresses(&["127.0.0.1/32".parse().unwrap()], vec![]);
    let (work, tree) = image(
        &[
            ("/etc/apt/sources.list", b"deb http://127.0.0.1:9/ a main\n"),
            status,
        ],
        &[],
    );
    assert!(export_root(&tree, work.as_file(), &dir.path().join("ok"), &allowed).is_ok());
}
