//! The host ↔ guest protocol of cella, compiled by both sides: the guest's
//! PID 1 (this crate's binary) and the `cella` VMM on the host.
//!
//! The channel is a multiport virtio-console. Each port carries one stream;
//! the control port carries newline-delimited JSON messages. The guest
//! speaks first with [`GuestMsg::Hello`] and its [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 2;

/// Port ids on the multiport virtio-console, in the order the host adds them.
pub const PORT_CONTROL: u32 = 0;
pub const PORT_STDIN: u32 = 1;
pub const PORT_STDOUT: u32 = 2;
pub const PORT_STDERR: u32 = 3;
pub const NUM_PORTS: u32 = 4;

/// Names the host gives the ports (guest side: /sys/class/virtio-ports/*/name).
pub const PORT_NAMES: [&str; NUM_PORTS as usize] = [
    "cella.control",
    "cella.stdin",
    "cella.stdout",
    "cella.stderr",
];

/// What the workload runs as and where: everything the guest needs to know
/// about one run, sent by the host after the guest's hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// The complete environment of the workload.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// Guest block device holding the read-only root filesystem (erofs).
    /// It may still be empty when the spec arrives: the host inserts the
    /// image into a drive of a restored VM just before sending it.
    pub rootfs_device: String,
    /// The host's wall clock when it sent the spec, in nanoseconds since
    /// the Unix epoch: a VM restored from a snapshot wakes up with the
    /// clock of the moment the snapshot was taken.
    pub realtime_ns: u64,
    /// Fresh random bytes from the host, mixed into the guest's pool and
    /// credited, so that no two runs from one snapshot share a seed.
    pub entropy: Vec<u8>,
}

/// Messages from the host to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    Run(RunSpec),
    /// Deliver this signal number to the workload.
    Signal(i32),
}

/// Why the workload could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnFailure {
    /// The program does not exist (exit status 127).
    NotFound,
    /// The program exists but cannot be executed (exit status 126).
    NotExecutable,
}

/// Messages from the guest to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMsg {
    Hello {
        version: u32,
    },
    /// The workload is running.
    Started,
    /// The workload exited with this status.
    Exited {
        code: i32,
    },
    /// The workload was killed by this signal.
    Killed {
        signal: i32,
    },
    /// exec of the workload failed.
    SpawnFailed {
        kind: SpawnFailure,
        message: String,
    },
    /// guest-init itself failed; the run cannot go on.
    Error {
        message: String,
    },
}

impl GuestMsg {
    /// The exit status `cella` returns for this final message, if it is one.
    pub fn exit_status(&self) -> Option<i32> {
        match self {
            GuestMsg::Hello { .. } | GuestMsg::Started => None,
            GuestMsg::Exited { code } => Some(*code),
            GuestMsg::Killed { signal } => Some(128 + signal),
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                ..
            } => Some(127),
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotExecutable,
                ..
            } => Some(126),
            GuestMsg::Error { .. } => Some(125),
        }
    }
}

/// Encodes one message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: no maps with non-string
    // keys, no custom serializers.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Splits a byte stream into messages; feed it whatever arrives.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// A control line longer than this is a protocol error, not a message.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug)]
pub enum DecodeError {
    TooLong,
    Json(serde_json::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLong => write!(f, "control message longer than {MAX_LINE} bytes"),
            DecodeError::Json(e) => write!(f, "malformed control message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    #[allow(clippy::should_implement_trait)] // fallible and generic: not an Iterator
    pub fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, DecodeError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                serde_json::from_slice(&line[..end])
                    .map(Some)
                    .map_err(DecodeError::Json)
            }
            None if self.buf.len() > MAX_LINE => Err(DecodeError::TooLong),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"\n".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            hostname: "cella".into(),
            rootfs_device: "/dev/vda".into(),
            realtime_ns: 1_700_000_000_000_000_000,
            entropy: vec![7; 32],
        }
    }

    #[test]
    fn round_trip_split_anywhere() {
        let msgs = vec![HostMsg::Run(spec()), HostMsg::Signal(15)];
        let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
        for split in 0..bytes.len() {
            let mut d = Decoder::default();
            d.push(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(m) = d.next::<HostMsg>().expect("decode") {
                got.push(m);
            }
            d.push(&bytes[split..]);
            while let Some(m) = d.next::<HostMsg>().expect("decode") {
                got.push(m);
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn guest_messages_round_trip_and_map_to_statuses() {
        let msgs = vec![
            GuestMsg::Hello {
                version: PROTOCOL_VERSION,
            },
            GuestMsg::Started,
            GuestMsg::Exited { code: 3 },
            GuestMsg::Killed { signal: 9 },
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                message: "x".into(),
            },
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotExecutable,
                message: "y".into(),
            },
        ];
        let mut d = Decoder::default();
        for m in &msgs {
            d.push(&encode(m));
        }
        let statuses: Vec<Option<i32>> = msgs
            .iter()
            .map(|_| d.next::<GuestMsg>().expect("decode").expect("message"))
            .map(|m| m.exit_status())
            .collect();
        assert_eq!(
            statuses,
            vec![None, None, Some(3), Some(137), Some(127), Some(126)]
        );
    }

    #[test]
    fn garbage_and_overlong_lines_are_errors() {
        let mut d = Decoder::default();
        d.push(b"{not json\n");
        assert!(d.next::<GuestMsg>().is_err());
        d.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(d.next::<GuestMsg>(), Err(DecodeError::TooLong)));
    }
}
