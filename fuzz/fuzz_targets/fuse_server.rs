//! The virtio-fs FUSE server, as a hostile guest drives it: any sequence
//! of requests (see `cella_fuzz::fuse_input`) against two shares in a
//! fresh temporary directory, one writable with a hidden `.cella`, one
//! read-only, beside a file no request may reach.
//!
//! Checked beyond "no panic": every reply fits its room and carries a
//! well-formed header for its request; nothing outside the shares
//! changes, and the hidden `.cella` stays as it was.

#![no_main]

use std::os::unix::fs::symlink;
use std::time::Duration;

use cella::devices::virtio::fs::fuse::{self, EntryOut, InHeader, OutHeader, Wire};
use cella::devices::virtio::fs::server::{Server, ServerOptions, ShareSpec};
use cella::hostfs::Dir;
use cella_fuzz::{fuse_input, Bytes};
use libfuzzer_sys::fuzz_target;

/// What the guest may add: small, so no input fills the disk.
const QUOTA: u64 = 1 << 20;
const MAX_REQUESTS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir().expect("tempdir");
    let b = base.path();
    std::fs::write(b.join("outside.txt"), b"outside").expect("outside");
    for (dir, files) in [("share0", true), ("share1", true)] {
        let d = b.join(dir);
        std::fs::create_dir(&d).expect("share");
        if files {
            std::fs::write(d.join("file"), b"hello, world\n").expect("file");
            std::fs::create_dir(d.join("dir")).expect("dir");
            std::fs::write(d.join("dir/inner"), b"inner").expect("inner");
            symlink("../../outside.txt", d.join("link")).expect("symlink");
        }
    }
    std::fs::create_dir(b.join("share0/.cella")).expect(".cella");
    std::fs::write(b.join("share0/.cella/secret"), b"secret").expect("secret");

    let share = |i: usize, read_only: bool, hidden: &[&str]| {
        let dir = Dir::open(&b.join(format!("share{i}"))).expect("open share");
        ShareSpec::new(dir, read_only, hidden.iter().map(Into::into).collect()).expect("spec")
    };
    let shares = vec![share(0, false, &[".cella"]), share(1, true, &[])];
    let options = ServerOptions {
        direct_io: data.first().is_some_and(|b| b & 1 == 1),
        timeout: Duration::from_secs(1),
        write_quota: QUOTA,
    };
    let mut server = Server::new(shares, options).expect("server");

    // CELLA_FUZZ_DEBUG=1 when replaying an input shows each reply.
    let debug = std::env::var_os("CELLA_FUZZ_DEBUG").is_some();
    let mut input = Bytes(data.get(1..).unwrap_or_default());
    let mut unique = 0u64;
    // Node ids and file handles the replies gave, oldest first.
    let (mut nodes, mut handles): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    while unique < MAX_REQUESTS as u64 {
        let Some(req) = fuse_input::decode(&mut input) else {
            break;
        };
        unique += 1;
        let id = if req.user { 1000 } else { 0 };
        let mut nodeid = match req.node {
            n if n < fuse_input::SEEN => u64::from(n),
            n => fuse_input::nth_last(&nodes, usize::from(n - fuse_input::SEEN))
                .unwrap_or(u64::from(n)),
        };
        if req.far {
            nodeid <<= 32;
        }
        let mut args = req.args.to_vec();
        let pick = usize::from(args.first().copied().unwrap_or(0));
        let (at, value) = match req.patch {
            fuse_input::PATCH_FH => (0, fuse_input::nth_last(&handles, pick)),
            fuse_input::PATCH_FH_AT_8 => (8, fuse_input::nth_last(&handles, pick)),
            fuse_input::PATCH_NODE => (0, fuse_input::nth_last(&nodes, pick)),
            _ => (0, None),
        };
        if let (Some(value), Some(slot)) = (value, args.get_mut(at..at + 8)) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        let len = if req.lying_len {
            args.len()
        } else {
            InHeader::SIZE + args.len()
        };
        let mut bytes = InHeader {
            len: len as u32,
            opcode: req.opcode,
            unique,
            nodeid,
            uid: id,
            gid: id,
            pid: 1,
            total_extlen: 0,
            padding: 0,
        }
        .to_bytes();
        bytes.extend_from_slice(&args);
        let Some(out) = server.handle(&bytes, req.room) else {
            assert!(
                matches!(
                    req.opcode,
                    fuse::FORGET | fuse::BATCH_FORGET | fuse::INTERRUPT | fuse::NOTIFY_REPLY
                ),
                "no reply to opcode {}",
                req.opcode
            );
            continue;
        };
        assert!(out.len() <= req.room, "a reply larger than its room");
        if req.room < OutHeader::SIZE {
            assert!(out.is_empty());
            continue;
        }
        let h = OutHeader::decode(&out).expect("a reply header");
        if debug {
            let (op, e, n) = (req.opcode, h.error, out.len());
            eprintln!("opcode {op} node {nodeid}: error {e}, {n} bytes");
        }
        assert_eq!(h.len as usize, out.len(), "reply length");
        assert_eq!(h.unique, unique, "reply unique");
        assert!(h.error <= 0 && h.error > -4096, "errno {}", h.error);
        if h.error != 0 {
            assert_eq!(out.len(), OutHeader::SIZE, "an error with a payload");
            continue;
        }
        // Remember what the reply named, for later requests.
        let u64_at = |at: usize| {
            out.get(OutHeader::SIZE + at..OutHeader::SIZE + at + 8)
                .and_then(u64::decode)
        };
        match req.opcode {
            fuse::LOOKUP | fuse::MKDIR | fuse::MKNOD | fuse::SYMLINK | fuse::LINK => {
                nodes.extend(u64_at(0).filter(|&n| n != 0))
            }
            fuse::CREATE => {
                nodes.extend(u64_at(0).filter(|&n| n != 0));
                handles.extend(u64_at(EntryOut::SIZE));
            }
            fuse::OPEN | fuse::OPENDIR => handles.extend(u64_at(0)),
            _ => {}
        }
    }
    drop(server);

    // Confinement: nothing outside the shares, nor the hidden .cella,
    // changed.
    let mut names: Vec<_> = std::fs::read_dir(b)
        .expect("base")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside.txt", "share0", "share1"],
        "a name appeared outside the shares"
    );
    assert_eq!(
        std::fs::read(b.join("outside.txt")).expect("outside"),
        b"outside"
    );
    let cella: Vec<_> = std::fs::read_dir(b.join("share0/.cella"))
        .expect(".cella")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(cella, ["secret"], ".cella changed");
    assert_eq!(
        std::fs::read(b.join("share0/.cella/secret")).expect("secret"),
        b"secret"
    );
});
