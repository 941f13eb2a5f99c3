//! `!Tar` and `!Download` URLs (vagga's): fetched once into the user's
//! cache through the guarded client, checked against their `sha256`,
//! `subdir` unpacked alone. Attacked: a loopback server without the
//! user's leave, a wrong checksum, a file larger than limits.image; the
//! cache keeps nothing of a failed download. No VM is booted: the image
//! is read back through `_pack_image`.

mod common;

use std::fs;
use std::io::Write;
use std::process::Command;

use common::{assets, cella_with, fake_server, text, Project};
use sha2::{Digest, Sha256};

fn hex_sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn app_tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("app-1.0/bin/app", &b"#!/bin/sh\necho app\n"[..]),
        ("app-1.0/README", &b"readme\n"[..]),
        ("other/x", &b"not unpacked\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn tar_and_download_urls() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let cache = tempfile::tempdir().expect("cache");
    let tarball = app_tarball();
    let tool = b"#!/bin/sh\necho tool\n".to_vec();
    let (tar_sum, tool_sum) = (hex_sha(&tarball), hex_sha(&tool));
    let served = (tarball.clone(), tool.clone());
    let (port, log) = fake_server(move |path, _| match path {
        "/app-1.0.tar.gz" => (200, vec![], Some(served.0.clone())),
        "/tool" => (200, vec![], Some(served.1.clone())),
        "/moved" => (
            302,
            vec![("Location".into(), "/tool".into())],
            Some(Vec::new()),
        ),
        "/endless" => (200, vec![], None),
        _ => (404, vec![], Some(Vec::new())),
    });
    let url = |name: &str| format!("http://127.0.0.1:{port}/{name}");
    fs::write(
        p.path().join("cella.yaml"),
        format!(
            "containers:\n  base:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    \
             - !Tar {{ url: '{}', sha256: {tar_sum}, subdir: app-1.0, path: /opt/app }}\n    \
             - !Download {{ url: '{}', sha256: {tool_sum}, path: /usr/bin/tool, mode: 0o755 }}\n    \
             - !EmptyDir /sbin\n    - !EmptyDir /opt/new\n  \
             mounted:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    \
             - !Build {{ container: base, source: /opt/app, temporary-mount: /mnt/app }}\n  \
             overmount:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\n    \
             - !Build {{ container: base, source: /opt/app, temporary-mount: /bin }}\n  \
             lie:\n    setup:\n    - !Download {{ url: '{}', sha256: {}, path: /x }}\n  \
             huge:\n    setup:\n    - !Download {{ url: '{}', sha256: {}, path: /x }}\n",
            url("app-1.0.tar.gz"),
            url("moved"),
            url("tool"),
            "0".repeat(64),
            url("endless"),
            "1".repeat(64),
        ),
    )
    .expect("yaml");
    let closed = p.path().join("closed.yaml");
    fs::write(&closed, "").expect("settings");
    let open = p.path().join("open.yaml");
    fs::write(
        &open,
        "network: {allow-addresses: [127.0.0.1/32]}\nlimits: {image: 16Mi}\n",
    )
    .expect("settings");

    // A loopback server needs the user's leave.
    let (status, _, err) = cella_with(&p, &closed, cache.path(), &["_build", "base"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(err.contains("127.0.0.1 is a loopback address"), "{err}");
    assert!(log.lock().expect("log").is_empty(), "nothing was asked");

    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "base"]);
    assert_eq!(status, Some(0), "{err}");
    let root = p.path().join("root.tar");
    let (status, _, err) = cella_with(
        &p,
        &open,
        cache.path(),
        &["_pack_image", "-f", root.to_str().expect("utf-8"), "base"],
    );
    assert_eq!(status, Some(0), "{err}");
    let listing = Command::new("tar")
        .args(["-tvf", root.to_str().expect("utf-8")])
        .output()
        .expect("tar");
    let listing = text(&listing.stdout);
    assert!(listing.contains("opt/app/bin/app"), "{listing}");
    assert!(listing.contains("opt/app/README"), "{listing}");
    assert!(
        !listing.contains("other/x") && !listing.contains("app-1.0"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("usr/bin/tool")),
        "{listing}"
    );
    // !EmptyDir: emptied, or made.
    assert!(listing.lines().any(|l| l.ends_with(" sbin/")), "{listing}");
    assert!(
        !listing
            .lines()
            .any(|l| l.contains(" sbin/") && !l.ends_with(" sbin/")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.ends_with(" opt/new/")),
        "{listing}"
    );

    // A temporary mount is gone from the finished image.
    let (status, _, err) = cella_with(
        &p,
        &open,
        cache.path(),
        &[
            "_pack_image",
            "-f",
            root.to_str().expect("utf-8"),
            "mounted",
        ],
    );
    assert_eq!(status, Some(0), "{err}");
    assert!(
        err.contains("!Build base:/opt/app at /mnt/app, for the build"),
        "{err}"
    );
    let listing = Command::new("tar")
        .args(["-tf", root.to_str().expect("utf-8")])
        .output()
        .expect("tar");
    let listing = text(&listing.stdout);
    assert!(listing.lines().any(|l| l == "bin/busybox"), "{listing}");
    assert!(!listing.contains("mnt/app"), "{listing}");

    // A temporary mount never takes away what is there.
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "overmount"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains("temporary-mount /bin: it is there already"),
        "{err}"
    );

    // Downloaded once: a rebuild asks the server nothing.
    let asked = log.lock().expect("log").len();
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "--force", "base"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(
        log.lock().expect("log").len(),
        asked,
        "served from the cache"
    );

    // `_cache` accounts for them.
    let (status, listing, err) = cella_with(&p, &open, cache.path(), &["_cache"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        listing.lines().any(|l| l.starts_with("downloads: ")),
        "{listing}"
    );
    let kept = fs::read_dir(cache.path().join("downloads/sha256"))
        .expect("downloads")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(kept, 2, "the tarball and the tool, by content");

    // A wrong checksum, an endless body: refused, nothing cached.
    let before: Vec<_> = fs::read_dir(cache.path().join("downloads/sha256"))
        .expect("downloads")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "lie"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains(&format!("its sha256 is {tool_sum}, not the 0000")),
        "{err}"
    );
    let (status, _, err) = cella_with(&p, &open, cache.path(), &["_build", "huge"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains("more than the 16777216 bytes allowed (limits.image)"),
        "{err}"
    );
    let after: Vec<_> = fs::read_dir(cache.path().join("downloads/sha256"))
        .expect("downloads")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(after.len(), before.len(), "{after:?}");

    // limits.downloads bounds the cache: a new download pushes the least
    // recently used out (never itself), and a build that needs one again
    // fetches it again.
    let small = p.path().join("small.yaml");
    fs::write(
        &small,
        "network: {allow-addresses: [127.0.0.1/32]}\nlimits: {image: 16Mi, downloads: 1}\n",
    )
    .expect("settings");
    let kept = || {
        fs::read_dir(cache.path().join("downloads/sha256"))
            .expect("downloads")
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let asked = log.lock().expect("log").len();
    let (status, _, err) = cella_with(&p, &small, cache.path(), &["_build", "--force", "base"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(kept().len(), 2, "served from the cache: {:?}", kept());
    fs::remove_dir_all(cache.path().join("downloads/urls")).expect("forget the URLs");
    let (status, _, err) = cella_with(&p, &small, cache.path(), &["_build", "--force", "base"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(log.lock().expect("log").len() > asked, "fetched again");
    assert_eq!(kept(), vec![tool_sum], "only the last download is kept");
}
