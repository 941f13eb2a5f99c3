use std::io::{Read, Write};

use super::*;

/// A tar archive holding `name` with `data`, and a file with a long name.
fn archive(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
    let long = format!("dir/{}", "n".repeat(300));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    b.into_inner().unwrap()
}

fn compressed(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::Plain => data.to_vec(),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Codec::Zstd => zstd::encode_all(data, 3).unwrap(),
        Codec::Xz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Codec::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn guarded(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    TarGuard::new(Decoded::new(bytes)?).read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn every_codec_is_told_by_its_bytes_and_streams_the_same_archive() {
    let tar = archive("etc/hello", b"hello\n");
    for codec in [
        Codec::Plain,
        Codec::Gzip,
        Codec::Zstd,
        Codec::Xz,
        Codec::Bzip2,
    ] {
        let bytes = compressed(codec, &tar);
        let decoded = Decoded::new(&bytes[..]).unwrap();
        assert_eq!(decoded.codec(), codec);
        assert_eq!(guarded(&bytes).unwrap(), tar, "{codec:?}");
    }
    // Names mean nothing: a tar whose first bytes look like nothing known.
    assert_eq!(Codec::sniff(b"BZh0"), Codec::Plain);
    assert_eq!(Codec::sniff(b""), Codec::Plain);
}

#[test]
fn a_truncated_stream_is_an_error_not_a_short_archive() {
    let tar = archive("etc/hello", &[7u8; 100_000]);
    for codec in [Codec::Gzip, Codec::Zstd, Codec::Xz, Codec::Bzip2] {
        let bytes = compressed(codec, &tar);
        let cut = &bytes[..bytes.len() / 2];
        assert!(guarded(cut).is_err(), "{codec:?}");
    }
}

/// A header block: `kind`, `size` (octal), a valid checksum.
fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn huge_metadata_entries_are_refused_before_they_are_read() {
    // A GNU long name "of" a GiB, gzipped into a few KiB.
    let mut tar = header("././@LongLink", b'L', 1 << 30);
    tar.extend(std::iter::repeat_n(0u8, 1 << 20));
    let bomb = compressed(Codec::Gzip, &tar);
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let e = guarded(&bomb).unwrap_err();
    assert!(
        e.to_string()
            .contains("GNU long name) declares 1073741824 bytes"),
        "{e}"
    );
    let e = guarded(&header("p", b'x', (1 << 20) + 1)).unwrap_err();
    assert!(e.to_string().contains("PAX extended header"), "{e}");
    // Small ones pass.
    let mut ok = header("p", b'x', 5);
    ok.extend_from_slice(b"5 a=\n");
    ok.resize(1024, 0);
    assert_eq!(guarded(&ok).unwrap(), ok);
}

/// A PAX header with `record`, padded.
fn pax(record: &[u8]) -> Vec<u8> {
    let mut tar = header("p", b'x', record.len() as u64);
    tar.extend_from_slice(record);
    tar.resize(1024, 0);
    tar
}

/// 1024 bytes of data that look like a huge long name's header.
fn decoy() -> Vec<u8> {
    let mut data = header("fake", b'L', 1 << 40);
    data.resize(1024, 0);
    data
}

#[test]
fn a_pax_size_moves_the_next_header_as_the_tar_crate_does() {
    // A PAX size of 1024 for a file whose header says 0, or 512: its data
    // holds what looks like a huge long name, which is data, not a header;
    // the real huge long name after it is refused.
    for header_size in [0, 512] {
        let mut tar = pax(b"13 size=1024\n");
        tar.extend(header("file", b'0', header_size));
        tar.extend(decoy());
        tar.extend(header("real", b'L', 2 << 20));
        let e = guarded(&tar).unwrap_err();
        assert!(e.to_string().contains("declares 2097152 bytes"), "{e}");
        // The tar crate agrees: the file has the 1024 bytes.
        let mut archive = tar::Archive::new(&tar[..2560]);
        let mut entries = archive.entries().unwrap();
        let entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.size(), 1024, "header size {header_size}");
    }
    // A long name between takes no PAX size (the file after it does).
    let mut tar = pax(b"13 size=1024\n");
    tar.extend(header("././@LongLink", b'L', 0));
    tar.extend(header("file", b'0', 0));
    tar.extend(decoy());
    tar.extend(header("real", b'L', 2 << 20));
    assert!(guarded(&tar).unwrap_err().to_string().contains("2097152"));
    // The first size counts; a malformed line before it means none.
    assert_eq!(pax_size(b"13 size=1024\n12 size=512\n"), Some(1024));
    assert_eq!(pax_size(b"9 bad=1\n13 size=1024\n"), None);
    assert_eq!(pax_size(b"11 a=12345\n13 size=1024\n"), Some(1024));
}

#[test]
fn base_256_sizes_and_sparse_extensions_keep_the_guard_in_step() {
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[11] = 5;
    assert_eq!(entry_size(&field).unwrap(), 5);
    assert_eq!(entry_size(b"00000001000\0").unwrap(), 512);
    assert!(entry_size(b"0000000900\0\0").is_err());
    // A GNU sparse header with one extension block, then its data.
    let mut h = header("sparse", b'S', 512);
    h[482] = 1;
    let mut tar = h;
    let mut ext = vec![0u8; 512];
    ext[504] = 0;
    tar.extend(ext);
    let mut data = header("fake", b'L', 1 << 40);
    data.resize(512, 0);
    tar.extend(data);
    tar.extend(vec![0u8; 1024]);
    assert_eq!(guarded(&tar).unwrap(), tar);
}
