//! What a `network: user` guest may send to passt, checked on every frame
//! of the NIC's transmit queue: passt opens a host socket to whatever
//! address a frame names, so this is where the user's grant is enforced.
//! Allowed: ARP; IPv4 from the guest's own address to the public internet;
//! DNS to the guest's nameserver; the addresses the user allowed (the
//! gateway counts as the host's loopback, which passt maps it to); and the
//! guest's side of connections the host opened to a published port,
//! tracked from the SYNs passt delivers. Everything else (other
//! EtherTypes, IPv6, VLAN tags, the loopback, private, link-local, shared
//! and reserved ranges, the host's own addresses) is dropped; a refused
//! TCP segment is answered with a reset so that a connect fails at once.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::config::netpolicy::AddressGuard;

/// Connections from the host to published ports remembered at once; the
/// oldest is forgotten first (its guest side can then no longer reply).
const MAX_FLOWS: usize = 1024;

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// An Ethernet/IPv4 ARP packet.
const ARP_LEN: usize = 28;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const DNS_PORT: u16 = 53;

/// The guest's network as passt makes it up, and what the user allows.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// The guest's address: every frame it sends comes from it.
    pub guest: Ipv4Addr,
    /// The gateway, which passt maps to the host's loopback.
    pub gateway: Ipv4Addr,
    /// DNS to it (port 53) reaches the host's resolver.
    pub nameserver: Ipv4Addr,
    /// Which addresses may be reached.
    pub guard: AddressGuard,
    /// Guest ports the host's published ports lead to.
    pub published: Vec<u16>,
}

/// What becomes of a frame the guest sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Dropped, and this frame (a TCP reset) goes back to the guest.
    Refuse(Vec<u8>),
}

/// A connection the host opened to a published port: its far end as the
/// guest sees it, and the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flow {
    peer: Ipv4Addr,
    peer_port: u16,
    guest_port: u16,
}

/// The NIC's filter; without a spec it drops every frame.
#[derive(Debug, Default)]
pub struct Filter {
    spec: Option<FilterSpec>,
    flows: VecDeque<Flow>,
    #[cfg(test)]
    pass_all: bool,
}

/// The fields of an IPv4 packet the filter looks at.
struct Ipv4<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    /// The transport header and payload; None in a fragment past the first.
    l4: Option<&'a [u8]>,
}

/// A TCP or UDP header's ports, and a TCP segment's fields.
struct Transport {
    src_port: u16,
    dst_port: u16,
    tcp: Option<Tcp>,
}

struct Tcp {
    flags: u8,
    seq: u32,
    ack: u32,
    payload: u32,
}

impl Filter {
    pub fn new(spec: FilterSpec) -> Filter {
        Filter {
            spec: Some(spec),
            ..Filter::default()
        }
    }

    /// For the device's own tests, whose frames are not IPv4.
    #[cfg(test)]
    pub fn pass_all() -> Filter {
        Filter {
            pass_all: true,
            ..Filter::default()
        }
    }

    /// Decides on a frame the guest sent.
    pub fn outbound(&mut self, frame: &[u8]) -> Verdict {
        #[cfg(test)]
        if self.pass_all {
            return Verdict::Pass;
        }
        let Some(spec) = &self.spec else {
            return Verdict::Drop;
        };
        match ethertype(frame) {
            Some(ETHERTYPE_ARP) if frame.len() >= ETH_HDR + ARP_LEN => return Verdict::Pass,
            Some(ETHERTYPE_IPV4) => {}
            _ => return Verdict::Drop,
        }
        let Some(ip) = ipv4(frame) else {
            return Verdict::Drop;
        };
        if ip.src != spec.guest {
            return Verdict::Drop;
        }
        let transport = transport(&ip);
        if ip.dst == spec.nameserver {
            let dns = matches!(ip.proto, PROTO_TCP | PROTO_UDP)
                && transport.as_ref().is_some_and(|t| t.dst_port == DNS_PORT);
            return if dns {
                Verdict::Pass
            } else {
                refuse(frame, &ip, transport.as_ref())
            };
        }
        let reached = if ip.dst == spec.gateway {
            Ipv4Addr::LOCALHOST
        } else {
            ip.dst
        };
        if spec.guard.permits_v4(reached) {
            return Verdict::Pass;
        }
        if let Some(t @ Transport { tcp: Some(tcp), .. }) = &transport {
            let flow = Flow {
                peer: ip.dst,
                peer_port: t.dst_port,
                guest_port: t.src_port,
            };
            let opens = tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            if !opens && self.flows.contains(&flow) {
                if tcp.flags & TCP_RST != 0 {
                    self.flows.retain(|f| *f != flow);
                }
                return Verdict::Pass;
            }
        }
        refuse(frame, &ip, transport.as_ref())
    }

    /// Looks at a frame passt sends the guest: a SYN to a published port
    /// starts a flow whose replies may pass, a reset ends it.
    pub fn inbound(&mut self, frame: &[u8]) {
        let Some(spec) = &self.spec else {
            return;
        };
        if ethertype(frame) != Some(ETHERTYPE_IPV4) {
            return;
        }
        let Some(ip) = ipv4(frame) else {
            return;
        };
        if ip.dst != spec.guest || ip.proto != PROTO_TCP {
            return;
        }
        let Some(Transport {
            src_port,
            dst_port,
            tcp: Some(tcp),
        }) = transport(&ip)
        else {
            return;
        };
        if !spec.published.contains(&dst_port) {
            return;
        }
        let flow = Flow {
            peer: ip.src,
            peer_port: src_port,
            guest_port: dst_port,
        };
        if tcp.flags & TCP_RST != 0 || tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            self.flows.retain(|f| *f != flow);
        }
        if tcp.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
            if self.flows.len() >= MAX_FLOWS {
                self.flows.pop_front();
            }
            self.flows.push_back(flow);
        }
    }
}

fn ethertype(frame: &[u8]) -> Option<u16> {
    let bytes = frame.get(12..ETH_HDR)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The IPv4 packet of an Ethernet frame, if its header is sound.
fn ipv4(frame: &[u8]) -> Option<Ipv4<'_>> {
    let ip = frame.get(ETH_HDR..)?;
    let header = ip.get(..20)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() {
        return None;
    }
    let offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let addr =
        |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    Some(Ipv4 {
        src: addr(12),
        dst: addr(16),
        proto: header[9],
        l4: (offset == 0).then(|| &ip[ihl..total]),
    })
}

/// The ports (and TCP fields) of a TCP or UDP packet whose header is all there.
fn transport(ip: &Ipv4<'_>) -> Option<Transport> {
    let l4 = ip.l4?;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
    match ip.proto {
        PROTO_UDP if l4.len() >= 8 => Some(Transport {
            src_port: port(0),
            dst_port: port(2),
            tcp: None,
        }),
        PROTO_TCP if l4.len() >= 20 => {
            let doff = usize::from(l4[12] >> 4) * 4;
            if doff < 20 || doff > l4.len() {
                return None;
            }
            Some(Transport {
                src_port: port(0),
                dst_port: port(2),
                tcp: Some(Tcp {
                    flags: l4[13],
                    seq: word(4),
                    ack: word(8),
                    payload: (l4.len() - doff) as u32,
                }),
            })
        }
        _ => None,
    }
}

/// Drops a refused packet; a TCP segment other than a reset is answered
/// with one, as a host with nothing listening would (RFC 9293 3.10.7.1).
fn refuse(frame: &[u8], ip: &Ipv4<'_>, transport: Option<&Transport>) -> Verdict {
    let Some(t @ Transport { tcp: Some(tcp), .. }) = transport else {
        return Verdict::Drop;
    };
    if tcp.flags & TCP_RST != 0 {
        return Verdict::Drop;
    }
    let (seq, ack, flags) = if tcp.flags & TCP_ACK != 0 {
        (tcp.ack, 0, TCP_RST)
    } else {
        let len =
            tcp.payload + u32::from(tcp.flags & TCP_SYN != 0) + u32::from(tcp.flags & TCP_FIN != 0);
        (0, tcp.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };
    let mut out = vec![0u8; ETH_HDR + 40];
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let (src, dst) = (ip.dst.octets(), ip.src.octets());
    let iph = &mut out[ETH_HDR..ETH_HDR + 20];
    iph[..12].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0]);
    iph[12..16].copy_from_slice(&src);
    iph[16..20].copy_from_slice(&dst);
    let sum = checksum(&[iph]);
    iph[10..12].copy_from_slice(&sum.to_be_bytes());
    let tcph = &mut out[ETH_HDR + 20..];
    tcph[..2].copy_from_slice(&t.dst_port.to_be_bytes());
    tcph[2..4].copy_from_slice(&t.src_port.to_be_bytes());
    tcph[4..8].copy_from_slice(&seq.to_be_bytes());
    tcph[8..12].copy_from_slice(&ack.to_be_bytes());
    tcph[12] = 5 << 4;
    tcph[13] = flags;
    let pseudo = [&src[..], &dst[..], &[0, PROTO_TCP, 0, 20]].concat();
    let sum = checksum(&[&pseudo, tcph]);
    tcph[16..18].copy_from_slice(&sum.to_be_bytes());
    Verdict::Refuse(out)
}

/// The Internet checksum of even-length `parts` laid end to end.
fn checksum(parts: &[&[u8]]) -> u16 {
    !fold(parts.iter().fold(0, |sum, part| ones_sum(part, sum)))
}

/// Adds the big-endian 16-bit words of `data` to `sum`.
pub(super) fn ones_sum(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a ones'-complement sum into 16 bits.
pub(super) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: [u8; 4] = [10, 0, 2, 15];
    const GATEWAY: [u8; 4] = [10, 0, 2, 2];
    const DNS: [u8; 4] = [10, 0, 2, 3];
    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const PASST_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
    const HOST_PUBLIC: [u8; 4] = [198, 41, 0, 4];

    fn filter(allow: &[&str]) -> Filter {
        let allow: Vec<ipnet::Ipv4Net> = allow.iter().map(|a| a.parse().unwrap()).collect();
        let host = vec![Ipv4Addr::from(HOST_PUBLIC).into()];
        Filter::new(FilterSpec {
            guest: GUEST.into(),
            gateway: GATEWAY.into(),
            nameserver: DNS.into(),
            guard: AddressGuard::with_host_addresses(&allow, host),
            published: vec![8000],
        })
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        [
            &PASST_MAC[..],
            &GUEST_MAC,
            &ethertype.to_be_bytes(),
            payload,
        ]
        .concat()
    }

    fn ip(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let sum = checksum(&[&h]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        eth(ETHERTYPE_IPV4, &[&h[..], l4].concat())
    }

    fn tcp(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&ack.to_be_bytes());
        h.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        [&h[..], data].concat()
    }

    fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let len = (8 + data.len()) as u16;
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        [&h[..], data].concat()
    }

    fn syn_to(dst: [u8; 4], port: u16) -> Vec<u8> {
        ip(
            GUEST,
            dst,
            PROTO_TCP,
            &tcp(40000, port, TCP_SYN, 1000, 0, &[]),
        )
    }

    fn refused(v: Verdict) -> bool {
        matches!(v, Verdict::Refuse(_))
    }

    #[test]
    fn the_hosts_loopback_and_private_ranges_are_refused() {
        let mut f = filter(&[]);
        for dst in [
            GATEWAY,        // the host's 127.0.0.1, through passt
            [127, 0, 0, 1], // crafted: passt would connect to it as is
            [169, 254, 169, 254],
            [192, 168, 1, 1],
            [10, 1, 2, 3],
            [172, 17, 0, 1],
            [100, 64, 0, 1],
            [203, 0, 113, 1], // public-looking, reserved for documentation
            [255, 255, 255, 255],
            HOST_PUBLIC,
            GUEST,
        ] {
            assert!(refused(f.outbound(&syn_to(dst, 80))), "{dst:?}");
            let dns_like = ip(GUEST, dst, PROTO_UDP, &udp(5000, 53, b"q"));
            assert_eq!(f.outbound(&dns_like), Verdict::Drop, "{dst:?}");
            assert_eq!(
                f.outbound(&ip(GUEST, dst, 1, &[8, 0, 0, 0, 0, 0, 0, 0])),
                Verdict::Drop
            );
        }
    }

    #[test]
    fn the_public_internet_and_dns_pass() {
        let mut f = filter(&[]);
        assert_eq!(f.outbound(&syn_to([1, 1, 1, 1], 443)), Verdict::Pass);
        let data = ip(
            GUEST,
            [151, 101, 2, 132],
            PROTO_TCP,
            &tcp(40000, 80, TCP_ACK, 5, 6, b"GET"),
        );
        assert_eq!(f.outbound(&data), Verdict::Pass);
        assert_eq!(
            f.outbound(&ip(GUEST, [8, 8, 8, 8], PROTO_UDP, &udp(1, 53, b"q"))),
            Verdict::Pass
        );
        assert_eq!(
            f.outbound(&ip(GUEST, [1, 1, 1, 1], 1, &[8, 0, 0, 0, 0, 0, 0, 0])),
            Verdict::Pass
        );
        // The nameserver answers DNS, on UDP and TCP, and nothing else.
        assert_eq!(
            f.outbound(&ip(GUEST, DNS, PROTO_UDP, &udp(5000, 53, b"q"))),
            Verdict::Pass
        );
        assert_eq!(f.outbound(&syn_to(DNS, 53)), Verdict::Pass);
        assert_eq!(
            f.outbound(&ip(GUEST, DNS, PROTO_UDP, &udp(5000, 54, b"q"))),
            Verdict::Drop
        );
        assert!(refused(f.outbound(&syn_to(DNS, 80))));
        // Even with 10/8 allowed: the nameserver is only DNS.
        let mut f = filter(&["10.0.0.0/8"]);
        assert!(refused(f.outbound(&syn_to(DNS, 80))));
    }

    #[test]
    fn an_allowed_address_opens_exactly_that() {
        let mut f = filter(&["127.0.0.1/32", "192.168.0.0/16"]);
        assert_eq!(f.outbound(&syn_to(GATEWAY, 8000)), Verdict::Pass);
        assert_eq!(f.outbound(&syn_to([127, 0, 0, 1], 8000)), Verdict::Pass);
        assert!(refused(f.outbound(&syn_to([127, 0, 0, 2], 8000))));
        assert_eq!(f.outbound(&syn_to([192, 168, 3, 4], 22)), Verdict::Pass);
        assert!(refused(f.outbound(&syn_to([169, 254, 169, 254], 80))));
        // 10/8 is not the host's loopback, though the gateway is in it.
        let mut f = filter(&["10.0.0.0/8"]);
        assert!(refused(f.outbound(&syn_to(GATEWAY, 8000))));
        assert_eq!(f.outbound(&syn_to([10, 9, 9, 9], 80)), Verdict::Pass);
        let mut f = filter(&["198.41.0.4/32"]);
        assert_eq!(f.outbound(&syn_to(HOST_PUBLIC, 80)), Verdict::Pass);
    }

    #[test]
    fn only_ipv4_from_the_guest_and_arp_pass() {
        let mut f = filter(&[]);
        let arp = eth(
            ETHERTYPE_ARP,
            &[
                0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2,
                2,
            ],
        );
        assert_eq!(f.outbound(&arp), Verdict::Pass);
        assert_eq!(f.outbound(&arp[..30]), Verdict::Drop, "a short ARP");
        let v6 = eth(0x86dd, &[0x60; 60]);
        assert_eq!(f.outbound(&v6), Verdict::Drop);
        // A VLAN tag in front of an IPv4 packet to a public address.
        let public = syn_to([1, 1, 1, 1], 80);
        let tagged = eth(0x8100, &[&[0, 5, 8, 0][..], &public[ETH_HDR..]].concat());
        assert_eq!(f.outbound(&tagged), Verdict::Drop);
        assert_eq!(f.outbound(&public[..10]), Verdict::Drop);
        // A spoofed source, and a header that lies about its length.
        let spoofed = ip(
            [10, 0, 2, 16],
            [1, 1, 1, 1],
            PROTO_TCP,
            &tcp(1, 80, TCP_SYN, 0, 0, &[]),
        );
        assert_eq!(f.outbound(&spoofed), Verdict::Drop);
        let mut long = public.clone();
        long[ETH_HDR + 3] = 200;
        assert_eq!(f.outbound(&long), Verdict::Drop);
        let mut ihl = public.clone();
        ihl[ETH_HDR] = 0x44;
        assert_eq!(f.outbound(&ihl), Verdict::Drop);
        // A later fragment has no ports: judged by its address alone.
        let mut frag = syn_to(GATEWAY, 80);
        frag[ETH_HDR + 7] = 1;
        assert_eq!(f.outbound(&frag), Verdict::Drop);
        let mut frag = public.clone();
        frag[ETH_HDR + 7] = 1;
        assert_eq!(f.outbound(&frag), Verdict::Pass);
        assert_eq!(
            Filter::default().outbound(&public),
            Verdict::Drop,
            "no spec, no traffic"
        );
    }

    #[test]
    fn a_refused_syn_is_answered_with_a_reset() {
        let mut f = filter(&[]);
        let Verdict::Refuse(rst) = f.outbound(&syn_to(GATEWAY, 8000)) else {
            panic!("not refused");
        };
        assert_eq!(rst.len(), 54);
        assert_eq!((&rst[..6], &rst[6..12]), (&GUEST_MAC[..], &PASST_MAC[..]));
        let ip4 = ipv4(&rst).expect("ipv4");
        assert_eq!((ip4.src, ip4.dst), (GATEWAY.into(), GUEST.into()));
        assert_eq!(checksum(&[&rst[ETH_HDR..ETH_HDR + 20]]), 0);
        let t = transport(&ip4).expect("tcp");
        let seg = t.tcp.expect("tcp");
        assert_eq!((t.src_port, t.dst_port), (8000, 40000));
        assert_eq!((seg.flags, seg.seq, seg.ack), (TCP_RST | TCP_ACK, 0, 1001));
        let pseudo = [&GATEWAY[..], &GUEST[..], &[0, PROTO_TCP, 0, 20]].concat();
        assert_eq!(checksum(&[&pseudo, &rst[ETH_HDR + 20..]]), 0);
        // A segment with ACK gets a bare reset at its acknowledgment number;
        // a reset gets nothing.
        let data = ip(
            GUEST,
            GATEWAY,
            PROTO_TCP,
            &tcp(40000, 8000, TCP_ACK, 5, 77, b"xy"),
        );
        let Verdict::Refuse(rst) = f.outbound(&data) else {
            panic!("not refused");
        };
        let t = transport(&ipv4(&rst).expect("ipv4")).expect("tcp");
        let seg = t.tcp.expect("tcp");
        assert_eq!((seg.flags, seg.seq, seg.ack), (TCP_RST, 77, 0));
        let reset = ip(GUEST, GATEWAY, PROTO_TCP, &tcp_segment(TCP_RST));
        assert_eq!(f.outbound(&reset), Verdict::Drop);
    }

    fn tcp_segment(flags: u8) -> Vec<u8> {
        tcp(40000, 8000, flags, 1, 1, &[])
    }

    #[test]
    fn replies_on_a_published_port_pass_and_nothing_else() {
        let mut f = filter(&[]);
        let peer = GATEWAY; // passt's source for a host loopback client
        let from_host = |flags| ip(peer, GUEST, PROTO_TCP, &tcp(45678, 8000, flags, 9, 0, &[]));
        let reply = |flags, to_port| {
            ip(
                GUEST,
                peer,
                PROTO_TCP,
                &tcp(8000, to_port, flags, 1, 10, b"ok"),
            )
        };
        // Before the host connects, a "reply" is refused.
        assert!(refused(f.outbound(&reply(TCP_SYN | TCP_ACK, 45678))));
        f.inbound(&from_host(TCP_SYN));
        assert_eq!(f.outbound(&reply(TCP_SYN | TCP_ACK, 45678)), Verdict::Pass);
        assert_eq!(f.outbound(&reply(TCP_ACK, 45678)), Verdict::Pass);
        assert_eq!(f.outbound(&reply(TCP_ACK | TCP_FIN, 45678)), Verdict::Pass);
        // Not a way to open connections of its own: a SYN, another port
        // of the peer, another guest port.
        assert!(refused(f.outbound(&reply(TCP_SYN, 45678))));
        assert!(refused(f.outbound(&reply(TCP_ACK, 45679))));
        let other = ip(
            GUEST,
            peer,
            PROTO_TCP,
            &tcp(8001, 45678, TCP_ACK, 1, 10, &[]),
        );
        assert!(refused(f.outbound(&other)));
        let udp_reply = ip(GUEST, peer, PROTO_UDP, &udp(8000, 45678, b"x"));
        assert_eq!(f.outbound(&udp_reply), Verdict::Drop);
        // A reset from the host ends the flow.
        f.inbound(&from_host(TCP_RST));
        assert!(refused(f.outbound(&reply(TCP_ACK, 45678))));
        // Only SYNs to published ports start one.
        f.inbound(&ip(
            peer,
            GUEST,
            PROTO_TCP,
            &tcp(45678, 22, TCP_SYN, 9, 0, &[]),
        ));
        let to_22 = ip(GUEST, peer, PROTO_TCP, &tcp(22, 45678, TCP_ACK, 1, 10, &[]));
        assert!(refused(f.outbound(&to_22)));
        // The guest's own reset ends it too.
        f.inbound(&from_host(TCP_SYN));
        assert_eq!(f.outbound(&reply(TCP_RST, 45678)), Verdict::Pass);
        assert!(refused(f.outbound(&reply(TCP_ACK, 45678))));
    }

    #[test]
    fn flows_are_bounded() {
        let mut f = filter(&[]);
        for port in 0..(MAX_FLOWS as u16 + 100) {
            f.inbound(&ip(
                [192, 168, 1, 9],
                GUEST,
                PROTO_TCP,
                &tcp(port, 8000, TCP_SYN, 0, 0, &[]),
            ));
        }
        assert_eq!(f.flows.len(), MAX_FLOWS);
        let reply = |port| {
            ip(
                GUEST,
                [192, 168, 1, 9],
                PROTO_TCP,
                &tcp(8000, port, TCP_ACK, 0, 0, &[]),
            )
        };
        assert!(refused(f.outbound(&reply(0))), "the oldest is forgotten");
        assert_eq!(f.outbound(&reply(MAX_FLOWS as u16 + 99)), Verdict::Pass);
    }
}
