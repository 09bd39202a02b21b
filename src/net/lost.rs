//! A network share that stops answering while a job uses it (a cable pulled, the server switched
//! off, the Wi-Fi gone): one plain error of kind [`ErrorKind::NetworkLost`] instead of the
//! kernel's words ("Host is down (os error 112)"), saying to reconnect and run the same command
//! again.
//!
//! Decided by the error number, never by text: EHOSTDOWN, ENETDOWN, ENETUNREACH, EHOSTUNREACH,
//! ETIMEDOUT, ECONNRESET or ECONNABORTED on a file inside the share's mount (or on no file at
//! all); and EIO inside the mount when the server no longer answers on its port (a soft cifs
//! mount gives EIO once the server is gone; a disk error on the server gives EIO too, and then
//! the server still answers). An error on a file elsewhere (the source, a local target) is
//! never taken for the share's: a local disk can time out too.
use crate::error::{Error, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The error numbers that mean the share's server or the network to it went away.
const DROPPED: &[i32] = &[
    libc::EHOSTDOWN,
    libc::ENETDOWN,
    libc::ENETUNREACH,
    libc::EHOSTUNREACH,
    libc::ETIMEDOUT,
    libc::ECONNRESET,
    libc::ECONNABORTED,
];

/// How long the server may take to accept a connection before it counts as gone (after an EIO).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A few words on what the error number says, for the message.
fn phrase(errno: i32) -> &'static str {
    match errno {
        libc::EHOSTDOWN => "the server is down or out of reach",
        libc::ENETDOWN => "this machine's network is down",
        libc::ENETUNREACH => "its network is out of reach",
        libc::EHOSTUNREACH => "no route to the server",
        libc::ETIMEDOUT => "the server did not answer in time",
        libc::ECONNRESET | libc::ECONNABORTED => "the connection to the server broke",
        _ => "input/output error, and the server no longer answers",
    }
}

/// Whether something accepts a TCP connection at `addr` within a few seconds.
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
}

/// The error number of `e` when it is the share mounted at `mountpoint` (its server at `addr`)
/// having stopped answering (see the module documentation); `None` otherwise. `answers` is
/// asked only for an EIO inside the mount.
pub fn stopped(
    e: &Error,
    mountpoint: &Path,
    addr: SocketAddr,
    answers: impl FnOnce(SocketAddr) -> bool,
) -> Option<i32> {
    if e.kind == ErrorKind::NetworkLost {
        return None;
    }
    let errno = e.raw_os_error()?;
    let inside = e.path.as_deref().map(|p| p.starts_with(mountpoint));
    match inside {
        Some(false) => None,
        None if DROPPED.contains(&errno) => Some(errno),
        None => None,
        Some(true) if DROPPED.contains(&errno) => Some(errno),
        Some(true) if errno == libc::EIO && !answers(addr) => Some(errno),
        Some(true) => None,
    }
}

/// The plain error for a share at `location` (as the user named it) that stopped answering
/// with `errno`; `then` says what was kept and what to do ("the unfinished image is kept …"),
/// or is empty where the caller says it.
/// The report fields of `e` are kept, with `network_error: "stopped_answering"` and the
/// error number (`os_error`); the mount path and the kernel's words are not shown.
pub fn lost(e: Error, location: &str, errno: i32, then: &str) -> Error {
    let mut msg = format!(
        "the network share stopped answering ({location}: {})",
        phrase(errno)
    );
    if !then.is_empty() {
        msg = format!("{msg}; {then}");
    }
    Error {
        kind: ErrorKind::NetworkLost,
        msg,
        path: None,
        offset: None,
        cause: None,
        report: e.report,
    }
    .with_report("network_error", "stopped_answering")
    .with_report("os_error", errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn err(path: Option<&str>, errno: i32) -> Error {
        let c = io::Error::from_raw_os_error(errno);
        match path {
            Some(p) => Error::io("fsync", p, c),
            None => Error::os("send", c),
        }
    }

    const ADDR: &str = "10.0.2.100:445";

    #[test]
    fn decided_by_the_error_number_and_the_place() {
        let mp = Path::new("/run/lifeboat/mnt/smb-1");
        let addr: SocketAddr = ADDR.parse().unwrap();
        let never = |_| panic!("the server is asked only after an EIO inside the mount");
        let inside = "/run/lifeboat/mnt/smb-1/pc/full.lbi.partial";
        for n in DROPPED {
            assert_eq!(stopped(&err(Some(inside), *n), mp, addr, never), Some(*n));
            assert_eq!(stopped(&err(None, *n), mp, addr, never), Some(*n));
            // A local disk (the source, a target) may time out too: never the share's.
            assert_eq!(stopped(&err(Some("/dev/sdb"), *n), mp, addr, never), None);
            // A sibling mount whose name starts the same is elsewhere.
            let sib = "/run/lifeboat/mnt/smb-10/x";
            assert_eq!(stopped(&err(Some(sib), *n), mp, addr, never), None);
        }
        for n in [libc::ENOSPC, libc::EACCES, libc::ENOENT] {
            assert_eq!(stopped(&err(Some(inside), n), mp, addr, never), None);
        }
        // EIO: the share's when its server no longer answers, a server's disk error otherwise.
        assert_eq!(
            stopped(&err(Some(inside), libc::EIO), mp, addr, |_| false),
            Some(libc::EIO)
        );
        assert_eq!(
            stopped(&err(Some(inside), libc::EIO), mp, addr, |_| true),
            None
        );
        assert_eq!(stopped(&err(None, libc::EIO), mp, addr, never), None);
        assert_eq!(
            stopped(&err(Some("/dev/sdb"), libc::EIO), mp, addr, never),
            None
        );
    }

    #[test]
    fn the_plain_message_keeps_the_report_and_drops_the_kernel_words() {
        let e = err(
            Some("/run/lifeboat/mnt/smb-1/pc/full.lbi.partial"),
            libc::EHOSTDOWN,
        )
        .with_report("target_state", "incomplete");
        let l = lost(
            e,
            "smb://root@nas/backups/pc/full.lbi",
            libc::EHOSTDOWN,
            "reconnect and run the same command again to resume",
        );
        assert_eq!(l.kind, ErrorKind::NetworkLost);
        assert_eq!(l.exit_code(), crate::error::exit::FAILED);
        assert_eq!(l.kind_name(), "network_lost");
        let m = l.to_string();
        assert!(
            m.starts_with(
                "the network share stopped answering (smb://root@nas/backups/pc/full.lbi"
            ),
            "{m}"
        );
        assert!(
            m.ends_with("reconnect and run the same command again to resume"),
            "{m}"
        );
        assert!(
            !m.contains("os error") && !m.contains("/run/lifeboat"),
            "{m}"
        );
        let r = l.report.unwrap();
        assert_eq!(r["target_state"], "incomplete");
        assert_eq!(r["network_error"], "stopped_answering");
        assert_eq!(r["os_error"], libc::EHOSTDOWN);
    }

    /// The probe against real sockets: a listener answers, a closed port does not.
    #[test]
    fn answers_a_listener_and_not_a_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        assert!(answers(a));
        drop(l);
        assert!(!answers(a));
    }
}
