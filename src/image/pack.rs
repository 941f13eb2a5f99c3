//! `cella _pack_image`: an image as a tarball (vagga's `_pack_image`,
//! optionally gzip, bzip2 or xz), an OCI archive or a docker archive, for
//! `podman load`, `skopeo copy`, `docker load` or plain `tar x`.
//!
//! We write tar ourselves rather than through `tar::Builder::append_dir_all`
//! and the like: there is no directory on the host to walk, the image is a
//! `Tree` whose file data lies in the erofs file, and the output must be the
//! same bytes every time for the same image (no host uid names, no pid in
//! PAX header names, no time of packing). The format is what Go's
//! archive/tar writes: ustar headers, and a PAX header before an entry that
//! ustar cannot hold (a name or link target over 100 bytes, a number too
//! large for its octal field, xattrs as `SCHILY.xattr.NAME`).
//!
//! The layer lists the tree depth-first, each directory's entries sorted by
//! name bytes (as `tar --sort=name` does): `etc/`, `etc/passwd`, `usr/`, ….
//! The root itself is not listed (names are `bin/sh`, `etc/`). The second
//! and later names of an inode become hard links to its first name;
//! sockets are left out.
//!
//! An OCI or docker archive names its layer by its sha256, which is only
//! known once the layer was written: the layer is generated twice from the
//! tree, first into a hash, then into the archive (hashed again, so an
//! image that changed in between is an error rather than a wrong digest),
//! never held in memory or a temporary file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use oci_spec::image as oci;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::store::{Image, ImageConfig, ImageInfo};
use super::tree::{self, InodeId, Kind, Meta, Tree};
use crate::hostfs::FsError;

/// What `pack` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFormat {
    /// The root filesystem as a tarball (compressed as asked).
    Tar,
    /// An OCI image layout in a tar (`skopeo`'s `oci-archive:`).
    OciArchive,
    /// What `docker save` writes (`skopeo`'s `docker-archive:`).
    DockerArchive,
}

/// The compression of a `PackFormat::Tar` (vagga's -z, -j, -J).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
}

/// How to pack an image.
#[derive(Debug, Clone, Copy)]
pub struct PackOptions<'a> {
    pub format: PackFormat,
    /// Only for `PackFormat::Tar`; archives are refused compressed.
    pub compression: Compression,
    /// The image's name in an archive, `NAME:TAG` ("localhost/base:latest").
    pub reference: &'a str,
    /// What goes in an archive's image config (Env, Entrypoint, …).
    pub config: &'a ImageConfig,
    /// The image's creation time in an archive, in seconds since 1970
    /// (SOURCE_DATE_EPOCH), also the mtime of the archive's own files.
    pub epoch: i64,
}

/// What failed while packing an image.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("only a plain tarball is compressed, not an OCI or docker archive ({0:?} asked for)")]
    CompressedArchive(Compression),
    #[error(
        "cannot pack image {image}: {reference:?} is not a reference NAME:TAG \
         (a lowercase name and a tag, such as localhost/base:latest)"
    )]
    BadReference { image: String, reference: String },
    /// Reading tree.json or opening rootfs.erofs.
    #[error("cannot read the {what} of image {image}")]
    Open {
        image: String,
        what: &'static str,
        #[source]
        source: FsError,
    },
    #[error("the file tree of image {image} is invalid")]
    ParseTree {
        image: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read {path:?} from the rootfs of image {image}")]
    ReadData {
        image: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the archive of image {image}")]
    Write {
        image: String,
        #[source]
        source: io::Error,
    },
    #[error("image {image} changed while it was packed: its layer came out differently twice")]
    Changed { image: String },
}

/// The annotation `podman load` and `skopeo` take an image's name from.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The longest reference taken (docker's limit on a repository name).
const MAX_REFERENCE: usize = 255;
/// How much file data is read at a time.
const CHUNK: usize = 256 << 10;
/// The tar block size.
const BLOCK: usize = 512;

/// Writes `image` to `out` as `opts` say. On an error `out` holds part of
/// an archive: the caller removes what it wrote.
pub fn pack(image: &Image, out: &mut dyn Write, opts: &PackOptions<'_>) -> Result<(), PackError> {
    let name = shown(&image.info);
    if opts.format != PackFormat::Tar && opts.compression != Compression::None {
        return Err(PackError::CompressedArchive(opts.compression));
    }
    if opts.format != PackFormat::Tar && !is_reference(opts.reference) {
        return Err(PackError::BadReference {
            image: name,
            reference: opts.reference.to_owned(),
        });
    }
    let open = |what| {
        let image = name.clone();
        move |source| PackError::Open {
            image,
            what,
            source,
        }
    };
    let json = image.read_tree().map_err(open("file tree"))?;
    let tree = Tree::from_json(&json).map_err(|source| PackError::ParseTree {
        image: name.clone(),
        source,
    })?;
    drop(json);
    let rootfs = image.open_rootfs().map_err(open("rootfs"))?;
    let layer = Layer::new(&tree, &rootfs);
    let mut out = BufWriter::with_capacity(CHUNK, out);
    let done = match opts.format {
        PackFormat::Tar => compressed(&layer, &mut out, opts.compression),
        _ => archive(&layer, &mut out, opts, &image.info),
    };
    done.and_then(|()| out.flush().map_err(Fail::Write))
        .map_err(|e| e.into_pack(&name))
}

/// An image as messages name it: its container and short id.
fn shown(info: &ImageInfo) -> String {
    let id = info.id.get(..12).unwrap_or(&info.id);
    format!("{:?} ({id})", info.container)
}

/// What failed, before it is told which image.
#[derive(Debug)]
enum Fail {
    Write(io::Error),
    Read { path: Vec<u8>, source: io::Error },
    Changed,
}

impl Fail {
    fn into_pack(self, image: &str) -> PackError {
        let image = image.to_owned();
        match self {
            Fail::Write(source) => PackError::Write { image, source },
            Fail::Read { path, source } => PackError::ReadData {
                image,
                path: format!("/{}", tree::shown(&path)),
                source,
            },
            Fail::Changed => PackError::Changed { image },
        }
    }
}

/// The plain tarball, compressed as asked; gzip's header has no name and
/// mtime 0, so the bytes depend on the image alone.
fn compressed(layer: &Layer<'_>, out: &mut dyn Write, how: Compression) -> Result<(), Fail> {
    let sink = |w: &mut dyn Write| layer.write(&mut Sink::new(w, false));
    match how {
        Compression::None => sink(out),
        Compression::Gzip => {
            let mut z = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::default());
            sink(&mut z)?;
            z.finish().map(drop).map_err(Fail::Write)
        }
        Compression::Bzip2 => {
            let mut z = bzip2::write::BzEncoder::new(out, bzip2::Compression::default());
            sink(&mut z)?;
            z.finish().map(drop).map_err(Fail::Write)
        }
        Compression::Xz => {
            let mut z = xz2::write::XzEncoder::new(out, 6);
            sink(&mut z)?;
            z.finish().map(drop).map_err(Fail::Write)
        }
    }
}

/// A tree to write as a tar, with its file data in `rootfs`.
struct Layer<'a> {
    tree: &'a Tree,
    rootfs: &'a File,
    /// How many names each inode has.
    nlink: Vec<u32>,
}

impl<'a> Layer<'a> {
    /// Counts the names of each inode in every directory, reachable or
    /// not: an unreachable one can only make an inode look linked twice,
    /// which costs its first name's copy in memory and nothing else.
    fn new(tree: &'a Tree, rootfs: &'a File) -> Layer<'a> {
        let mut nlink = vec![0u32; tree.inodes.len()];
        for inode in &tree.inodes {
            if let Kind::Dir(entries) = &inode.kind {
                for &id in entries.values() {
                    if let Some(n) = nlink.get_mut(id) {
                        *n = n.saturating_add(1);
                    }
                }
            }
        }
        Layer {
            tree,
            rootfs,
            nlink,
        }
    }

    /// Writes the whole tar, end-of-archive blocks included.
    fn write(&self, sink: &mut Sink<'_>) -> Result<(), Fail> {
        let inodes = &self.tree.inodes;
        let Some(Kind::Dir(root)) = inodes.first().map(|i| &i.kind) else {
            return sink.end();
        };
        // The first name of each inode that has several, for the others.
        let mut first: HashMap<InodeId, Vec<u8>> = HashMap::new();
        let mut path = Vec::new();
        // Each open directory: its path's length with the "/", and what is
        // left of its entries. `Tree::from_json` checked that no directory
        // has two names, so this ends.
        let mut stack = vec![(0, root.iter())];
        while let Some(top) = stack.last_mut() {
            let base = top.0;
            let Some((name, &id)) = top.1.next() else {
                stack.pop();
                continue;
            };
            path.truncate(base);
            path.extend_from_slice(name);
            let inode = &inodes[id];
            if let Kind::Dir(entries) = &inode.kind {
                path.push(b'/');
                sink.entry(&Entry::new(b'5', &path, &inode.meta))?;
                stack.push((path.len(), entries.iter()));
                continue;
            }
            let linked = self.nlink.get(id).is_some_and(|&n| n > 1);
            if linked && !matches!(inode.kind, Kind::Socket) {
                if let Some(target) = first.get(&id) {
                    let mut e = Entry::new(b'1', &path, &inode.meta);
                    e.link = target;
                    e.xattrs = false;
                    sink.entry(&e)?;
                    continue;
                }
                first.insert(id, path.clone());
            }
            let (kind, size, link, dev) = match &inode.kind {
                Kind::File(data) => (b'0', data.size, &b""[..], (0, 0)),
                Kind::Symlink(target) => (b'2', 0, &target[..], (0, 0)),
                Kind::CharDevice { major, minor } => (b'3', 0, &b""[..], (*major, *minor)),
                Kind::BlockDevice { major, minor } => (b'4', 0, &b""[..], (*major, *minor)),
                Kind::Fifo => (b'6', 0, &b""[..], (0, 0)),
                Kind::Socket | Kind::Dir(_) => continue,
            };
            let mut e = Entry::new(kind, &path, &inode.meta);
            (e.size, e.link, e.dev) = (size, link, dev);
            sink.entry(&e)?;
            if let Kind::File(data) = &inode.kind {
                sink.file(self.rootfs, data.range(), &path)?;
            }
        }
        sink.end()
    }

    /// The layer's sha256 and size: written once into nothing.
    fn digest(&self) -> Result<([u8; 32], u64), Fail> {
        let mut nothing = io::sink();
        let mut sink = Sink::new(&mut nothing, true);
        self.write(&mut sink)?;
        Ok(sink.finish())
    }

    /// Writes the layer as the archive entry `name` of `size` bytes; it
    /// must come out as the `digest` pass said.
    fn write_entry(
        &self,
        out: &mut Sink<'_>,
        name: &str,
        sum: ([u8; 32], u64),
        mtime: i64,
    ) -> Result<(), Fail> {
        let meta = archive_meta(0o644, mtime);
        let mut e = Entry::new(b'0', name.as_bytes(), &meta);
        e.size = sum.1;
        out.entry(&e)?;
        let mut sink = Sink::new(&mut *out.out, true);
        self.write(&mut sink)?;
        if sink.finish() != sum {
            return Err(Fail::Changed);
        }
        out.pad(sum.1)
    }
}

/// One tar entry.
struct Entry<'a> {
    name: &'a [u8],
    /// The ustar typeflag.
    kind: u8,
    meta: &'a Meta,
    size: u64,
    link: &'a [u8],
    dev: (u32, u32),
    /// Whether the meta's xattrs go in (not for a hard link).
    xattrs: bool,
}

impl<'a> Entry<'a> {
    fn new(kind: u8, name: &'a [u8], meta: &'a Meta) -> Entry<'a> {
        Entry {
            name,
            kind,
            meta,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: true,
        }
    }
}

/// Where tar blocks go: `out`, hashed and counted when asked.
struct Sink<'a> {
    out: &'a mut dyn Write,
    hash: Option<Sha256>,
    len: u64,
}

impl<'a> Sink<'a> {
    fn new(out: &'a mut dyn Write, hash: bool) -> Sink<'a> {
        Sink {
            out,
            hash: hash.then(Sha256::new),
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        self.out.write_all(bytes)?;
        if let Some(h) = &mut self.hash {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> ([u8; 32], u64) {
        (self.hash.unwrap_or_default().finalize().into(), self.len)
    }

    /// Zeros after `size` bytes of data, to the end of the block.
    fn pad(&mut self, size: u64) -> Result<(), Fail> {
        let rest = (BLOCK as u64 - size % BLOCK as u64) as usize % BLOCK;
        self.put(&[0; BLOCK][..rest])
    }

    /// The end-of-archive marker: two zero blocks.
    fn end(&mut self) -> Result<(), Fail> {
        self.put(&[0; 2 * BLOCK])
    }

    /// The header of `e` (after a PAX header when ustar cannot hold it).
    fn entry(&mut self, e: &Entry<'_>) -> Result<(), Fail> {
        let mut pax = Vec::new();
        let mut h = [0u8; BLOCK];
        if e.name.len() > 100 {
            record(&mut pax, b"path", e.name);
        }
        if e.link.len() > 100 {
            record(&mut pax, b"linkpath", e.link);
        }
        let mtime = u64::try_from(e.meta.mtime).unwrap_or(0);
        let numbers = [
            (100..108, u64::from(e.meta.perm & 0o7777), &b""[..]),
            (108..116, u64::from(e.meta.uid), b"uid"),
            (116..124, u64::from(e.meta.gid), b"gid"),
            (124..136, e.size, b"size"),
            (136..148, mtime, b"mtime"),
            (329..337, u64::from(e.dev.0), b""),
            (337..345, u64::from(e.dev.1), b""),
        ];
        for (field, value, key) in numbers {
            if !number(&mut h[field], value) && !key.is_empty() {
                record(&mut pax, key, value.to_string().as_bytes());
            }
        }
        if e.xattrs {
            let mut xattrs: Vec<(Vec<u8>, &[u8])> = e
                .meta
                .xattrs
                .iter()
                .map(|x| (x.name(), &x.value[..]))
                .collect();
            xattrs.sort();
            for (name, value) in xattrs {
                record(&mut pax, &[&b"SCHILY.xattr."[..], &name].concat(), value);
            }
        }
        if !pax.is_empty() {
            let meta = archive_meta(0o644, 0);
            let mut x = Entry::new(b'x', b"././@PaxHeader", &meta);
            x.size = pax.len() as u64;
            self.entry(&x)?;
            self.put(&pax)?;
            self.pad(x.size)?;
        }
        let name = &e.name[..e.name.len().min(100)];
        h[..name.len()].copy_from_slice(name);
        h[156] = e.kind;
        let link = &e.link[..e.link.len().min(100)];
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.put(&h)
    }

    /// The data of a file: `range` of `rootfs`, and the padding after it.
    fn file(&mut self, rootfs: &File, range: Range<u64>, path: &[u8]) -> Result<(), Fail> {
        let read_err = |source| Fail::Read {
            path: path.to_vec(),
            source,
        };
        let mut buf =
            vec![0u8; CHUNK.min(usize::try_from(range.end - range.start).unwrap_or(CHUNK))];
        let mut at = range.start;
        while at < range.end {
            let want = usize::try_from(range.end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match rootfs.read_at(&mut buf[..want], at) {
                Ok(0) => {
                    return Err(read_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the image file ends inside the file's data",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.put(&buf[..n])?;
            at += n as u64;
        }
        self.pad(range.end - range.start)
    }

    /// A file ('0') or directory ('5') of the archive itself.
    fn own(&mut self, kind: u8, name: &str, bytes: &[u8], mtime: i64) -> Result<(), Fail> {
        let meta = archive_meta(if kind == b'5' { 0o755 } else { 0o644 }, mtime);
        let mut e = Entry::new(kind, name.as_bytes(), &meta);
        e.size = bytes.len() as u64;
        self.entry(&e)?;
        self.put(bytes)?;
        self.pad(e.size)
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Write(e)
    }
}

/// The metadata of the archive's own files: root's, mtime the epoch.
fn archive_meta(perm: u16, mtime: i64) -> Meta {
    Meta {
        perm,
        mtime,
        ..Meta::default()
    }
}

/// Writes `value` in octal into `field` (digits, then a NUL); what does
/// not fit goes in base-256 (GNU's extension, which Go and the tar crate
/// read) and the caller adds a PAX record. Returns whether it fit.
fn number(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    if value < 1 << (3 * digits) {
        let text = format!("{value:0digits$o}\0");
        field.copy_from_slice(text.as_bytes());
        return true;
    }
    let bytes = value.to_be_bytes();
    field.fill(0);
    let n = field.len().min(8);
    let len = field.len();
    field[len - n..].copy_from_slice(&bytes[8 - n..]);
    field[0] |= 0x80;
    false
}

/// Appends the PAX record "LEN KEY=VALUE\n", LEN counting itself.
fn record(pax: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    pax.extend_from_slice(len.to_string().as_bytes());
    pax.push(b' ');
    pax.extend_from_slice(key);
    pax.push(b'=');
    pax.extend_from_slice(value);
    pax.push(b'\n');
}

/// A reference an archive can carry: `NAME:TAG`, NAME lowercase letters,
/// digits and `._-/:` (a registry's port), TAG as docker takes it.
fn is_reference(text: &str) -> bool {
    let Some((name, tag)) = text.rsplit_once(':') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b));
    let tag_ok = (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    text.len() <= MAX_REFERENCE && name_ok && tag_ok && !tag.contains('/')
}

/// `epoch` as RFC 3339 in UTC ("2023-11-14T22:13:20Z"), clamped to the
/// years 1970 to 9999.
pub(super) fn rfc3339(epoch: i64) -> String {
    let secs = epoch.clamp(0, 253_402_300_799);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The OCI architecture name of the host (whose images cella builds).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One image of a docker archive's manifest.json.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage<'a> {
    config: &'a str,
    repo_tags: [&'a str; 1],
    layers: [&'a str; 1],
}

/// A list the config has and that is not empty.
fn list(l: &Option<Vec<String>>) -> Option<Vec<String>> {
    l.clone().filter(|l| !l.is_empty())
}

/// A text the config has and that is not empty.
fn text(t: &Option<String>) -> Option<String> {
    t.clone().filter(|t| !t.is_empty())
}

/// Serialized: oci-spec's types are structs (their one map, a
/// descriptor's annotations, holds a single entry), so the bytes are fixed.
fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Fail> {
    serde_json::to_vec(value).map_err(|e| Fail::Write(io::Error::other(e)))
}

fn spec(e: oci_spec::OciSpecError) -> Fail {
    Fail::Write(io::Error::other(e))
}

fn descriptor(media: oci::MediaType, sum: &[u8; 32], size: u64) -> Result<oci::Descriptor, Fail> {
    let digest = oci::Digest::try_from(format!("sha256:{}", hex::encode(sum))).map_err(spec)?;
    Ok(oci::Descriptor::new(media, size, digest))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The image config of a layer whose diff id is `layer`.
fn config_json(
    opts: &PackOptions<'_>,
    info: &ImageInfo,
    layer: &[u8; 32],
) -> Result<Vec<u8>, Fail> {
    let created = rfc3339(opts.epoch);
    let c = opts.config;
    let mut run = oci::Config::default();
    run.set_user(text(&c.user));
    run.set_env((!c.env.is_empty()).then(|| c.env.clone()));
    run.set_entrypoint(list(&c.entrypoint));
    run.set_cmd(list(&c.cmd));
    run.set_working_dir(text(&c.working_dir));
    let rootfs = oci::RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![format!("sha256:{}", hex::encode(layer))])
        .build()
        .map_err(spec)?;
    let history = oci::HistoryBuilder::default()
        .created(created.clone())
        .created_by("cella _pack_image")
        .comment(format!(
            "image {} of container {:?}",
            info.id, info.container
        ))
        .build()
        .map_err(spec)?;
    let config = oci::ImageConfigurationBuilder::default()
        .created(created)
        .architecture(arch())
        .os("linux")
        .config(run)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(spec)?;
    to_json(&config)
}

/// An OCI image layout in a tar (oci-layout, the layer, config and
/// manifest blobs, index.json), or what `skopeo copy … docker-archive:`
/// writes without the legacy per-layer directories (`<layer hex>.tar`,
/// `<config hex>.json`, manifest.json).
fn archive(
    layer: &Layer<'_>,
    out: &mut dyn Write,
    opts: &PackOptions<'_>,
    info: &ImageInfo,
) -> Result<(), Fail> {
    let sum = layer.digest()?;
    let config = config_json(opts, info, &sum.0)?;
    let config_sum = sha256(&config);
    let mtime = opts.epoch;
    let mut sink = Sink::new(out, false);
    if opts.format == PackFormat::DockerArchive {
        let config_name = format!("{}.json", hex::encode(config_sum));
        let layer_name = format!("{}.tar", hex::encode(sum.0));
        layer.write_entry(&mut sink, &layer_name, sum, mtime)?;
        let manifest = to_json(&[DockerImage {
            config: &config_name,
            repo_tags: [opts.reference],
            layers: [&layer_name],
        }])?;
        sink.own(b'0', &config_name, &config, mtime)?;
        sink.own(b'0', "manifest.json", &manifest, mtime)?;
        return sink.end();
    }
    let manifest = oci::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(oci::MediaType::ImageManifest)
        .config(descriptor(
            oci::MediaType::ImageConfig,
            &config_sum,
            config.len() as u64,
        )?)
        .layers(vec![descriptor(oci::MediaType::ImageLayer, &sum.0, sum.1)?])
        .build()
        .map_err(spec)?;
    let manifest = to_json(&manifest)?;
    let manifest_size = manifest.len() as u64;
    let mut entry = descriptor(
        oci::MediaType::ImageManifest,
        &sha256(&manifest),
        manifest_size,
    )?;
    let ref_name = (REF_NAME.to_owned(), opts.reference.to_owned());
    entry.set_annotations(Some(HashMap::from([ref_name])));
    let platform = oci::PlatformBuilder::default()
        .architecture(arch())
        .os("linux");
    entry.set_platform(Some(platform.build().map_err(spec)?));
    let index = oci::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci::MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()
        .map_err(spec)?;
    let blob = |sum: &[u8; 32]| format!("blobs/sha256/{}", hex::encode(sum));
    sink.own(
        b'0',
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        mtime,
    )?;
    sink.own(b'5', "blobs/", b"", mtime)?;
    sink.own(b'5', "blobs/sha256/", b"", mtime)?;
    layer.write_entry(&mut sink, &blob(&sum.0), sum, mtime)?;
    sink.own(b'0', &blob(&config_sum), &config, mtime)?;
    sink.own(b'0', &blob(&sha256(&manifest)), &manifest, mtime)?;
    sink.own(b'0', "index.json", &to_json(&index)?, mtime)?;
    sink.end()
}
