//! One client connection: the fixed-newstyle handshake (`NBD_OPT_GO`/`INFO` with block-size
//! information, `EXPORT_NAME`, `LIST`, `ABORT`; everything else answered "unsupported"), then
//! the transmission phase with simple replies (read, write and write-zeroes into the overlay,
//! flush, trim and cache as hints, disconnect). Works on any byte stream, so the tests drive it
//! with in-memory bytes. Whatever the client sends, the session ends with a value — a clean
//! end or the reason the connection was dropped — never a panic.
use super::disk::{Disk, ReadError};
use super::proto::*;
use std::io::{Read, Write};

/// The one export a server offers.
#[derive(Debug, Clone)]
pub struct Export {
    /// Its name (the image's file name); the empty default name is accepted too.
    pub name: String,
    pub description: String,
}

impl Export {
    fn known(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// How a session ended cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `NBD_OPT_ABORT` during the handshake.
    Aborted,
    /// `NBD_CMD_DISC`.
    Disconnected,
    /// The client closed the connection between messages.
    Closed,
}

/// Why a session was dropped.
#[derive(Debug)]
pub enum Dropped {
    /// The connection failed (reset, closed in the middle of a message, timed out).
    Io(std::io::Error),
    /// The client broke the protocol, or a read failed after its reply had started.
    Protocol(String),
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Io(e) => write!(f, "connection failed: {e}"),
            Dropped::Protocol(m) => write!(f, "dropped: {m}"),
        }
    }
}

impl From<std::io::Error> for Dropped {
    fn from(e: std::io::Error) -> Self {
        Dropped::Io(e)
    }
}

type Res<T> = std::result::Result<T, Dropped>;

/// The block sizes advertised: any byte is addressable, 4 KiB is efficient, 32 MiB at most.
pub const BLOCK_MIN: u32 = 1;
pub const BLOCK_PREFERRED: u32 = 4096;
/// Writes are taken in pieces of this size (no buffer of a request's size).
const PIECE: usize = 1 << 20;

/// Runs one session: the handshake, then requests until the client leaves. `entered` is called
/// once the transmission phase starts (the caller lifts the handshake's time limit); `log`
/// receives a line for each request that failed on the server's side.
pub fn run(
    r: &mut dyn Read,
    w: &mut dyn Write,
    disk: &dyn Disk,
    ex: &Export,
    entered: &mut dyn FnMut(),
    log: &dyn Fn(&str),
) -> Res<End> {
    let lim = Limits {
        size: disk.size(),
        writable: disk.writable(),
    };
    if !handshake(r, w, &lim, ex)? {
        return Ok(End::Aborted);
    }
    entered();
    transmission(r, w, disk, &lim, log)
}

/// Runs the transmission phase only, for a peer that needs no handshake: the kernel's NBD
/// client, which is given the size and flags through ioctls (see `attach`).
pub fn run_transmission(
    r: &mut dyn Read,
    w: &mut dyn Write,
    disk: &dyn Disk,
    log: &dyn Fn(&str),
) -> Res<End> {
    let lim = Limits {
        size: disk.size(),
        writable: disk.writable(),
    };
    transmission(r, w, disk, &lim, log)
}

fn send(w: &mut dyn Write, b: &[u8]) -> Res<()> {
    w.write_all(b)?;
    Ok(())
}

fn skip(r: &mut dyn Read, n: u64) -> Res<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if got != n {
        return Err(Dropped::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// The option haggling. Ok(true): transmission follows; Ok(false): the client aborted.
fn handshake(r: &mut dyn Read, w: &mut dyn Write, lim: &Limits, ex: &Export) -> Res<bool> {
    send(w, &greeting())?;
    w.flush()?;
    let mut cf = [0u8; 4];
    r.read_exact(&mut cf)?;
    let client = parse_client_flags(cf).map_err(|v| Dropped::Protocol(v.0))?;
    let flags = lim.transmission_flags();
    loop {
        let mut hb = [0u8; OPTION_HEADER_LEN];
        r.read_exact(&mut hb)?;
        let h = parse_option_header(&hb).map_err(|v| Dropped::Protocol(v.0))?;
        if h.len > MAX_OPTION_DATA {
            if h.option == OPT_EXPORT_NAME || h.len > MAX_OPTION_SKIP {
                return Err(Dropped::Protocol(format!(
                    "option {} carries {} bytes of data",
                    h.option, h.len
                )));
            }
            skip(r, h.len as u64)?;
            send(
                w,
                &option_reply(h.option, REP_ERR_TOO_BIG, b"option data too long"),
            )?;
            w.flush()?;
            continue;
        }
        let mut data = vec![0u8; h.len as usize];
        r.read_exact(&mut data)?;
        match parse_option(h.option, &data) {
            Opt::ExportName(name) => {
                if !ex.known(&name) {
                    // No way to say no to EXPORT_NAME but to drop the connection.
                    return Err(Dropped::Protocol(format!(
                        "unknown export {:?}",
                        String::from_utf8_lossy(&name)
                    )));
                }
                send(w, &export_name_reply(lim.size, flags, client.no_zeroes))?;
                w.flush()?;
                return Ok(true);
            }
            Opt::Abort => {
                // The client may already be gone: the ACK is a courtesy.
                let _ = w
                    .write_all(&option_reply(h.option, REP_ACK, &[]))
                    .and_then(|_| w.flush());
                return Ok(false);
            }
            Opt::List => {
                send(
                    w,
                    &option_reply(h.option, REP_SERVER, &rep_server(&ex.name, &ex.description)),
                )?;
                send(w, &option_reply(h.option, REP_ACK, &[]))?;
            }
            Opt::Info(req) | Opt::Go(req) => {
                let go = h.option == OPT_GO;
                if !ex.known(&req.name) {
                    let msg = format!(
                        "no export named {:?}; this server has {:?} (or the default, \"\")",
                        String::from_utf8_lossy(&req.name),
                        ex.name
                    );
                    send(w, &option_reply(h.option, REP_ERR_UNKNOWN, msg.as_bytes()))?;
                    w.flush()?;
                    continue;
                }
                send(
                    w,
                    &option_reply(h.option, REP_INFO, &info_export(lim.size, flags)),
                )?;
                let bs = info_block_size(BLOCK_MIN, BLOCK_PREFERRED, MAX_PAYLOAD);
                send(w, &option_reply(h.option, REP_INFO, &bs))?;
                if req.requests.contains(&INFO_NAME) {
                    let d = info_text(INFO_NAME, &ex.name);
                    send(w, &option_reply(h.option, REP_INFO, &d))?;
                }
                if req.requests.contains(&INFO_DESCRIPTION) {
                    let d = info_text(INFO_DESCRIPTION, &ex.description);
                    send(w, &option_reply(h.option, REP_INFO, &d))?;
                }
                send(w, &option_reply(h.option, REP_ACK, &[]))?;
                if go {
                    w.flush()?;
                    return Ok(true);
                }
            }
            Opt::Invalid { option, why } => {
                send(w, &option_reply(option, REP_ERR_INVALID, why.as_bytes()))?;
            }
            Opt::Unsupported(o) => {
                send(w, &option_reply(o, REP_ERR_UNSUP, &[]))?;
            }
        }
        w.flush()?;
    }
}

/// Reads a request header; Ok(None) when the client closed the connection before it.
fn read_request(r: &mut dyn Read) -> Res<Option<[u8; REQUEST_LEN]>> {
    let mut b = [0u8; REQUEST_LEN];
    let mut got = 0;
    while got < REQUEST_LEN {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Dropped::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Dropped::Io(e)),
        }
    }
    Ok(Some(b))
}

fn transmission(
    r: &mut dyn Read,
    w: &mut dyn Write,
    disk: &dyn Disk,
    lim: &Limits,
    log: &dyn Fn(&str),
) -> Res<End> {
    let mut piece = Vec::new();
    loop {
        let Some(hb) = read_request(r)? else {
            return Ok(End::Closed);
        };
        let req = parse_request(&hb).map_err(|v| Dropped::Protocol(v.0))?;
        let reply = |w: &mut dyn Write, err: u32| -> Res<()> {
            send(w, &simple_reply(err, req.cookie))?;
            w.flush()?;
            Ok(())
        };
        match judge(&req, lim) {
            Action::Disconnect => return Ok(End::Disconnected),
            Action::Drop => {
                return Err(Dropped::Protocol(format!(
                    "a write of {} bytes (more than {MAX_PAYLOAD})",
                    req.len
                )))
            }
            Action::Fail(e) => {
                if req.kind == CMD_WRITE {
                    skip(r, req.len as u64)?;
                }
                reply(w, e)?;
            }
            Action::Ignore => reply(w, 0)?,
            Action::Flush => {
                let e = match disk.flush() {
                    Ok(()) => 0,
                    Err(e) => {
                        log(&format!("flush failed: {e}"));
                        EIO
                    }
                };
                reply(w, e)?;
            }
            Action::Read => {
                let mut started = false;
                let cookie = req.cookie;
                let res = disk.read(req.offset, req.len as u64, &mut |p: &[u8]| {
                    if !started {
                        w.write_all(&simple_reply(0, cookie))?;
                        started = true;
                    }
                    w.write_all(p)
                });
                match res {
                    Ok(()) if !started => reply(w, 0)?,
                    Ok(()) => w.flush()?,
                    Err(ReadError::Sink(e)) => return Err(Dropped::Io(e)),
                    Err(ReadError::Disk(e)) if !started => {
                        log(&format!(
                            "read of {} bytes at {} failed: {e}",
                            req.len, req.offset
                        ));
                        reply(w, super::cache::nbd_error(&e))?;
                    }
                    Err(ReadError::Disk(e)) => {
                        // The reply said "no error" already: the protocol's only way out.
                        return Err(Dropped::Protocol(format!(
                            "read of {} bytes at {} failed after its reply started: {e}",
                            req.len, req.offset
                        )));
                    }
                }
            }
            Action::Write | Action::WriteZeroes => {
                let zeroes = req.kind == CMD_WRITE_ZEROES;
                let mut failed = None;
                let mut done = 0u64;
                let total = req.len as u64;
                while done < total {
                    let n = (total - done).min(PIECE as u64) as usize;
                    piece.resize(n, 0);
                    if zeroes {
                        piece.fill(0);
                    } else {
                        r.read_exact(&mut piece)?;
                    }
                    if failed.is_none() {
                        if let Err(e) = disk.write(req.offset + done, &piece) {
                            failed = Some(e);
                        }
                    }
                    done += n as u64;
                }
                if failed.is_none() && req.flags & CMD_FLAG_FUA != 0 {
                    failed = disk.flush().err();
                }
                let e = match failed {
                    None => 0,
                    Some(e) => {
                        log(&format!(
                            "write of {} bytes at {} failed: {e}",
                            req.len, req.offset
                        ));
                        if e.kind == crate::ErrorKind::Refused {
                            EPERM
                        } else {
                            EIO
                        }
                    }
                };
                reply(w, e)?;
                if piece.capacity() > PIECE {
                    piece = Vec::new();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
