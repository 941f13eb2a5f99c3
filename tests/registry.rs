//! `!Image docker://…` and `_push_image` against registries (issue 21):
//! Debian's docker-registry on 127.0.0.1 filled by skopeo (a pull equals
//! the layout pushed, the tag is kept in .cella/tags.json, the blob cache
//! serves a rebuild with the registry gone, `--pull` asks again, a push
//! comes back byte for byte), and fake registries that test the token
//! flow, where credentials may go, and a body larger than declared. No
//! VM is booted: `!Image` builds on the host.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::oci::*;
use common::{assets, cella_with, fake_server, Answer, Project};
use serde_json::json;

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

    // Built on with !Sh, and run: the pulled image is the container's
    // base (through the shared snapshot cache: a restored VM).
    let yaml = fs::read_to_string(p.path().join("cella.yaml")).expect("yaml");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "{yaml}  ontop:\n    setup:\n    - !Container pulled\n    \
             - !Sh \"echo built > /etc/built\"\n"
        ),
    )
    .expect("yaml");
    let shared = p.cache.clone();
    let script = "cat /etc/motd /etc/built; test -e /bin/ed || echo no-ed";
    let (status, out, err) = cella_with(&p, &open, &shared, &["_run", "ontop", "sh", "-c", script]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out, "from layer 2\nbuilt\nno-ed\n", "{err}");

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
