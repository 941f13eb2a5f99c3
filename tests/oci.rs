//! OCI images in and out (issue 21) on real guests: `!Image` from an OCI
//! layout made here (three layers: gzip, plain, zstd; a whiteout and an
//! opaque directory), from the oci-archive and docker-archive skopeo
//! makes of it; a command without `run` runs the image's Entrypoint and
//! Cmd as its User in its WorkingDir; `_pack_image` archives that
//! podman loads and runs with runc, printing what cella printed; and a
//! project whose image lies, escapes or links out of the project gets an
//! error and changes nothing outside it.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assets, fake_server, text, tree, wait_output, Answer, Project};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes an OCI layout of `layers` ((media type, bytes)) and `config`
/// at `dir`, tagged `tag`.
fn layout(dir: &Path, layers: &[(&str, Vec<u8>)], config: &Value, tag: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    let blob = |media_type: &str, bytes: &[u8]| {
        let digest = sha(bytes);
        let name = digest.trim_start_matches("sha256:").to_owned();
        fs::write(dir.join("blobs/sha256").join(name), bytes).expect("blob");
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    };
    let layers: Vec<Value> = layers.iter().map(|(t, b)| blob(t, b)).collect();
    let config = blob(CONFIG, &serde_json::to_vec(config).expect("json"));
    let manifest = json!({"schemaVersion": 2, "mediaType": MANIFEST,
                          "config": config, "layers": layers});
    let mut desc = blob(MANIFEST, &serde_json::to_vec(&manifest).expect("json"));
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
}

/// A tar of `entries`: (path, kind, mode, data or link target).
fn tar_of(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name(std::str::from_utf8(data).expect("utf-8"))
                .expect("link");
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &b""[..]).expect("append");
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
    }
    b.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn config(diff_ids: &[&[u8]]) -> Value {
    let diff_ids: Vec<String> = diff_ids.iter().map(|l| sha(l)).collect();
    json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "GREETING=hi"],
            "Entrypoint": ["/bin/sh", "-c", "echo \"$GREETING $(id -u):$(id -g) $(pwd) $*\"", "sh"],
            "Cmd": ["a", "b"],
            "WorkingDir": "/app",
            "User": "app",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
}

/// Runs a host tool (bounded), failing the test on a non-zero status.
fn tool(args: &[&str]) -> String {
    let child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (scripts/build.sh installs it): {e}", args[0]));
    let out = wait_output(child, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn run(p: &Project, args: &[&str]) -> (Option<i32>, String, String) {
    let out = p.run(args, None);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The image's users: root and `app`, its User.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n";

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

    // The three sources give the same tree, byte for byte.
    let digest = |name: &str| {
        let (status, out, err) = run(&p, &["_build", "--print-digest", name]);
        assert_eq!(status, Some(0), "{name}: {err}");
        out.trim().to_owned()
    };
    let d = digest("layout");
    assert_eq!(d.len(), 64, "{d}");
    assert_eq!(digest("archive"), d);
    assert_eq!(digest("docker"), d);

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

/// `docker-registry` on 127.0.0.1, stopped (by pid) when dropped.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/build.sh installs it)");
        let registry = LocalRegistry {
            child,
            port,
            _dir: dir,
        };
        let start = std::time::Instant::now();
        while http_status(port, "/v2/") != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The status of `GET path` on 127.0.0.1:port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Runs cella in `p` with the settings file `settings` and the cache
/// directory `cache` (no VM is booted: `!Image` builds on the host).
fn cella_with(
    p: &Project,
    settings: &Path,
    cache: &Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let child = p
        .cella()
        .env("CELLA_SETTINGS", settings)
        .env("CELLA_CACHE_DIR", cache)
        .env("REGISTRY_AUTH_FILE", p.path().join("auth.json"))
        .args(args)
        .spawn()
        .expect("cella");
    let out = wait_output(child, Duration::from_secs(300));
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn pulls_from_a_local_registry() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let cache = tempfile::tempdir().expect("cache");
    let busybox = fs::read(p.path().join("rootfs.tar")).expect("rootfs");
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
            PASSWD.as_bytes(),
        ),
    ]);
    let cfg = config(&[&busybox, &layer2]);
    layout(
        &p.path().join("img"),
        &[(LAYER_GZ, gzip(&busybox)), (LAYER, layer2)],
        &cfg,
        "1.0",
    );
    let registry = LocalRegistry::start();
    let port = registry.port;
    let at = |name: &str| p.path().join(name).display().to_string();
    tool(&[
        "skopeo",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:1.0", at("img")),
        &format!("docker://127.0.0.1:{port}/test/img:1.0"),
    ]);
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "containers:\n  local: {{ setup: [!Image 'oci:img:1.0'] }}\n  \
             pulled: {{ setup: [!Image 'docker://127.0.0.1:{port}/test/img:1.0'] }}\n"
        ),
    )
    .expect("yaml");
    let closed = p.path().join("closed.yaml");
    fs::write(
        &closed,
        format!("registries: {{insecure: ['127.0.0.1:{port}']}}\n"),
    )
    .expect("settings");
    let open = p.path().join("open.yaml");
    fs::write(
        &open,
        format!(
            "network: {{allow-addresses: [127.0.0.1/32]}}\n\
             registries: {{insecure: ['127.0.0.1:{port}']}}\n"
        ),
    )
    .expect("settings");

    // A loopback registry needs the user's leave.
    let (status, _, err) = cella_with(&p, &closed, cache.path(), &["_build", "pulled"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains("127.0.0.1 is a loopback address; cella fetches"),
        "{err}"
    );

    // Pulled, it is the same image as the layout it was pushed from.
    let digest = |settings: &Path, args: &[&str]| {
        let (status, out, err) = cella_with(&p, settings, cache.path(), args);
        assert_eq!(status, Some(0), "{args:?}: {err}");
        out.trim().to_owned()
    };
    let local = digest(&open, &["_build", "--print-digest", "local"]);
    assert_eq!(
        digest(&open, &["_build", "--print-digest", "pulled"]),
        local
    );
    let tags = fs::read_to_string(p.path().join(".cella/tags.json")).expect("tags.json");
    assert!(
        tags.contains(&format!("127.0.0.1:{port}/test/img:1.0\": \"sha256:")),
        "{tags}"
    );

    // Pushed back under another name, the image comes back the same.
    let (status, out, err) = cella_with(
        &p,
        &open,
        cache.path(),
        &[
            "_push_image",
            "local",
            &format!("docker://127.0.0.1:{port}/pushed/img:2"),
        ],
    );
    assert_eq!(status, Some(0), "{err}");
    assert!(
        out.starts_with(&format!("docker://127.0.0.1:{port}/pushed/img:2@sha256:")),
        "{out}"
    );
    tool(&[
        "skopeo",
        "inspect",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{port}/pushed/img:2"),
    ]);
    let yaml = fs::read_to_string(p.path().join("cella.yaml")).expect("yaml");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "{yaml}  repulled: {{ setup: [!Image 'docker://127.0.0.1:{port}/pushed/img:2'] }}\n"
        ),
    )
    .expect("yaml");
    assert_eq!(
        digest(&open, &["_build", "--print-digest", "repulled"]),
        local
    );
    assert!(
        !p.path()
            .join(".cella/tmp")
            .read_dir()
            .expect("tmp")
            .any(|e| e.is_ok()),
        "the push's archive is gone"
    );

    // The tag stays resolved and the blobs cached: with the registry
    // gone, a rebuild downloads nothing; only --pull asks again.
    drop(registry);
    assert_eq!(
        digest(&open, &["_build", "--force", "--print-digest", "pulled"]),
        local
    );
    // The blob cache is shared, but a manifest is another repository's
    // only once that repository served it: no image crosses over unasked.
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("tags.json");
    let top = tags[format!("127.0.0.1:{port}/test/img:1.0")]
        .as_str()
        .expect("tag")
        .to_owned();
    let yaml = fs::read_to_string(p.path().join("cella.yaml")).expect("yaml");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "{yaml}  other: {{ setup: [!Image 'docker://127.0.0.1:{port}/other/img@{top}'] }}\n"
        ),
    )
    .expect("yaml");
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "other"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(err.contains("/v2/other/img/manifests/sha256:"), "{err}");
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "--pull", "pulled"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}/test/img:1.0")),
        "{err}"
    );
}

static REG_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
static STORE_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A registry behind a token server whose blobs redirect to another host:
/// the user's credentials go to the token realm only, the token to the
/// registry only, nothing to the blob host. And a registry that sends
/// more than its manifest declares: refused, nothing cached.
#[test]
fn registry_tokens_redirects_and_lies() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let cache = tempfile::tempdir().expect("cache");
    let layer = tar_of(&[("hello", tar::EntryType::Regular, 0o644, b"hi\n")]);
    let cfg = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
    }))
    .expect("json");
    let manifest_of = |layer_digest: String, size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": sha(&cfg), "size": cfg.len()},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": size}],
        }))
        .expect("json")
    };
    let manifest = manifest_of(sha(&layer), layer.len());
    let evil_manifest = manifest_of(sha(b"x"), 1024);
    let blobs: Vec<(String, Vec<u8>)> = vec![(sha(&cfg), cfg.clone()), (sha(&layer), layer)];
    let (store, store_log) =
        fake_server(
            move |path, _| match blobs.iter().find(|(d, _)| path.ends_with(d.as_str())) {
                Some((_, b)) => (200, vec![], Some(b.clone())),
                None => (404, vec![], Some(Vec::new())),
            },
        );
    let typed = |body: &Vec<u8>| -> Answer {
        (
            200,
            vec![("Content-Type".into(), MANIFEST.into())],
            Some(body.clone()),
        )
    };
    let (reg, reg_log) = fake_server(move |path, auth| {
        if path.starts_with("/token") {
            return match auth {
                Some("Basic dXNlcjpwYXNz") => (200, vec![], Some(br#"{"token":"T0K"}"#.to_vec())),
                _ => (401, vec![], Some(Vec::new())),
            };
        }
        if path.starts_with("/v2/evil/") {
            return match path {
                _ if path.contains("/manifests/") => typed(&evil_manifest),
                _ if path.ends_with(&sha(&cfg)) => (200, vec![], Some(cfg.clone())),
                _ => (200, vec![], None),
            };
        }
        if auth != Some("Bearer T0K") {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\",scope=\"repository:app:pull\"",
                REG_PORT.load(SeqCst)
            );
            return (
                401,
                vec![("WWW-Authenticate".into(), challenge)],
                Some(Vec::new()),
            );
        }
        if path.contains("/manifests/") {
            return typed(&manifest);
        }
        let digest = path.rsplit('/').next().unwrap_or("");
        let location = format!(
            "http://127.0.0.1:{}/store/{digest}",
            STORE_PORT.load(SeqCst)
        );
        (307, vec![("Location".into(), location)], Some(Vec::new()))
    });
    REG_PORT.store(reg, SeqCst);
    STORE_PORT.store(store, SeqCst);
    fs::write(
        p.path().join("auth.json"),
        format!(r#"{{"auths": {{"127.0.0.1:{reg}": {{"auth": "dXNlcjpwYXNz"}}}}}}"#),
    )
    .expect("auth");
    let settings = p.path().join("settings.yaml");
    fs::write(
        &settings,
        format!(
            "network: {{allow-addresses: [127.0.0.1/32]}}\n\
             registries: {{insecure: ['127.0.0.1:{reg}', '127.0.0.1:{store}']}}\n"
        ),
    )
    .expect("settings");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "containers:\n  app: {{ setup: [!Image 'docker://127.0.0.1:{reg}/app:1'] }}\n  \
             evil: {{ setup: [!Image 'docker://127.0.0.1:{reg}/evil:1'] }}\n"
        ),
    )
    .expect("yaml");
    let (status, _, err) = cella_with(&p, &settings, cache.path(), &["_build", "app"]);
    assert_eq!(status, Some(0), "{err}");
    let reg_log = reg_log.lock().expect("log").clone();
    assert!(
        reg_log.iter().any(|(path, auth)| path.starts_with("/token")
            && path.contains("scope=repository%3Aapp%3Apull")
            && auth.as_deref() == Some("Basic dXNlcjpwYXNz")),
        "{reg_log:?}"
    );
    // The registry itself gets the credentials or the token it sold.
    assert!(
        reg_log
            .iter()
            .any(|(path, auth)| path.starts_with("/v2/app/blobs/")
                && auth.as_deref() == Some("Bearer T0K")),
        "{reg_log:?}"
    );
    let store_log = store_log.lock().expect("log").clone();
    assert_eq!(store_log.len(), 2, "{store_log:?}");
    assert!(
        store_log.iter().all(|(_, auth)| auth.is_none()),
        "{store_log:?}"
    );

    // More than the manifest declares: refused, nothing kept.
    let (status, _, err) = cella_with(&p, &settings, cache.path(), &["_build", "evil"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(err.contains("sent more than 1024 bytes"), "{err}");
    let names: Vec<String> = fs::read_dir(cache.path().join("oci/blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let x = sha(b"x").trim_start_matches("sha256:").to_owned();
    assert!(
        !names.iter().any(|n| n.contains(&x) || n.ends_with(".tmp")),
        "{names:?}"
    );
}
