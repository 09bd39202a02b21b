//! The rescue run: a reader thread walks the phases (copy with growing skips, copy the skipped
//! areas, trim, scrape, retry) over the extent map and hands aligned buffers to a writer thread
//! through a bounded queue; the writer writes them (zeros at unreadable sectors), hashes them for
//! verification and updates the committed map. The calling thread only reports progress, saves
//! the mapfile (after fsyncing the target) and watches for cancellation, so a read stalled in
//! the kernel never freezes it.
use super::hash::Hashes;
use super::map::{ExtentMap, Status};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, BlockSource, Device};
use crate::jobs::{Cancel, Progress, ProgressSink, RateMeter};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Where rescued data goes. Pieces arrive in any order, each sector-aligned.
pub trait RescueTarget: Send + Sync {
    /// Writes `buf` (memory aligned to `IO_ALIGN`) at byte `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<()>;
}

impl RescueTarget for Device {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        // O_DIRECT needs offset and length aligned: the device's logical sector on a block
        // device, 4 KiB (the largest common requirement) on a file. Otherwise read-modify-write.
        let align = if !self.is_direct() {
            1
        } else if self.is_block_device() {
            self.logical_block_size().max(512) as u64
        } else {
            4096
        };
        if off.is_multiple_of(align) && (buf.len() as u64).is_multiple_of(align) {
            return self.write_all_at(buf, off);
        }
        let a = off / align * align;
        let e = ((off + buf.len() as u64).div_ceil(align) * align)
            .min(self.size().max(off + buf.len() as u64));
        let mut tmp = AlignedBuf::new((e - a) as usize);
        let mut got = 0usize;
        while got < tmp.len() {
            match self.read_at(&mut tmp[got..], a + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) => {
                    return Err(
                        Error::io("read (to merge a partial block) from", self.path(), err)
                            .at_offset(a),
                    )
                }
            }
        }
        let s = (off - a) as usize;
        tmp[s..s + buf.len()].copy_from_slice(buf);
        self.write_all_at(&tmp, a)
    }
    fn sync(&self) -> Result<()> {
        Device::sync(self)
    }
}

/// An in-memory target (tests, and consumers that want the bytes).
pub struct MemTarget(pub Mutex<Vec<u8>>);

impl MemTarget {
    pub fn new(size: usize, fill: u8) -> MemTarget {
        MemTarget(Mutex::new(vec![fill; size]))
    }
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RescueTarget for MemTarget {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let o = off as usize;
        if o + buf.len() > v.len() {
            return Err(Error::invalid("write past the end of the memory target").at_offset(off));
        }
        v[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// Tuning of a rescue run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Read size on good areas (bytes, multiple of 4096).
    pub cluster: usize,
    /// Buffers in flight between reader and writer (memory = cluster x buffers).
    pub buffers: usize,
    /// First skip after a read error; doubles on each further error, resets on good data.
    pub min_skip: u64,
    /// Largest skip (0: 1% of the size, at least min_skip, at most 1 GiB).
    pub max_skip: u64,
    /// Retry passes over bad sectors.
    pub retries: u32,
    /// Take hashes for a verify pass.
    pub hash: bool,
    /// Save the map here (atomically, after fsyncing the target) every `save_every` and at the end.
    pub mapfile: Option<PathBuf>,
    pub save_every: Duration,
    /// The command line recorded in the mapfile.
    pub command_line: String,
    /// Job name in progress snapshots.
    pub job: String,
    /// Progress snapshot interval.
    pub tick: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster: 1 << 20,
            buffers: 8,
            min_skip: 64 << 10,
            max_skip: 0,
            retries: 1,
            hash: true,
            mapfile: None,
            save_every: Duration::from_secs(30),
            command_line: String::new(),
            job: "clone".into(),
            tick: Duration::from_millis(200),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The committed map (what is on the target).
    pub map: ExtentMap,
    pub hashes: Option<Hashes>,
    /// The user cancelled; the map (saved when asked) lets a later run resume.
    pub cancelled: bool,
    pub duration: Duration,
}

/// The phase name of ddrescue's current-status character.
pub fn phase_name(c: char) -> &'static str {
    match c {
        '?' => "copying",
        '*' => "trimming",
        '/' => "scraping",
        '-' => "retrying",
        _ => "finished",
    }
}

/// Errors that mean "this area of the medium is unreadable" rather than "the job cannot go on".
pub fn is_media_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO)
            | Some(libc::ENODATA)
            | Some(libc::EBADMSG)
            | Some(libc::EILSEQ)
            | Some(libc::EREMOTEIO)
            | Some(libc::ETIMEDOUT)
    )
}

enum Msg {
    Data {
        off: u64,
        buf: AlignedBuf,
        len: usize,
        replaces_zeros: bool,
    },
    Mark {
        off: u64,
        len: u64,
        status: Status,
    },
    Phase(char),
    Fatal(Error),
    Done,
}

struct Shared {
    map: Mutex<ExtentMap>,
}

/// Reads `src` onto `dst` as described in the module documentation, starting from `map`
/// (a fresh map, or one loaded from a mapfile to resume). The map's size is the copy length.
pub fn run(
    src: Arc<dyn BlockSource>,
    dst: Arc<dyn RescueTarget>,
    map: ExtentMap,
    opts: &Options,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<Outcome> {
    let start = Instant::now();
    let size = map.size();
    if size > src.size() {
        return Err(Error::invalid(format!(
            "the copy length {size} is larger than the source ({})",
            src.size()
        )));
    }
    let lbs = src.logical_block_size().max(512) as u64;
    let cluster = (opts.cluster.max(lbs as usize) / lbs as usize * lbs as usize).max(lbs as usize);
    let max_skip = if opts.max_skip > 0 {
        opts.max_skip
    } else {
        (size / 100).clamp(opts.min_skip, 1 << 30)
    };
    let shared = Arc::new(Shared {
        map: Mutex::new(map.clone()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Msg>(opts.buffers.max(2));
    let (pool_tx, pool_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..opts.buffers.max(2) {
        let _ = pool_tx.send(AlignedBuf::new(cluster));
    }
    let mut reader = Reader {
        src: src.clone(),
        lbs,
        size,
        cluster: cluster as u64,
        min_skip: (opts.min_skip / lbs * lbs).max(lbs),
        max_skip: (max_skip / lbs * lbs).max(lbs),
        retries: opts.retries,
        plan: map,
        tx,
        pool: pool_rx,
        spare: vec![],
        stop: stop.clone(),
    };
    let reader_h = thread::Builder::new()
        .name("rescue-reader".into())
        .spawn(move || reader.main())
        .map_err(|e| Error::os("start the rescue reader thread", e))?;
    let w_shared = shared.clone();
    let w_dst = dst.clone();
    let w_stop = stop.clone();
    let hashes = opts.hash.then(|| Hashes::new(size, lbs as u32));
    let writer_h = thread::Builder::new()
        .name("rescue-writer".into())
        .spawn(move || writer_main(rx, w_dst, w_shared, pool_tx, hashes, w_stop, cluster))
        .map_err(|e| Error::os("start the rescue writer thread", e))?;

    let mut meter = RateMeter::new(Duration::from_secs(10));
    let mut last_save = Instant::now();
    let mut cancelled = false;
    let report = |meter: &mut RateMeter| {
        let m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        snapshot(&m, &opts.job, meter)
    };
    while !writer_h.is_finished() {
        if cancel.is_cancelled() && !cancelled {
            cancelled = true;
            stop.store(true, Ordering::SeqCst);
        }
        sink.progress(&report(&mut meter));
        if let Some(mf) = &opts.mapfile {
            if last_save.elapsed() >= opts.save_every {
                let m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
                dst.sync()?;
                m.save(mf, &opts.command_line)?;
                last_save = Instant::now();
            }
        }
        thread::sleep(opts.tick);
    }
    let wres = writer_h
        .join()
        .map_err(|_| Error::new(crate::error::ErrorKind::Io, "the writer thread panicked"))?;
    stop.store(true, Ordering::SeqCst);
    // A reader stuck in a stalled read is left behind; it exits when the read returns.
    if reader_h.is_finished() {
        let _ = reader_h.join();
    }
    let mut final_map = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Durable data first, then the map that describes it.
    let sync_res = dst.sync();
    if final_map.is_complete() {
        final_map.current_phase = '+';
    }
    if let Some(mf) = &opts.mapfile {
        if sync_res.is_ok() {
            final_map.save(mf, &opts.command_line)?;
        }
    }
    let hashes = wres?;
    sync_res?;
    let mut p = snapshot(&final_map, &opts.job, &mut meter);
    p.rate_bytes_per_sec = (size as f64 / start.elapsed().as_secs_f64().max(1e-6)) as u64;
    sink.progress(&p);
    Ok(Outcome {
        map: final_map,
        hashes,
        cancelled: cancelled || cancel.is_cancelled(),
        duration: start.elapsed(),
    })
}

/// A progress snapshot of a map.
pub fn snapshot(m: &ExtentMap, job: &str, meter: &mut RateMeter) -> Progress {
    let t = m.totals();
    let mut p = Progress::new(job, phase_name(m.current_phase), m.size());
    p.done_bytes = t.finished + t.bad;
    p.bad_bytes = t.error_bytes();
    let (rate, eta) = meter.update(Instant::now(), p.done_bytes, p.total_bytes);
    p.rate_bytes_per_sec = rate;
    p.eta_secs = eta;
    p.map = Some(m.coarse(256));
    p
}

fn writer_main(
    rx: Receiver<Msg>,
    dst: Arc<dyn RescueTarget>,
    shared: Arc<Shared>,
    pool: mpsc::Sender<AlignedBuf>,
    mut hashes: Option<Hashes>,
    stop: Arc<AtomicBool>,
    cluster: usize,
) -> Result<Option<Hashes>> {
    let zeros = AlignedBuf::new(cluster);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Data {
                off,
                buf,
                len,
                replaces_zeros,
            } => {
                dst.write_at(&buf[..len], off)?;
                if let Some(h) = hashes.as_mut() {
                    if replaces_zeros {
                        h.replace_zeros(off, &buf[..len]);
                    } else {
                        h.add(off, &buf[..len]);
                    }
                }
                {
                    let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner());
                    m.set(off, len as u64, Status::Finished);
                    m.current_pos = off;
                }
                let _ = pool.send(buf);
            }
            Msg::Mark { off, len, status } => {
                if status == Status::Bad {
                    let mut p = off;
                    while p < off + len {
                        let n = (cluster as u64).min(off + len - p) as usize;
                        dst.write_at(&zeros[..n], p)?;
                        p += n as u64;
                    }
                    if let Some(h) = hashes.as_mut() {
                        h.add_zeros(off, len);
                    }
                }
                let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner());
                m.set(off, len, status);
                m.current_pos = off;
            }
            Msg::Phase(c) => {
                shared
                    .map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .current_phase = c
            }
            Msg::Fatal(e) => return Err(e),
            Msg::Done => break,
        }
    }
    Ok(hashes)
}

/// Why the reader stopped early.
enum Halt {
    /// Cancelled, or the writer went away.
    Stop,
    Fatal(Error),
}

struct Reader {
    src: Arc<dyn BlockSource>,
    lbs: u64,
    size: u64,
    cluster: u64,
    min_skip: u64,
    max_skip: u64,
    retries: u32,
    plan: ExtentMap,
    tx: SyncSender<Msg>,
    pool: Receiver<AlignedBuf>,
    spare: Vec<AlignedBuf>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn main(&mut self) {
        match self.phases() {
            Ok(()) => {
                let _ = self.tx.send(Msg::Done);
            }
            Err(Halt::Fatal(e)) => {
                let _ = self.tx.send(Msg::Fatal(e));
            }
            Err(Halt::Stop) => {}
        }
    }

    fn send(&self, m: Msg) -> Result<(), Halt> {
        self.tx.send(m).map_err(|_| Halt::Stop)
    }

    fn check(&self) -> Result<(), Halt> {
        if self.stop.load(Ordering::Relaxed) {
            Err(Halt::Stop)
        } else {
            Ok(())
        }
    }

    fn mark(&mut self, off: u64, len: u64, status: Status) -> Result<(), Halt> {
        if len == 0 {
            return Ok(());
        }
        self.plan.set(off, len, status);
        self.send(Msg::Mark { off, len, status })
    }

    fn phase(&mut self, c: char) -> Result<(), Halt> {
        self.plan.current_phase = c;
        self.send(Msg::Phase(c))
    }

    fn buffer(&mut self) -> Result<AlignedBuf, Halt> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        self.pool.recv().map_err(|_| Halt::Stop)
    }

    /// Reads `[off, off+len)`; sends what was read. Returns how many bytes from `off` were good
    /// (== len on success, less when a read failed after a good part, 0 when the first failed).
    fn try_range(&mut self, off: u64, len: u64, replaces_zeros: bool) -> Result<u64, Halt> {
        let mut got = 0u64;
        while got < len {
            self.check()?;
            let mut buf = self.buffer()?;
            let want = (len - got).min(buf.capacity() as u64) as usize;
            buf.set_len(want);
            let pos = off + got;
            // Reads are whole sectors; only the very end of an odd-sized source is shorter.
            let res = self.src.read_at(&mut buf[..want], pos);
            match res {
                Ok(0) => {
                    self.spare.push(buf);
                    return Err(Halt::Fatal(Error::corrupt(format!(
                        "{} ended at byte {pos} but reported a size of {} bytes",
                        self.src.name(),
                        self.src.size()
                    ))));
                }
                Ok(n) => {
                    let n = if (n as u64) < (len - got) && pos + (n as u64) < self.size {
                        // A short read in the middle: keep whole sectors only.
                        (n as u64 / self.lbs * self.lbs) as usize
                    } else {
                        n
                    };
                    if n == 0 {
                        self.spare.push(buf);
                        return Ok(got);
                    }
                    self.plan.set(pos, n as u64, Status::Finished);
                    self.send(Msg::Data {
                        off: pos,
                        buf,
                        len: n,
                        replaces_zeros,
                    })?;
                    got += n as u64;
                }
                Err(e) if is_media_error(&e) => {
                    self.spare.push(buf);
                    return Ok(got);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.spare.push(buf);
                }
                Err(e) => {
                    self.spare.push(buf);
                    return Err(Halt::Fatal(
                        Error::io("read", self.src.name(), e).at_offset(pos),
                    ));
                }
            }
        }
        Ok(got)
    }

    fn phases(&mut self) -> Result<(), Halt> {
        self.phase('?')?;
        self.copy(true)?;
        self.copy(false)?;
        self.phase('*')?;
        self.trim()?;
        self.phase('/')?;
        self.scrape()?;
        if self.retries > 0 && self.plan.next_with(Status::Bad, 0).is_some() {
            self.phase('-')?;
            for _ in 0..self.retries {
                self.retry()?;
            }
        }
        self.phase('+')?;
        Ok(())
    }

    /// Copy pass over untried areas, in cluster-aligned reads. With `skipping`, a failed read
    /// is followed by a skip (left untried for the next pass) that doubles on every further
    /// error and resets on good data.
    fn copy(&mut self, skipping: bool) -> Result<(), Halt> {
        let mut p = 0;
        let mut skip = self.min_skip;
        while let Some((a, l)) = self.plan.next_with(Status::Untried, p) {
            let end = a + l;
            let mut q = a;
            while q < end {
                self.check()?;
                let len = end.min((q / self.cluster + 1) * self.cluster) - q;
                let good = self.try_range(q, len, false)?;
                if good == len {
                    q += len;
                    skip = self.min_skip;
                    continue;
                }
                if good > 0 {
                    skip = self.min_skip;
                }
                let bad_at = q + good;
                let bad_len = len - good;
                self.mark(bad_at, bad_len, Status::NonTrimmed)?;
                q = bad_at + bad_len;
                if skipping {
                    q = (q + skip).min(end);
                    skip = (skip * 2).min(self.max_skip);
                }
            }
            p = end;
        }
        Ok(())
    }

    fn sector_len(&self, pos: u64, end: u64) -> u64 {
        self.lbs.min(end - pos)
    }

    /// Trims each non-trimmed area: sector by sector from its start until a read fails, then
    /// from its end backwards until a read fails; those failing sectors are bad, the rest
    /// non-scraped.
    fn trim(&mut self) -> Result<(), Halt> {
        let mut p = 0;
        while let Some((a, l)) = self.plan.next_with(Status::NonTrimmed, p) {
            let end = a + l;
            let mut lo = a;
            while lo < end {
                let n = self.sector_len(lo, end);
                let good = self.try_range(lo, n, false)?;
                if good < n {
                    self.mark(lo + good, n - good, Status::Bad)?;
                    lo += n;
                    break;
                }
                lo += n;
            }
            let mut hi = end;
            while hi > lo {
                self.check()?;
                let rem = (hi - a) % self.lbs;
                let s = if rem != 0 { hi - rem } else { hi - self.lbs }.max(lo);
                let n = hi - s;
                let good = self.try_range(s, n, false)?;
                hi = s;
                if good < n {
                    self.mark(s + good, n - good, Status::Bad)?;
                    break;
                }
            }
            self.mark(lo, hi - lo, Status::NonScraped)?;
            p = end;
        }
        Ok(())
    }

    /// Reads every non-scraped sector once; failures are bad sectors.
    fn scrape(&mut self) -> Result<(), Halt> {
        self.sector_pass(Status::NonScraped, false)
    }

    /// One more read of every bad sector; recovered ones replace the zeros written for them.
    fn retry(&mut self) -> Result<(), Halt> {
        self.sector_pass(Status::Bad, true)
    }

    fn sector_pass(&mut self, status: Status, retry: bool) -> Result<(), Halt> {
        let mut p = 0;
        while let Some((a, l)) = self.plan.next_with(status, p) {
            let end = a + l;
            let mut s = a;
            while s < end {
                let n = self.sector_len(s, end);
                let good = self.try_range(s, n, retry)?;
                if good < n && !retry {
                    self.mark(s + good, n - good, Status::Bad)?;
                }
                s += n;
            }
            p = end;
        }
        Ok(())
    }
}

/// A generic rescue read for sequential consumers (e.g. an image being created): fills `buf`
/// from `off`; when the read fails with a media error it re-reads sector by sector, leaves
/// zeros in unreadable sectors and returns their `[start, len]` ranges (merged). Other errors
/// are returned. `buf` must be `IO_ALIGN`-aligned and `off` sector aligned.
pub fn read_tolerant(src: &dyn BlockSource, off: u64, buf: &mut [u8]) -> Result<Vec<(u64, u64)>> {
    let len = buf.len();
    let mut bad: Vec<(u64, u64)> = Vec::new();
    match read_full(src, off, buf) {
        Ok(()) => return Ok(bad),
        Err(e) if is_media_error(&e) => {}
        Err(e) => return Err(Error::io("read", src.name(), e).at_offset(off)),
    }
    let lbs = src.logical_block_size().max(512) as usize;
    let mut o = 0;
    while o < len {
        let n = lbs.min(len - o);
        let pos = off + o as u64;
        match read_full(src, pos, &mut buf[o..o + n]) {
            Ok(()) => {}
            Err(e) if is_media_error(&e) => {
                buf[o..o + n].fill(0);
                match bad.last_mut() {
                    Some(b) if b.0 + b.1 == pos => b.1 += n as u64,
                    _ => bad.push((pos, n as u64)),
                }
            }
            Err(e) => return Err(Error::io("read", src.name(), e).at_offset(pos)),
        }
        o += n;
    }
    Ok(bad)
}

fn read_full(src: &dyn BlockSource, off: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match src.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source ended early",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
