//! Files cella reads back from a project that may come with a checkout
//! (SECURITY.md: the project and its `.cella/` are hostile): `cella.lock`
//! (strict JSON, every quoted word checked) and an image's file tree as
//! the store keeps it (`Tree::from_json`, which `_pack` and builds over a
//! stored image read), then written out as an erofs image as `_pack` and
//! a build would.
//!
//! `[mode u8][bytes]`: mode bit 0 picks the tree, else the lock.

#![no_main]

use cella::image::lock;
use cella::image::{ImageWriter, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, bytes @ ..] = data else {
        return;
    };
    let debug = std::env::var_os("CELLA_FUZZ_DEBUG").is_some();
    if mode & 1 == 0 {
        match lock::parse("cella.lock", bytes) {
            Ok(lock) => {
                let problem = lock.format_problem();
                if debug {
                    eprintln!("{} containers, {problem:?}", lock.containers.len());
                }
            }
            Err(e) if debug => eprintln!("{e}"),
            Err(e) => drop(e.to_string()),
        }
        return;
    }
    let tree = match Tree::from_json(bytes) {
        Ok(tree) => tree,
        Err(e) => {
            if debug {
                eprintln!("{e}");
            }
            return;
        }
    };
    let reachable = tree.reachable().map(|r| r.len());
    // File data ranges point into the image the tree came with: here
    // 16 KiB of data, beyond which they lie outside it.
    let image = tempfile::tempfile().expect("image file");
    let mut writer = ImageWriter::new(&image)
        .expect("image writer")
        .with_limit(16 << 20);
    writer
        .write_file_data(&mut &[7u8; 16 << 10][..])
        .expect("file data");
    let finished = writer.finish(&tree);
    if debug {
        eprintln!(
            "{} inodes, reachable {reachable:?}, finish {finished:?}",
            tree.inodes.len()
        );
    }
});
