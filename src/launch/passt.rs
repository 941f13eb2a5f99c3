//! User-mode networking of a `network: user` VM: the addresses the guest
//! uses, and the passt process that carries its NIC's frames to the host's
//! own sockets (no root, no tap, no bridge). passt is our child, one per
//! VM, and quits when its end of the socket pair closes: when cella exits,
//! however it exits, even by SIGKILL.

use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use guest_init::NetConfig;
use ipnet::Ipv4Net;

use crate::config::netpolicy::AddressGuard;
use crate::config::PortMap;
use crate::devices::virtio::net_filter::{Filter, FilterSpec};

/// The guest's address, on a network of its own that passt makes up.
pub const GUEST_ADDRESS: [u8; 4] = [10, 0, 2, 15];
pub const PREFIX_LEN: u8 = 24;
/// The gateway: passt answers for it, and connections to it reach the
/// host's loopback (passt's default gateway mapping).
pub const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// DNS queries to this address go to the host's resolver.
pub const NAMESERVER: [u8; 4] = [10, 0, 2, 3];
pub use crate::devices::virtio::net::{MAC, MTU};

/// The fd passt finds its socket at. This passt (Debian 12's) closes the
/// fds it does not know about early on, and low numbers get reused by its
/// own before it looks at `--fd`.
const PASST_FD: i32 = 100;

/// What guest-init configures eth0 with.
pub fn guest_config() -> NetConfig {
    NetConfig {
        address: GUEST_ADDRESS,
        prefix_len: PREFIX_LEN,
        gateway: GATEWAY,
        nameserver: NAMESERVER,
    }
}

/// A VM's network, as the command and the command line asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// Published host ports and the guest ports they reach.
    pub ports: Vec<PortMap>,
    /// The host address the ports are published on (127.0.0.1 unless
    /// `--publish-address` says otherwise).
    pub publish: Ipv4Addr,
    /// Non-public addresses the user lets the guest reach (the settings'
    /// `network.allow-addresses` and `--allow-address`).
    pub allow: Vec<Ipv4Net>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`network: user` needs passt on the host: install it with `apt-get install passt`")]
    NoPasst,
    #[error("cannot start passt")]
    Spawn(#[source] io::Error),
    #[error("cannot make the socket pair between the VM and passt")]
    Socket(#[source] io::Error),
    #[error("cannot publish port {port} on {address}: it is in use (`ports` in the command)")]
    PortInUse { address: Ipv4Addr, port: u16 },
    #[error("cannot publish port {port} on {address}")]
    Publish {
        address: Ipv4Addr,
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// A running passt, killed and reaped when dropped.
pub struct Passt {
    child: Child,
}

/// passt's command line for `plan`, its socket at fd [`PASST_FD`], its
/// log in `log` (`CELLA_PASST_LOG`) if given.
fn passt_args(plan: &NetPlan, log: Option<&OsStr>) -> Vec<String> {
    let ip = |a: [u8; 4]| Ipv4Addr::from(a).to_string();
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--one-off",
        "--ipv4-only",
        "--no-dhcp",
        "--fd",
        &PASST_FD.to_string(),
        "--address",
        &ip(GUEST_ADDRESS),
        "--netmask",
        &PREFIX_LEN.to_string(),
        "--gateway",
        &ip(GATEWAY),
        "--dns-forward",
        &ip(NAMESERVER),
        "--mtu",
        &MTU.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A debugging aid: passt's log and a capture of the VM's frames. Not
    // `--debug`: Debian 12's passt segfaults in its debug logging.
    if let Some(path) = log {
        let path = path.to_string_lossy();
        args.retain(|a| a != "--quiet");
        args.extend(["--log-file".into(), path.to_string()]);
        args.extend(["--pcap".into(), format!("{path}.pcap")]);
    }
    for p in &plan.ports {
        args.push("--tcp-ports".into());
        args.push(format!("{}/{}:{}", plan.publish, p.host, p.guest));
    }
    args
}

/// What the guest of `plan` may send through its NIC: the public
/// internet, DNS, replies on its published ports, and what the user allowed
/// (checked against the host's interface addresses as they are now).
pub fn filter(plan: &NetPlan) -> Filter {
    Filter::new(FilterSpec {
        guest: GUEST_ADDRESS.into(),
        gateway: GATEWAY.into(),
        nameserver: NAMESERVER.into(),
        guard: AddressGuard::new(&plan.allow),
        published: plan.ports.iter().map(|p| p.guest).collect(),
    })
}

/// Fails if a published port is taken, so that the user reads why here
/// rather than finding the port dead (passt only warns).
pub fn check_ports(plan: &NetPlan) -> Result<(), NetError> {
    for p in &plan.ports {
        if let Err(source) = TcpListener::bind((plan.publish, p.host)) {
            return Err(match source.kind() {
                io::ErrorKind::AddrInUse => NetError::PortInUse {
                    address: plan.publish,
                    port: p.host,
                },
                _ => NetError::Publish {
                    address: plan.publish,
                    port: p.host,
                    source,
                },
            });
        }
    }
    Ok(())
}

impl Passt {
    /// Starts passt for `plan`; the returned socket is the VM's end,
    /// non-blocking, for the NIC's backend.
    pub fn start(plan: &NetPlan, log: Option<&OsStr>) -> Result<(Passt, UnixStream), NetError> {
        check_ports(plan)?;
        let (ours, theirs) = UnixStream::pair().map_err(NetError::Socket)?;
        ours.set_nonblocking(true).map_err(NetError::Socket)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new("passt");
        cmd.args(passt_args(plan, log))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the closure only makes async-signal-
        // safe calls (dup2, fcntl, prctl) on fds this process owns.
        unsafe {
            cmd.pre_exec(move || {
                if fd == PASST_FD {
                    // dup2 onto itself would keep close-on-exec.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, PASST_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Belt and braces for a non-root user (passt changing
                // credentials clears it): passt dies with cella.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetError::NoPasst,
            _ => NetError::Spawn(e),
        })?;
        drop(theirs);
        let mut child = child;
        if let Some(stderr) = child.stderr.take() {
            relay_stderr(stderr);
        }
        Ok((Passt { child }, ours))
    }
}

/// Whether a line passt prints is worth the user's attention: not its
/// notes about dropping root or about a missing syslog.
fn worth_showing(line: &str) -> bool {
    !(line.trim().is_empty()
        || line.contains("to syslog")
        || line.starts_with("Don't run as root")
        || line.starts_with("Template interface")
        || line.starts_with("MAC:")
        || line.starts_with("DNS:")
        || line.starts_with("    "))
}

/// Copies passt's warnings and errors to cella's stderr, prefixed, from
/// a thread that ends when passt does.
fn relay_stderr(stderr: std::process::ChildStderr) {
    use std::io::BufRead;
    let relay = move || {
        for line in io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if worth_showing(&line) {
                eprintln!("cella: passt: {line}");
            }
        }
    };
    // Without the thread passt's messages are lost, nothing worse.
    let _ = std::thread::Builder::new()
        .name("passt-stderr".into())
        .spawn(relay);
}

impl Drop for Passt {
    fn drop(&mut self) {
        // It may have quit already when the VM's end closed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_gets_our_addresses_and_ports() {
        let plan = NetPlan {
            ports: vec![PortMap {
                host: 8080,
                guest: 80,
            }],
            publish: Ipv4Addr::LOCALHOST,
            allow: Vec::new(),
        };
        let args = passt_args(&plan, None).join(" ");
        assert!(args.contains("--fd 100"), "{args}");
        assert!(args.contains("--one-off"), "{args}");
        assert!(args.contains("--address 10.0.2.15 --netmask 24 --gateway 10.0.2.2"));
        assert!(args.contains("--dns-forward 10.0.2.3"));
        assert!(args.ends_with("--tcp-ports 127.0.0.1/8080:80"), "{args}");
    }

    #[test]
    fn passt_chatter_is_filtered() {
        assert!(!worth_showing("Failed to send 47 bytes to syslog"));
        assert!(!worth_showing("Don't run as root. Changing to nobody..."));
        assert!(!worth_showing("    10.255.255.53"));
        assert!(worth_showing(
            "Failed to bind any port for '-t 127.0.0.1/80:80', exiting"
        ));
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let plan = NetPlan {
            ports: vec![PortMap {
                host: port,
                guest: 80,
            }],
            publish: Ipv4Addr::LOCALHOST,
            allow: Vec::new(),
        };
        let err = check_ports(&plan).expect_err("in use");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot publish port {port} on 127.0.0.1: it is in use (`ports` in the command)"
            )
        );
    }
}
