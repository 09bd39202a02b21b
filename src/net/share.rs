//! Network image locations: `smb://[DOMAIN;][user@]host[:port]/share/path/file.lbi[?vers=1.0]`
//! and `nfs://host[:port]/export/path/file.lbi`, mounted by the kernel (`cifs`, `nfs`) with
//! mount(2) under /run/lifeboat/mnt/ and unmounted (after a sync) when dropped.
//!
//! SMB: dialects 3.1.1, 3.0, 2.1 are tried in that order (`vers=`); SMB1 only when the URL
//! says `?vers=1.0` (with a warning: it is insecure and old). NFS: version 4, then 3 (`nolock`:
//! there is no lock daemon in the environment); the export is the longest leading part of the
//! path the server lets us mount. The kernel needs the server's address (`ip=`, `addr=`): the
//! name is resolved here ([`super::resolve_host`]). Before mounting, a TCP connection to the
//! server's port tells an unreachable host from a refused port; every mount failure becomes a
//! plain message chosen by its errno ([`Reason`]) — never by the kernel's text.
//!
//! The password comes from the credentials file ([`super::cred`]) and goes into the mount
//! options only: a URL with a password in it is refused (it would end up in logs and reports).
use crate::error::{Error, ErrorKind, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The network filesystem of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Smb,
    Nfs,
}

impl Proto {
    fn default_port(self) -> u16 {
        match self {
            Proto::Smb => 445,
            Proto::Nfs => 2049,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Proto::Smb => "SMB",
            Proto::Nfs => "NFS",
        }
    }
}

/// A parsed `smb://` or `nfs://` location (never holds a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareUrl {
    pub proto: Proto,
    pub user: Option<String>,
    pub domain: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// SMB: the share name; NFS: empty (the export is found when mounting).
    pub share: String,
    /// The path components after the share (SMB) or after the host (NFS), the file last.
    pub path: Vec<String>,
    /// `?vers=` (SMB: only "1.0" is accepted, to allow SMB1; NFS: "3" or "4" to pin one).
    pub vers: Option<String>,
}

/// Decodes `%XX` escapes (a space is `%20`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `s` is meant as a network location (so errors about it speak of URLs).
pub fn is_url(s: &str) -> bool {
    let l = s.get(..6).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("smb://") || l.starts_with("nfs://") || l.starts_with("cifs:/")
}

impl ShareUrl {
    /// Parses a network location; `Ok(None)` for anything that is not `smb://` / `nfs://`.
    pub fn parse(s: &str) -> Result<Option<ShareUrl>> {
        let lower = s.to_ascii_lowercase();
        let (proto, rest) = if lower.starts_with("smb://") {
            (Proto::Smb, &s[6..])
        } else if lower.starts_with("nfs://") {
            (Proto::Nfs, &s[6..])
        } else {
            return Ok(None);
        };
        let example = match proto {
            Proto::Smb => "smb://[user@]host/share/path/image.lbi",
            Proto::Nfs => "nfs://host/export/path/image.lbi",
        };
        let bad = |why: &str| Error::invalid(format!("{s:?}: {why}; write {example}"));
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (auth, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no path after the host"))?;
        let (userinfo, hostport) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        let (mut user, mut domain) = (None, None);
        if let Some(u) = userinfo {
            if u.contains(':') {
                return Err(Error::invalid(
                    "a network location may not carry a password (it would be kept in logs, \
                     reports and the command line): write smb://USER@HOST/... and put the \
                     password in a credentials file (--credentials FILE, or \
                     lifeboat.credentials=PARTITION:/lifeboat.cred; see the README)",
                ));
            }
            let u = percent_decode(u).ok_or_else(|| bad("a bad %-escape in the user"))?;
            let (d, name) = match u.split_once(';') {
                Some((d, n)) => (Some(d.to_string()), n.to_string()),
                None => (None, u),
            };
            if name.is_empty() {
                return Err(bad("an empty user name before '@'"));
            }
            if proto == Proto::Nfs {
                return Err(bad("NFS has no user names in the location"));
            }
            user = Some(name);
            domain = d.filter(|d| !d.is_empty());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad("no host name or address (letters, digits, '.', '-')"));
        }
        let mut comps = Vec::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            let c = percent_decode(c).ok_or_else(|| bad("a bad %-escape in the path"))?;
            if c == "." || c == ".." || c.contains('/') || c.contains('\0') {
                return Err(bad("'.' and '..' are not allowed in the path"));
            }
            comps.push(c);
        }
        let share = match proto {
            Proto::Smb => {
                if comps.len() < 2 {
                    return Err(bad("a share and a file name are needed after the host"));
                }
                comps.remove(0)
            }
            Proto::Nfs => {
                if comps.len() < 2 {
                    return Err(bad("an export and a file name are needed after the host"));
                }
                String::new()
            }
        };
        let mut vers = None;
        for kv in query
            .unwrap_or_default()
            .split('&')
            .filter(|q| !q.is_empty())
        {
            match kv.split_once('=') {
                Some(("vers", v)) => vers = Some(v.to_string()),
                _ => return Err(bad(&format!("unknown option {kv:?} (only ?vers=)"))),
            }
        }
        match (proto, vers.as_deref()) {
            (_, None) | (Proto::Smb, Some("1.0")) | (Proto::Nfs, Some("3" | "4")) => {}
            (Proto::Smb, Some(v)) => {
                return Err(bad(&format!(
                    "?vers={v}: Lifeboat tries SMB 3.1.1, 3.0 and 2.1 by itself; only \
                     ?vers=1.0 (SMB1, old and insecure) must be asked for"
                )))
            }
            (Proto::Nfs, Some(v)) => return Err(bad(&format!("?vers={v}: use 3 or 4"))),
        }
        Ok(Some(ShareUrl {
            proto,
            user,
            domain,
            host: host.to_string(),
            port,
            share,
            path: comps,
            vers,
        }))
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(self.proto.default_port())
    }

    /// `host[:port]/share` (SMB) or `host[:port]` (NFS), for messages.
    pub fn server(&self) -> String {
        let p = self.port.map_or(String::new(), |p| format!(":{p}"));
        match self.proto {
            Proto::Smb => format!("//{}{p}/{}", self.host, self.share),
            Proto::Nfs => format!("{}{p}", self.host),
        }
    }
}

/// Why a share could not be mounted, decided by errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No route, no answer, or nothing listening on the port.
    Unreachable,
    /// The share or export does not exist.
    NoShare,
    /// Wrong user or password, or no permission for this share.
    AccessDenied,
    /// The server speaks none of the dialects / versions tried.
    Dialect,
    /// Anything else.
    Other,
}

impl Reason {
    /// The `network_error` value in a job's report.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unreachable => "host_unreachable",
            Reason::NoShare => "share_not_found",
            Reason::AccessDenied => "access_denied",
            Reason::Dialect => "dialect_not_supported",
            Reason::Other => "mount_failed",
        }
    }
}

/// The reason for a failed mount(2) of `proto` with errno `e`.
pub fn mount_reason(proto: Proto, e: i32) -> Reason {
    use libc::*;
    match e {
        EHOSTUNREACH | ENETUNREACH | ETIMEDOUT | ECONNREFUSED | EHOSTDOWN | EINPROGRESS
        | ENETDOWN => Reason::Unreachable,
        ENOENT | ENXIO => Reason::NoShare,
        EACCES | EPERM | EKEYREJECTED | EKEYEXPIRED | EKEYREVOKED => Reason::AccessDenied,
        EOPNOTSUPP | EPROTO | EPROTONOSUPPORT | ECONNRESET if proto == Proto::Smb => {
            Reason::Dialect
        }
        EPROTONOSUPPORT | EOPNOTSUPP if proto == Proto::Nfs => Reason::Dialect,
        _ => Reason::Other,
    }
}

/// The reason a TCP connection to the server failed.
pub fn connect_reason(e: &std::io::Error) -> Reason {
    match e.raw_os_error() {
        Some(c) => match mount_reason(Proto::Nfs, c) {
            Reason::Unreachable => Reason::Unreachable,
            _ => Reason::Other,
        },
        None if e.kind() == std::io::ErrorKind::TimedOut => Reason::Unreachable,
        None => Reason::Other,
    }
}

/// The plain message for `reason` (the URL's server, the dialects tried).
pub fn message(url: &ShareUrl, reason: Reason, tried: &[&str]) -> String {
    let srv = url.server();
    match (url.proto, reason) {
        (_, Reason::Unreachable) => format!(
            "host unreachable: {} does not answer on port {} ({} server): check that it is \
             switched on, the address or name, the network cable, and its firewall",
            url.host,
            url.port(),
            url.proto.name()
        ),
        (Proto::Smb, Reason::NoShare) => format!(
            "share not found: {} has no share named {:?}; check the name (shares are \
             listed in the server's settings)",
            url.host, url.share
        ),
        (Proto::Nfs, Reason::NoShare) => format!(
            "export not found: {} exports no directory /{}; check the path",
            url.host,
            url.path[..url.path.len() - 1].join("/")
        ),
        (Proto::Smb, Reason::AccessDenied) => format!(
            "access denied to {srv}: wrong user name or password{}, or that user may not use \
             this share; the password comes from the credentials file",
            url.user
                .as_deref()
                .map_or(String::new(), |u| format!(" (user {u})"))
        ),
        (Proto::Nfs, Reason::AccessDenied) => format!(
            "access denied to {srv}: the server does not export this path to this machine's \
             address (check the export's allowed clients)"
        ),
        (Proto::Smb, Reason::Dialect) => format!(
            "dialect not supported: {srv} speaks none of SMB {}; an old device that only \
             speaks SMB1 can be used with ?vers=1.0 at the end of the location (insecure)",
            tried.join(", ")
        ),
        (Proto::Nfs, Reason::Dialect) => {
            format!("{srv} speaks none of NFS versions {}", tried.join(", "))
        }
        (_, Reason::Other) => format!("cannot mount {srv}"),
    }
}

/// The mount options text for cifs (the password's commas doubled, as cifs reads them).
#[allow(clippy::too_many_arguments)]
pub fn cifs_options(
    vers: &str,
    ip: Ipv4Addr,
    port: Option<u16>,
    login: Option<&super::cred::Login>,
    url_user: Option<&str>,
    url_domain: Option<&str>,
) -> String {
    let mut o = format!("vers={vers},ip={ip}");
    if let Some(p) = port {
        o.push_str(&format!(",port={p}"));
    }
    let user = url_user.or(login.and_then(|l| l.user.as_deref()));
    let password = login.and_then(|l| l.password.as_deref());
    let domain = url_domain.or(login.and_then(|l| l.domain.as_deref()));
    match user {
        Some(u) => {
            o.push_str(&format!(",username={}", u.replace(',', "")));
            o.push_str(&format!(
                ",password={}",
                password.unwrap_or_default().replace(',', ",,")
            ));
            if let Some(d) = domain {
                o.push_str(&format!(",domain={}", d.replace(',', "")));
            }
        }
        None => o.push_str(",guest"),
    }
    // Files as root's, whatever the server says; no client-side permission checks. A server
    // that stops answering (a cable pulled) is noticed after 3 echoes of 10 s (cifs's default
    // is 60 s each) and, the mount being soft, the job's I/O fails instead of waiting forever.
    o.push_str(",uid=0,gid=0,file_mode=0600,dir_mode=0700,noperm,soft,echo_interval=10");
    o
}

/// A mounted share; unmounted (after a sync) on drop.
pub struct Mounted {
    pub mountpoint: PathBuf,
    /// The path components left inside the mount (NFS: after the export).
    pub inner: Vec<PathBuf>,
    /// What was mounted, for messages ("//10.0.2.2/backups (SMB 3.1.1)").
    pub what: String,
    /// The server's address and port (to ask whether it still answers: [`super::lost`]).
    pub addr: SocketAddr,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        nix::unistd::sync();
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::empty())
            .or_else(|_| nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH));
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn mountpoint(url: &ShareUrl) -> Result<PathBuf> {
    let clean: String = format!("{}-{}", url.host, url.share)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mp = Path::new(crate::image::store::MOUNT_ROOT).join(format!(
        "{}-{clean}-{}-{n}",
        match url.proto {
            Proto::Smb => "smb",
            Proto::Nfs => "nfs",
        },
        std::process::id()
    ));
    std::fs::create_dir_all(&mp).map_err(|e| Error::io("create the mount point", &mp, e))?;
    Ok(mp)
}

fn net_error(
    url: &ShareUrl,
    reason: Reason,
    tried: &[&str],
    cause: Option<std::io::Error>,
) -> Error {
    let e = Error::new(ErrorKind::Io, message(url, reason, tried))
        .with_report("network_error", reason.name());
    match cause {
        Some(c) => e.caused_by(c),
        None => e,
    }
}

/// How long a TCP connection to the server may take before the host counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(6);

/// Brings the network up if needed, resolves the host, checks it answers, and mounts the share
/// (read-only with `read_only`). The returned [`Mounted`] unmounts on drop.
pub fn mount(url: &ShareUrl, read_only: bool) -> Result<Mounted> {
    mount_as(url, read_only, None)
}

/// [`mount`] with the login given here (the console's typed password, kept in memory) instead
/// of the one from the credentials file; `None`: the credentials file's.
pub fn mount_as(
    url: &ShareUrl,
    read_only: bool,
    login: Option<&super::cred::Login>,
) -> Result<Mounted> {
    super::ensure_up()?;
    let ip = super::resolve_host(&url.host)?;
    let port = url.port();
    if let Err(e) = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), CONNECT_TIMEOUT) {
        let r = connect_reason(&e);
        return Err(net_error(
            url,
            if r == Reason::Other {
                Reason::Unreachable
            } else {
                r
            },
            &[],
            Some(e),
        ));
    }
    crate::init::modules::load_fs_module(match url.proto {
        Proto::Smb => "cifs",
        Proto::Nfs => "nfs",
    });
    let mut flags = nix::mount::MsFlags::MS_NOATIME;
    if read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    let mp = mountpoint(url)?;
    let done = match url.proto {
        Proto::Smb => mount_smb(url, ip, &mp, flags, login),
        Proto::Nfs => mount_nfs(url, ip, &mp, flags),
    };
    match done {
        Ok((inner, what)) => Ok(Mounted {
            mountpoint: mp,
            inner,
            what,
            addr: SocketAddr::from((ip, port)),
        }),
        Err(e) => {
            let _ = std::fs::remove_dir(&mp);
            Err(e)
        }
    }
}

fn sys_mount(
    src: &str,
    mp: &Path,
    fstype: &str,
    flags: nix::mount::MsFlags,
    data: &str,
) -> std::result::Result<(), i32> {
    nix::mount::mount(Some(src), mp, Some(fstype), flags, Some(data)).map_err(|e| e as i32)
}

fn mount_smb(
    url: &ShareUrl,
    ip: Ipv4Addr,
    mp: &Path,
    flags: nix::mount::MsFlags,
    given: Option<&super::cred::Login>,
) -> Result<(Vec<PathBuf>, String)> {
    // A login typed into this process (the console) for this share comes first.
    let typed = match given {
        Some(_) => None,
        None => super::cred::typed(&url.host, &url.share, url.user.as_deref()),
    };
    let given = given.or(typed.as_ref());
    let (creds, looked) = match given {
        Some(_) => (None, Vec::new()),
        None => super::cred::load()?,
    };
    let login = given.or_else(|| {
        creds
            .as_ref()
            .and_then(|c| c.find(&url.host, &url.share, url.user.as_deref()))
    });
    if url.user.is_some() && login.and_then(|l| l.password.as_ref()).is_none() {
        return Err(Error::invalid(format!(
            "no password for {}@{}: add a [{}/{}] section with user and password lines to the \
             credentials file ({})",
            url.user.as_deref().unwrap_or_default(),
            url.server(),
            url.host,
            url.share,
            if looked.is_empty() {
                "give it with --credentials FILE or lifeboat.credentials=PARTITION:/lifeboat.cred"
                    .to_string()
            } else {
                format!("looked in {}", looked.join(", "))
            }
        )));
    }
    let dialects: &[&str] = if url.vers.as_deref() == Some("1.0") {
        crate::errln!(
            "lifeboat: warning: {} is used with SMB1 (?vers=1.0): an old, insecure protocol; \
             prefer SMB 2 or 3 if the device can be updated",
            url.server()
        );
        &["1.0"]
    } else {
        &["3.1.1", "3.0", "2.1"]
    };
    let src = format!("//{ip}/{}", url.share);
    let mut last = 0;
    for (k, v) in dialects.iter().enumerate() {
        let opts = cifs_options(
            v,
            ip,
            url.port,
            login,
            url.user.as_deref(),
            url.domain.as_deref(),
        );
        match sys_mount(&src, mp, "cifs", flags, &opts) {
            Ok(()) => {
                return Ok((
                    url.path[..url.path.len()]
                        .iter()
                        .map(PathBuf::from)
                        .collect(),
                    format!("{} (SMB {v})", url.server()),
                ))
            }
            Err(e) => {
                last = e;
                let reason = mount_reason(Proto::Smb, e);
                if reason != Reason::Dialect {
                    return Err(net_error(
                        url,
                        reason,
                        &dialects[..=k],
                        Some(std::io::Error::from_raw_os_error(e)),
                    ));
                }
            }
        }
    }
    Err(net_error(
        url,
        Reason::Dialect,
        dialects,
        Some(std::io::Error::from_raw_os_error(last)),
    ))
}

/// The local address the kernel would use to reach `ip` (for NFSv4's `clientaddr=`).
fn local_addr_for(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((ip, 9)).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        _ => None,
    }
}

fn mount_nfs(
    url: &ShareUrl,
    ip: Ipv4Addr,
    mp: &Path,
    flags: nix::mount::MsFlags,
) -> Result<(Vec<PathBuf>, String)> {
    let versions: &[&str] = match url.vers.as_deref() {
        Some("3") => &["3"],
        Some("4") => &["4"],
        _ => &["4", "3"],
    };
    let client = local_addr_for(ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dirs = &url.path[..url.path.len() - 1];
    let mut first_err: Option<(Reason, i32)> = None;
    let mut tried = Vec::new();
    for v in versions {
        tried.push(*v);
        let mut opts = format!("vers={v},addr={ip},proto=tcp,hard,timeo=600,retrans=2");
        if let Some(p) = url.port {
            opts.push_str(&format!(",port={p}"));
        }
        if *v == "4" {
            opts.push_str(&format!(",clientaddr={client}"));
        } else {
            // No rpc.statd in the environment; the server's mountd is asked over TCP.
            opts.push_str(",nolock,mountproto=tcp");
        }
        // The export is the longest leading part of the directory the server lets us mount.
        for n in (1..=dirs.len()).rev() {
            let src = format!("{ip}:/{}", dirs[..n].join("/"));
            match sys_mount(&src, mp, "nfs", flags, &opts) {
                Ok(()) => {
                    return Ok((
                        url.path[n..].iter().map(PathBuf::from).collect(),
                        format!("{}:/{} (NFS {v})", url.host, dirs[..n].join("/")),
                    ))
                }
                Err(e) => {
                    let r = mount_reason(Proto::Nfs, e);
                    if first_err.is_none() || first_err.is_some_and(|(fr, _)| fr == Reason::Dialect)
                    {
                        first_err = Some((r, e));
                    }
                    if r != Reason::NoShare {
                        break;
                    }
                }
            }
        }
    }
    let (r, e) = first_err.unwrap_or((Reason::Other, libc::EIO));
    Err(net_error(
        url,
        r,
        &tried,
        Some(std::io::Error::from_raw_os_error(e)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_urls() {
        let u = ShareUrl::parse("smb://alice@nas.local/Backups/pc/full.lbi")
            .unwrap()
            .unwrap();
        assert_eq!(u.proto, Proto::Smb);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "nas.local");
        assert_eq!(u.share, "Backups");
        assert_eq!(u.path, ["pc", "full.lbi"]);
        assert_eq!(u.port, None);
        let u = ShareUrl::parse("SMB://WORK;bob@10.0.2.100:4445/s/my%20pc.lbi?vers=1.0")
            .unwrap()
            .unwrap();
        assert_eq!(u.domain.as_deref(), Some("WORK"));
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.port, Some(4445));
        assert_eq!(u.path, ["my pc.lbi"]);
        assert_eq!(u.vers.as_deref(), Some("1.0"));
        assert_eq!(u.server(), "//10.0.2.100:4445/s");
        assert_eq!(ShareUrl::parse("label=X:/a.lbi").unwrap(), None);
        assert_eq!(ShareUrl::parse("/tmp/smb://x").unwrap(), None);
    }

    #[test]
    fn nfs_urls() {
        let u = ShareUrl::parse("nfs://srv/export/backups/pc.lbi")
            .unwrap()
            .unwrap();
        assert_eq!(u.proto, Proto::Nfs);
        assert_eq!(u.path, ["export", "backups", "pc.lbi"]);
        assert_eq!(u.share, "");
    }

    #[test]
    fn bad_urls_are_usage_errors_and_passwords_are_refused() {
        for bad in [
            "smb://host/share",
            "smb://host",
            "smb://ho st/s/a.lbi",
            "smb://host:0/s/a.lbi",
            "smb://host/s/../a.lbi",
            "smb://host/s/a.lbi?vers=2.1",
            "smb://host/s/a.lbi?x=1",
            "nfs://user@host/e/a.lbi",
            "nfs://host/a.lbi",
            "smb://@host/s/a.lbi",
        ] {
            let e = ShareUrl::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}");
        }
        let e = ShareUrl::parse("smb://alice:hunter2@host/s/a.lbi").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.msg.contains("credentials file"), "{e}");
    }

    #[test]
    fn errno_decides_the_reason() {
        use libc::*;
        for (e, r) in [
            (EHOSTUNREACH, Reason::Unreachable),
            (ETIMEDOUT, Reason::Unreachable),
            (ECONNREFUSED, Reason::Unreachable),
            (ENOENT, Reason::NoShare),
            (EACCES, Reason::AccessDenied),
            (EKEYREJECTED, Reason::AccessDenied),
            (EOPNOTSUPP, Reason::Dialect),
            (ECONNRESET, Reason::Dialect),
            (EIO, Reason::Other),
        ] {
            assert_eq!(mount_reason(Proto::Smb, e), r, "errno {e}");
        }
        assert_eq!(mount_reason(Proto::Nfs, ECONNRESET), Reason::Other);
        assert_eq!(mount_reason(Proto::Nfs, EPROTONOSUPPORT), Reason::Dialect);
        assert_eq!(
            connect_reason(&std::io::Error::from_raw_os_error(ECONNREFUSED)),
            Reason::Unreachable
        );
        assert_eq!(
            connect_reason(&std::io::Error::new(std::io::ErrorKind::TimedOut, "t")),
            Reason::Unreachable
        );
    }

    #[test]
    fn messages_say_what_happened() {
        let u = ShareUrl::parse("smb://alice@nas/backups/a.lbi")
            .unwrap()
            .unwrap();
        assert!(message(&u, Reason::Unreachable, &[]).starts_with("host unreachable: nas"));
        assert!(message(&u, Reason::NoShare, &[]).starts_with("share not found"));
        let m = message(&u, Reason::AccessDenied, &[]);
        assert!(
            m.starts_with("access denied") && m.contains("user alice"),
            "{m}"
        );
        let m = message(&u, Reason::Dialect, &["3.1.1", "3.0", "2.1"]);
        assert!(
            m.starts_with("dialect not supported") && m.contains("3.1.1, 3.0, 2.1"),
            "{m}"
        );
        assert!(m.contains("?vers=1.0"));
    }

    #[test]
    fn cifs_option_text() {
        let login = crate::net::cred::Login {
            user: Some("alice".into()),
            password: Some("a,b c".into()),
            domain: Some("WG".into()),
        };
        assert_eq!(
            cifs_options(
                "3.1.1",
                Ipv4Addr::new(10, 0, 2, 2),
                Some(4445),
                Some(&login),
                None,
                None
            ),
            "vers=3.1.1,ip=10.0.2.2,port=4445,username=alice,password=a,,b c,domain=WG,\
             uid=0,gid=0,file_mode=0600,dir_mode=0700,noperm,soft,echo_interval=10"
        );
        assert_eq!(
            cifs_options("3.0", Ipv4Addr::new(1, 2, 3, 4), None, None, None, None),
            "vers=3.0,ip=1.2.3.4,guest,uid=0,gid=0,file_mode=0600,dir_mode=0700,noperm,soft,\
             echo_interval=10"
        );
        // The URL's user and domain win over the file's.
        assert!(cifs_options(
            "2.1",
            Ipv4Addr::new(1, 2, 3, 4),
            None,
            Some(&login),
            Some("bob"),
            Some("D")
        )
        .contains("username=bob,password=a,,b c,domain=D,"));
    }
}
