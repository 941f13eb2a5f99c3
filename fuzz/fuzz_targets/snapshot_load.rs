//! The snapshot file reader: header checks, the state's checksum and
//! its JSON (VM, vCPU and device state), on files in a temporary
//! directory.
//!
//! `[mode u8][bytes]`: mode 0 writes the bytes as the whole file, for
//! the header checks; any other mode writes a well-formed header (magic,
//! format, lengths, the state's sha256, which the fuzzer cannot compute)
//! around the bytes as the state, with `mode - 1` pages of memory after
//! it (which the state's `mem_size` must match).

#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;

use cella::launch::snapshot;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const PAGE: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let [mode, bytes @ ..] = data else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.snap");
    let mut file = std::fs::File::create(&path).expect("snapshot file");
    if *mode == 0 {
        file.write_all(bytes).expect("write");
    } else {
        let state_len = bytes.len() as u64;
        let mem_offset = (PAGE + state_len).div_ceil(PAGE) * PAGE;
        let mem_len = u64::from(mode - 1) * PAGE;
        let mut header = b"CELLASNP".to_vec();
        header.extend_from_slice(&1u32.to_le_bytes());
        for v in [state_len, mem_offset, mem_len] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&Sha256::digest(bytes));
        file.write_all(&header).expect("write");
        file.write_all_at(bytes, PAGE).expect("write");
        file.set_len(mem_offset + mem_len).expect("memory");
    }
    drop(file);
    let loaded = snapshot::load(&path);
    // CELLA_FUZZ_DEBUG=1 when replaying an input says how far it got.
    if std::env::var_os("CELLA_FUZZ_DEBUG").is_some() {
        match &loaded {
            Ok(snap) => eprintln!("loaded: {} vCPUs", snap.state.vcpus.len()),
            Err(e) => eprintln!("{}", cella::text::error_chain(e, ": ")),
        }
    }
    if let Err(e) = loaded {
        drop(e.to_string());
    }
});
