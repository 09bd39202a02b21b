//! The NBD wire protocol as pure functions: the fixed-newstyle handshake (greeting, client flags,
//! option requests and replies, `NBD_OPT_INFO`/`GO` information), and the transmission phase's
//! requests and simple replies. Nothing here does I/O: every decoder takes bytes and returns a
//! value or a reason, so random bytes can be thrown at them (see the tests).
//!
//! Written from the protocol description (`doc/proto.md` of the NetworkBlockDevice/nbd
//! project). All integers are big-endian (network order).

/// `NBDMAGIC`, the first 8 bytes a server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, also the prefix of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The prefix of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The prefix of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server): fixed newstyle; may skip the 124 zero bytes.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const CFLAG_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CFLAG_NO_ZEROES: u32 = 1 << 1;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

/// Information types of `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;

/// Request types.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error values of a reply.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// Length of the server's greeting, of a client's option header and of a request header.
pub const GREETING_LEN: usize = 18;
pub const OPTION_HEADER_LEN: usize = 16;
pub const REQUEST_LEN: usize = 28;

/// The longest option data read (a name and a few info requests need far less); a longer
/// option is refused with `NBD_REP_ERR_TOO_BIG` after its data is skipped.
pub const MAX_OPTION_DATA: u32 = 4096;
/// Option data longer than this is not even skipped: the connection is dropped.
pub const MAX_OPTION_SKIP: u32 = 1 << 20;
/// The most data a request may carry or ask for. The protocol says a payload up to 32 MiB must
/// not be taken for an attack; a longer write's data is not skipped (the connection is dropped).
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// What broke the protocol (the connection is then dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The server's first message: `NBDMAGIC`, `IHAVEOPT`, the handshake flags.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// What the client said it does, from its 32-bit flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

/// Decodes the client flags; an unknown bit means the connection must be dropped.
pub fn parse_client_flags(b: [u8; 4]) -> Result<ClientFlags, Violation> {
    let f = u32::from_be_bytes(b);
    if f & !(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES) != 0 {
        return Err(Violation(format!("unknown client flags {f:#x}")));
    }
    Ok(ClientFlags {
        fixed_newstyle: f & CFLAG_FIXED_NEWSTYLE != 0,
        no_zeroes: f & CFLAG_NO_ZEROES != 0,
    })
}

/// An option request's header: which option and how many data bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

/// Decodes an option header (`IHAVEOPT`, option, length).
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, Violation> {
    let magic = be64(b);
    if magic != IHAVEOPT {
        return Err(Violation(format!(
            "an option request must start with IHAVEOPT, got {magic:#018x}"
        )));
    }
    Ok(OptionHeader {
        option: be32(&b[8..]),
        len: be32(&b[12..]),
    })
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO` data: the export name and the information asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: Vec<u8>,
    pub requests: Vec<u16>,
}

impl InfoRequest {
    /// Whether the client asked for the block-size constraints (and so promises to keep them).
    pub fn wants_block_size(&self) -> bool {
        self.requests.contains(&INFO_BLOCK_SIZE)
    }
}

/// An option request with its data decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    ExportName(Vec<u8>),
    Abort,
    List,
    Info(InfoRequest),
    Go(InfoRequest),
    /// Known, but its data is malformed (answered with `NBD_REP_ERR_INVALID` and the reason).
    Invalid {
        option: u32,
        why: &'static str,
    },
    /// Not supported here (answered with `NBD_REP_ERR_UNSUP`).
    Unsupported(u32),
}

/// Decodes an option's data (at most [`MAX_OPTION_DATA`] bytes, as read after its header).
pub fn parse_option(option: u32, data: &[u8]) -> Opt {
    match option {
        OPT_EXPORT_NAME => Opt::ExportName(data.to_vec()),
        // Data after ABORT is to be ignored, not refused.
        OPT_ABORT => Opt::Abort,
        OPT_LIST if !data.is_empty() => Opt::Invalid {
            option,
            why: "NBD_OPT_LIST carries no data",
        },
        OPT_LIST => Opt::List,
        OPT_INFO | OPT_GO => match parse_info_request(data) {
            Ok(r) if option == OPT_INFO => Opt::Info(r),
            Ok(r) => Opt::Go(r),
            Err(why) => Opt::Invalid { option, why },
        },
        // Structured replies are optional: this server sends simple replies only.
        other => Opt::Unsupported(other),
    }
}

/// Decodes `NBD_OPT_INFO`/`GO` data: name length, name, request count, requests.
pub fn parse_info_request(d: &[u8]) -> Result<InfoRequest, &'static str> {
    if d.len() < 6 {
        return Err("NBD_OPT_INFO/GO data is shorter than 6 bytes");
    }
    let n = be32(d) as usize;
    if n > d.len() - 6 {
        return Err("the export name is longer than the option data");
    }
    let name = d[4..4 + n].to_vec();
    let k = be16(&d[4 + n..]) as usize;
    let rest = &d[6 + n..];
    if rest.len() != 2 * k {
        return Err("the information request count does not match the option length");
    }
    let requests = rest.chunks_exact(2).map(be16).collect();
    Ok(InfoRequest { name, requests })
}

/// An option reply: magic, the option answered, the reply type, the data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// `NBD_INFO_EXPORT` data: size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = INFO_EXPORT.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

/// `NBD_INFO_BLOCK_SIZE` data: minimum, preferred, maximum payload.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut v = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for x in [min, preferred, max] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION` data.
pub fn info_text(kind: u16, text: &str) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

/// `NBD_REP_SERVER` data: one export's name and description.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(description.as_bytes());
    v
}

/// What follows `NBD_OPT_EXPORT_NAME` on success: size, flags, and 124 zeros unless the client
/// negotiated `NO_ZEROES`.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        v.extend_from_slice(&[0u8; 124]);
    }
    v
}

/// A transmission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

/// Decodes a request header (the data of a write follows it on the wire).
pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Result<Request, Violation> {
    let magic = be32(b);
    if magic != REQUEST_MAGIC {
        return Err(Violation(format!(
            "a request must start with {REQUEST_MAGIC:#x}, got {magic:#x}"
        )));
    }
    Ok(Request {
        flags: be16(&b[4..]),
        kind: be16(&b[6..]),
        cookie: be64(&b[8..]),
        offset: be64(&b[16..]),
        len: be32(&b[24..]),
    })
}

/// A simple reply header (the data of a successful read follows it).
pub fn simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    r[4..8].copy_from_slice(&error.to_be_bytes());
    r[8..].copy_from_slice(&cookie.to_be_bytes());
    r
}

/// What the export allows, for judging requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub size: u64,
    pub writable: bool,
}

impl Limits {
    /// The transmission flags advertised for this export.
    pub fn transmission_flags(&self) -> u16 {
        // One process serves every connection from one cache and one overlay file: whatever
        // one connection wrote or flushed, every other sees.
        let base = TF_HAS_FLAGS | TF_CAN_MULTI_CONN;
        if self.writable {
            base | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES
        } else {
            base | TF_READ_ONLY
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    WriteZeroes,
    /// Trim and cache are hints: answered with success, nothing done.
    Ignore,
    Flush,
    Disconnect,
    /// Answer with this error; for a write, its data is skipped first.
    Fail(u32),
    /// A write whose data is too long to skip: drop the connection.
    Drop,
}

/// Judges a request against the export: bounds, permissions, flags, payload size.
pub fn judge(r: &Request, lim: &Limits) -> Action {
    let end = r.offset.checked_add(r.len as u64);
    let inside = end.is_some_and(|e| e <= lim.size);
    let known_flags = match r.kind {
        CMD_WRITE | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        // Some clients set FUA on every command: accept it where it is meaningless.
        _ => CMD_FLAG_FUA,
    };
    if r.kind == CMD_WRITE && r.len > MAX_PAYLOAD {
        return Action::Drop;
    }
    if r.flags & !known_flags != 0 {
        return Action::Fail(EINVAL);
    }
    match r.kind {
        CMD_DISC => Action::Disconnect,
        CMD_READ if r.len > MAX_PAYLOAD || !inside => Action::Fail(EINVAL),
        CMD_READ => Action::Read,
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM if !lim.writable => Action::Fail(EPERM),
        CMD_WRITE | CMD_WRITE_ZEROES if !inside => Action::Fail(ENOSPC),
        CMD_TRIM if !inside => Action::Fail(EINVAL),
        CMD_WRITE => Action::Write,
        CMD_WRITE_ZEROES => Action::WriteZeroes,
        CMD_TRIM => Action::Ignore,
        CMD_FLUSH => Action::Flush,
        CMD_CACHE if !inside => Action::Fail(EINVAL),
        CMD_CACHE => Action::Ignore,
        _ => Action::Fail(EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info_data(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn greeting_is_the_fixed_newstyle_one() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            parse_client_flags([0, 0, 0, 3]),
            Ok(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 0]),
            Ok(ClientFlags {
                fixed_newstyle: false,
                no_zeroes: false
            })
        );
        assert!(parse_client_flags([0, 0, 0, 4]).is_err());
        assert!(parse_client_flags([0x80, 0, 0, 1]).is_err());
    }

    #[test]
    fn option_headers() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(b"IHAVEOPT");
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        b[12..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(
            parse_option_header(&b),
            Ok(OptionHeader { option: 7, len: 10 })
        );
        b[0] = b'X';
        assert!(parse_option_header(&b).is_err());
    }

    #[test]
    fn info_and_go() {
        let d = info_data(b"disk", &[INFO_BLOCK_SIZE, INFO_NAME]);
        let r = InfoRequest {
            name: b"disk".to_vec(),
            requests: vec![INFO_BLOCK_SIZE, INFO_NAME],
        };
        assert!(r.wants_block_size());
        assert_eq!(parse_option(OPT_GO, &d), Opt::Go(r.clone()));
        assert_eq!(parse_option(OPT_INFO, &d), Opt::Info(r));
        let empty = info_data(b"", &[]);
        assert_eq!(
            parse_info_request(&empty),
            Ok(InfoRequest {
                name: vec![],
                requests: vec![]
            })
        );
        // A name running past the data, a count that disagrees, too short.
        let mut bad = info_data(b"disk", &[1]);
        bad[3] = 200;
        assert!(parse_info_request(&bad).is_err());
        let mut bad = info_data(b"disk", &[1, 2]);
        bad.pop();
        assert!(parse_info_request(&bad).is_err());
        assert!(parse_info_request(&[0, 0, 0, 0, 0]).is_err());
        assert!(matches!(
            parse_option(OPT_GO, &[1]),
            Opt::Invalid { option: OPT_GO, .. }
        ));
    }

    #[test]
    fn other_options() {
        assert_eq!(parse_option(OPT_ABORT, b"junk"), Opt::Abort);
        assert_eq!(parse_option(OPT_LIST, b""), Opt::List);
        assert!(matches!(parse_option(OPT_LIST, b"x"), Opt::Invalid { .. }));
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"a"),
            Opt::ExportName(b"a".to_vec())
        );
        assert_eq!(
            parse_option(OPT_STRUCTURED_REPLY, b""),
            Opt::Unsupported(OPT_STRUCTURED_REPLY)
        );
        assert_eq!(parse_option(OPT_STARTTLS, b""), Opt::Unsupported(5));
        assert_eq!(parse_option(99, b""), Opt::Unsupported(99));
    }

    #[test]
    fn replies_encode() {
        let r = option_reply(OPT_GO, REP_INFO, &info_export(1 << 30, 3));
        assert_eq!(&r[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        assert_eq!(be32(&r[8..]), OPT_GO);
        assert_eq!(be32(&r[12..]), REP_INFO);
        assert_eq!(be32(&r[16..]), 12);
        assert_eq!(be16(&r[20..]), INFO_EXPORT);
        assert_eq!(be64(&r[22..]), 1 << 30);
        assert_eq!(be16(&r[30..]), 3);
        assert_eq!(info_block_size(1, 4096, 1 << 25).len(), 14);
        assert_eq!(export_name_reply(5, 1, false).len(), 134);
        assert_eq!(export_name_reply(5, 1, true).len(), 10);
        let s = rep_server("a.lbi", "desc");
        assert_eq!(be32(&s), 5);
        assert_eq!(&s[4..], b"a.lbidesc");
        let h = simple_reply(EPERM, 0x1122);
        assert_eq!(be32(&h), SIMPLE_REPLY_MAGIC);
        assert_eq!(be32(&h[4..]), EPERM);
        assert_eq!(be64(&h[8..]), 0x1122);
    }

    fn req(kind: u16, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            flags,
            kind,
            cookie: 9,
            offset,
            len,
        }
    }

    #[test]
    fn requests_decode() {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&1u16.to_be_bytes());
        b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&77u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..].copy_from_slice(&512u32.to_be_bytes());
        assert_eq!(
            parse_request(&b),
            Ok(Request {
                flags: 1,
                kind: CMD_WRITE,
                cookie: 77,
                offset: 4096,
                len: 512
            })
        );
        b[0] = 0;
        assert!(parse_request(&b).is_err());
    }

    #[test]
    fn judging() {
        let ro = Limits {
            size: 1 << 20,
            writable: false,
        };
        let rw = Limits {
            size: 1 << 20,
            writable: true,
        };
        assert_eq!(judge(&req(CMD_READ, 0, 0, 4096), &ro), Action::Read);
        assert_eq!(judge(&req(CMD_READ, 0, 1 << 20, 0), &ro), Action::Read);
        assert_eq!(
            judge(&req(CMD_READ, 0, (1 << 20) - 1, 2), &ro),
            Action::Fail(EINVAL)
        );
        assert_eq!(
            judge(&req(CMD_READ, 0, u64::MAX, 2), &ro),
            Action::Fail(EINVAL)
        );
        assert_eq!(
            judge(&req(CMD_READ, CMD_FLAG_NO_HOLE, 0, 2), &ro),
            Action::Fail(EINVAL)
        );
        assert_eq!(judge(&req(CMD_WRITE, 0, 0, 512), &ro), Action::Fail(EPERM));
        assert_eq!(judge(&req(CMD_TRIM, 0, 0, 512), &ro), Action::Fail(EPERM));
        assert_eq!(
            judge(&req(CMD_WRITE_ZEROES, 0, 0, 512), &ro),
            Action::Fail(EPERM)
        );
        assert_eq!(judge(&req(CMD_WRITE, 0, 0, u32::MAX), &ro), Action::Drop);
        assert_eq!(judge(&req(CMD_WRITE, 1, 0, 512), &rw), Action::Write);
        assert_eq!(
            judge(&req(CMD_WRITE, 0, 1 << 20, 1), &rw),
            Action::Fail(ENOSPC)
        );
        assert_eq!(
            judge(&req(CMD_WRITE_ZEROES, 3, 0, 512), &rw),
            Action::WriteZeroes
        );
        assert_eq!(judge(&req(CMD_TRIM, 0, 0, 512), &rw), Action::Ignore);
        assert_eq!(judge(&req(CMD_FLUSH, 0, 0, 0), &rw), Action::Flush);
        assert_eq!(judge(&req(CMD_DISC, 0, 0, 0), &ro), Action::Disconnect);
        assert_eq!(judge(&req(CMD_CACHE, 0, 0, 512), &ro), Action::Ignore);
        assert_eq!(judge(&req(42, 0, 0, 0), &ro), Action::Fail(EINVAL));
        assert_ne!(ro.transmission_flags() & TF_READ_ONLY, 0);
        assert_eq!(rw.transmission_flags() & TF_READ_ONLY, 0);
        assert_ne!(rw.transmission_flags() & TF_SEND_FLUSH, 0);
    }

    proptest! {
        /// No input makes a decoder panic; what decodes re-encodes to the same bytes.
        #[test]
        fn decoders_take_any_bytes(
            b in proptest::collection::vec(any::<u8>(), 0..64),
            opt in any::<u32>(),
            size in any::<u64>(),
            w in any::<bool>(),
        ) {
            let _ = parse_option(opt, &b);
            let _ = parse_option(OPT_GO, &b);
            if let Ok(r) = parse_info_request(&b) {
                let mut d = (r.name.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(&r.name);
                d.extend_from_slice(&(r.requests.len() as u16).to_be_bytes());
                for q in &r.requests {
                    d.extend_from_slice(&q.to_be_bytes());
                }
                prop_assert_eq!(d, b.clone());
            }
            if b.len() >= REQUEST_LEN {
                let h: [u8; REQUEST_LEN] = b[..REQUEST_LEN].try_into().unwrap();
                if let Ok(r) = parse_request(&h) {
                    let a = judge(&r, &Limits { size, writable: w });
                    // Nothing outside the export is ever read or written.
                    if matches!(a, Action::Read | Action::Write | Action::WriteZeroes) {
                        prop_assert!(r.offset + r.len as u64 <= size);
                        prop_assert!(r.len <= MAX_PAYLOAD);
                    }
                    if !w {
                        prop_assert!(!matches!(a, Action::Write | Action::WriteZeroes));
                    }
                }
            }
            if b.len() >= OPTION_HEADER_LEN {
                let h: [u8; OPTION_HEADER_LEN] = b[..OPTION_HEADER_LEN].try_into().unwrap();
                let _ = parse_option_header(&h);
            }
            if b.len() >= 4 {
                let _ = parse_client_flags([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}
