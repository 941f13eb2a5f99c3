//! eth0 of a `network: user` VM: a static address, a default route and
//! the roots' /etc/resolv.conf, as the host's passt was told to expect.

use std::io;

use guest_init::NetConfig;

use crate::sys::{self, check};

const IFACE: &[u8] = b"eth0";

/// An AF_INET datagram socket, the handle the interface ioctls go through.
struct Socket(i32);

impl Socket {
    fn new() -> io::Result<Socket> {
        // SAFETY: socket has no memory effects.
        let fd = check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        Ok(Socket(fd))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

fn sockaddr(addr: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data;
    // the kernel reads a sockaddr_in back out of it for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(IFACE) {
        *dst = *src as libc::c_char;
    }
    req
}

/// The netmask of a prefix length, in network byte order.
pub fn netmask(prefix_len: u8) -> [u8; 4] {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    bits.to_be_bytes()
}

/// Gives eth0 its address and brings it up, then routes everything
/// through the gateway. The MTU is the one the device announced.
pub fn configure(net: &NetConfig) -> io::Result<()> {
    let sock = Socket::new()?;
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let set_addr = |request, addr: [u8; 4], what: &str| {
        let mut req = ifreq();
        req.ifr_ifru.ifru_addr = sockaddr(addr);
        // SAFETY: the ioctl reads the ifreq we own.
        check(unsafe { libc::ioctl(sock.0, request, &req) }).map_err(|e| ctx(what, e))
    };
    set_addr(libc::SIOCSIFADDR, net.address, "setting eth0's address")?;
    set_addr(
        libc::SIOCSIFNETMASK,
        netmask(net.prefix_len),
        "setting eth0's netmask",
    )?;
    // A gratuitous ARP when the link comes up tells passt our MAC address
    // before we send anything: a published port works at once. Best
    // effort: without it passt learns the MAC from our first frame.
    arp_notify();
    sys::link_up(IFACE).map_err(|e| ctx("bringing eth0 up", e))?;
    // SAFETY: rtentry is plain data (and null pointers); all-zero is valid.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr([0; 4]);
    route.rt_genmask = sockaddr([0; 4]);
    route.rt_gateway = sockaddr(net.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads the rtentry we own; rt_dev is null.
    check(unsafe { libc::ioctl(sock.0, libc::SIOCADDRT, &route) })
        .map_err(|e| ctx("adding the default route", e))?;
    Ok(())
}

/// Sets eth0's arp_notify through a /proc of its own, mounted for the
/// moment (the initramfs has none; the workload's root brings its own).
fn arp_notify() {
    let dir = "/run-proc";
    if sys::mkdir(dir, 0o555).is_err()
        || sys::mount(
            "proc",
            dir,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )
        .is_err()
    {
        return;
    }
    let _ = std::fs::write(format!("{dir}/sys/net/ipv4/conf/eth0/arp_notify"), "1");
    // SAFETY: umount2 takes a NUL-terminated path we own.
    unsafe { libc::umount2(c"/run-proc".as_ptr(), libc::MNT_DETACH) };
}

/// The resolv.conf that sends every lookup to passt's DNS forwarder.
pub fn resolv_conf(net: &NetConfig) -> String {
    let [a, b, c, d] = net.nameserver;
    format!("# written by cella: passt forwards this to the host's resolver\nnameserver {a}.{b}.{c}.{d}\n")
}

/// What a root's /etc/resolv.conf was before [`write_resolv`] replaced it.
pub enum Previous {
    /// There is no /etc in this root: nothing was written.
    NoEtc,
    Absent,
    /// A file (its content) or a symlink (its target).
    File(Vec<u8>),
    Link(std::path::PathBuf),
}

/// Writes the resolv.conf of `net` into the root at `root` ("" for /),
/// replacing a symlink there (systemd's stub) with a file.
pub fn write_resolv(root: &str, net: &NetConfig) -> io::Result<Previous> {
    let etc = format!("{root}/etc");
    if !std::path::Path::new(&etc).is_dir() {
        return Ok(Previous::NoEtc);
    }
    let path = format!("{etc}/resolv.conf");
    let previous = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Previous::Absent,
        Err(e) => return Err(e),
        Ok(m) if m.file_type().is_symlink() => Previous::Link(std::fs::read_link(&path)?),
        Ok(_) => Previous::File(std::fs::read(&path)?),
    };
    if !matches!(previous, Previous::Absent) {
        std::fs::remove_file(&path)?;
    }
    std::fs::write(&path, resolv_conf(net))?;
    Ok(previous)
}

/// Puts back what [`write_resolv`] replaced, so a build's image does not
/// keep the VM's resolver (as `docker build` leaves it out).
pub fn restore_resolv(root: &str, previous: Previous) -> io::Result<()> {
    let path = format!("{root}/etc/resolv.conf");
    match previous {
        Previous::NoEtc => Ok(()),
        Previous::Absent => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Previous::File(content) => std::fs::write(&path, content),
        Previous::Link(target) => {
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), [255, 255, 255, 0]);
        assert_eq!(netmask(32), [255, 255, 255, 255]);
        assert_eq!(netmask(0), [0, 0, 0, 0]);
        assert_eq!(netmask(17), [255, 255, 128, 0]);
    }

    #[test]
    fn resolv_conf_is_restored() {
        let dir = tempdir();
        let root = dir.to_str().expect("utf-8");
        let net = NetConfig {
            address: [10, 0, 2, 15],
            prefix_len: 24,
            gateway: [10, 0, 2, 2],
            nameserver: [10, 0, 2, 3],
        };
        assert!(matches!(write_resolv(root, &net), Ok(Previous::NoEtc)));
        std::fs::create_dir(dir.join("etc")).expect("etc");
        let path = dir.join("etc/resolv.conf");
        let prev = write_resolv(root, &net).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("nameserver 10.0.2.3\n"), "{text}");
        restore_resolv(root, prev).expect("restore");
        assert!(!path.exists());
        std::os::unix::fs::symlink("../run/stub", &path).expect("link");
        let prev = write_resolv(root, &net).expect("write over link");
        assert!(!std::fs::symlink_metadata(&path)
            .expect("meta")
            .file_type()
            .is_symlink());
        restore_resolv(root, prev).expect("restore link");
        assert_eq!(
            std::fs::read_link(&path).expect("link back"),
            std::path::PathBuf::from("../run/stub")
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cella-net-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("tempdir");
        dir
    }
}
