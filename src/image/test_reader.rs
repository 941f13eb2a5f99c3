//! Test helpers: a small erofs reader that checks the invariants the kernel
//! relies on, and fsck.erofs when it is installed.
//!
//! The reader understands what our writer produces (extended inodes, flat
//! plain and flat inline layouts, inline xattrs) and panics on anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const BLOCK: usize = 4096;

/// One inode as read back, under each of its paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub nid: u64,
    /// st_mode: type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    pub rdev: u32,
    /// A file's content or a symlink's target; empty for anything else.
    pub data: Vec<u8>,
    /// (prefix index, name suffix, value), as stored.
    pub xattrs: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// Reads every path of the image: "/" for the root, "/a/b" below it.
pub fn read(image: &[u8]) -> BTreeMap<String, Node> {
    assert!(
        !image.is_empty() && image.len().is_multiple_of(BLOCK),
        "image size"
    );
    let sb = &image[1024..1152];
    assert_eq!(le(sb, 0, 4), 0xE0F5_E1E2, "magic");
    assert_eq!(sb[12], 12, "block size bits");
    assert_eq!(le(sb, 36, 4) as usize * BLOCK, image.len(), "blocks");
    let root = le(sb, 14, 2);
    let mut out = BTreeMap::new();
    walk(image, root, root, "/".into(), &mut out);
    let nids: BTreeSet<u64> = out.values().map(|n| n.nid).collect();
    assert_eq!(nids.len() as u64, le(sb, 16, 8), "inode count");
    out
}

/// An inode and its data (a directory's raw dirent blocks included).
fn inode(image: &[u8], nid: u64) -> Node {
    let off = nid as usize * 32;
    let b = &image[off..off + 64];
    let format = le(b, 0, 2);
    assert_eq!(format & 1, 1, "nid {nid}: not an extended inode");
    let layout = (format >> 1) & 7;
    let icount = le(b, 2, 2) as usize;
    let mode = le(b, 4, 2) as u16;
    let size = le(b, 8, 8) as usize;
    let i_u = le(b, 16, 4) as usize;
    let xsize = if icount == 0 {
        0
    } else {
        12 + (icount - 1) * 4
    };
    let mut xattrs = Vec::new();
    let mut at = off + 64 + 12;
    while at < off + 64 + xsize {
        let (name_len, index) = (image[at] as usize, image[at + 1]);
        let value_len = le(image, at + 2, 2) as usize;
        let name = image[at + 4..at + 4 + name_len].to_vec();
        let value = image[at + 4 + name_len..at + 4 + name_len + value_len].to_vec();
        xattrs.push((index, name, value));
        at += (4 + name_len + value_len).next_multiple_of(4);
    }
    let ifmt = mode & 0o170000;
    let has_data = matches!(ifmt, 0o100000 | 0o040000 | 0o120000);
    let data = match layout {
        _ if !has_data => Vec::new(),
        0 => {
            assert!(
                i_u * BLOCK + size <= image.len(),
                "nid {nid}: data past the end"
            );
            image[i_u * BLOCK..i_u * BLOCK + size].to_vec()
        }
        2 => {
            let start = off + 64 + xsize;
            assert!(
                start % BLOCK + size <= BLOCK,
                "nid {nid}: inline data crosses a block"
            );
            image[start..start + size].to_vec()
        }
        other => panic!("nid {nid}: layout {other}"),
    };
    Node {
        nid,
        mode,
        uid: le(b, 24, 4) as u32,
        gid: le(b, 28, 4) as u32,
        mtime: le(b, 32, 8) as i64,
        mtime_nsec: le(b, 40, 4) as u32,
        nlink: le(b, 44, 4) as u32,
        rdev: if matches!(ifmt, 0o020000 | 0o060000) {
            i_u as u32
        } else {
            0
        },
        data,
        xattrs,
    }
}

/// (name, nid, file type) of each dirent in a directory's data.
fn dirents(data: &[u8]) -> Vec<(Vec<u8>, u64, u8)> {
    let mut out = Vec::new();
    for block in data.chunks(BLOCK) {
        let count = le(block, 8, 2) as usize / 12;
        for i in 0..count {
            let d = &block[i * 12..];
            let start = le(d, 8, 2) as usize;
            let end = if i + 1 < count {
                le(block, (i + 1) * 12 + 8, 2) as usize
            } else {
                block.len()
            };
            let mut name = block[start..end].to_vec();
            while name.last() == Some(&0) {
                name.pop();
            }
            out.push((name, le(d, 0, 8), d[10]));
        }
    }
    out
}

fn walk(image: &[u8], nid: u64, parent: u64, path: String, out: &mut BTreeMap<String, Node>) {
    let node = inode(image, nid);
    if !node.is_dir() {
        if let Some(old) = out.insert(path.clone(), node.clone()) {
            panic!("{path} listed twice: {old:?}");
        }
        return;
    }
    let entries = dirents(&node.data);
    let names: Vec<&Vec<u8>> = entries.iter().map(|e| &e.0).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{path}: unsorted");
    let mut subdirs = 0;
    for (name, child, ftype) in &entries {
        match &name[..] {
            b"." => assert_eq!(*child, nid, "{path}: ."),
            b".." => assert_eq!(*child, parent, "{path}: .."),
            _ => {
                let c = inode(image, *child);
                let want = [
                    0, 0o100000, 0o040000, 0o020000, 0o060000, 0o010000, 0o140000, 0o120000,
                ];
                assert_eq!(
                    want[usize::from(*ftype)],
                    c.mode & 0o170000,
                    "{path}: file type"
                );
                let name = String::from_utf8_lossy(name);
                let child_path = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                if c.is_dir() {
                    subdirs += 1;
                }
                walk(image, *child, nid, child_path, out);
            }
        }
    }
    assert!(names.contains(&&b".".to_vec()) && names.contains(&&b"..".to_vec()));
    assert_eq!(node.nlink, 2 + subdirs, "{path}: nlink");
    out.insert(
        path,
        Node {
            data: Vec::new(),
            ..node
        },
    );
}

/// Reads the image at `path` (and runs fsck.erofs on it when installed).
pub fn read_file(path: &Path) -> BTreeMap<String, Node> {
    fsck(path);
    read(&std::fs::read(path).expect("read image"))
}

pub fn have(tool: &str) -> bool {
    Command::new("which")
        .arg(tool)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// fsck.erofs (with extraction, which reads every file) when installed.
pub fn fsck(image: &Path) {
    if !have("fsck.erofs") {
        eprintln!("note: fsck.erofs not installed, skipping the check of {image:?}");
        return;
    }
    let extract = image.with_extension("extract");
    let _ = std::fs::remove_dir_all(&extract);
    let arg = format!("--extract={}", extract.display());
    run(Command::new("fsck.erofs").arg(arg).arg(image));
    run(Command::new("fsck.erofs").arg(image));
    let _ = std::fs::remove_dir_all(&extract);
}
