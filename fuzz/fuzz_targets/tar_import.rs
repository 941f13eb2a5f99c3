//! `!Tar`'s importer: a project's tarball (plain, or gzip, zstd, xz or
//! bzip2, told by its first bytes) unpacked into an image tree without
//! touching the host's filesystem, as the build does (at a destination,
//! optionally only a subdirectory of the archive), or as an OCI layer
//! with whiteouts over the tree before it; then the tree is written out
//! as an erofs image.
//!
//! `[mode u8][archive]`: mode bits 0-1 pick the destination, bit 2 a
//! `subdir`, bit 3 the OCI layer importer instead.

#![no_main]

use std::path::Path;

use cella::image::tar_import::{import_layer, import_subdir};
use cella::image::{ImageWriter, Inode, Meta, Tree};
use libfuzzer_sys::fuzz_target;

/// `limits.image` and `limits.inodes`, small enough for a fuzzer: a
/// decompression bomb stops here.
const IMAGE_LIMIT: u64 = 16 << 20;
const MAX_INODES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let [mode, archive @ ..] = data else {
        return;
    };
    let image = tempfile::tempfile().expect("image file");
    let mut tree = Tree::new();
    tree.set_max_inodes(MAX_INODES);
    let mut writer = ImageWriter::new(&image)
        .expect("image writer")
        .with_limit(IMAGE_LIMIT);
    let dir = Meta::implicit_dir();
    for path in [&b"/etc"[..], b"/usr/lib", b"/opt/app/old"] {
        tree.insert(path, Inode::empty_dir(dir.clone()), &dir)
            .expect("seed tree");
    }
    let tarball = Path::new("fuzz.tar");
    let imported = if mode & 8 != 0 {
        import_layer(tarball, archive, &mut tree, &mut writer).map(drop)
    } else {
        let dest: &[u8] = [&b"/"[..], b"/opt/app", b"usr/lib/x", b"/etc/"][usize::from(mode & 3)];
        let subdir = (mode & 4 != 0).then_some(&b"sub"[..]);
        import_subdir(tarball, archive, &mut tree, dest, subdir, &mut writer).map(drop)
    };
    // CELLA_FUZZ_DEBUG=1 when replaying an input says how far it got.
    if std::env::var_os("CELLA_FUZZ_DEBUG").is_some() {
        eprintln!("{} inodes: {imported:?}", tree.inodes.len());
    }
    if imported.is_ok() {
        let _ = writer.finish(&tree);
    }
});
