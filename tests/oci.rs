//! OCI images in and out (issue 21) on real guests: `!Image` from an OCI
//! layout made here (three layers: gzip, plain, zstd; a whiteout and an
//! opaque directory), from the oci-archive, docker-archive and OCI
//! layout skopeo makes of it; a command without `run` runs the image's Entrypoint and
//! Cmd as its User in its WorkingDir; `_pack_image` archives that
//! podman loads and runs with runc, printing what cella printed; and a
//! project whose image lies, escapes or links out of the project gets an
//! error and changes nothing outside it. Registries are in registry.rs.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::oci::*;
use common::{assets, text, tree, wait_output, Project};

fn run(p: &Project, args: &[&str]) -> (Option<i32>, String, String) {
    let out = p.run(args, None);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

const YAML: &str = r#"containers:
  layout:
    setup:
    - !Image oci:img:1.0
  archive:
    setup:
    - !Image { ref: "oci-archive:img-oci.tar:1.0" }
  docker:
    setup:
    - !Image docker-archive:img-docker.tar
  skopeo-layout:
    setup:
    - !Image oci:img-skopeo:2.0
  ontop:
    environ: { FROM_YAML: "yes" }
    setup:
    - !Container layout
    - !Sh "echo built > /etc/built"
commands:
  default: !Command { container: layout }
  check: !Command
    container: ontop
    run: |
      test -e /bin/ed || echo no-ed
      cat /etc/motd
      ls /app | tr '\n' ' '; echo
      cat /etc/built
      echo "$GREETING $FROM_YAML $(id -u) $(pwd)"
"#;

#[test]
fn images_in_and_out() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let busybox = fs::read(p.path().join("rootfs.tar")).expect("rootfs");
    let passwd = PASSWD;
    let layer2 = tar_of(&[
        ("bin/.wh.ed", tar::EntryType::Regular, 0o644, b""),
        (
            "etc/motd",
            tar::EntryType::Regular,
            0o644,
            b"from layer 2\n",
        ),
        (
            "etc/passwd",
            tar::EntryType::Regular,
            0o644,
            passwd.as_bytes(),
        ),
        ("app/", tar::EntryType::Directory, 0o755, b""),
        ("app/a", tar::EntryType::Regular, 0o644, b"a"),
        ("app/b", tar::EntryType::Regular, 0o644, b"b"),
    ]);
    let layer3 = tar_of(&[
        ("app/", tar::EntryType::Directory, 0o777, b""),
        ("app/.wh..wh..opq", tar::EntryType::Regular, 0o644, b""),
        ("app/c", tar::EntryType::Regular, 0o644, b"c"),
    ]);
    let zstd3 = zstd::encode_all(&layer3[..], 3).expect("zstd");
    let cfg = config(&[&busybox, &layer2, &layer3]);
    layout(
        &p.path().join("img"),
        &[
            (LAYER_GZ, gzip(&busybox)),
            (LAYER, layer2.clone()),
            (LAYER_ZSTD, zstd3),
        ],
        &cfg,
        "1.0",
    );
    // Docker's format has no zstd: its source has the last layer gzipped.
    layout(
        &p.path().join("img-gz"),
        &[
            (LAYER_GZ, gzip(&busybox)),
            (LAYER, layer2),
            (LAYER_GZ, gzip(&layer3)),
        ],
        &cfg,
        "1.0",
    );
    fs::write(p.path().join("cella.yaml"), YAML).expect("yaml");
    // skopeo reads the layout and writes the two archives.
    let at = |name: &str| p.path().join(name).display().to_string();
    tool(&[
        "skopeo",
        "copy",
        "-q",
        &format!("oci:{}:1.0", at("img")),
        &format!("oci-archive:{}:1.0", at("img-oci.tar")),
    ]);
    tool(&[
        "skopeo",
        "copy",
        "-q",
        &format!("oci:{}:1.0", at("img-gz")),
        &format!("docker-archive:{}:localhost/img:1.0", at("img-docker.tar")),
    ]);
    tool(&[
        "skopeo",
        "copy",
        "-q",
        &format!("oci:{}:1.0", at("img-gz")),
        &format!("oci:{}:2.0", at("img-skopeo")),
    ]);

    // The four sources give the same tree, byte for byte.
    let digest = |name: &str| {
        let (status, out, err) = run(&p, &["_build", "--print-digest", name]);
        assert_eq!(status, Some(0), "{name}: {err}");
        out.trim().to_owned()
    };
    let d = digest("layout");
    assert_eq!(d.len(), 64, "{d}");
    assert_eq!(digest("archive"), d);
    assert_eq!(digest("docker"), d);
    assert_eq!(digest("skopeo-layout"), d);

    // No `run`: the image's Entrypoint and Cmd, as its User, in its
    // WorkingDir, with its Env; arguments replace Cmd.
    let (status, out, err) = run(&p, &["default"]);
    assert_eq!(
        (status, out.as_str()),
        (Some(0), "hi 1000:1000 /app a b\n"),
        "{err}"
    );
    let (status, out, err) = run(&p, &["default", "x y"]);
    assert_eq!(
        (status, out.as_str()),
        (Some(0), "hi 1000:1000 /app x y\n"),
        "{err}"
    );

    // Built on: the whiteout, the opaque directory, the build step.
    let (status, out, err) = run(&p, &["check"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out, "no-ed\nfrom layer 2\nc \nbuilt\nhi yes 0 /work\n");

    // Out: archives podman loads and runs as cella did; the same bytes
    // every time.
    let export = |format: &str, file: &str| {
        let (status, _, err) = run(
            &p,
            &[
                "_pack_image",
                "--format",
                format,
                "--tag",
                "localhost/cella-e2e:1",
                "-f",
                file,
                "layout",
            ],
        );
        assert_eq!(status, Some(0), "{format}: {err}");
        fs::read(p.path().join(file)).expect("archive")
    };
    let oci = export("oci-archive", "out-oci.tar");
    assert_eq!(export("oci-archive", "out-oci2.tar"), oci, "reproducible");
    export("docker-archive", "out-docker.tar");
    tool(&[
        "skopeo",
        "inspect",
        &format!("docker-archive:{}", at("out-docker.tar")),
    ]);
    let inspect = tool(&[
        "skopeo",
        "inspect",
        "--config",
        &format!("oci-archive:{}", at("out-oci.tar")),
    ]);
    assert!(inspect.contains("\"WorkingDir\": \"/app\""), "{inspect}");
    let loaded = tool(&["podman", "load", "-q", "-i", &at("out-oci.tar")]);
    assert!(loaded.contains("localhost/cella-e2e:1"), "{loaded}");
    let ran = Command::new("podman")
        .args(["run", "--rm", "--runtime", "runc", "--network=none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg("localhost/cella-e2e:1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman");
    let ran = wait_output(ran, Duration::from_secs(300));
    let _ = Command::new("podman")
        .args(["rmi", "-f", "localhost/cella-e2e:1"])
        .output();
    assert_eq!(
        text(&ran.stdout),
        "hi 1000:1000 /app a b\n",
        "podman: {}",
        text(&ran.stderr)
    );
    // The plain export is the root, as vagga's.
    let (status, _, err) = run(&p, &["_pack_image", "-z", "-f", "root.tar.gz", "layout"]);
    assert_eq!(status, Some(0), "{err}");
    let listing = tool(&["tar", "-tzf", &at("root.tar.gz")]);
    assert!(listing.lines().any(|l| l == "app/c"), "{listing}");
    assert!(
        !listing.lines().any(|l| l == "bin/ed" || l == "app/a"),
        "{listing}"
    );
}

/// An image that lies or reaches out of the project: refused by name,
/// nothing written outside the project or kept in its store.
#[test]
fn hostile_images_change_nothing_outside() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let outside = tempfile::tempdir().expect("outside");
    fs::write(outside.path().join("canary"), b"untouched").expect("canary");
    let busybox = fs::read(p.path().join("rootfs.tar")).expect("rootfs");
    let cfg = |layers: &[&[u8]]| config(layers);

    // Blobs behind a link out of the project.
    layout(
        &outside.path().join("real"),
        &[(LAYER, busybox.clone())],
        &cfg(&[&busybox]),
        "1",
    );
    fs::create_dir(p.path().join("linked")).expect("mkdir");
    fs::copy(
        outside.path().join("real/index.json"),
        p.path().join("linked/index.json"),
    )
    .expect("cp");
    fs::copy(
        outside.path().join("real/oci-layout"),
        p.path().join("linked/oci-layout"),
    )
    .expect("cp");
    std::os::unix::fs::symlink(
        outside.path().join("real/blobs"),
        p.path().join("linked/blobs"),
    )
    .expect("link");
    let before = tree(outside.path());
    // A layer climbing out, one writing through a link it planted, one
    // that is not what its digest says.
    let climb = tar_of(&[("../../escaped", tar::EntryType::Regular, 0o644, b"x")]);
    layout(
        &p.path().join("climb"),
        &[(LAYER, climb.clone())],
        &cfg(&[&climb]),
        "1",
    );
    let target = outside.path().display().to_string();
    let through = tar_of(&[
        ("out", tar::EntryType::Symlink, 0o777, target.as_bytes()),
        ("out/pwned", tar::EntryType::Regular, 0o644, b"x"),
    ]);
    layout(
        &p.path().join("through"),
        &[(LAYER, through.clone())],
        &cfg(&[&through]),
        "1",
    );
    layout(
        &p.path().join("lie"),
        &[(LAYER, busybox.clone())],
        &cfg(&[&busybox]),
        "1",
    );
    let blobs = p.path().join("lie/blobs/sha256");
    let name = sha(&busybox).trim_start_matches("sha256:").to_owned();
    let mut bytes = fs::read(blobs.join(&name)).expect("blob");
    // A byte inside busybox's code: the archive still parses.
    let elf = bytes
        .windows(4)
        .position(|w| w == b"\x7fELF")
        .expect("busybox");
    bytes[elf + 100_000] ^= 0xff;
    fs::write(blobs.join(&name), bytes).expect("spoil");
    fs::write(
        p.path().join("cella.yaml"),
        "containers:\n  linked: { setup: [!Image 'oci:linked:1'] }\n  \
         climb: { setup: [!Image 'oci:climb:1'] }\n  \
         through: { setup: [!Image 'oci:through:1'] }\n  \
         lie: { setup: [!Image 'oci:lie:1'] }\n",
    )
    .expect("yaml");
    for (name, expect) in [
        ("linked", "symbolic link"),
        ("climb", "escaped"),
        ("through", "out/pwned"),
        ("lie", "hashes to"),
    ] {
        let (status, _, err) = run(&p, &["_build", name]);
        assert_eq!(status, Some(125), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err} lacks {expect:?}");
        assert_eq!(
            err.trim_end()
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "{err}"
        );
    }
    assert_eq!(tree(outside.path()), before);
    assert_eq!(
        fs::read(outside.path().join("canary")).expect("canary"),
        b"untouched"
    );
    let images = p.path().join(".cella/images");
    let kept: Vec<_> = fs::read_dir(&images)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "no image kept: {kept:?}");
    let tmp = p.path().join(".cella/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no build left: {left:?}");
}
