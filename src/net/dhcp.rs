//! DHCPv4 (RFC 2131/2132): the packet format and the client's state machine, DISCOVER → OFFER →
//! REQUEST → ACK (a NAK starts over), with retransmissions on a doubling timer. The transport is
//! a trait ([`Transport`]): the environment uses a UDP socket bound to port 68 on one interface
//! (`SO_BINDTODEVICE`, broadcast allowed; [`UdpTransport`]), the tests a simulated server.
//!
//! The packet code is ours rather than a crate's: a DHCP client needs one fixed 236-byte header
//! and a handful of type-length-value options, and the maintained crates bring a DNS library
//! and more along for options Lifeboat never sends. Replies are asked for as broadcasts (the
//! BROADCAST flag), since the interface has no address to receive a unicast on yet.
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const HEADER: usize = 236;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Discover,
            2 => MsgType::Offer,
            3 => MsgType::Request,
            4 => MsgType::Decline,
            5 => MsgType::Ack,
            6 => MsgType::Nak,
            7 => MsgType::Release,
            8 => MsgType::Inform,
            _ => return None,
        })
    }
}

/// One DHCP message, the fields Lifeboat uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1 request (client → server), 2 reply.
    pub op: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub msg_type: Option<MsgType>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_secs: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
}

impl Packet {
    fn request(kind: MsgType, xid: u32, mac: [u8; 6]) -> Packet {
        Packet {
            op: 1,
            xid,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            msg_type: Some(kind),
            subnet_mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            domain: None,
            lease_secs: None,
            server_id: None,
            requested_ip: None,
        }
    }

    /// The message on the wire (a client's: the options a client sends).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        let mut opt = |code: u8, v: &[u8]| {
            b.push(code);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        };
        if let Some(t) = self.msg_type {
            opt(53, &[t as u8]);
        }
        // Client identifier: hardware type 1 + the MAC (what most servers key leases on).
        let mut cid = vec![1u8];
        cid.extend_from_slice(&self.chaddr);
        if self.op == 1 {
            opt(61, &cid);
            opt(57, &1500u16.to_be_bytes());
            opt(12, b"lifeboat");
            // Parameter request list: mask, router, DNS, domain, lease, T1, T2.
            opt(55, &[1, 3, 6, 15, 51, 58, 59]);
        }
        if let Some(a) = self.requested_ip {
            opt(50, &a.octets());
        }
        if let Some(a) = self.server_id {
            opt(54, &a.octets());
        }
        if let Some(m) = self.subnet_mask {
            opt(1, &m.octets());
        }
        let list = |v: &[Ipv4Addr]| v.iter().flat_map(|a| a.octets()).collect::<Vec<u8>>();
        if !self.routers.is_empty() {
            opt(3, &list(&self.routers));
        }
        if !self.dns.is_empty() {
            opt(6, &list(&self.dns));
        }
        if let Some(d) = &self.domain {
            opt(15, d.as_bytes());
        }
        if let Some(l) = self.lease_secs {
            opt(51, &l.to_be_bytes());
        }
        b.push(255);
        // Some old relays drop BOOTP messages shorter than 300 bytes.
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// Parses a message; `None` for anything that is not a well-formed DHCP message.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < HEADER + 4 || b[1] != 1 || b[2] != 6 || b[HEADER..HEADER + 4] != MAGIC {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        let mut p = Packet {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            chaddr: b[28..34].try_into().ok()?,
            msg_type: None,
            subnet_mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            domain: None,
            lease_secs: None,
            server_id: None,
            requested_ip: None,
        };
        let mut i = HEADER + 4;
        while i < b.len() {
            let code = b[i];
            if code == 255 {
                break;
            }
            if code == 0 {
                i += 1;
                continue;
            }
            let len = *b.get(i + 1)? as usize;
            let v = b.get(i + 2..i + 2 + len)?;
            let ips = || {
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect::<Vec<_>>()
            };
            let one = || (len == 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
            match code {
                53 if len == 1 => p.msg_type = MsgType::from_u8(v[0]),
                1 => p.subnet_mask = one(),
                3 => p.routers = ips(),
                6 => p.dns = ips(),
                15 => {
                    p.domain = std::str::from_utf8(v)
                        .ok()
                        .map(|s| s.trim_end_matches('\0').to_string())
                        .filter(|s| !s.is_empty())
                }
                51 if len == 4 => p.lease_secs = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                54 => p.server_id = one(),
                50 => p.requested_ip = one(),
                _ => {}
            }
            i += 2 + len;
        }
        Some(p)
    }
}

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_secs: Option<u32>,
    pub server: Ipv4Addr,
}

/// Sends and receives DHCP messages on one interface.
pub trait Transport {
    /// Broadcasts `pkt` to the servers (port 67).
    fn send(&mut self, pkt: &[u8]) -> io::Result<()>;
    /// The next message received within `timeout`, or `None` when none came.
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>>;
}

/// How long the client keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The first retransmission timeout; doubled after each try (RFC 2131 §4.1 says 4 s,
    /// doubling; Lifeboat starts lower, as most clients do, to come up quickly).
    pub first: Duration,
    /// The longest retransmission timeout.
    pub max: Duration,
    /// Tries of DISCOVER (and of REQUEST) before giving up.
    pub tries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            first: Duration::from_secs(1),
            max: Duration::from_secs(8),
            tries: 5,
        }
    }
}

/// Why no lease was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No server answered the DISCOVERs.
    NoOffer,
    /// The server answered REQUEST with NAK each time, or never confirmed it.
    NoAck { server: Ipv4Addr, naks: u32 },
    /// An offer without an address or a server identifier.
    BadOffer,
}

/// The subnet mask as a prefix length (a non-contiguous mask counts its leading ones).
pub fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The netmask of a prefix length.
pub fn mask_of(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

/// Waits up to `wait` for a reply to `xid` of one of `kinds` (other traffic is skipped).
fn await_reply(
    t: &mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
    kinds: &[MsgType],
    wait: Duration,
) -> io::Result<Option<Packet>> {
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let Some(raw) = t.recv(left)? else {
            return Ok(None);
        };
        let Some(p) = Packet::decode(&raw) else {
            continue;
        };
        if p.op == 2
            && p.xid == xid
            && p.chaddr == mac
            && p.msg_type.is_some_and(|k| kinds.contains(&k))
        {
            return Ok(Some(p));
        }
    }
}

/// Runs DISCOVER → OFFER → REQUEST → ACK on `t` for the interface with hardware address `mac`.
/// `xid` is the transaction id (random per attempt in use; fixed in tests).
pub fn obtain(
    t: &mut dyn Transport,
    mac: [u8; 6],
    xid: u32,
    timing: Timing,
) -> io::Result<Result<Lease, Failure>> {
    let mut naks = 0;
    let mut last_server = Ipv4Addr::UNSPECIFIED;
    // A NAK starts over from DISCOVER; a few rounds at most.
    for round in 0..3u32 {
        let xid = xid.wrapping_add(round);
        // SELECTING
        let mut offer = None;
        let mut wait = timing.first;
        for _ in 0..timing.tries {
            t.send(&Packet::request(MsgType::Discover, xid, mac).encode())?;
            if let Some(p) = await_reply(t, xid, mac, &[MsgType::Offer], wait)? {
                offer = Some(p);
                break;
            }
            wait = (wait * 2).min(timing.max);
        }
        let Some(offer) = offer else {
            return Ok(Err(if naks > 0 {
                Failure::NoAck {
                    server: last_server,
                    naks,
                }
            } else {
                Failure::NoOffer
            }));
        };
        let (Some(server), false) = (offer.server_id, offer.yiaddr.is_unspecified()) else {
            return Ok(Err(Failure::BadOffer));
        };
        last_server = server;
        // REQUESTING
        let mut req = Packet::request(MsgType::Request, xid, mac);
        req.requested_ip = Some(offer.yiaddr);
        req.server_id = Some(server);
        let mut wait = timing.first;
        let mut answer = None;
        for _ in 0..timing.tries {
            t.send(&req.encode())?;
            if let Some(p) = await_reply(t, xid, mac, &[MsgType::Ack, MsgType::Nak], wait)? {
                answer = Some(p);
                break;
            }
            wait = (wait * 2).min(timing.max);
        }
        match answer {
            Some(a) if a.msg_type == Some(MsgType::Ack) => {
                let addr = if a.yiaddr.is_unspecified() {
                    offer.yiaddr
                } else {
                    a.yiaddr
                };
                let mask = a.subnet_mask.or(offer.subnet_mask);
                return Ok(Ok(Lease {
                    addr,
                    prefix: mask.map_or_else(|| default_prefix(addr), prefix_of),
                    router: a.routers.first().or(offer.routers.first()).copied(),
                    dns: if a.dns.is_empty() { offer.dns } else { a.dns },
                    domain: a.domain.or(offer.domain),
                    lease_secs: a.lease_secs.or(offer.lease_secs),
                    server: a.server_id.unwrap_or(server),
                }));
            }
            Some(_) => naks += 1,
            None => return Ok(Err(Failure::NoAck { server, naks })),
        }
    }
    Ok(Err(Failure::NoAck {
        server: last_server,
        naks,
    }))
}

/// The classful prefix, for a server that sends no subnet mask.
fn default_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// DHCP over a UDP socket bound to port 68 on one interface (`SO_BINDTODEVICE`), sending to
/// the limited broadcast address: the interface needs no address for this.
pub struct UdpTransport {
    sock: std::net::UdpSocket,
}

impl UdpTransport {
    pub fn open(ifname: &str) -> io::Result<UdpTransport> {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let e = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(e)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(e)?;
        setsockopt(&fd, sockopt::Broadcast, &true).map_err(e)?;
        setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(ifname),
        )
        .map_err(e)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(0, 0, 0, 0, 68),
        )
        .map_err(e)?;
        Ok(UdpTransport {
            sock: std::net::UdpSocket::from(fd),
        })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, pkt: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(pkt, (Ipv4Addr::BROADCAST, 67))
            .map(|_| ())
    }
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 1500];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(Vec::new())),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server that answers each client message with what `answer` says (no clock involved:
    /// a message it does not answer is a timeout at once).
    struct Sim<F: FnMut(&Packet) -> Vec<Packet>> {
        answer: F,
        queue: Vec<Vec<u8>>,
        sent: Vec<Packet>,
    }

    impl<F: FnMut(&Packet) -> Vec<Packet>> Transport for Sim<F> {
        fn send(&mut self, pkt: &[u8]) -> io::Result<()> {
            let p = Packet::decode(pkt).expect("the client sends valid DHCP");
            self.sent.push(p.clone());
            let replies = (self.answer)(&p);
            self.queue.extend(replies.iter().map(Packet::encode));
            Ok(())
        }
        fn recv(&mut self, _t: Duration) -> io::Result<Option<Vec<u8>>> {
            Ok((!self.queue.is_empty()).then(|| self.queue.remove(0)))
        }
    }

    fn sim<F: FnMut(&Packet) -> Vec<Packet>>(answer: F) -> Sim<F> {
        Sim {
            answer,
            queue: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn reply(to: &Packet, kind: MsgType) -> Packet {
        let mut p = Packet::request(kind, to.xid, to.chaddr);
        p.op = 2;
        p.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        p.server_id = Some(Ipv4Addr::new(10, 0, 2, 2));
        p.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        p.routers = vec![Ipv4Addr::new(10, 0, 2, 2)];
        p.dns = vec![Ipv4Addr::new(10, 0, 2, 3)];
        p.lease_secs = Some(86400);
        p
    }

    fn fast() -> Timing {
        Timing {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            tries: 4,
        }
    }

    #[test]
    fn packet_round_trip_and_wire_layout() {
        let mut p = Packet::request(MsgType::Request, 0xdead_beef, MAC);
        p.requested_ip = Some(Ipv4Addr::new(192, 168, 1, 50));
        p.server_id = Some(Ipv4Addr::new(192, 168, 1, 1));
        let b = p.encode();
        assert!(b.len() >= 300);
        assert_eq!(&b[236..240], &MAGIC);
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[10..12], &[0x80, 0]); // BROADCAST flag
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[240..243], &[53, 1, 3]);
        assert_eq!(Packet::decode(&b), Some(p));
        // Truncated options and a wrong cookie are not DHCP.
        assert_eq!(Packet::decode(&b[..200]), None);
        let mut bad = b.clone();
        bad[236] = 0;
        assert_eq!(Packet::decode(&bad), None);
        let mut cut = b[..243].to_vec();
        cut.extend_from_slice(&[6, 8, 1, 2]); // a DNS option claiming 8 bytes, 2 there
        assert_eq!(Packet::decode(&cut), None);
    }

    #[test]
    fn discover_offer_request_ack() {
        let mut s = sim(|p| match p.msg_type {
            Some(MsgType::Discover) => vec![reply(p, MsgType::Offer)],
            Some(MsgType::Request) => {
                assert_eq!(p.requested_ip, Some(Ipv4Addr::new(10, 0, 2, 15)));
                assert_eq!(p.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
                vec![reply(p, MsgType::Ack)]
            }
            _ => vec![],
        });
        let lease = obtain(&mut s, MAC, 7, fast()).unwrap().unwrap();
        assert_eq!(
            lease,
            Lease {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                domain: None,
                lease_secs: Some(86400),
                server: Ipv4Addr::new(10, 0, 2, 2),
            }
        );
        let kinds: Vec<_> = s.sent.iter().map(|p| p.msg_type.unwrap()).collect();
        assert_eq!(kinds, [MsgType::Discover, MsgType::Request]);
    }

    #[test]
    fn lost_messages_are_sent_again_and_strangers_ignored() {
        let mut discovers = 0;
        let mut s = sim(move |p| match p.msg_type {
            Some(MsgType::Discover) => {
                discovers += 1;
                // The first two DISCOVERs are lost; a reply to another client comes meanwhile.
                let mut other = reply(p, MsgType::Offer);
                other.chaddr = [1, 2, 3, 4, 5, 6];
                let mut stale = reply(p, MsgType::Offer);
                stale.xid ^= 1;
                if discovers < 3 {
                    vec![other, stale]
                } else {
                    vec![other, reply(p, MsgType::Offer)]
                }
            }
            Some(MsgType::Request) => vec![reply(p, MsgType::Ack)],
            _ => vec![],
        });
        let lease = obtain(&mut s, MAC, 1, fast()).unwrap().unwrap();
        assert_eq!(lease.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(
            s.sent
                .iter()
                .filter(|p| p.msg_type == Some(MsgType::Discover))
                .count(),
            3
        );
    }

    #[test]
    fn nak_starts_over_and_silence_fails() {
        let mut requests = 0;
        let mut s = sim(move |p| match p.msg_type {
            Some(MsgType::Discover) => vec![reply(p, MsgType::Offer)],
            Some(MsgType::Request) => {
                requests += 1;
                vec![reply(
                    p,
                    if requests == 1 {
                        MsgType::Nak
                    } else {
                        MsgType::Ack
                    },
                )]
            }
            _ => vec![],
        });
        assert!(obtain(&mut s, MAC, 1, fast()).unwrap().is_ok());
        assert_eq!(
            s.sent
                .iter()
                .filter(|p| p.msg_type == Some(MsgType::Discover))
                .count(),
            2
        );

        let mut silent = sim(|_| vec![]);
        assert_eq!(
            obtain(&mut silent, MAC, 1, fast()).unwrap(),
            Err(Failure::NoOffer)
        );
        assert_eq!(silent.sent.len(), 4);

        let mut always_nak = sim(|p| match p.msg_type {
            Some(MsgType::Discover) => vec![reply(p, MsgType::Offer)],
            _ => vec![reply(p, MsgType::Nak)],
        });
        assert_eq!(
            obtain(&mut always_nak, MAC, 1, fast()).unwrap(),
            Err(Failure::NoAck {
                server: Ipv4Addr::new(10, 0, 2, 2),
                naks: 3
            })
        );
    }

    #[test]
    fn prefixes_and_masks() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), 24);
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 240, 0)), 20);
        assert_eq!(mask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask_of(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask_of(32), Ipv4Addr::BROADCAST);
        assert_eq!(default_prefix(Ipv4Addr::new(192, 168, 0, 9)), 24);
    }
}
