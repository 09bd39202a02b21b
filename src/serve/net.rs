//! Where a server listens: a TCP address or a Unix socket, and the connections they accept
//! (one type for both, split into a reading and a writing half for a session).
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The NBD port (IANA).
pub const NBD_PORT: u16 = 10809;

pub enum Listener {
    Tcp(TcpListener),
    /// The socket file is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Listens on `addr` ("127.0.0.1:10809", "[::1]:10809", "localhost:0"; a bare host gets
    /// the NBD port).
    pub fn tcp(addr: &str) -> Result<Listener> {
        let with_port = if addr.contains(':') && !addr.ends_with(']') {
            addr.to_string()
        } else {
            format!("{addr}:{NBD_PORT}")
        };
        let addrs: Vec<_> = with_port
            .to_socket_addrs()
            .map_err(|e| {
                Error::invalid(format!(
                    "bad --listen address {addr:?}: give HOST:PORT, e.g. 127.0.0.1:{NBD_PORT}"
                ))
                .caused_by(e)
            })?
            .collect();
        let l = TcpListener::bind(&addrs[..])
            .map_err(|e| Error::os(&format!("listen on {with_port}"), e))?;
        Ok(Listener::Tcp(l))
    }

    /// Listens on a Unix socket at `path`. A stale socket there (nobody listening) is
    /// replaced; anything else is refused.
    pub fn unix(path: &Path) -> Result<Listener> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            let stale = m.file_type().is_socket()
                && UnixStream::connect(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            if !stale {
                return Err(Error::refused(format!(
                    "{} already exists ({}); remove it or give another --socket path",
                    path.display(),
                    if m.file_type().is_socket() {
                        "a socket a server is listening on"
                    } else {
                        crate::io::open::file_kind(&m.file_type())
                    }
                ))
                .at_path(path));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io("remove the stale socket", path, e))?;
        }
        let l = UnixListener::bind(path).map_err(|e| Error::io("listen on", path, e))?;
        Ok(Listener::Unix(l, path.to_path_buf()))
    }

    /// The URI a client (qemu-img, qemu-nbd) connects with.
    pub fn uri(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(std::net::SocketAddr::V6(a)) => format!("nbd://[{}]:{}", a.ip(), a.port()),
                Ok(a) => format!("nbd://{a}"),
                Err(_) => "nbd://?".into(),
            },
            Listener::Unix(_, p) => format!("nbd+unix:///?socket={}", p.display()),
        }
    }

    pub fn set_nonblocking(&self, nb: bool) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nb),
            Listener::Unix(l, _) => l.set_nonblocking(nb),
        }
    }

    /// Accepts one connection (blocking, like the listener) and names its peer.
    pub fn accept(&self) -> std::io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept()?;
                s.set_nonblocking(false)?;
                // Replies are written whole; small ones should not wait for Nagle.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), a.to_string()))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Stream::Unix(s), p.display().to_string()))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Stream {
    pub fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }
    /// Closes both directions (the peer sees the end at once).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}
