//! Sessions driven with in-memory bytes: every handshake path, reads, writes refused and taken,
//! failing reads, and random bytes from a client (they never panic the server, and nothing
//! outside the disk is ever read or written).
use super::*;
use crate::error::{Error, Result};
use proptest::prelude::*;
use std::io::Cursor;
use std::sync::Mutex;

/// A disk in memory; reads of `bad` fail; any access outside it panics (the test fails).
struct MemDisk {
    data: Mutex<Vec<u8>>,
    writable: bool,
    bad: Option<u64>,
}

impl MemDisk {
    fn new(len: usize, writable: bool) -> MemDisk {
        MemDisk {
            data: Mutex::new((0..len).map(|i| (i % 253) as u8).collect()),
            writable,
            bad: None,
        }
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn read(
        &self,
        off: u64,
        len: u64,
        emit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::result::Result<(), ReadError> {
        let d = self.data.lock().unwrap();
        assert!(off + len <= d.len() as u64, "read outside the disk");
        if self.bad.is_some_and(|b| (off..off + len).contains(&b)) {
            return Err(ReadError::Disk(Error::corrupt("damaged chunk")));
        }
        // Two pieces, as a chunked disk would hand them.
        let (a, b) = d[off as usize..(off + len) as usize].split_at(len as usize / 2);
        emit(a).map_err(ReadError::Sink)?;
        emit(b).map_err(ReadError::Sink)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        assert!(self.writable, "a write reached a read-only disk");
        let mut d = self.data.lock().unwrap();
        assert!(
            off as usize + data.len() <= d.len(),
            "write outside the disk"
        );
        d[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

fn export() -> Export {
    Export {
        name: "pc.lbi".into(),
        description: "a test disk".into(),
    }
}

/// Client bytes.
#[derive(Default)]
struct Client(Vec<u8>);

impl Client {
    fn flags(mut self, f: u32) -> Self {
        self.0.extend_from_slice(&f.to_be_bytes());
        self
    }
    fn opt(mut self, opt: u32, data: &[u8]) -> Self {
        self.0.extend_from_slice(&IHAVEOPT.to_be_bytes());
        self.0.extend_from_slice(&opt.to_be_bytes());
        self.0.extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }
    fn info(self, opt: u32, name: &[u8], reqs: &[u16]) -> Self {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        self.opt(opt, &d)
    }
    fn req(mut self, kind: u16, flags: u16, cookie: u64, off: u64, len: u32) -> Self {
        self.0.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&flags.to_be_bytes());
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(&cookie.to_be_bytes());
        self.0.extend_from_slice(&off.to_be_bytes());
        self.0.extend_from_slice(&len.to_be_bytes());
        self
    }
    fn data(mut self, d: &[u8]) -> Self {
        self.0.extend_from_slice(d);
        self
    }
    fn go(self) -> Self {
        self.flags(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
            .info(OPT_GO, b"", &[INFO_BLOCK_SIZE])
    }
}

struct Outcome {
    end: Res<End>,
    out: Vec<u8>,
    entered: bool,
    log: Vec<String>,
}

fn session(disk: &dyn Disk, c: Client) -> Outcome {
    let mut r = Cursor::new(c.0);
    let mut out = Vec::new();
    let mut entered = false;
    let log = Mutex::new(Vec::new());
    let end = run(
        &mut r,
        &mut out,
        disk,
        &export(),
        &mut || entered = true,
        &|l| log.lock().unwrap().push(l.to_string()),
    );
    Outcome {
        end,
        out,
        entered,
        log: log.into_inner().unwrap(),
    }
}

/// What a successful GO/INFO said: size, transmission flags, block sizes, other info types.
type Info = (u64, u16, Option<(u32, u32, u32)>, Vec<u16>);

/// Server bytes, read back.
struct Server<'a>(&'a [u8]);

impl Server<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn greeting(&mut self) {
        assert_eq!(self.take(18), &greeting());
    }
    /// (option, reply type, data)
    fn opt_reply(&mut self) -> (u32, u32, Vec<u8>) {
        assert_eq!(self.u64(), OPT_REPLY_MAGIC);
        let (o, t, n) = (self.u32(), self.u32(), self.u32());
        (o, t, self.take(n as usize).to_vec())
    }
    /// The replies to a successful GO/INFO.
    fn info_ack(&mut self, opt: u32) -> Info {
        let (mut size, mut flags, mut bs, mut other) = (None, 0, None, vec![]);
        loop {
            let (o, t, d) = self.opt_reply();
            assert_eq!(o, opt);
            if t == REP_ACK {
                return (
                    size.expect("NBD_INFO_EXPORT before the ACK"),
                    flags,
                    bs,
                    other,
                );
            }
            assert_eq!(t, REP_INFO);
            let mut s = Server(&d);
            match s.u16() {
                INFO_EXPORT => {
                    size = Some(s.u64());
                    flags = s.u16();
                }
                INFO_BLOCK_SIZE => bs = Some((s.u32(), s.u32(), s.u32())),
                k => other.push(k),
            }
        }
    }
    /// (error, cookie)
    fn reply(&mut self) -> (u32, u64) {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC);
        (self.u32(), self.u64())
    }
    fn done(&self) {
        assert!(self.0.is_empty(), "{} more bytes", self.0.len());
    }
}

fn pattern(off: usize, len: usize) -> Vec<u8> {
    (off..off + len).map(|i| (i % 253) as u8).collect()
}

#[test]
fn go_read_refused_write_disconnect() {
    let d = MemDisk::new(1 << 16, false);
    let c = Client::default()
        .go()
        .req(CMD_READ, 0, 7, 100, 1000)
        .req(CMD_WRITE, 0, 8, 0, 4)
        .data(b"abcd")
        .req(CMD_TRIM, 0, 9, 0, 512)
        .req(CMD_READ, 0, 10, 65535, 2)
        .req(CMD_FLUSH, 0, 11, 0, 0)
        .req(CMD_DISC, 0, 12, 0, 0);
    let o = session(&d, c);
    assert_eq!(o.end.unwrap(), End::Disconnected);
    assert!(o.entered);
    let mut s = Server(&o.out);
    s.greeting();
    let (size, flags, bs, _) = s.info_ack(OPT_GO);
    assert_eq!(size, 1 << 16);
    assert_ne!(flags & TF_READ_ONLY, 0);
    assert_eq!(flags & TF_SEND_FLUSH, 0);
    assert_eq!(bs, Some((1, 4096, 32 << 20)));
    assert_eq!(s.reply(), (0, 7));
    assert_eq!(s.take(1000), &pattern(100, 1000)[..]);
    assert_eq!(s.reply(), (EPERM, 8));
    assert_eq!(s.reply(), (EPERM, 9));
    assert_eq!(s.reply(), (EINVAL, 10));
    // Flush on a read-only export: nothing to do, answered.
    assert_eq!(s.reply(), (0, 11));
    s.done();
    assert_eq!(&d.data.lock().unwrap()[..4], &pattern(0, 4)[..]);
}

#[test]
fn writes_zeroes_and_flush_on_a_writable_disk() {
    let d = MemDisk::new(1 << 16, true);
    let c = Client::default()
        .go()
        .req(CMD_WRITE, CMD_FLAG_FUA, 1, 10, 4)
        .data(b"WXYZ")
        .req(CMD_WRITE_ZEROES, 0, 2, 20, 8)
        .req(CMD_READ, 0, 3, 8, 24)
        .req(CMD_WRITE, 0, 4, (1 << 16) - 2, 4)
        .data(b"over")
        .req(CMD_FLUSH, 0, 5, 0, 0);
    let o = session(&d, c);
    assert_eq!(o.end.unwrap(), End::Closed);
    let mut s = Server(&o.out);
    s.greeting();
    let (_, flags, _, _) = s.info_ack(OPT_GO);
    assert_eq!(flags & TF_READ_ONLY, 0);
    assert_ne!(flags & TF_SEND_FLUSH, 0);
    assert_eq!(s.reply(), (0, 1));
    assert_eq!(s.reply(), (0, 2));
    assert_eq!(s.reply(), (0, 3));
    let mut want = pattern(8, 24);
    want[2..6].copy_from_slice(b"WXYZ");
    want[12..20].fill(0);
    assert_eq!(s.take(24), &want[..]);
    // Past the end: refused, its data skipped, the session goes on.
    assert_eq!(s.reply(), (ENOSPC, 4));
    assert_eq!(s.reply(), (0, 5));
    s.done();
}

#[test]
fn export_name_info_list_and_unknown_options() {
    let d = MemDisk::new(4096, false);
    let c = Client::default()
        .flags(CFLAG_FIXED_NEWSTYLE)
        .opt(OPT_LIST, b"")
        .opt(OPT_STRUCTURED_REPLY, b"")
        .opt(OPT_LIST, b"junk")
        .info(OPT_INFO, b"nope", &[])
        .info(OPT_INFO, b"pc.lbi", &[INFO_NAME, INFO_DESCRIPTION])
        .opt(77, b"whatever")
        .opt(OPT_EXPORT_NAME, b"pc.lbi")
        .req(CMD_READ, 0, 1, 0, 16);
    let o = session(&d, c);
    assert_eq!(o.end.unwrap(), End::Closed);
    let mut s = Server(&o.out);
    s.greeting();
    let (opt, t, data) = s.opt_reply();
    assert_eq!((opt, t), (OPT_LIST, REP_SERVER));
    assert_eq!(&data[4..10], b"pc.lbi");
    assert_eq!(s.opt_reply().1, REP_ACK);
    assert_eq!(s.opt_reply().1, REP_ERR_UNSUP);
    assert_eq!(s.opt_reply().1, REP_ERR_INVALID);
    assert_eq!(s.opt_reply().1, REP_ERR_UNKNOWN);
    let (size, _, _, other) = s.info_ack(OPT_INFO);
    assert_eq!(size, 4096);
    assert_eq!(other, [INFO_NAME, INFO_DESCRIPTION]);
    assert_eq!(s.opt_reply(), (77, REP_ERR_UNSUP, vec![]));
    // EXPORT_NAME without NO_ZEROES: size, flags, 124 zeros.
    assert_eq!(s.u64(), 4096);
    s.u16();
    assert_eq!(s.take(124), &[0u8; 124][..]);
    assert_eq!(s.reply(), (0, 1));
    assert_eq!(s.take(16), &pattern(0, 16)[..]);
    s.done();
}

#[test]
fn abort_bad_magic_and_unknown_export_name() {
    let d = MemDisk::new(4096, false);
    let o = session(&d, Client::default().flags(1).opt(OPT_ABORT, b""));
    assert_eq!(o.end.unwrap(), End::Aborted);
    assert!(!o.entered);
    let mut s = Server(&o.out);
    s.greeting();
    assert_eq!(s.opt_reply(), (OPT_ABORT, REP_ACK, vec![]));
    let o = session(&d, Client::default().flags(8));
    assert!(matches!(o.end, Err(Dropped::Protocol(_))));
    let o = session(&d, Client::default().flags(1).data(b"NOTMAGIC........"));
    assert!(matches!(o.end, Err(Dropped::Protocol(_))));
    let o = session(&d, Client::default().flags(1).opt(OPT_EXPORT_NAME, b"x"));
    assert!(matches!(o.end, Err(Dropped::Protocol(_))));
    // Mid-message end of input.
    let o = session(
        &d,
        Client::default().go().data(&REQUEST_MAGIC.to_be_bytes()),
    );
    assert!(matches!(o.end, Err(Dropped::Io(_))));
    // A huge option is skipped with TOO_BIG, then the session goes on.
    let big = vec![0u8; MAX_OPTION_DATA as usize + 1];
    let o = session(
        &d,
        Client::default().flags(1).opt(99, &big).opt(OPT_ABORT, b""),
    );
    assert_eq!(o.end.unwrap(), End::Aborted);
    let mut s = Server(&o.out);
    s.greeting();
    assert_eq!(s.opt_reply().1, REP_ERR_TOO_BIG);
}

#[test]
fn a_failing_read_is_an_error_reply_and_the_session_goes_on() {
    let mut d = MemDisk::new(4096, false);
    d.bad = Some(2000);
    let c = Client::default()
        .go()
        .req(CMD_READ, 0, 1, 1024, 2048)
        .req(CMD_READ, 0, 2, 0, 8);
    let o = session(&d, c);
    assert_eq!(o.end.unwrap(), End::Closed);
    let mut s = Server(&o.out);
    s.greeting();
    s.info_ack(OPT_GO);
    assert_eq!(s.reply(), (EIO, 1));
    assert_eq!(s.reply(), (0, 2));
    assert_eq!(s.take(8), &pattern(0, 8)[..]);
    s.done();
    assert_eq!(o.log.len(), 1, "{:?}", o.log);
}

fn arb_request() -> impl Strategy<Value = (u16, u16, u64, u64, u32, Vec<u8>)> {
    (
        prop_oneof![0u16..8, any::<u16>()],
        prop_oneof![Just(0u16), 0u16..4, any::<u16>()],
        any::<u64>(),
        prop_oneof![0u64..5000, any::<u64>()],
        prop_oneof![0u32..5000, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Random bytes as a whole client, or after a valid handshake: the session ends with a
    /// value, never a panic, and touches nothing outside the disk (MemDisk asserts).
    #[test]
    fn random_clients_never_crash_the_server(
        junk in proptest::collection::vec(any::<u8>(), 0..300),
        after_go in any::<bool>(),
        writable in any::<bool>(),
    ) {
        let d = MemDisk::new(4096, writable);
        let c = if after_go { Client::default().go().data(&junk) } else { Client(junk) };
        let _ = session(&d, c).end;
    }

    /// Well-formed requests with random fields (and random trailing data).
    #[test]
    fn random_requests_are_answered_or_dropped(
        reqs in proptest::collection::vec(arb_request(), 0..8),
        writable in any::<bool>(),
    ) {
        let d = MemDisk::new(4096, writable);
        let mut c = Client::default().go();
        for (kind, flags, cookie, off, len, data) in reqs {
            c = c.req(kind, flags, cookie, off, len).data(&data);
        }
        let before = d.data.lock().unwrap().clone();
        let o = session(&d, c);
        if !writable {
            prop_assert_eq!(&*d.data.lock().unwrap(), &before);
        }
        drop(o);
    }
}
