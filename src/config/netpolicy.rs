//! What "the user grants the network" means for addresses: the ranges
//! that are not the public internet (loopback, private, link-local,
//! shared, reserved), the host's own interface addresses, the user's allow
//! list over both, and the strict http(s) URLs cella fetches from on a
//! project's behalf (a `!Debian` mirror, the apt sources of an image).
//! The guest's NIC filter and the host-side fetches share these rules.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use ipnet::Ipv4Net;

/// IPv4 ranges that are not the public internet (RFC 6890 and later), and
/// what to call them in a message. 240/4 includes the broadcast address.
const SPECIAL_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\""),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "reserved"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "reserved"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// The longest URL cella accepts.
const MAX_URL: usize = 2048;

/// What kind of non-public address `a` is, or None for the public internet.
pub fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(a);
    SPECIAL_V4.iter().find_map(|(net, len, kind)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        (bits & mask == u32::from(Ipv4Addr::from(*net))).then_some(*kind)
    })
}

/// As [`special_v4`] for IPv6: only global unicast (2000::/3) outside
/// documentation and Teredo is public; addresses that embed an IPv4 one
/// (mapped, compatible, 6to4) are judged by it.
pub fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = a.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if a.is_loopback() {
        return Some("loopback");
    }
    if s[..6] == [0; 6] {
        // :: , and the deprecated IPv4-compatible ::a.b.c.d.
        return Some(special_v4(embedded(s[6], s[7])).unwrap_or("reserved"));
    }
    match s[0] {
        0xfe80..=0xfebf => Some("link-local (cloud metadata)"),
        0xfc00..=0xfdff => Some("private"),
        0xfec0..=0xfeff => Some("site-local"),
        0xff00..=0xffff => Some("multicast"),
        0x2001 if s[1] == 0x0db8 => Some("documentation"),
        0x2001 if s[1] == 0 => Some("Teredo"),
        0x2002 => Some(special_v4(embedded(s[1], s[2])).unwrap_or("6to4")),
        0x2000..=0x3fff => None,
        _ => Some("reserved"),
    }
}

/// Decides which addresses a guest and cella's fetches for a project may
/// reach: the public internet, except the host's own addresses, plus what
/// the user allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressGuard {
    allow: Vec<Ipv4Net>,
    host: Vec<IpAddr>,
}

impl AddressGuard {
    /// The user's allow list, and the host's interface addresses now.
    pub fn new(allow: &[Ipv4Net]) -> AddressGuard {
        AddressGuard::with_host_addresses(allow, host_addresses())
    }

    pub fn with_host_addresses(allow: &[Ipv4Net], host: Vec<IpAddr>) -> AddressGuard {
        AddressGuard {
            allow: allow.to_vec(),
            host,
        }
    }

    /// The non-public networks the user allowed.
    pub fn allowed(&self) -> &[Ipv4Net] {
        &self.allow
    }

    /// Ok if `ip` may be reached; else what kind of address it is.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let IpAddr::V4(v4) = ip {
            if self.allow.iter().any(|net| net.contains(&v4)) {
                return Ok(());
            }
        }
        let special = match ip {
            IpAddr::V4(v4) => special_v4(v4),
            IpAddr::V6(v6) => special_v6(v6),
        };
        if let Some(kind) = special {
            return Err(Refusal::Range(kind));
        }
        if self.host.contains(&ip) {
            return Err(Refusal::HostAddress);
        }
        Ok(())
    }

    /// Whether `a` may be reached (see [`AddressGuard::check`]).
    pub fn permits_v4(&self, a: Ipv4Addr) -> bool {
        self.check(IpAddr::V4(a)).is_ok()
    }
}

/// Why an address may not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In a non-public range, named.
    Range(&'static str),
    /// Public, but one of the host's own.
    HostAddress,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Range(kind) => write!(f, "a {kind} address"),
            Refusal::HostAddress => f.write_str("one of the host's own addresses"),
        }
    }
}

/// The addresses of the host's interfaces (every family cella checks);
/// empty if the kernel will not say.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, which
        // stays valid until freeifaddrs; ifa_addr is null or points at a
        // sockaddr of the family it names, as large as that family's.
        unsafe {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    out
}

/// The host of an [`HttpUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// A DNS name, lowercase: letters, digits, `-` and `.`.
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// An `http://` or `https://` URL in the strict form cella accepts: a
/// host, an optional port, and a path of unreserved characters (no
/// credentials, query or fragment). Whatever parses here reads the same
/// to apt, mmdebstrap and getaddrinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    pub host: UrlHost,
    pub port: Option<u16>,
    /// Empty, or starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| -> Result<HttpUrl, String> {
            Err(format!(
                "expected an http:// or https:// URL, {why}: {text:?}"
            ))
        };
        if text.len() > MAX_URL {
            return bad(&format!("at most {MAX_URL} bytes"));
        }
        let (https, rest) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return bad("found another scheme or none"),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return bad("credentials in the URL are not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return bad("unclosed [");
            };
            let Ok(addr) = addr.parse::<Ipv6Addr>() else {
                return bad("not an IPv6 address in []");
            };
            (UrlHost::V6(addr), after)
        } else {
            let (name, after) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            match host_name(name) {
                Some(host) => (host, after),
                None => return bad("not a host name"),
            }
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => None,
            Some(d) if !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()) => {
                match d.parse::<u16>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return bad("not a port"),
                }
            }
            _ => return bad("not a port"),
        };
        if !valid_path(path) {
            return bad(
                "its path may hold only letters, digits, %XX escapes and -._~/+:@ \
                 (no query, fragment, spaces or quotes)",
            );
        }
        Ok(HttpUrl {
            https,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// The port a connection goes to.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// The addresses a client connects to: the literal, or what the name
    /// resolves to (as getaddrinfo, which apt and mmdebstrap use, says).
    pub fn addresses(&self) -> std::io::Result<Vec<IpAddr>> {
        match &self.host {
            UrlHost::V4(a) => Ok(vec![IpAddr::V4(*a)]),
            UrlHost::V6(a) => Ok(vec![IpAddr::V6(*a)]),
            UrlHost::Name(name) => Ok((name.as_str(), self.port_or_default())
                .to_socket_addrs()?
                .map(|s| s.ip())
                .collect()),
        }
    }

    /// The addresses the host is or resolves to, checked: fails, saying
    /// why, unless `guard` permits every one. A name that resolves to
    /// nothing fails too. What this cannot see: the name resolving
    /// differently when a fetcher resolves it again (DNS rebinding), unless
    /// the fetcher is held to these addresses (as `!Git`'s git is).
    pub fn check_reachable(&self, guard: &AddressGuard) -> Result<Vec<IpAddr>, String> {
        let addresses = self
            .addresses()
            .map_err(|e| format!("cannot resolve the host of {self}: {e}"))?;
        if addresses.is_empty() {
            return Err(format!("the host of {self} has no address"));
        }
        for &ip in &addresses {
            if let Err(kind) = guard.check(ip) {
                let host = match &self.host {
                    UrlHost::Name(name) => format!("{name} resolves to {ip}, "),
                    _ => String::new(),
                };
                return Err(format!(
                    "{self}: {host}{ip} is {kind}; cella fetches from such addresses \
                     for a project only if the user allows them (--allow-address, or \
                     network.allow-addresses in the settings file)"
                ));
            }
        }
        Ok(addresses)
    }
}

pub(super) fn host_name(name: &str) -> Option<UrlHost> {
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return Some(UrlHost::V4(v4));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    (name.len() <= 253 && trimmed.split('.').all(label_ok))
        .then(|| UrlHost::Name(name.to_ascii_lowercase()))
}

fn valid_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~/+:@".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.https { "https://" } else { "http://" })?;
        match &self.host {
            UrlHost::Name(name) => f.write_str(name)?,
            UrlHost::V4(a) => write!(f, "{a}")?,
            UrlHost::V6(a) => write!(f, "[{a}]")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_named() {
        for (a, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("127.255.1.2", Some("loopback")),
            ("10.0.2.2", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local (cloud metadata)")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("100.128.0.1", None),
            ("0.0.0.0", Some("\"this network\"")),
            ("203.0.113.9", Some("documentation")),
            ("224.0.0.251", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("1.1.1.1", None),
            ("151.101.2.132", None),
        ] {
            assert_eq!(special_v4(v4(a)), kind, "{a}");
        }
        for (a, public) in [
            ("::1", false),
            ("::", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:1.1.1.1", true),
            ("fe80::1", false),
            ("fd00::1", false),
            ("2001:db8::1", false),
            ("2002:7f00:1::1", false),
            ("2002:101:101::1", false),
            ("64:ff9b::7f00:1", false),
            ("2a04:4e42::644", true),
        ] {
            let ip: Ipv6Addr = a.parse().unwrap();
            assert_eq!(special_v6(ip).is_none(), public, "{a}");
        }
    }

    #[test]
    fn the_guard_allows_the_public_internet_and_what_the_user_listed() {
        let host = vec![IpAddr::V4(v4("198.41.0.4")), "2a00::5".parse().unwrap()];
        let guard = AddressGuard::with_host_addresses(&[], host.clone());
        assert_eq!(guard.check(IpAddr::V4(v4("1.1.1.1"))), Ok(()));
        assert_eq!(
            guard.check(IpAddr::V4(v4("198.41.0.4"))),
            Err(Refusal::HostAddress)
        );
        assert_eq!(
            guard
                .check(IpAddr::V4(v4("127.0.0.1")))
                .unwrap_err()
                .to_string(),
            "a loopback address"
        );
        assert!(guard.check("2a00::5".parse().unwrap()).is_err());
        assert!(!guard.permits_v4(v4("127.0.0.1")));
        let loopback: Ipv4Net = "127.0.0.1/32".parse().unwrap();
        let lan: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        let guard = AddressGuard::with_host_addresses(&[loopback, lan], host);
        assert!(guard.permits_v4(v4("127.0.0.1")));
        assert!(guard.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(!guard.permits_v4(v4("127.0.0.2")));
        assert!(guard.permits_v4(v4("192.168.7.7")));
        assert!(!guard.permits_v4(v4("169.254.169.254")));
    }

    #[test]
    fn the_host_has_addresses() {
        let addresses = host_addresses();
        assert!(
            addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addresses:?}"
        );
    }

    #[test]
    fn urls_are_strict() {
        let url = HttpUrl::parse("https://Deb.Debian.org:8443/debian/").unwrap();
        assert_eq!(url.to_string(), "https://deb.debian.org:8443/debian/");
        assert_eq!(url.port_or_default(), 8443);
        let url = HttpUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(url.host, UrlHost::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(url.port_or_default(), 8000);
        let url = HttpUrl::parse("http://[::1]/x%20y").unwrap();
        assert_eq!(url.host, UrlHost::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(url.to_string(), "http://[::1]/x%20y");
        for bad in [
            "ftp://x/",
            "file:///etc",
            "mirror+http://x/",
            "HTTP://x/",
            "http://",
            "http://user:pw@x/",
            "http://x:0/",
            "http://x:+80/",
            "http://x:99999/",
            "http://x/?q",
            "http://x/#f",
            "http://x/a b",
            "http://x/a\"b",
            "http://x/%zz",
            "http://-x/",
            "http://x_y/",
            "http://[::1/",
            "http://x/\u{1b}[2J",
            "--foo",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpUrl::parse(&format!("http://x/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn fetch_hosts_are_checked_after_resolving() {
        let guard = AddressGuard::with_host_addresses(&[], Vec::new());
        for refused in [
            "http://127.0.0.1:8000/",
            "http://localhost/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest/",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let url = HttpUrl::parse(refused).unwrap();
            let e = url.check_reachable(&guard).unwrap_err();
            assert!(e.contains("--allow-address"), "{refused}: {e}");
        }
        let e = HttpUrl::parse("http://localhost:3142/debian")
            .unwrap()
            .check_reachable(&guard)
            .unwrap_err();
        assert!(
            e.starts_with("http://localhost:3142/debian: localhost resolves to "),
            "{e}"
        );
        assert!(e.contains("is a loopback address"), "{e}");
        let allowed = AddressGuard::with_host_addresses(&["127.0.0.0/8".parse().unwrap()], vec![]);
        let url = HttpUrl::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            url.check_reachable(&allowed),
            Ok(vec!["127.0.0.1".parse::<IpAddr>().unwrap()])
        );
    }
}
