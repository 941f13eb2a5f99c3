//! Tests of images built in layers: resumed writers, export streams,
//! compaction, subtree copies and tarballs unpacked below the root.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Cursor};
use std::path::Path;

use guest_init::{encode, ExportEntry, ExportKind, ExportRecord};

use super::erofs::ImageWriter;
use super::export::{apply_export, ExportError};
use super::test_reader::{read_file, Node};
use super::tests::{Mount, Tar};
use super::tree::{FileData, Inode, Kind, Meta, Tree, Xattr};
use super::{compact, copy_subtree, tar_import, CopyError};

const EPOCH: i64 = 1_600_000_000;

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open image")
}

fn meta(perm: u16, mtime: i64) -> Meta {
    Meta {
        perm,
        mtime,
        ..Meta::default()
    }
}

/// Writes `data` and puts it at `path` as a 0644 file.
fn put_file(tree: &mut Tree, w: &mut ImageWriter<'_>, path: &str, data: &[u8]) {
    let f = w.write_file_data(&mut &data[..]).expect("data");
    let inode = Inode {
        meta: meta(0o644, 7),
        kind: Kind::File(f),
    };
    tree.insert(path.as_bytes(), inode, &Meta::implicit_dir())
        .expect("insert");
}

fn data(image: &BTreeMap<String, Node>, path: &str) -> Vec<u8> {
    image
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .data
        .clone()
}

#[test]
fn a_writer_resumes_after_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.erofs");
    let file = rw(&path);
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(&file).expect("writer");
    put_file(&mut tree, &mut w, "/etc/passwd", b"root:x:0:0\n");
    w.finish(&tree).expect("finish 1");
    assert_eq!(
        w.next_block() * 4096,
        fs::metadata(&path).expect("stat").len()
    );
    let first = read_file(&path);
    assert_eq!(data(&first, "/etc/passwd"), b"root:x:0:0\n");

    // More data after the metadata, then a complete new image.
    let big: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
    put_file(&mut tree, &mut w, "/big", &big);
    for i in 0..300 {
        put_file(
            &mut tree,
            &mut w,
            &format!("/many/f{i}"),
            i.to_string().as_bytes(),
        );
    }
    w.finish(&tree).expect("finish 2");
    let second = read_file(&path);
    assert_eq!(data(&second, "/etc/passwd"), b"root:x:0:0\n");
    assert_eq!(data(&second, "/big"), big);
    assert_eq!(data(&second, "/many/f299"), b"299");
    assert_eq!(second.len(), 1 + 2 + 1 + 1 + 300);

    // A copy of the image continued elsewhere, its tree via JSON.
    let json = tree.to_json().expect("json");
    let copy_path = dir.path().join("b.erofs");
    fs::copy(&path, &copy_path).expect("copy");
    let copy = rw(&copy_path);
    let mut tree2 = Tree::from_json(&json).expect("from json");
    assert_eq!(tree2, tree);
    let mut w2 = ImageWriter::append_to(&copy).expect("append");
    put_file(&mut tree2, &mut w2, "/etc/passwd", b"replaced");
    tree2.remove(b"/many").expect("rm");
    w2.finish(&tree2).expect("finish 3");
    let third = read_file(&copy_path);
    assert_eq!(data(&third, "/etc/passwd"), b"replaced");
    assert_eq!(data(&third, "/big"), big);
    assert!(!third.contains_key("/many"));
    // The original is untouched.
    assert_eq!(read_file(&path), second);
    // A tree whose data lies beyond what the writer wrote is refused.
    let mut w3 = ImageWriter::new(&file).expect("writer");
    assert!(w3.finish(&tree).is_err());
}

#[test]
fn trees_round_trip_through_json() {
    let mut tree = Tree::new();
    let cap = Xattr::new(b"security.capability", &[1, 0, 0, 2, 0xff]).expect("xattr");
    let inode = Inode {
        meta: Meta {
            xattrs: vec![cap],
            mtime_nsec: 5,
            ..meta(0o755, -3)
        },
        kind: Kind::Symlink(vec![0xff, b'/', b'x']),
    };
    let p = Meta::implicit_dir();
    tree.insert(b"bin/\xfe\xff", inode, &p).expect("insert");
    tree.insert(
        b"bin/sh",
        Inode {
            meta: meta(0o644, 1),
            kind: Kind::File(FileData::default()),
        },
        &p,
    )
    .expect("insert");
    tree.insert(
        b"dev/null",
        Inode {
            meta: meta(0o666, 0),
            kind: Kind::CharDevice { major: 1, minor: 3 },
        },
        &p,
    )
    .expect("insert");
    let json = tree.to_json().expect("json");
    let text = String::from_utf8(json.clone()).expect("utf-8");
    assert!(text.contains("[\"sh\","), "{text}");
    assert_eq!(Tree::from_json(&json).expect("parse"), tree);
    assert!(Tree::from_json(br#"{"inodes":[]}"#).is_err());
    let dangling =
        br#"{"inodes":[{"meta":{"perm":493,"uid":0,"gid":0,"mtime":0},"kind":{"Dir":[["a",7]]}}]}"#;
    let err = Tree::from_json(dangling).expect_err("dangling entry");
    assert!(err.to_string().contains("missing inode 7"), "{err}");
    let ok = dangling
        .to_vec()
        .iter()
        .map(|&b| if b == b'7' { b'0' } else { b })
        .collect::<Vec<u8>>();
    assert!(Tree::from_json(&ok).is_err(), "the root linked twice");
}

// ---- export streams ----

fn entry(path: &str, kind: ExportKind) -> ExportEntry {
    ExportEntry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: EPOCH - 10,
        mtime_nsec: 123,
        xattrs: Vec::new(),
    }
}

/// An export stream: each entry encoded, a file's bytes after it.
fn stream(entries: &[(ExportEntry, &[u8])], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, data) in entries {
        out.extend(encode(&ExportRecord::Entry(e.clone())));
        out.extend_from_slice(data);
    }
    if end {
        out.extend(encode(&ExportRecord::End));
    }
    out
}

fn file_entry(path: &str, data: &[u8]) -> ExportEntry {
    entry(
        path,
        ExportKind::File {
            size: data.len() as u64,
        },
    )
}

/// A base image: /etc/{passwd,old}, /opt/dir/x, /keep.
fn base(file: &File) -> (Tree, ImageWriter<'_>) {
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(file).expect("writer");
    put_file(&mut tree, &mut w, "/etc/passwd", b"root");
    put_file(&mut tree, &mut w, "/etc/old", b"old");
    put_file(&mut tree, &mut w, "/opt/dir/x", b"x");
    put_file(&mut tree, &mut w, "/keep", b"keep");
    w.finish(&tree).expect("finish base");
    (tree, w)
}

#[test]
fn export_streams_apply_overlay_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img.erofs");
    let file = rw(&path);
    let (mut tree, mut w) = base(&file);

    let etc = ExportEntry {
        mode: 0o750,
        mtime: EPOCH + 1000,
        ..entry("etc", ExportKind::Dir { opaque: false })
    };
    let new = ExportEntry {
        mtime: EPOCH + 5,
        xattrs: vec![
            (b"security.capability".to_vec(), vec![1, 2, 3]),
            (b"user.note".to_vec(), b"hi".to_vec()),
        ],
        ..file_entry("etc/new", b"hello")
    };
    let link = entry(
        "etc/new2",
        ExportKind::HardLink {
            target: b"etc/new".to_vec(),
        },
    );
    let entries: Vec<(ExportEntry, &[u8])> = vec![
        (etc, b""),
        (entry("etc/new", ExportKind::Whiteout), b""), // nothing there yet
        (new, b"hello"),
        (link, b""),
        (entry("etc/old", ExportKind::Whiteout), b""),
        (entry("opt", ExportKind::Dir { opaque: true }), b""),
        (file_entry("opt/fresh", b"fresh"), b"fresh"),
        (entry("usr", ExportKind::Dir { opaque: false }), b""),
        (
            entry(
                "usr/sh",
                ExportKind::Symlink {
                    target: b"/bin/busybox".to_vec(),
                },
            ),
            b"",
        ),
        (
            entry("usr/null", ExportKind::CharDevice { major: 1, minor: 3 }),
            b"",
        ),
        (entry("usr/fifo", ExportKind::Fifo), b""),
        (entry("usr/sock", ExportKind::Socket), b""),
        (file_entry("keep", b""), b""),
    ];
    let bytes = stream(&entries, true);
    let mut reader = Cursor::new(bytes);
    let stats = apply_export(&mut tree, &mut w, &mut reader, EPOCH).expect("apply");
    assert_eq!(
        (stats.entries, stats.files, stats.bytes, stats.removed),
        (13, 3, 10, 1)
    );
    w.finish(&tree).expect("finish");

    let img = read_file(&path);
    let etc = &img["/etc"];
    assert_eq!((etc.perm(), etc.mtime, etc.mtime_nsec), (0o750, EPOCH, 0));
    assert_eq!(data(&img, "/etc/passwd"), b"root", "a plain dir merges");
    assert!(!img.contains_key("/etc/old"));
    let (new, new2) = (&img["/etc/new"], &img["/etc/new2"]);
    assert_eq!(
        (new.nid, new.nlink, &new.data[..]),
        (new2.nid, 2, &b"hello"[..])
    );
    assert_eq!((new.mtime, new.mtime_nsec), (EPOCH, 0), "clamped");
    assert_eq!(new.xattrs.len(), 2);
    assert!(new
        .xattrs
        .contains(&(6, b"capability".to_vec(), vec![1, 2, 3])));
    assert!(!img.contains_key("/opt/dir"), "an opaque dir replaces");
    assert_eq!(data(&img, "/opt/fresh"), b"fresh");
    let sh = &img["/usr/sh"];
    assert_eq!(
        (&sh.data[..], sh.mtime, sh.mtime_nsec),
        (&b"/bin/busybox"[..], EPOCH - 10, 123)
    );
    assert_eq!(img["/usr/null"].rdev, 0x103);
    assert_eq!(img["/usr/fifo"].mode & 0o170000, 0o010000);
    assert_eq!(img["/usr/sock"].mode & 0o170000, 0o140000);
    assert_eq!(data(&img, "/keep"), b"");
}

fn apply_err(bytes: Vec<u8>) -> ExportError {
    let file = tempfile::tempfile().expect("tempfile");
    let (mut tree, mut w) = base(&file);
    let mut reader = BufReader::new(Cursor::new(bytes));
    apply_export(&mut tree, &mut w, &mut reader, EPOCH).expect_err("should fail")
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
fn bad_export_streams_are_rejected() {
    let truncated = stream(&[(file_entry("a", b"abc"), b"abc")], false);
    assert!(matches!(apply_err(truncated), ExportError::Truncated));

    let mut short = stream(&[(file_entry("a", b"0123456789"), b"")], false);
    short.extend_from_slice(b"012");
    let err = chain(&apply_err(short));
    assert!(
        err.contains("\"a\"") && err.contains("3 of the file's 10 bytes"),
        "{err}"
    );

    let mut partial_line = stream(&[(file_entry("a", b""), b"")], false);
    partial_line.extend_from_slice(b"{\"Entry\"");
    assert!(matches!(apply_err(partial_line), ExportError::Truncated));

    let long = vec![b' '; (1 << 20) + 10];
    assert!(matches!(apply_err(long), ExportError::TooLong));

    let dotdot = stream(&[(file_entry("a/../../b", b""), b"")], true);
    let err = chain(&apply_err(dotdot));
    assert!(
        err.contains("\"a/../../b\"") && err.contains("\"..\""),
        "{err}"
    );

    let bad_xattr = ExportEntry {
        xattrs: vec![(b"system.nfs4_acl".to_vec(), b"x".to_vec())],
        ..entry("etc/f", ExportKind::Fifo)
    };
    let err = chain(&apply_err(stream(&[(bad_xattr, b"")], true)));
    assert!(
        err.contains("\"etc/f\"") && err.contains("system.nfs4_acl"),
        "{err}"
    );

    let link = entry(
        "l",
        ExportKind::HardLink {
            target: b"etc/passwd".to_vec(),
        },
    );
    let err = chain(&apply_err(stream(&[(link, b"")], true)));
    assert!(err.contains("not a file earlier in the stream"), "{err}");

    let err = chain(&apply_err(b"{\"Entry\": 5}\n".to_vec()));
    assert!(err.contains("malformed export record"), "{err}");

    let under_file = stream(&[(entry("keep/x", ExportKind::Fifo), b"")], true);
    let err = chain(&apply_err(under_file));
    assert!(err.contains("parent \"keep\" is not a directory"), "{err}");
}

// ---- compaction and subtree copies ----

#[test]
fn compaction_is_canonical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_path, b_path) = (dir.path().join("a.erofs"), dir.path().join("b.erofs"));
    let (a_file, b_file) = (rw(&a_path), rw(&b_path));
    let big: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_be_bytes()).collect();

    // History A: everything once, in one order.
    let mut a = Tree::new();
    let mut w = ImageWriter::new(&a_file).expect("writer");
    put_file(&mut a, &mut w, "/x", b"x");
    put_file(&mut a, &mut w, "/d/big", &big);
    let y = w.write_file_data(&mut &b"y"[..]).expect("y");
    let y = a
        .insert(
            b"/d/y",
            Inode {
                meta: meta(0o644, 7),
                kind: Kind::File(y),
            },
            &Meta::implicit_dir(),
        )
        .expect("y");
    a.link(b"/y2", y, &Meta::implicit_dir()).expect("link");
    w.finish(&a).expect("finish a");

    // History B: other order, rewrites, removals, several finishes.
    let mut b = Tree::new();
    let mut w = ImageWriter::new(&b_file).expect("writer");
    put_file(&mut b, &mut w, "/d/y", b"old y");
    put_file(&mut b, &mut w, "/gone/z", b"z");
    w.finish(&b).expect("finish b1");
    put_file(&mut b, &mut w, "/d/big", &big);
    put_file(&mut b, &mut w, "/x", b"not yet");
    b.remove(b"/gone").expect("rm");
    put_file(&mut b, &mut w, "/d/y", b"y");
    w.finish(&b).expect("finish b2");
    put_file(&mut b, &mut w, "/x", b"x");
    let y = b.lookup(b"d/y").expect("y");
    b.link(b"/y2", y, &Meta::implicit_dir()).expect("link");
    b.inodes[0].meta = Meta::implicit_dir();
    w.finish(&b).expect("finish b3");
    assert_ne!(fs::read(&a_path).expect("a"), fs::read(&b_path).expect("b"));

    let (ca_path, cb_path) = (dir.path().join("ca.erofs"), dir.path().join("cb.erofs"));
    let ca = compact(&a, &a_file, &rw(&ca_path)).expect("compact a");
    let cb = compact(&b, &b_file, &rw(&cb_path)).expect("compact b");
    assert_eq!(ca, cb);
    assert_eq!(ca.inodes.len(), ca.reachable().expect("walk").len());
    let (ia, ib) = (
        fs::read(&ca_path).expect("ca"),
        fs::read(&cb_path).expect("cb"),
    );
    assert!(ia == ib, "compacted images differ");
    assert!(ib.len() < fs::metadata(&b_path).expect("b").len() as usize);
    let img = read_file(&ca_path);
    assert_eq!(data(&img, "/d/big"), big);
    assert_eq!(img["/y2"].nid, img["/d/y"].nid);
    assert_eq!((img["/y2"].nlink, &img["/y2"].data[..]), (2, &b"y"[..]));
}

#[test]
fn subtrees_copy_between_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src_path, dst_path) = (dir.path().join("src.erofs"), dir.path().join("dst.erofs"));
    let src_file = rw(&src_path);
    let mut src = Tree::new();
    let mut w = ImageWriter::new(&src_file).expect("writer");
    put_file(&mut src, &mut w, "/usr/lib/a", b"aaa");
    let a = src.lookup(b"usr/lib/a").expect("a");
    src.link(b"/usr/lib/sub/b", a, &Meta::implicit_dir())
        .expect("link");
    src.link(b"/outside", a, &Meta::implicit_dir())
        .expect("link");
    let lnk = Inode {
        meta: meta(0o777, 1),
        kind: Kind::Symlink(b"a".to_vec()),
    };
    src.insert(b"/usr/lib/lnk", lnk, &Meta::implicit_dir())
        .expect("symlink");
    src.insert(
        b"/usr/lib",
        Inode::empty_dir(meta(0o700, 3)),
        &Meta::implicit_dir(),
    )
    .expect("meta");
    w.finish(&src).expect("finish src");

    let dst_file = rw(&dst_path);
    let mut dst = Tree::new();
    let mut w = ImageWriter::new(&dst_file).expect("writer");
    put_file(&mut dst, &mut w, "/opt/keep", b"keep");
    put_file(&mut dst, &mut w, "/opt/a", b"to be replaced");
    copy_subtree(&mut dst, &mut w, &src, &src_file, b"/usr/lib", b"/opt").expect("copy dir");
    copy_subtree(&mut dst, &mut w, &src, &src_file, b"/", b"/x").expect("copy root");
    copy_subtree(
        &mut dst,
        &mut w,
        &src,
        &src_file,
        b"usr/lib/a",
        b"/new/dir/a",
    )
    .expect("file");
    let err =
        copy_subtree(&mut dst, &mut w, &src, &src_file, b"/nope", b"/y").expect_err("missing");
    assert!(matches!(err, CopyError::SourceMissing { .. }), "{err}");
    let err = copy_subtree(&mut dst, &mut w, &src, &src_file, b"/usr", b"/opt/keep/z")
        .expect_err("under a file");
    assert!(
        chain(&err).contains("parent \"opt/keep\" is not a directory"),
        "{}",
        chain(&err)
    );
    w.finish(&dst).expect("finish dst");

    let img = read_file(&dst_path);
    assert_eq!(data(&img, "/opt/keep"), b"keep");
    assert_eq!(data(&img, "/opt/a"), b"aaa");
    assert_eq!(img["/opt"].perm(), 0o700, "the source dir's metadata");
    assert_eq!(img["/opt/sub/b"].nid, img["/opt/a"].nid);
    assert_eq!(img["/opt/a"].nlink, 2, "only links inside the subtree");
    assert_eq!(data(&img, "/opt/lnk"), b"a");
    assert_eq!(img["/x/outside"].nid, img["/x/usr/lib/a"].nid);
    assert_eq!(img["/x/outside"].nlink, 3);
    assert_ne!(img["/x/outside"].nid, img["/opt/a"].nid);
    assert_eq!(data(&img, "/new/dir/a"), b"aaa");
    assert_eq!(img["/new/dir/a"].nlink, 1);
    assert_eq!(img["/new"].perm(), 0o755);
}

#[test]
fn tarballs_unpack_below_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img.erofs");
    let file = rw(&path);
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(&file).expect("writer");
    put_file(&mut tree, &mut w, "/etc/x", b"x");
    put_file(&mut tree, &mut w, "/opt/app/old", b"old");

    let mut t = Tar::new();
    t.dir("./", 0o700);
    t.file("./bin/sh", 0o755, b"#!");
    t.hardlink("./bin/ash", "./bin/sh");
    t.symlink("./etc-link", "../../etc/x");
    t.file("old", 0o600, b"new");
    let tar = t.0.into_inner().expect("tar");
    let rest = tar_import::import(
        Path::new("t.tar"),
        &tar[..],
        &mut tree,
        b"/opt/app/",
        &mut w,
    )
    .expect("import");
    assert!(rest.iter().all(|&b| b == 0));
    w.finish(&tree).expect("finish");

    let img = read_file(&path);
    assert_eq!(data(&img, "/etc/x"), b"x");
    assert_eq!(img["/opt/app"].perm(), 0o700);
    assert_eq!(data(&img, "/opt/app/bin/sh"), b"#!");
    assert_eq!(img["/opt/app/bin/ash"].nid, img["/opt/app/bin/sh"].nid);
    assert_eq!(data(&img, "/opt/app/etc-link"), b"../../etc/x");
    assert_eq!(data(&img, "/opt/app/old"), b"new");

    // Escapes are judged from where the link lands.
    let mut t = Tar::new();
    t.symlink("lnk", "../../../x");
    let tar = t.0.into_inner().expect("tar");
    let err = tar_import::import(Path::new("t.tar"), &tar[..], &mut tree, b"/opt/app", &mut w)
        .expect_err("escape");
    assert!(err.to_string().contains("climbs above the root"), "{err}");
    // A destination under a file.
    let err = tar_import::import(Path::new("t.tar"), &[][..], &mut tree, b"/etc/x/y", &mut w)
        .expect_err("dest");
    assert!(
        err.to_string()
            .contains("parent \"etc/x\" is not a directory"),
        "{err}"
    );
}

/// The test reader agrees with the kernel on every path of the sample image,
/// and the kernel reads an image that was finished three times.
#[test]
fn the_reader_agrees_with_the_kernel() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = super::tests::sample(dir.path());
    let image = dir.path().join("sample.erofs");
    super::write_erofs_from_tar(&tarball, &mut rw(&image)).expect("build");
    let nodes = read_file(&image);
    assert!(nodes.len() > 1000);
    let Some(mnt) = Mount::new(&image) else {
        return;
    };
    for (path, node) in &nodes {
        let host = mnt.0.join(path.trim_start_matches('/'));
        let m = fs::symlink_metadata(&host).expect(path);
        let seen = (m.mode(), m.uid(), m.gid(), m.mtime(), m.nlink(), m.rdev());
        let want = (
            u32::from(node.mode),
            node.uid,
            node.gid,
            node.mtime,
            u64::from(node.nlink),
            u64::from(node.rdev),
        );
        assert_eq!(seen, want, "{path}");
        if m.is_file() {
            assert_eq!(fs::read(&host).expect(path), node.data, "{path}");
        } else if m.is_symlink() {
            let target = fs::read_link(&host).expect(path);
            assert_eq!(
                target.as_os_str().as_encoded_bytes(),
                &node.data[..],
                "{path}"
            );
        }
    }
    drop(mnt);

    let path = dir.path().join("layers.erofs");
    let file = rw(&path);
    let mut tree = Tree::new();
    let mut w = ImageWriter::new(&file).expect("writer");
    for round in 0..3 {
        for i in 0..200 {
            let body = format!("{round}-{i}").repeat(i);
            put_file(
                &mut tree,
                &mut w,
                &format!("/r{round}/f{i}"),
                body.as_bytes(),
            );
        }
        w.finish(&tree).expect("finish");
    }
    let nodes = read_file(&path);
    let Some(mnt) = Mount::new(&path) else {
        return;
    };
    for round in 0..3 {
        let f = format!("r{round}/f199");
        let got = fs::read(mnt.0.join(&f)).expect("read");
        assert_eq!(got, nodes[&format!("/{f}")].data);
        assert_eq!(got, format!("{round}-199").repeat(199).as_bytes());
    }
}
