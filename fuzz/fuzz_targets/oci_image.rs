//! `!Image` from a project's OCI layout directory, OCI archive or
//! docker-archive: the index, manifests and config parsed and checked,
//! the chosen manifest's layers verified and applied (whiteouts and
//! all) into an image tree, then the config's `user` resolved against
//! the image's /etc/passwd and /etc/group, as the build does.
//!
//! The input is a set of documents (see `cella_fuzz::oci_docs`, which
//! fills in the digests a fuzzer cannot compute); `mode` bits 0-1 say
//! how they are laid out in a temporary project directory: 0 an OCI
//! layout directory, 1 the same as an OCI archive, 2 a docker-archive
//! (manifest.json, then files "b1", "b2", ...), 3 document 0 as the
//! archive file itself. Bit 2 asks for the tag "latest", bit 3 pins the
//! digest of document 1.

#![no_main]

use std::path::{Path, PathBuf};

use cella::config::{ImageSource, ImageStep};
use cella::hostfs::Dir;
use cella::image::oci::{self, FetchCtx, Source};
use cella::image::{ImageWriter, Tree};
use cella_fuzz::oci_docs;
use libfuzzer_sys::fuzz_target;

/// `limits.image` and `limits.inodes`, small enough for a fuzzer.
const IMAGE_LIMIT: u64 = 16 << 20;
const MAX_INODES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((mode, docs)) = oci_docs::decode(data) else {
        return;
    };
    let Some(top) = docs.first() else {
        return;
    };
    let project = tempfile::tempdir().expect("project dir");
    let p = project.path();
    let mut files: Vec<(String, &[u8])> = Vec::new();
    if mode & 3 == 2 {
        files.push(("manifest.json".into(), top));
        for (i, d) in docs.iter().enumerate().skip(1) {
            files.push((format!("b{i}"), d));
        }
    } else {
        files.push(("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#));
        files.push(("index.json".into(), top));
        for d in &docs[1..] {
            let hex = &oci_docs::digest(d)["sha256:".len()..];
            files.push((format!("blobs/sha256/{hex}"), d));
        }
    }
    let tag = (mode & 4 != 0).then(|| "latest".to_owned());
    let source = match mode & 3 {
        0 => {
            for (name, bytes) in &files {
                let path = p.join("img").join(name);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, bytes).expect("blob");
            }
            ImageSource::Layout {
                rel: "img".into(),
                tag,
            }
        }
        1 | 2 => {
            std::fs::write(p.join("img.tar"), tarball(&files)).expect("archive");
            let rel = PathBuf::from("img.tar");
            match mode & 3 {
                1 => ImageSource::OciArchive { rel, tag },
                _ => ImageSource::DockerArchive { rel },
            }
        }
        _ => {
            std::fs::write(p.join("img.tar"), top).expect("archive");
            ImageSource::OciArchive {
                rel: "img.tar".into(),
                tag,
            }
        }
    };
    let step = ImageStep {
        reference: "fuzz".into(),
        source,
        digest: (mode & 8 != 0)
            .then(|| docs.get(1).map(|d| oci_docs::digest(d)))
            .flatten(),
    };
    let dir = Dir::open(p).expect("project");
    let registry = FetchCtx {
        max_download: IMAGE_LIMIT,
        ..FetchCtx::default()
    };
    let src = Source {
        project: &dir,
        registry: &registry,
        pinned: None,
    };
    let image = tempfile::tempfile().expect("image file");
    let mut tree = Tree::new();
    tree.set_max_inodes(MAX_INODES);
    let mut writer = ImageWriter::new(&image)
        .expect("image writer")
        .with_limit(IMAGE_LIMIT);
    // CELLA_FUZZ_DEBUG=1 when replaying an input says how far it got.
    let debug = std::env::var_os("CELLA_FUZZ_DEBUG").is_some();
    match oci::import(&src, &step, &mut tree, &mut writer) {
        Ok(mut config) => {
            drop(writer);
            let user = oci::resolve_user(&mut config, &tree, &image);
            if debug {
                eprintln!("imported {} inodes; user: {user:?}", tree.inodes.len());
            }
        }
        Err(e) if debug => eprintln!("{}", cella::text::error_chain(&e, ": ")),
        Err(e) => drop(e.to_string()),
    }
});

/// A tar archive of these files, as `docker save` or `skopeo` write one.
fn tarball(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, Path::new(name), *bytes)
            .expect("tar entry");
    }
    b.into_inner().expect("tar")
}
