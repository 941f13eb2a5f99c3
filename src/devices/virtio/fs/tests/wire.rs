//! Tests of the wire coding: structure sizes against the kernel ABI and
//! decoding of short input.

use super::super::fuse::*;

#[test]
fn sizes_match_the_kernel_abi() {
    assert_eq!(InHeader::SIZE, 40);
    assert_eq!(OutHeader::SIZE, 16);
    assert_eq!(Attr::SIZE, 88);
    assert_eq!(EntryOut::SIZE, 128);
    assert_eq!(AttrOut::SIZE, 104);
    assert_eq!(SetattrIn::SIZE, 88);
    assert_eq!(InitIn::SIZE, 64);
    assert_eq!(InitOut::SIZE, 64);
    assert_eq!(ReadIn::SIZE, 40);
    assert_eq!(WriteIn::SIZE, 40);
    assert_eq!(Kstatfs::SIZE, 80);
    assert_eq!(Dirent::SIZE, 24);
    assert_eq!(direntplus_size(1), 160);
}

#[test]
fn round_trip_and_short_input() {
    let h = InHeader {
        len: 41,
        opcode: LOOKUP,
        unique: 7,
        nodeid: 1,
        uid: 2,
        gid: 3,
        pid: 4,
        total_extlen: 5,
        padding: 6,
    };
    let bytes = h.to_bytes();
    assert_eq!(bytes.len(), 40);
    assert_eq!(&bytes[..4], &41u32.to_le_bytes());
    assert_eq!(InHeader::decode(&bytes), Some(h));
    assert_eq!(InHeader::decode(&bytes[..39]), None);
    let mut r = Reader::new(b"ab\0c");
    assert_eq!(r.cstr(), Some(&b"ab"[..]));
    assert_eq!(r.cstr(), None);
    assert_eq!(r.rest(), b"c");
}
