//! Networking for image locations on shares (`smb://`, `nfs://`): bringing an Ethernet link up in
//! the Lifeboat environment, DHCP or a static address, DNS, and mounting the share.
//!
//! Nothing here runs unless a job names a network location: [`ensure_up`] is called when such a
//! location is mounted. On a host (not the environment) the machine's own network is used as it
//! is and nothing is configured. In the environment, unless the network is already up (a default
//! route exists), every Ethernet interface is set up (`IFF_UP`), the first one whose carrier
//! comes up (`/sys/class/net/IF/carrier`) is configured — by DHCP ([`dhcp`]) or with the static
//! address of `lifeboat.net=IP/PREFIX,GW,DNS` on the kernel command line — and the DNS servers
//! are written to `/etc/resolv.conf`, which the C library's resolver (musl's, in the static
//! binary) reads to turn a host name into the address the kernel's cifs/nfs mount needs.
//!
//! Files: [`sys`] the interface ioctls (the only `unsafe`), [`dhcp`] the DHCP client, [`share`]
//! the URLs and the cifs/nfs mounts with their error messages, [`cred`] the credentials file,
//! [`lost`] the plain error of a share that stops answering mid-job.
pub mod cred;
pub mod dhcp;
pub mod lost;
pub mod share;
pub mod sys;

use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the environment's address is obtained (`lifeboat.net=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    /// `lifeboat.net=dhcp` (the default).
    Dhcp,
    /// `lifeboat.net=IP/PREFIX,GW,DNS[,DNS...]` (GW and DNS may be empty).
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

impl NetConfig {
    /// Parses the value of `lifeboat.net=`.
    pub fn parse(v: &str) -> Result<NetConfig> {
        let v = v.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("dhcp") {
            return Ok(NetConfig::Dhcp);
        }
        let bad = |why: &str| {
            Error::invalid(format!(
                "lifeboat.net={v:?}: {why}; write lifeboat.net=dhcp or \
                 lifeboat.net=IP/PREFIX,GATEWAY,DNS (e.g. 192.168.1.50/24,192.168.1.1,192.168.1.1)"
            ))
        };
        let mut parts = v.split(',').map(str::trim);
        let first = parts.next().unwrap_or_default();
        let (a, p) = first
            .split_once('/')
            .ok_or_else(|| bad("the address needs its prefix length (/24)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|n| (1..=32).contains(n))
            .ok_or_else(|| bad("the prefix length must be 1 to 32"))?;
        let ip = |s: &str| -> Result<Option<Ipv4Addr>> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| bad(&format!("{s:?} is not an IPv4 address")))
        };
        let gateway = ip(parts.next().unwrap_or_default())?;
        let mut dns = Vec::new();
        for d in parts {
            dns.extend(ip(d)?);
        }
        Ok(NetConfig::Static {
            addr,
            prefix,
            gateway,
            dns,
        })
    }

    /// `lifeboat.net=` from a kernel command line (DHCP when absent).
    pub fn from_cmdline(cmdline: &str) -> Result<NetConfig> {
        match crate::kcmdline::parse_pairs(cmdline)
            .into_iter()
            .rev()
            .find(|(k, _)| k == "lifeboat.net")
        {
            Some((_, v)) => NetConfig::parse(&v),
            None => Ok(NetConfig::Dhcp),
        }
    }
}

impl std::fmt::Display for NetConfig {
    /// The `lifeboat.net=` value that gives this configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetConfig::Dhcp => write!(f, "dhcp"),
            NetConfig::Static {
                addr,
                prefix,
                gateway,
                dns,
            } => {
                write!(f, "{addr}/{prefix}")?;
                if gateway.is_some() || !dns.is_empty() {
                    write!(f, ",{}", gateway.map(|g| g.to_string()).unwrap_or_default())?;
                }
                for d in dns {
                    write!(f, ",{d}")?;
                }
                Ok(())
            }
        }
    }
}

/// What the network was configured with (printed, and kept in /run/lifeboat/net).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub interface: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The search domain (DHCP option 15).
    pub domain: Option<String>,
    /// "DHCP from SERVER, lease N s" or "static (lifeboat.net)".
    pub how: String,
}

impl std::fmt::Display for Configured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.interface, self.addr, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(|a| a.to_string()).collect();
            write!(f, ", DNS {}", d.join(" "))?;
        }
        write!(f, " ({})", self.how)
    }
}

/// Whether this process runs in the Lifeboat environment (the initramfs), where Lifeboat
/// configures the network itself; on a host the machine's own configuration is used.
pub fn in_environment() -> bool {
    Path::new("/etc/lifeboat-build.json").exists() && Path::new("/init").exists()
}

/// Whether `/proc/net/route`'s text has an up default route through a gateway.
pub fn has_default_route(route_table: &str) -> bool {
    route_table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[1] == "00000000"
            && u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x3 == 0x3)
    })
}

/// The Ethernet interfaces under `sys_class_net` (`/sys/class/net`), sorted: type 1 (ARPHRD_ETHER)
/// with a device behind them (not bridges, tunnels or the loopback).
pub fn ethernet_interfaces(sys_class_net: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let p = e.path();
            std::fs::read_to_string(p.join("type")).is_ok_and(|t| t.trim() == "1")
                && p.join("device").exists()
                && !p.join("wireless").exists()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Whether interface `name` reports a link (`carrier` reads 1; it cannot be read while down).
pub fn has_carrier(sys_class_net: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys_class_net.join(name).join("carrier")).is_ok_and(|c| c.trim() == "1")
}

/// The interface's hardware address (`address` in sysfs).
pub fn mac_address(sys_class_net: &Path, name: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(sys_class_net.join(name).join("address")).ok()?;
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

/// One wired network adapter as the console's network screen shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    /// Its hardware address ("52:54:00:12:34:56").
    pub mac: Option<String>,
    /// `IFF_UP` is set (Lifeboat sets it only when the network is started).
    pub up: bool,
    /// A link (cable in, negotiated); None while the interface is down (it cannot tell).
    pub carrier: Option<bool>,
    /// Its IPv4 addresses with their prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// The IPv4 addresses of every interface (`getifaddrs`), by interface name.
pub fn ipv4_addresses() -> std::collections::BTreeMap<String, Vec<(Ipv4Addr, u8)>> {
    let mut m: std::collections::BTreeMap<String, Vec<(Ipv4Addr, u8)>> = Default::default();
    for a in nix::ifaddrs::getifaddrs().into_iter().flatten() {
        let Some(ip) = a.address.as_ref().and_then(|x| x.as_sockaddr_in()) else {
            continue;
        };
        let prefix = a
            .netmask
            .as_ref()
            .and_then(|x| x.as_sockaddr_in())
            .map_or(32, |m| dhcp::prefix_of(m.ip()));
        m.entry(a.interface_name)
            .or_default()
            .push((ip.ip(), prefix));
    }
    m
}

/// The wired adapters under `sys_class_net` with their link state and `addrs` (from
/// [`ipv4_addresses`]). Reads only: nothing is set up.
pub fn nics(
    sys_class_net: &Path,
    addrs: &std::collections::BTreeMap<String, Vec<(Ipv4Addr, u8)>>,
) -> Vec<Nic> {
    ethernet_interfaces(sys_class_net)
        .into_iter()
        .map(|name| {
            let dir = sys_class_net.join(&name);
            let flags = std::fs::read_to_string(dir.join("flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            let up = flags & libc::IFF_UP as u32 != 0;
            let carrier = up.then(|| has_carrier(sys_class_net, &name));
            let mac = std::fs::read_to_string(dir.join("address"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            Nic {
                addrs: addrs.get(&name).cloned().unwrap_or_default(),
                name,
                mac,
                up,
                carrier,
            }
        })
        .collect()
}

/// The machine's wired adapters now (see [`nics`]).
pub fn nics_now() -> Vec<Nic> {
    nics(Path::new(SYS_CLASS_NET), &ipv4_addresses())
}

/// `/etc/resolv.conf` for these servers and search domain.
pub fn resolv_conf(dns: &[Ipv4Addr], domain: Option<&str>) -> String {
    let mut s = String::from("# written by lifeboat\n");
    if let Some(d) = domain.filter(|d| !d.contains(char::is_whitespace)) {
        s.push_str(&format!("search {d}\n"));
    }
    for a in dns {
        s.push_str(&format!("nameserver {a}\n"));
    }
    s
}

const SYS_CLASS_NET: &str = "/sys/class/net";
/// How long to wait for a network adapter to appear (drivers still loading, USB adapters).
const WAIT_ADAPTER: Duration = Duration::from_secs(10);
/// How long to wait for a link once the adapters are up (auto-negotiation takes a few seconds).
const WAIT_CARRIER: Duration = Duration::from_secs(15);

static UP: std::sync::Mutex<Option<Configured>> = std::sync::Mutex::new(None);

/// Makes the network usable for a job: on a host, nothing (the machine's own network); in the
/// environment, configures it once (see the module documentation). Returns what was configured
/// (None when nothing needed doing).
pub fn ensure_up() -> Result<Option<Configured>> {
    if !in_environment() {
        return Ok(None);
    }
    let mut up = UP.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = up.as_ref() {
        return Ok(Some(c.clone()));
    }
    // Configured already: by an earlier job, or by the console's network screen (a static
    // address may have no gateway, so an address on a wired adapter counts too).
    if has_default_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
        || nics_now().iter().any(|n| n.up && !n.addrs.is_empty())
    {
        return Ok(None);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cfg = NetConfig::from_cmdline(&cmdline)?;
    let c = bring_up(Path::new(SYS_CLASS_NET), &cfg, None)?;
    crate::errln!("lifeboat: network: {c}");
    *up = Some(c.clone());
    Ok(Some(c))
}

/// The console's network screen: (re)configures the network now with `cfg` (DHCP or a static
/// address, as `lifeboat.net=` would) on adapter `only` (None: the first with a link),
/// replacing what the adapters had (their addresses and the routes through them), and returns
/// what was configured. Only in the environment: on a host the machine's network is its own
/// and is left alone.
pub fn reconfigure(cfg: &NetConfig, only: Option<&str>) -> Result<Configured> {
    if !in_environment() {
        return Err(Error::unsupported(
            "this is not the Lifeboat environment: the host's own network is used as it is \
             (configure it with the host's tools)",
        ));
    }
    let mut up = UP.lock().unwrap_or_else(|e| e.into_inner());
    for n in nics_now() {
        if !n.addrs.is_empty() {
            sys::clear_addr(&n.name)
                .map_err(|e| Error::os(&format!("remove the address of {}", n.name), e))?;
        }
    }
    *up = None;
    let c = bring_up(Path::new(SYS_CLASS_NET), cfg, only)?;
    crate::errln!("lifeboat: network: {c}");
    *up = Some(c.clone());
    Ok(c)
}

/// What `lifeboat.net=` asks for on this machine's kernel command line (DHCP when absent or
/// not in the environment).
pub fn config_from_boot() -> Result<NetConfig> {
    if !in_environment() {
        return Ok(NetConfig::Dhcp);
    }
    NetConfig::from_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// Sets the wired adapters up (only `only` when given) and configures the first whose link
/// comes up.
fn bring_up(sys: &Path, cfg: &NetConfig, only: Option<&str>) -> Result<Configured> {
    let _ = sys::set_up("lo");
    let start = Instant::now();
    let adapters = || {
        let mut v = ethernet_interfaces(sys);
        v.retain(|i| only.is_none_or(|o| o == i));
        v
    };
    let mut ifs = adapters();
    while ifs.is_empty() && start.elapsed() < WAIT_ADAPTER {
        std::thread::sleep(Duration::from_millis(250));
        ifs = adapters();
    }
    if let (Some(o), true) = (only, ifs.is_empty()) {
        return Err(Error::not_found(format!("the network adapter {o} is gone")));
    }
    if ifs.is_empty() {
        return Err(Error::unsupported(
            "no wired network adapter found: Lifeboat has drivers for common Intel, Realtek, \
             Broadcom and Aquantia adapters, USB-Ethernet adapters and virtio; a machine with \
             only Wi-Fi needs a USB-Ethernet adapter",
        ));
    }
    for i in &ifs {
        if let Err(e) = sys::set_up(i) {
            crate::errln!("lifeboat: network: cannot set {i} up: {e}");
        }
    }
    let start = Instant::now();
    let linked = loop {
        let l: Vec<&String> = ifs.iter().filter(|i| has_carrier(sys, i)).collect();
        if !l.is_empty() || start.elapsed() >= WAIT_CARRIER {
            break l;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if linked.is_empty() {
        return Err(Error::new(
            crate::ErrorKind::Io,
            format!(
                "no network cable connected: {} reports no link after {} s; plug a cable in \
                 (and check the switch or router port)",
                ifs.join(", "),
                WAIT_CARRIER.as_secs()
            ),
        ));
    }
    let mut tried = Vec::new();
    for i in linked {
        match configure(sys, i, cfg) {
            Ok(c) => return Ok(c),
            Err(e) => tried.push(format!("{i}: {e}")),
        }
    }
    Err(Error::new(
        crate::ErrorKind::Io,
        format!("the network could not be configured ({})", tried.join("; ")),
    ))
}

fn configure(sys: &Path, ifname: &str, cfg: &NetConfig) -> Result<Configured> {
    let c = match cfg {
        NetConfig::Static {
            addr,
            prefix,
            gateway,
            dns,
        } => Configured {
            interface: ifname.to_string(),
            addr: *addr,
            prefix: *prefix,
            gateway: *gateway,
            dns: dns.clone(),
            domain: None,
            how: "static, lifeboat.net".into(),
        },
        NetConfig::Dhcp => {
            let mac = mac_address(sys, ifname).ok_or_else(|| {
                Error::not_found(format!("{ifname} has no hardware address in sysfs"))
            })?;
            let mut t = dhcp::UdpTransport::open(ifname)
                .map_err(|e| Error::os(&format!("open a DHCP socket on {ifname}"), e))?;
            let lease = dhcp::obtain(&mut t, mac, random_u32(), dhcp::Timing::default())
                .map_err(|e| Error::os(&format!("run DHCP on {ifname}"), e))?
                .map_err(|f| {
                    Error::new(
                        crate::ErrorKind::Io,
                        match f {
                            dhcp::Failure::NoOffer => {
                                "no DHCP server answered: check the network, or give a \
                                 static address with lifeboat.net=IP/PREFIX,GATEWAY,DNS"
                                    .to_string()
                            }
                            dhcp::Failure::NoAck { server, naks } => format!(
                                "the DHCP server {server} did not confirm an address \
                                 ({naks} refusals); give a static address with lifeboat.net="
                            ),
                            dhcp::Failure::BadOffer => {
                                "a DHCP server offered no usable address".to_string()
                            }
                        },
                    )
                })?;
            Configured {
                interface: ifname.to_string(),
                addr: lease.addr,
                prefix: lease.prefix,
                gateway: lease.router,
                dns: lease.dns.clone(),
                domain: lease.domain.clone(),
                how: format!(
                    "DHCP from {}{}",
                    lease.server,
                    lease
                        .lease_secs
                        .map_or(String::new(), |s| format!(", lease {s} s"))
                ),
            }
        }
    };
    apply(&c)?;
    Ok(c)
}

/// Gives the interface its address, the default route and `/etc/resolv.conf`.
fn apply(c: &Configured) -> Result<()> {
    let what = |op: &str| format!("{op} on {}", c.interface);
    sys::set_addr(&c.interface, c.addr, dhcp::mask_of(c.prefix))
        .map_err(|e| Error::os(&what("set the address"), e))?;
    sys::set_up(&c.interface).map_err(|e| Error::os(&what("set up"), e))?;
    if let Some(g) = c.gateway {
        sys::add_default_route(&c.interface, g)
            .map_err(|e| Error::os(&what(&format!("add the route via {g}")), e))?;
    }
    if !c.dns.is_empty() {
        let _ = std::fs::create_dir_all("/etc");
        std::fs::write("/etc/resolv.conf", resolv_conf(&c.dns, c.domain.as_deref()))
            .map_err(|e| Error::io("write", "/etc/resolv.conf", e))?;
    }
    Ok(())
}

/// A transaction id: random bytes from the kernel, or the clock if those cannot be read.
fn random_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u32::from_ne_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x1234_5678, |d| d.subsec_nanos() ^ std::process::id())
}

/// The IPv4 address of `host`: an address as is, else through the C library's resolver
/// (`/etc/hosts`, then the DNS servers of `/etc/resolv.conf`).
pub fn resolve_host(host: &str) -> Result<Ipv4Addr> {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let addrs = (host, 0).to_socket_addrs().map_err(|e| {
        Error::new(
            crate::ErrorKind::Io,
            format!(
                "cannot find the address of {host:?}: check the name, or use the server's IP \
                 address (the DNS servers come from DHCP or lifeboat.net=IP/PREFIX,GATEWAY,DNS)"
            ),
        )
        .caused_by(e)
    })?;
    addrs
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v) => Some(v),
            _ => None,
        })
        .next()
        .ok_or_else(|| {
            Error::unsupported(format!(
                "{host:?} has only IPv6 addresses; Lifeboat's network shares need IPv4"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_parameter() {
        assert_eq!(NetConfig::parse("dhcp").unwrap(), NetConfig::Dhcp);
        assert_eq!(NetConfig::parse("").unwrap(), NetConfig::Dhcp);
        assert_eq!(
            NetConfig::parse("192.168.1.50/24,192.168.1.1,192.168.1.1,9.9.9.9").unwrap(),
            NetConfig::Static {
                addr: Ipv4Addr::new(192, 168, 1, 50),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                dns: vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(9, 9, 9, 9)],
            }
        );
        assert_eq!(
            NetConfig::parse("10.1.2.3/8").unwrap(),
            NetConfig::Static {
                addr: Ipv4Addr::new(10, 1, 2, 3),
                prefix: 8,
                gateway: None,
                dns: vec![],
            }
        );
        for bad in [
            "10.1.2.3",
            "10.1.2.3/33",
            "10.1.2/24",
            "10.1.2.3/24,gw",
            "eth0",
        ] {
            let e = NetConfig::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}");
            assert!(e.msg.contains("lifeboat.net=IP/PREFIX"), "{bad}: {e}");
        }
        assert_eq!(
            NetConfig::from_cmdline("console=ttyS0 lifeboat.net=10.0.0.2/24,10.0.0.1 quiet")
                .unwrap(),
            NetConfig::parse("10.0.0.2/24,10.0.0.1").unwrap()
        );
        assert_eq!(NetConfig::from_cmdline("quiet").unwrap(), NetConfig::Dhcp);
    }

    #[test]
    fn net_parameter_round_trips_through_display() {
        for v in [
            "dhcp",
            "10.1.2.3/8",
            "192.168.1.50/24,192.168.1.1",
            "192.168.1.50/24,,9.9.9.9",
            "192.168.1.50/24,192.168.1.1,192.168.1.1,9.9.9.9",
        ] {
            let c = NetConfig::parse(v).unwrap();
            assert_eq!(c.to_string(), v);
            assert_eq!(NetConfig::parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn adapters_with_link_state_and_addresses() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, flags: &str, carrier: &str| {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.join("device")).unwrap();
            std::fs::write(p.join("type"), "1\n").unwrap();
            std::fs::write(p.join("flags"), flags).unwrap();
            std::fs::write(p.join("carrier"), carrier).unwrap();
            std::fs::write(p.join("address"), "52:54:00:12:34:56\n").unwrap();
        };
        mk("eth0", "0x1003\n", "1\n");
        mk("eth1", "0x1002\n", "0\n");
        let mut addrs = std::collections::BTreeMap::new();
        addrs.insert("eth0".to_string(), vec![(Ipv4Addr::new(10, 0, 2, 15), 24)]);
        let n = nics(d.path(), &addrs);
        assert_eq!(
            n,
            [
                Nic {
                    name: "eth0".into(),
                    mac: Some("52:54:00:12:34:56".into()),
                    up: true,
                    carrier: Some(true),
                    addrs: vec![(Ipv4Addr::new(10, 0, 2, 15), 24)],
                },
                Nic {
                    name: "eth1".into(),
                    mac: Some("52:54:00:12:34:56".into()),
                    up: false,
                    carrier: None,
                    addrs: vec![],
                }
            ]
        );
    }

    #[test]
    fn this_machines_loopback_address_is_seen() {
        let a = ipv4_addresses();
        assert!(
            a.get("lo")
                .is_some_and(|v| v.contains(&(Ipv4Addr::LOCALHOST, 8))),
            "{a:?}"
        );
    }

    #[test]
    fn default_route_in_proc_net_route() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let local = "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let default = "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert!(!has_default_route(&format!("{head}{local}")));
        assert!(has_default_route(&format!("{head}{local}{default}")));
        assert!(!has_default_route(""));
    }

    #[test]
    fn interfaces_from_a_sysfs_tree() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, ty: &str, device: bool, extra: &[(&str, &str)]| {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("type"), ty).unwrap();
            if device {
                std::fs::create_dir(p.join("device")).unwrap();
            }
            for (f, v) in extra {
                std::fs::write(p.join(f), v).unwrap();
            }
        };
        mk("lo", "772\n", false, &[]);
        mk("eth1", "1\n", true, &[("carrier", "0\n")]);
        mk(
            "eth0",
            "1\n",
            true,
            &[("carrier", "1\n"), ("address", "52:54:00:12:34:56\n")],
        );
        mk("br0", "1\n", false, &[]);
        mk("wlan0", "1\n", true, &[]);
        std::fs::create_dir(d.path().join("wlan0/wireless")).unwrap();
        assert_eq!(ethernet_interfaces(d.path()), ["eth0", "eth1"]);
        assert!(has_carrier(d.path(), "eth0"));
        assert!(!has_carrier(d.path(), "eth1"));
        assert!(!has_carrier(d.path(), "eth9"));
        assert_eq!(
            mac_address(d.path(), "eth0"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(mac_address(d.path(), "eth1"), None);
    }

    #[test]
    fn resolv_conf_text() {
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 0, 2, 3)], Some("lan")),
            "# written by lifeboat\nsearch lan\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn addresses_need_no_resolver() {
        assert_eq!(
            resolve_host("10.0.2.2").unwrap(),
            Ipv4Addr::new(10, 0, 2, 2)
        );
        assert_eq!(resolve_host("localhost").unwrap(), Ipv4Addr::LOCALHOST);
    }
}
