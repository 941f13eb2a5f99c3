//! The host end of guest-init's control port, as the session reads it:
//! bytes from the guest, cut into chunks as the console delivers them,
//! go through guest-init's `Decoder` (JSON lines, bounded) into
//! `GuestMsg`s, each checked by `Protocol` against the state of a run, a
//! build or a supervised run.
//!
//! `[kind u8][chunk u8][bytes]`: kind picks the run spec (bits 0-1), the
//! decoder's limit (bits 2-3), whether the host readies a warm snapshot
//! first (bit 4) and asks for stats (bit 5); chunk is the size of the
//! pieces pushed.
//!
//! Checked beyond "no panic": the decoder never holds more than its
//! limit, and every violation can be shown.

#![no_main]

use cella::launch::control::protocol::Protocol;
use guest_init::{
    Build, BuildStep, ChildSpec, DecodeError, Decoder, GuestMsg, RunSpec, Supervise, SuperviseMode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, chunk, rest @ ..] = data else {
        return;
    };
    let mut spec = RunSpec::new(vec!["true".into()], Vec::new());
    spec.stats = kind & 32 != 0;
    match kind & 3 {
        1 => {
            let step = BuildStep {
                banner: "step".into(),
                argv: vec!["true".into()],
                env: Vec::new(),
                cwd: "/".into(),
            };
            spec.build = Some(Build {
                steps: vec![step; 3],
            });
        }
        2 => {
            let child = |name: &str| ChildSpec {
                name: name.into(),
                argv: vec!["true".into()],
                env: Vec::new(),
                cwd: "/".into(),
                uid: 0,
                gid: 0,
                groups: Vec::new(),
                rootfs_device: "/dev/vdb".into(),
                mounts: Vec::new(),
                read_only_root: false,
            };
            spec.supervise = Some(Supervise {
                mode: SuperviseMode::WaitAll,
                kill_after_ms: 100,
                prefix: true,
                children: vec![child("web"), child("db")],
            });
        }
        _ => {}
    }
    let limit = [256, 4096, 1 << 16, guest_init::DEFAULT_DECODER_LIMIT][usize::from(kind >> 2 & 3)];
    let warm = kind & 16 != 0;
    let mut protocol = Protocol::new(&spec);
    let mut decoder = Decoder::with_limit(limit);
    let chunk = usize::from(*chunk).max(1);
    for piece in rest.chunks(chunk) {
        if decoder.push(piece).is_err() {
            return; // the session ends: a guest that floods is refused
        }
        assert!(
            decoder.held() <= limit,
            "the decoder holds more than its limit"
        );
        loop {
            let msg: GuestMsg = match decoder.next() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(
                    e @ (DecodeError::TooLong(_) | DecodeError::Full(_) | DecodeError::Json(_)),
                ) => {
                    let _ = e.to_string();
                    return;
                }
            };
            match protocol.check(&msg) {
                Ok(()) => {
                    let _ = msg.exit_status();
                    // What the session does next: answer the hello with
                    // the spec (or, warm, with a Prepare first).
                    match msg {
                        GuestMsg::Hello { .. } if warm && !protocol.is_sent() => {
                            protocol.prepare_sent()
                        }
                        GuestMsg::Hello { .. } | GuestMsg::Prepared => protocol.sent(),
                        _ => {}
                    }
                }
                Err(violation) => {
                    let _ = violation.to_string();
                    return;
                }
            }
        }
    }
});
