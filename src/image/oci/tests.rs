//! `!Image` from hand-made layouts and archives: layers in order,
//! whiteouts, the config kept, and every kind of bad image refused by
//! name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::super::erofs::ImageWriter;
use super::super::test_reader::read_file;
use super::super::tests::Tar;
use super::super::tree::Tree;
use super::{import, resolve, resolve_user, FetchCtx, Source};
use crate::config::{ImageSource, ImageStep};
use crate::hostfs::Dir;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI layout being written in `dir`.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Stores `bytes`; its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha(bytes);
        fs::write(self.blob_path(&digest), bytes).expect("blob");
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn json_blob(&self, media_type: &str, value: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(value).expect("json"))
    }

    fn index(&self, manifests: Vec<Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn layer1() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("etc/", 0o755);
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    );
    t.file("etc/group", 0o644, b"root:x:0:\napp:x:1001:\nstaff:x:50:\n");
    t.file("gone.txt", 0o644, b"lower");
    t.dir("opq/", 0o755);
    t.file("opq/a", 0o644, b"a");
    t.file("opq/b", 0o644, b"b");
    t.file("keep/x", 0o644, b"x");
    t.0.into_inner().expect("tar")
}

fn layer2() -> Vec<u8> {
    let mut t = Tar::new();
    t.file(".wh.gone.txt", 0o644, b"");
    t.dir("opq/", 0o700);
    t.file("opq/new", 0o644, b"new");
    t.file("opq/.wh..wh..opq", 0o644, b"");
    t.file("keep/y", 0o644, b"y");
    // A whiteout never hides its own layer's entry.
    t.file("same", 0o644, b"same");
    t.file(".wh.same", 0o644, b"");
    t.0.into_inner().expect("tar")
}

fn config() -> Value {
    json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
            "Entrypoint": ["/bin/echo"], "Cmd": ["hello"],
            "WorkingDir": "/opq", "User": "app:staff",
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    })
}

/// A layout with the two layers, tagged "1.0" through a nested index
/// that also lists an arm64 image.
fn sample(dir: &Path) -> Layout {
    let l = Layout::new(dir);
    let layers = vec![l.blob(LAYER, &layer1()), l.blob(LAYER_GZ, &gzip(&layer2()))];
    let manifest = l.json_blob(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST,
                "config": l.json_blob(CONFIG, &config()), "layers": layers}),
    );
    let mut amd64 = manifest.clone();
    amd64["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm64 = manifest;
    arm64["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let nested = l.json_blob(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [arm64, amd64]}),
    );
    let mut tagged = nested;
    tagged["annotations"] = json!({"org.opencontainers.image.ref.name": "1.0"});
    l.index(vec![tagged]);
    l
}

fn step(source: ImageSource) -> ImageStep {
    ImageStep {
        reference: "test".into(),
        source,
        digest: None,
    }
}

fn layout_step(rel: &str, tag: Option<&str>) -> ImageStep {
    step(ImageSource::Layout {
        rel: rel.into(),
        tag: tag.map(str::to_owned),
    })
}

static NO_REGISTRY: FetchCtx = FetchCtx {
    default: String::new(),
    insecure: Vec::new(),
    allow: Vec::new(),
    cache: None,
    max_download: 0,
    keep_downloads: 0,
};

fn src(project: &Dir) -> Source<'_> {
    Source {
        project,
        registry: &NO_REGISTRY,
        pinned: None,
    }
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open image")
}

/// Imports the step's image from `project` into a fresh image at `out`.
fn build(project: &Path, step: &ImageStep, out: &Path) -> Result<super::ImageConfig, String> {
    let dir = Dir::open(project).expect("project");
    let file = rw(out);
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(&file).expect("writer");
    let mut config = import(&src(&dir), step, &mut tree, &mut w)
        .map_err(|e| crate::text::error_chain(&e, ": "))?;
    w.finish(&tree).expect("finish");
    resolve_user(&mut config, &tree, &file).map_err(|e| e.to_string())?;
    Ok(config)
}

fn check_sample(out: &Path, config: &super::ImageConfig) {
    let img = read_file(out);
    assert!(!img.contains_key("/gone.txt"), "whiteout");
    assert!(
        !img.contains_key("/opq/a") && !img.contains_key("/opq/b"),
        "opaque"
    );
    assert_eq!(img["/opq/new"].data, b"new");
    assert_eq!(img["/opq"].perm(), 0o700);
    assert_eq!(img["/keep/x"].data, b"x");
    assert_eq!(img["/keep/y"].data, b"y");
    assert_eq!(img["/same"].data, b"same");
    assert_eq!(config.env, ["PATH=/usr/bin:/bin", "GREETING=hi"]);
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(&["/bin/echo".to_owned()][..])
    );
    assert_eq!(config.cmd.as_deref(), Some(&["hello".to_owned()][..]));
    assert_eq!(config.working_dir.as_deref(), Some("/opq"));
    assert_eq!((config.uid, config.gid), (Some(1000), Some(50)));
}

#[test]
fn a_layout_applies_its_layers_whiteouts_and_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(&dir.path().join("img"));
    let out = dir.path().join("out.erofs");
    let config = build(dir.path(), &layout_step("img", Some("1.0")), &out).expect("import");
    check_sample(&out, &config);

    // The only image needs no tag; a digest pins it.
    let project = Dir::open(dir.path()).expect("project");
    let resolved = resolve(&src(&project), &layout_step("img", None)).expect("untagged");
    let mut pinned = layout_step("img", None);
    pinned.digest = Some(resolved.digest.clone());
    resolve(&src(&project), &pinned).expect("pinned");
    pinned.digest = Some(format!("sha256:{}", "0".repeat(64)));
    let err = resolve(&src(&project), &pinned)
        .expect_err("wrong pin")
        .to_string();
    assert!(err.contains("not the sha256:0000"), "{err}");
    let err = resolve(&src(&project), &layout_step("img", Some("2.0")))
        .expect_err("no such tag")
        .to_string();
    assert!(err.contains("no image tagged \"2.0\" (tags: 1.0)"), "{err}");
}

#[test]
fn archives_read_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("img");
    sample(&layout);
    // An oci-archive: the layout, tarred.
    let mut archive = tar::Builder::new(File::create(dir.path().join("img.tar")).expect("tar"));
    archive.append_dir_all(".", &layout).expect("append");
    archive.finish().expect("finish");
    drop(archive);
    let oci = step(ImageSource::OciArchive {
        rel: "img.tar".into(),
        tag: Some("1.0".into()),
    });
    let out = dir.path().join("a.erofs");
    check_sample(&out, &build(dir.path(), &oci, &out).expect("oci-archive"));

    // A docker-archive: manifest.json, the config, uncompressed layers
    // checked against the config's diff_ids.
    let (l1, l2) = (layer1(), layer2());
    let mut cfg = config();
    cfg["rootfs"]["diff_ids"] = json!([sha(&l1), sha(&l2)]);
    let cfg = serde_json::to_vec(&cfg).expect("json");
    let manifest = json!([{"Config": "cfg.json", "RepoTags": ["localhost/x:1"],
                           "Layers": ["l1/layer.tar", "l2/layer.tar"]}]);
    let mut t = Tar::new();
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).expect("json"),
    );
    t.file("cfg.json", 0o644, &cfg);
    t.file("l1/layer.tar", 0o644, &l1);
    t.file("l2/layer.tar", 0o644, &l2);
    t.write(dir.path(), "docker.tar");
    let docker = step(ImageSource::DockerArchive {
        rel: "docker.tar".into(),
    });
    let out = dir.path().join("d.erofs");
    check_sample(
        &out,
        &build(dir.path(), &docker, &out).expect("docker-archive"),
    );

    // A layer that does not match its diff_id.
    let mut t = Tar::new();
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).expect("json"),
    );
    t.file("cfg.json", 0o644, &cfg);
    t.file("l1/layer.tar", 0o644, &l2);
    t.file("l2/layer.tar", 0o644, &l2);
    t.write(dir.path(), "docker.tar");
    let err = build(dir.path(), &docker, &out).expect_err("diff_id");
    assert!(
        err.contains("layer 1/2") && err.contains("hashes to"),
        "{err}"
    );
}

/// Breaks the sample layout with `spoil` and expects an error containing `expect`.
fn refused(spoil: impl FnOnce(&Layout), tag: Option<&str>, expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = sample(&dir.path().join("img"));
    spoil(&l);
    let err = build(
        dir.path(),
        &layout_step("img", tag),
        &dir.path().join("out.erofs"),
    )
    .expect_err(expect);
    assert!(err.contains(expect), "{err} lacks {expect:?}");
}

/// The sample's manifest with `edit` applied, stored, as the only image.
fn with_manifest(l: &Layout, edit: impl FnOnce(&mut Value)) {
    let mut manifest = json!({"schemaVersion": 2, "mediaType": MANIFEST,
        "config": l.json_blob(CONFIG, &config()),
        "layers": [l.blob(LAYER, &layer1())]});
    edit(&mut manifest);
    let desc = l.json_blob(MANIFEST, &manifest);
    l.index(vec![desc]);
}

#[test]
fn bad_images_are_refused_by_name() {
    // A layer whose bytes changed.
    refused(
        |l| {
            with_manifest(l, |_| {});
            let path = l.blob_path(&sha(&layer1()));
            let mut bytes = fs::read(&path).expect("read");
            bytes[1030] ^= 1;
            fs::write(&path, bytes).expect("write");
        },
        None,
        "hashes to",
    );
    // A truncated blob.
    refused(
        |l| {
            with_manifest(l, |_| {});
            let path = l.blob_path(&sha(&layer1()));
            let bytes = fs::read(&path).expect("read");
            fs::write(&path, &bytes[..1024]).expect("write");
        },
        None,
        "its manifest says",
    );
    refused(
        |l| {
            with_manifest(l, |m| {
                m["layers"][0]["mediaType"] = json!("application/x-rar")
            })
        },
        None,
        "unknown media type application/x-rar",
    );
    refused(
        |l| with_manifest(l, |m| m["config"]["size"] = json!(64u64 << 20)),
        None,
        "more than the",
    );
    refused(
        |l| {
            let bad = l.json_blob(
                CONFIG,
                &json!({"architecture": "arm64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []}}),
            );
            with_manifest(l, |m| m["config"] = bad);
        },
        None,
        "linux/arm64",
    );
    refused(
        |l| {
            let mut t = Tar::new();
            t.file("../escape", 0o644, b"x");
            let bad = l.blob(LAYER, &t.0.into_inner().expect("tar"));
            with_manifest(l, |m| m["layers"] = json!([bad]));
        },
        None,
        "escape",
    );
    refused(
        |l| {
            let path = l.blob_path(&sha(&layer1()));
            fs::remove_file(&path).expect("rm");
            std::os::unix::fs::symlink("/etc/passwd", &path).expect("link");
            with_manifest(l, |_| {});
        },
        None,
        "is a symbolic link, not a regular file",
    );
    refused(
        |l| {
            let mut arm = l.json_blob(MANIFEST, &json!({"schemaVersion": 2}));
            arm["platform"] = json!({"architecture": "arm64", "os": "linux"});
            let index = l.json_blob(INDEX, &json!({"schemaVersion": 2, "manifests": [arm]}));
            l.index(vec![index]);
        },
        None,
        "no linux/amd64 image",
    );
    refused(
        |l| fs::remove_file(l.dir.join("oci-layout")).expect("rm"),
        None,
        "no oci-layout",
    );
    refused(
        |l| fs::write(l.dir.join("index.json"), b"{").expect("w"),
        None,
        "the index is not valid",
    );
}

#[test]
fn pins_name_the_index_and_a_changed_layout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = sample(&dir.path().join("img"));
    let project = Dir::open(dir.path()).expect("project");
    let resolved = resolve(&src(&project), &layout_step("img", Some("1.0"))).expect("resolve");
    // The tag names the nested index; its digest pins the image too.
    assert_ne!(resolved.top, resolved.digest);
    let mut pinned = layout_step("img", Some("1.0"));
    pinned.digest = Some(resolved.top.clone());
    resolve(&src(&project), &pinned).expect("pinned by the index");
    // A layout that changes after the id was computed.
    let other = l.json_blob(INDEX, &json!({"schemaVersion": 2, "manifests": []}));
    let mut tagged = other;
    tagged["annotations"] = json!({"org.opencontainers.image.ref.name": "1.0"});
    l.index(vec![tagged]);
    let source = Source {
        project: &project,
        registry: &NO_REGISTRY,
        pinned: Some(&resolved.top),
    };
    let err = resolve(&source, &layout_step("img", Some("1.0")))
        .expect_err("changed")
        .to_string();
    assert!(
        err.contains("no linux/amd64 image") || err.contains("changed while cella read it"),
        "{err}"
    );
}

#[test]
fn opaque_markers_keep_the_layers_own_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Layout::new(&dir.path().join("img"));
    let mut lower = Tar::new();
    lower.file("a/x", 0o644, b"lower");
    lower.file("a/b/old", 0o644, b"lower");
    let mut upper = Tar::new();
    upper.file("a/b/c", 0o644, b"upper");
    upper.file("a/.wh..wh..opq", 0o644, b"");
    let layers = vec![
        l.blob(LAYER, &lower.0.into_inner().expect("tar")),
        l.blob(LAYER, &upper.0.into_inner().expect("tar")),
    ];
    let mut cfg = config();
    cfg["config"] = json!({});
    let manifest = l.json_blob(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST,
                "config": l.json_blob(CONFIG, &cfg), "layers": layers}),
    );
    l.index(vec![manifest]);
    let out = dir.path().join("out.erofs");
    build(dir.path(), &layout_step("img", None), &out).expect("import");
    let img = read_file(&out);
    assert_eq!(img["/a/b/c"].data, b"upper");
    assert!(
        !img.contains_key("/a/x"),
        "the lower layer's file is hidden"
    );
    assert!(!img.contains_key("/a/b/old"), "so is what was under a/b");

    // A whiteout of "." is refused.
    let mut bad = Tar::new();
    bad.file("a/.wh..", 0o644, b"");
    let layers = vec![l.blob(LAYER, &bad.0.into_inner().expect("tar"))];
    let manifest = l.json_blob(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST,
                "config": l.json_blob(CONFIG, &cfg), "layers": layers}),
    );
    l.index(vec![manifest]);
    let err = build(dir.path(), &layout_step("img", None), &out).expect_err("dot");
    assert!(err.contains("a whiteout of"), "{err}");
}
