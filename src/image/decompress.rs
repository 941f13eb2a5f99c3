//! The one reader of tarballs: compressed ones (gzip, zstd, xz, bzip2)
//! are told by their first bytes, not their names, and decompressed as
//! they stream into the image, never unpacked on the host; the codecs are
//! the well-kept crates (flate2, zstd, xz2, bzip2).
//!
//! A compressed stream can declare far more than it weighs, so what comes
//! out is held to the shape of a tar archive as it passes ([`TarGuard`]):
//! the tar crate reads a GNU long name or a PAX header whole into memory,
//! and one declared as gigabytes of zeros would be gigabytes of RAM. Such
//! metadata entries are refused past 1 MiB; file data is bounded by the
//! image's own limit where it is written.

use std::io::{self, BufRead, Read};

use bzip2::bufread::MultiBzDecoder;
use flate2::bufread::MultiGzDecoder;
use xz2::bufread::XzDecoder;

/// The largest GNU long name, long link or PAX header accepted.
pub const MAX_TAR_METADATA: u64 = 1 << 20;
const BLOCK: usize = 512;

/// How a tarball is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Codec {
    pub fn sniff(head: &[u8]) -> Codec {
        match head {
            [0x1f, 0x8b, ..] => Codec::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Codec::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Codec::Xz,
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Codec::Bzip2,
            _ => Codec::Plain,
        }
    }
}

/// `R`'s content, decompressed if it is compressed.
pub enum Decoded<R: BufRead> {
    Plain(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, R>>),
    Xz(Box<XzDecoder<R>>),
    Bzip2(Box<MultiBzDecoder<R>>),
}

impl<R: BufRead> Decoded<R> {
    /// Looks at the first bytes of `inner` (without consuming them) and
    /// decodes what follows accordingly.
    pub fn new(mut inner: R) -> io::Result<Decoded<R>> {
        Ok(match Codec::sniff(inner.fill_buf()?) {
            Codec::Plain => Decoded::Plain(inner),
            Codec::Gzip => Decoded::Gzip(Box::new(MultiGzDecoder::new(inner))),
            Codec::Zstd => {
                Decoded::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(inner)?))
            }
            // Concatenated .xz streams decode as one, as xz(1) does.
            Codec::Xz => Decoded::Xz(Box::new(XzDecoder::new_multi_decoder(inner))),
            Codec::Bzip2 => Decoded::Bzip2(Box::new(MultiBzDecoder::new(inner))),
        })
    }

    pub fn codec(&self) -> Codec {
        match self {
            Decoded::Plain(_) => Codec::Plain,
            Decoded::Gzip(_) => Codec::Gzip,
            Decoded::Zstd(_) => Codec::Zstd,
            Decoded::Xz(_) => Codec::Xz,
            Decoded::Bzip2(_) => Codec::Bzip2,
        }
    }

    /// The compressed stream, where the decoder left it.
    pub fn into_inner(self) -> R {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(d) => d.into_inner(),
            Decoded::Zstd(d) => d.finish(),
            Decoded::Xz(d) => d.into_inner(),
            Decoded::Bzip2(d) => d.into_inner(),
        }
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Zstd(d) => d.read(buf),
            Decoded::Xz(d) => d.read(buf),
            Decoded::Bzip2(d) => d.read(buf),
        }
    }
}

/// Where a [`TarGuard`] is in the archive.
enum At {
    /// In a header block, `filled` bytes of it seen.
    Header { filled: usize },
    /// In a GNU sparse header's extension block, `filled` bytes seen.
    Extension { filled: usize, data: u64 },
    /// In an entry's data (with its padding), `left` bytes to go.
    Data { left: u64 },
    /// In a PAX header's data, kept to read its `size` record: `left` of
    /// it to go, then `pad` bytes.
    Pax { left: u64, pad: u64, data: Vec<u8> },
}

/// Passes a tar stream through unchanged, following its blocks as the tar
/// crate does (a PAX `size` record included; a unit test holds the two
/// in step), and fails it at the first
/// metadata entry (long name, long link, PAX header) larger than
/// [`MAX_TAR_METADATA`].
pub struct TarGuard<R> {
    inner: R,
    at: At,
    block: [u8; BLOCK],
    /// The `size` of the last PAX header, for the entry it describes.
    pax_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            at: At::Header { filled: 0 },
            block: [0; BLOCK],
            pax_size: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Follows `bytes`, which just passed.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Data { left } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.at = At::Header { filled: 0 };
                    }
                }
                At::Pax { left, pad, data } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    data.extend_from_slice(&bytes[..n]);
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.pax_size = pax_size(data);
                        self.at = match *pad {
                            0 => At::Header { filled: 0 },
                            left => At::Data { left },
                        };
                    }
                }
                At::Header { filled } | At::Extension { filled, .. } => {
                    let n = (BLOCK - *filled).min(bytes.len());
                    self.block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == BLOCK {
                        self.at = self.next()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What follows the block just completed.
    fn next(&mut self) -> io::Result<At> {
        let b = &self.block;
        if let At::Extension { data, .. } = self.at {
            // An extension block of a GNU sparse header: another follows
            // while its last flag is set, then the data.
            return Ok(match b[504] {
                0 => data_of(data),
                _ => At::Extension { filled: 0, data },
            });
        }
        let mut size = entry_size(&b[124..136])?;
        let kind = b[156];
        // As the tar crate (0.4.46): a PAX header's size replaces the
        // header's in the next entry that is not itself an extension
        // header (long name or link, PAX local or global).
        if !matches!(kind, b'L' | b'K' | b'x' | b'g') {
            if let Some(pax) = self.pax_size.take() {
                size = pax;
            }
        }
        let metadata = matches!(kind, b'L' | b'K' | b'x' | b'g' | b'X');
        if metadata && size > MAX_TAR_METADATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar header entry ({}) declares {size} bytes, more than the {MAX_TAR_METADATA} cella reads",
                    match kind {
                        b'L' => "GNU long name",
                        b'K' => "GNU long link",
                        _ => "PAX extended header",
                    }
                ),
            ));
        }
        if kind == b'x' {
            let padded = padded(size);
            return Ok(match size {
                0 => At::Header { filled: 0 },
                _ => At::Pax {
                    left: size,
                    pad: padded - size,
                    data: Vec::with_capacity(size as usize),
                },
            });
        }
        // An old-style GNU sparse file: extension blocks before its data.
        if kind == b'S' && b[482] != 0 {
            return Ok(At::Extension {
                filled: 0,
                data: size,
            });
        }
        Ok(data_of(size))
    }
}

/// `size` rounded up to whole blocks.
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// An entry's data of `size` bytes, padded to whole blocks.
fn data_of(size: u64) -> At {
    match padded(size) {
        0 => At::Header { filled: 0 },
        left => At::Data { left },
    }
}

/// The `size` record of PAX header data, read as the tar crate (0.4.46)
/// reads it: `LEN key=value` lines, the first `size` wins, and a
/// malformed line or value before it means none.
fn pax_size(data: &[u8]) -> Option<u64> {
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            return None;
        }
        let space = line.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
        if line.len() + 1 != len {
            return None;
        }
        let record = &line[space + 1..];
        let equals = record.iter().position(|&b| b == b'=')?;
        if &record[..equals] == b"size" {
            return std::str::from_utf8(&record[equals + 1..])
                .ok()?
                .parse()
                .ok();
        }
    }
    None
}

/// A header's size field: octal digits, or GNU's base-256 for big ones.
fn entry_size(field: &[u8]) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a tar header has a bad size");
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256).ok_or_else(bad)? | u64::from(b);
        }
        return Ok(n);
    }
    let digits = field
        .iter()
        .skip_while(|&&c| c == b' ')
        .take_while(|&&c| c != 0 && c != b' ');
    let mut n: u64 = 0;
    for &c in digits {
        if !(b'0'..=b'7').contains(&c) {
            return Err(bad());
        }
        n = n.checked_mul(8).ok_or_else(bad)? + u64::from(c - b'0');
    }
    Ok(n)
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "decompress_tests.rs"]
mod tests;
