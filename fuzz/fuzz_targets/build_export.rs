//! A build VM's export stream (its overlay's upper directory as JSON
//! records and file data, written by guest-init) applied to an image
//! tree as the build does, then the tree written out as an erofs image.
//!
//! The tree starts with a few entries, so whiteouts, opaque directories
//! and hard links have something to act on; file data goes to a
//! temporary image file, capped as `limits.image` caps it.

#![no_main]

use cella::image::{apply_export, ImageWriter, Inode, Kind, Meta, Tree};
use libfuzzer_sys::fuzz_target;

/// `limits.image` and `limits.inodes`, small enough for a fuzzer.
const IMAGE_LIMIT: u64 = 16 << 20;
const MAX_INODES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let image = tempfile::tempfile().expect("image file");
    let mut tree = Tree::new();
    tree.set_max_inodes(MAX_INODES);
    let mut writer = ImageWriter::new(&image)
        .expect("image writer")
        .with_limit(IMAGE_LIMIT);
    seed_tree(&mut tree, &mut writer);
    let mut reader = data;
    let applied = apply_export(&mut tree, &mut writer, &mut reader, 1_700_000_000);
    // CELLA_FUZZ_DEBUG=1 when replaying an input says how far it got.
    if std::env::var_os("CELLA_FUZZ_DEBUG").is_some() {
        eprintln!("{} inodes: {applied:?}", tree.inodes.len());
    }
    if applied.is_ok() {
        // What the build does with a tree the stream left: write it.
        let _ = writer.finish(&tree);
    }
});

/// /etc/passwd (a file), /usr/bin (directories), /bin -> usr/bin.
fn seed_tree(tree: &mut Tree, writer: &mut ImageWriter<'_>) {
    let dir = Meta::implicit_dir();
    let file_meta = Meta {
        perm: 0o644,
        ..dir.clone()
    };
    let data = writer
        .write_file_data(&mut &b"root:x:0:0:root:/root:/bin/sh\n"[..])
        .expect("file data");
    let file = Inode {
        meta: file_meta,
        kind: Kind::File(data),
    };
    tree.insert(b"/etc/passwd", file, &dir).expect("insert");
    tree.insert(b"/usr/bin", Inode::empty_dir(dir.clone()), &dir)
        .expect("insert");
    let link = Inode {
        meta: Meta {
            perm: 0o777,
            ..dir.clone()
        },
        kind: Kind::Symlink(b"usr/bin".to_vec()),
    };
    tree.insert(b"/bin", link, &dir).expect("insert");
}
