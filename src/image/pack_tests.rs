//! Tests of `pack`: the layer read back with the tar crate and imported
//! again, the same bytes every time, the OCI and docker archives' JSON and
//! digests, and what skopeo makes of them when it is installed.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use tar::EntryType as T;

use super::erofs::ImageWriter;
use super::pack::{pack, rfc3339, Compression, PackError, PackFormat, PackOptions};
use super::store::{Image, ImageConfig, ImageInfo, ROOTFS, TREE};
use super::tar_import;
use super::test_reader::have;
use super::tests::{Tar, MTIME};
use super::tree::{Inode, Kind, Meta, Tree};
use crate::hostfs::Dir;

/// A version 2 file capability: cap_net_raw, effective.
const CAP: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
const EPOCH: i64 = 1_700_000_000;
const REF: &str = "localhost/base:latest";

fn long_dir() -> String {
    format!("usr/share/{}", "d".repeat(60))
}
fn long_file() -> String {
    format!("{}/{}", long_dir(), "f".repeat(70))
}
fn long_target() -> String {
    format!("../{}", "t".repeat(150))
}
fn busybox() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// The sample tree: every kind of entry, hard links, xattrs, a large uid,
/// long names.
fn sample_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("etc/", 0o750);
    t.file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n");
    t.file("etc/empty", 0o600, b"");
    t.file("bin/busybox", 0o4755, &busybox());
    t.hardlink("bin/sh", "bin/busybox");
    t.hardlink("usr/bin/env", "bin/busybox");
    t.pax(&[
        ("SCHILY.xattr.user.note", b"hi"),
        ("SCHILY.xattr.security.capability", CAP),
    ]);
    t.file("bin/ping", 0o755, b"ping");
    t.symlink("lib", "usr/lib");
    t.owned("home/u/big", 0o640, 3_000_000, 1000, b"big");
    t.device(T::Char, "dev/null", 1, 3);
    t.device(T::Block, "dev/sda", 8, 0);
    t.entry(T::Fifo, "run/fifo", 0o600, "", b"");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(T::Regular);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(4);
    t.0.append_data(&mut h, long_file(), &b"long"[..])
        .expect("long");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(T::Symlink);
    h.set_mode(0o777);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    t.0.append_link(&mut h, "usr/share/longlink", long_target())
        .expect("long link");
    t.0.into_inner().expect("tar")
}

/// Makes an image in `dir` of the archive `tar`, plus what a tar cannot
/// hold: a socket and a file older than 1970.
fn image_of(dir: &Path, tar: &[u8], extras: bool) -> Image {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(ROOTFS))
        .unwrap();
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(&file).unwrap();
    tar_import::import(Path::new("t.tar"), tar, &mut tree, b"/", &mut w).unwrap();
    if extras {
        let meta = Meta {
            perm: 0o755,
            mtime: -5,
            ..Meta::default()
        };
        let data = w.write_file_data(&mut &b"old"[..]).unwrap();
        let old = Inode {
            meta: meta.clone(),
            kind: Kind::File(data),
        };
        tree.insert(b"/old", old, &Meta::implicit_dir()).unwrap();
        let sock = Inode {
            meta,
            kind: Kind::Socket,
        };
        tree.insert(b"/run/sock", sock, &Meta::implicit_dir())
            .unwrap();
    }
    w.finish(&tree).unwrap();
    fs::write(dir.join(TREE), tree.to_json().unwrap()).unwrap();
    Image {
        dir: Dir::open(dir).unwrap(),
        info: ImageInfo {
            container: "base".into(),
            id: "ab".repeat(32),
            digest: String::new(),
            size: 0,
            built_with: None,
            packages: Vec::new(),
            config: None,
        },
    }
}

fn config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into(), "LANG=C.UTF-8".into()],
        entrypoint: Some(Vec::new()),
        cmd: Some(vec!["/bin/sh".into()]),
        working_dir: Some("/root".into()),
        user: None,
        uid: None,
        gid: None,
    }
}

fn try_pack(
    image: &Image,
    format: PackFormat,
    compression: Compression,
    reference: &str,
) -> Result<Vec<u8>, PackError> {
    let config = config();
    let opts = PackOptions {
        format,
        compression,
        reference,
        config: &config,
        epoch: EPOCH,
    };
    let mut out = Vec::new();
    pack(image, &mut out, &opts).map(|()| out)
}

fn packed(image: &Image, format: PackFormat, compression: Compression) -> Vec<u8> {
    try_pack(image, format, compression, REF).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An archive's entries in order: name and data.
fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

#[test]
fn pack_layer_reads_back_with_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let tar = packed(&image, PackFormat::Tar, Compression::None);
    assert_eq!(tar.len() % 512, 0);
    assert!(tar.ends_with(&[0; 1024]));

    let mut archive = tar::Archive::new(&tar[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let h = e.header().clone();
        assert!(h.as_ustar().is_some(), "{name}: a ustar header");
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let link = link.map(|l| String::from_utf8(l).unwrap());
        let mut xattrs = BTreeMap::new();
        for ext in e.pax_extensions().unwrap().into_iter().flatten() {
            let ext = ext.unwrap();
            if let Some(x) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                xattrs.insert(x.to_owned(), ext.value_bytes().to_vec());
            }
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let (kind, mode) = (h.entry_type(), h.mode().unwrap());
        let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{name}");
        let mtime = h.mtime().unwrap();
        match name.as_str() {
            "bin/busybox" => {
                assert_eq!((kind, mode, data), (T::Regular, 0o4755, busybox()));
                assert_eq!(mtime, MTIME);
            }
            "bin/sh" | "usr/bin/env" => {
                assert_eq!((kind, link.as_deref()), (T::Link, Some("bin/busybox")))
            }
            "bin/ping" => {
                assert_eq!(xattrs.len(), 2);
                assert_eq!(xattrs["security.capability"], CAP);
                assert_eq!(xattrs["user.note"], b"hi");
            }
            "etc/" => assert_eq!((kind, mode, mtime), (T::Directory, 0o750, MTIME)),
            "home/" => assert_eq!((kind, mode, mtime), (T::Directory, 0o755, 0)),
            "home/u/big" => assert_eq!((uid, gid, mode), (3_000_000, 1000, 0o640)),
            "etc/passwd" => assert_eq!(data, b"root:x:0:0::/root:/bin/sh\n"),
            "lib" => assert_eq!((kind, link.as_deref()), (T::Symlink, Some("usr/lib"))),
            "dev/null" => {
                assert_eq!(kind, T::Char);
                assert_eq!(h.device_major().unwrap(), Some(1));
                assert_eq!(h.device_minor().unwrap(), Some(3));
            }
            "dev/sda" => assert_eq!((kind, h.device_major().unwrap()), (T::Block, Some(8))),
            "run/fifo" => assert_eq!(kind, T::Fifo),
            "old" => assert_eq!((mtime, data), (0, b"old".to_vec())),
            "usr/share/longlink" => assert_eq!(link, Some(long_target())),
            n if n == long_file() => assert_eq!(data, b"long"),
            _ => {}
        }
        if kind != T::Directory {
            assert!(xattrs.is_empty() || name == "bin/ping", "{name}");
        }
        assert!(uid == 0 || name == "home/u/big", "{name}");
        names.push(name);
    }
    let want = [
        "bin/",
        "bin/busybox",
        "bin/ping",
        "bin/sh",
        "dev/",
        "dev/null",
        "dev/sda",
        "etc/",
        "etc/empty",
        "etc/passwd",
        "home/",
        "home/u/",
        "home/u/big",
        "lib",
        "old",
        "run/",
        "run/fifo",
        "usr/",
        "usr/bin/",
        "usr/bin/env",
        "usr/share/",
    ];
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.extend([format!("{}/", long_dir()), long_file()]);
    want.push("usr/share/longlink".into());
    assert_eq!(names, want, "sorted depth-first, no root, no socket");
}

#[test]
fn pack_tar_imports_again_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let tar = packed(&image, PackFormat::Tar, Compression::None);
    let again = tempfile::tempdir().unwrap();
    let copy = image_of(again.path(), &tar, false);
    assert_eq!(packed(&copy, PackFormat::Tar, Compression::None), tar);
}

#[test]
fn pack_gives_the_same_bytes_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let plain = packed(&image, PackFormat::Tar, Compression::None);
    for how in [Compression::Gzip, Compression::Bzip2, Compression::Xz] {
        let bytes = packed(&image, PackFormat::Tar, how);
        assert_eq!(bytes, packed(&image, PackFormat::Tar, how), "{how:?}");
        let mut back = Vec::new();
        match how {
            Compression::Gzip => {
                assert_eq!(&bytes[4..8], &[0; 4], "gzip mtime 0");
                assert_eq!(bytes[3] & 0x08, 0, "no file name in the gzip header");
                flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut back)
            }
            Compression::Bzip2 => bzip2::read::BzDecoder::new(&bytes[..]).read_to_end(&mut back),
            _ => xz2::read::XzDecoder::new(&bytes[..]).read_to_end(&mut back),
        }
        .unwrap();
        assert_eq!(back, plain, "{how:?}");
    }
    for format in [PackFormat::OciArchive, PackFormat::DockerArchive] {
        let bytes = packed(&image, format, Compression::None);
        assert_eq!(
            bytes,
            packed(&image, format, Compression::None),
            "{format:?}"
        );
    }
}

#[test]
fn pack_oci_archive_is_an_image_layout() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let layer = packed(&image, PackFormat::Tar, Compression::None);
    let archive = packed(&image, PackFormat::OciArchive, Compression::None);
    let files = entries(&archive);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
    assert_eq!(names.last(), Some(&"index.json"));
    let files: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256_hex(data), hex, "{name}");
        }
    }
    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        files[&format!("blobs/sha256/{hex}")].clone()
    };
    let index = json(&files["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let m = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], REF);
    assert_eq!(m["platform"]["os"], "linux");
    assert_eq!(m["platform"]["architecture"], "amd64");
    let manifest_bytes = blob(&m["digest"]);
    assert_eq!(m["size"], manifest_bytes.len());
    let manifest = json(&manifest_bytes);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let l = &manifest["layers"][0];
    assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(blob(&l["digest"]), layer, "the layer is the plain tarball");
    assert_eq!(l["size"], layer.len());
    let c = &manifest["config"];
    assert_eq!(c["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config = json(&blob(&c["digest"]));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"][0], l["digest"]);
    assert_eq!(config["history"].as_array().unwrap().len(), 1);
    assert_eq!(config["history"][0]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        config["config"],
        serde_json::json!({
            "Env": ["PATH=/bin", "LANG=C.UTF-8"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/root",
        }),
        "an empty Entrypoint and no User are left out"
    );
}

#[test]
fn pack_docker_archive_has_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let layer = packed(&image, PackFormat::Tar, Compression::None);
    let files: BTreeMap<String, Vec<u8>> = entries(&packed(
        &image,
        PackFormat::DockerArchive,
        Compression::None,
    ))
    .into_iter()
    .collect();
    assert_eq!(files.len(), 3);
    let manifest = json(&files["manifest.json"]);
    let m = &manifest.as_array().unwrap()[0];
    assert_eq!(m["RepoTags"], serde_json::json!([REF]));
    let layer_name = format!("{}.tar", sha256_hex(&layer));
    assert_eq!(m["Layers"], serde_json::json!([layer_name]));
    assert_eq!(files[&layer_name], layer);
    let config_name = m["Config"].as_str().unwrap();
    let config = &files[config_name];
    assert_eq!(config_name, format!("{}.json", sha256_hex(config)));
    let config = json(config);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&layer))
    );
}

#[test]
fn pack_refuses_what_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let e = try_pack(&image, PackFormat::OciArchive, Compression::Gzip, REF).unwrap_err();
    assert_eq!(
        chain(&e),
        "only a plain tarball is compressed, not an OCI or docker archive (Gzip asked for)"
    );
    for bad in [
        "Base:latest",
        "base",
        "base:",
        "localhost:5000/base",
        "a b:c",
        "/x:y",
    ] {
        let e = try_pack(&image, PackFormat::DockerArchive, Compression::None, bad).unwrap_err();
        assert!(matches!(e, PackError::BadReference { .. }), "{bad}: {e}");
    }
    for good in ["base:latest", "localhost:5000/a/b-c_d.e:v1.2"] {
        try_pack(&image, PackFormat::OciArchive, Compression::None, good).unwrap();
    }
    // A plain tarball names nothing.
    try_pack(&image, PackFormat::Tar, Compression::Xz, "").unwrap();

    // An image file cut short: the file whose data is missing is named.
    let rootfs = OpenOptions::new()
        .write(true)
        .open(dir.path().join(ROOTFS))
        .unwrap();
    rootfs.set_len(4096).unwrap();
    let e = try_pack(&image, PackFormat::Tar, Compression::None, REF).unwrap_err();
    assert_eq!(
        chain(&e),
        "cannot read \"/bin/busybox\" from the rootfs of image \"base\" (abababababab): \
         the image file ends inside the file's data"
    );
    fs::write(dir.path().join(TREE), b"{}").unwrap();
    let e = try_pack(&image, PackFormat::Tar, Compression::None, REF).unwrap_err();
    assert!(
        chain(&e).starts_with("the file tree of image \"base\" (abababababab) is invalid: "),
        "{e}"
    );
}

#[test]
fn pack_times_are_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(-1), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(EPOCH), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
}

/// What skopeo prints on stdout, as JSON; it unpacks in `tmp`.
fn skopeo(args: &[&str], tmp: &Path) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skopeo {args:?} failed:\n{stderr}");
    json(&out.stdout)
}

/// skopeo reads both archives as we mean them (skipped without skopeo).
#[test]
fn pack_archives_satisfy_skopeo() {
    if !have("skopeo") {
        eprintln!("note: skopeo not installed, skipping the check of packed archives");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = image_of(dir.path(), &sample_tar(), true);
    let layer = format!(
        "sha256:{}",
        sha256_hex(&packed(&image, PackFormat::Tar, Compression::None))
    );
    for (format, transport) in [
        (PackFormat::OciArchive, "oci-archive"),
        (PackFormat::DockerArchive, "docker-archive"),
    ] {
        let file = dir.path().join(format!("{transport}.tar"));
        fs::write(&file, packed(&image, format, Compression::None)).unwrap();
        let arg = format!("{transport}:{}", file.display());
        let inspect = skopeo(&["inspect", &arg], dir.path());
        assert_eq!(inspect["Layers"], serde_json::json!([layer]), "{transport}");
        assert_eq!(inspect["Architecture"], "amd64", "{transport}");
        assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z", "{transport}");
        assert_eq!(inspect["Env"][1], "LANG=C.UTF-8", "{transport}");
        let config = skopeo(&["inspect", "--config", &arg], dir.path());
        assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{transport}");
    }
}
