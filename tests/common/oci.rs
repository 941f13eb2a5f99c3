//! OCI images for the tests, written by hand: layouts, layers, configs.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{text, wait_output};

pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes an OCI layout of `layers` ((media type, bytes)) and `config`
/// at `dir`, tagged `tag`.
pub fn layout(dir: &Path, layers: &[(&str, Vec<u8>)], config: &Value, tag: &str) {
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
pub fn tar_of(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
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

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

pub fn config(diff_ids: &[&[u8]]) -> Value {
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
pub fn tool(args: &[&str]) -> String {
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

/// The image's users: root and `app`, its User.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n";
