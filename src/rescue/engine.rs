//! The rescue run: a reader thread walks the phases (`phases`: copy with growing skips, delimit
//! the skipped areas, sweep, trim, scrape, retry) over the extent map and hands aligned buffers
//! to a writer thread
//! through a bounded queue; the writer writes them (zeros at unreadable sectors), hashes them for
//! verification and updates the committed map. The calling thread only reports progress, saves
//! the mapfile (after fsyncing the target) and watches for cancellation, so a read stalled in
//! the kernel never freezes it.
use super::hash::Hashes;
use super::map::{ExtentMap, Status};
pub use super::phases::ResumePoint;
use super::phases::{Geometry, Reader, Stats};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, BlockSource, Device};
use crate::jobs::{Cancel, Progress, ProgressSink, RateMeter};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Where rescued data goes. Pieces arrive in any order, each sector-aligned.
pub trait RescueTarget: Send + Sync {
    /// Writes `buf` (memory aligned to `IO_ALIGN`) at byte `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()>;
    /// Writes the first `len` bytes of `buf` at byte `off`, like [`write_at`](Self::write_at),
    /// but may keep `buf` and give back another buffer of the same capacity for the reader's
    /// next read (an image being created takes a whole chunk's read as the chunk's buffer
    /// instead of copying it). Default: `write_at`, and `buf` comes back.
    fn write_owned(&self, buf: AlignedBuf, len: usize, off: u64) -> Result<AlignedBuf> {
        self.write_at(&buf[..len], off)?;
        Ok(buf)
    }
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<()>;
    /// `[off, off+len)` is unreadable (for now: a retry may still deliver it). A disk target
    /// gets zeros there (`zeros` is an aligned buffer of zeros, at least one cluster long); a
    /// target that keeps its own record of unreadable areas (an image) may do nothing.
    fn write_bad(&self, off: u64, len: u64, zeros: &[u8]) -> Result<()> {
        let mut p = off;
        while p < off + len {
            let n = (zeros.len() as u64).min(off + len - p) as usize;
            self.write_at(&zeros[..n], p)?;
            p += n as u64;
        }
        Ok(())
    }
    /// A checkpoint of the run (only with [`Options::checkpoints`]): everything before it has
    /// been handed to the target, `map` is the map of that moment, and a run started from
    /// `map` at `at` reads exactly what this one reads from here on. Default: nothing.
    fn checkpoint(&self, _map: &ExtentMap, _at: ResumePoint) -> Result<()> {
        Ok(())
    }
    /// The run enters `phase` (see [`phase_name`]), pass `pass`: everything read before it has
    /// been handed to the target. Default: nothing.
    fn phase(&self, _phase: char, _pass: u32) {}
    /// The copy phase is over and trimming, scraping or retrying begins (called once, with
    /// verification hashes): everything read so far has been written, `map` is the map of that moment
    /// and `hashes` the verification hashes; the chunks [`Hashes::settled`] names keep their
    /// bytes and hashes to the end of the run, so they may be verified while it trims, scrapes
    /// and retries. Default: nothing.
    fn copy_done(&self, _map: &ExtentMap, _hashes: &Hashes) {}
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
    /// Read size near errors (ddrescue's cluster): a failed read of this size is marked
    /// non-trimmed as a whole. At most `cluster`.
    pub small: usize,
    /// Unit that locates the error inside a failed `cluster`-sized read. At most `small`.
    pub probe: usize,
    /// Buffers in flight between reader and writer (memory = cluster x buffers).
    pub buffers: usize,
    /// First skip after a read error; doubles on each further error, resets on good data
    /// (0: ddrescue's default, 1/100000 of the size, at least 64 KiB, in 64 KiB steps).
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
    /// The rescue domain (ddrescue's `--domain-mapfile`): `[start, len]` byte ranges to
    /// rescue; nothing outside them is read or written. Untried areas outside become
    /// [`Status::Free`] in the map (other statuses there are left as they are), free areas
    /// inside become untried, and the verify hashes cover exactly the domain. `None`: the
    /// whole map.
    pub domain: Option<Vec<(u64, u64)>>,
    /// Checkpoints (see [`RescueTarget::checkpoint`]) about every `save_every`, taken where the
    /// reader's state is only the map and a [`ResumePoint`]; the mapfile is then saved at
    /// checkpoints only (so it always describes what the target has). A zero `save_every`
    /// takes one at every such point: where they fall then depends on the reads, not the clock.
    pub checkpoints: bool,
    /// Start at this checkpoint of an earlier run (with the map of that moment).
    pub resume: Option<ResumePoint>,
    /// With `checkpoints`: set (to true) by the caller to ask for a checkpoint at the reader's
    /// next calm point, beside those `save_every` asks for (image create sets it when a new
    /// encrypted image's key slot is ready: its first journal need not wait for the next
    /// timed one). `None`: only `save_every`.
    pub checkpoint_request: Option<Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster: 1 << 20,
            small: 64 << 10,
            probe: 16 << 10,
            buffers: 8,
            min_skip: 0,
            max_skip: 0,
            retries: 1,
            hash: true,
            mapfile: None,
            save_every: Duration::from_secs(30),
            command_line: String::new(),
            job: "clone".into(),
            tick: Duration::from_millis(200),
            domain: None,
            checkpoints: false,
            resume: None,
            checkpoint_request: None,
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
    /// Reads issued to the source, and how many of them failed.
    pub reads_total: u64,
    pub reads_failed: u64,
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

pub(super) enum Msg {
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
    /// Phase character and pass.
    Phase(char, u32),
    /// A checkpoint (see [`RescueTarget::checkpoint`]).
    Checkpoint(ResumePoint),
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
    let sectors = |x: u64| (x / lbs * lbs).max(lbs);
    let cluster = sectors(opts.cluster as u64);
    let small = sectors(opts.small as u64).min(cluster);
    let probe = sectors(opts.probe as u64).min(small);
    let min_skip = if opts.min_skip > 0 {
        sectors(opts.min_skip)
    } else {
        // GNU ddrescue's default initial skip.
        sectors((size / 100_000).max(64 << 10).div_ceil(64 << 10) * (64 << 10))
    };
    let max_skip = if opts.max_skip > 0 {
        sectors(opts.max_skip)
    } else {
        sectors((size / 100).clamp(min_skip, 1 << 30))
    }
    .max(min_skip);
    let mut map = map;
    let mut free = Vec::new();
    if let Some(d) = &opts.domain {
        free = outside(d, size);
        let mut p = 0;
        for &(a, l) in &free {
            map.replace(p, a - p, Status::Free, Status::Untried);
            map.replace(a, l, Status::Untried, Status::Free);
            p = a + l;
        }
        map.replace(p, size - p, Status::Free, Status::Untried);
    } else {
        map.replace(0, size, Status::Free, Status::Untried);
    }
    let shared = Arc::new(Shared {
        map: Mutex::new(map.clone()),
    });
    let stats = Arc::new(Stats::new());
    let stop = Arc::new(AtomicBool::new(false));
    let want = opts.checkpoint_request.clone().unwrap_or_default();
    let (tx, rx) = mpsc::sync_channel::<Msg>(opts.buffers.max(2));
    let (pool_tx, pool_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..opts.buffers.max(2) {
        let _ = pool_tx.send(AlignedBuf::new(cluster as usize));
    }
    let mut plan = map;
    // Outside the domain the reader sees "finished" and never reads.
    for &(a, l) in &free {
        plan.set(a, l, Status::Finished);
    }
    let mut reader = Reader {
        src: src.clone(),
        g: Geometry {
            lbs,
            size,
            cluster,
            small,
            probe,
            min_skip,
            max_skip,
            retries: opts.retries,
        },
        plan,
        tx,
        pool: pool_rx,
        spare: vec![],
        stop: stop.clone(),
        stats: stats.clone(),
        run: None,
        bad_run: None,
        want_checkpoint: opts.checkpoints.then(|| want.clone()),
        checkpoint_always: opts.checkpoints && opts.save_every.is_zero(),
        resume: opts.resume,
    };
    let reader_h = thread::Builder::new()
        .name("rescue-reader".into())
        .spawn(move || reader.main())
        .map_err(|e| Error::os("start the rescue reader thread", e))?;
    let w_shared = shared.clone();
    let w_dst = dst.clone();
    let w_stop = stop.clone();
    let hashes = opts.hash.then(|| {
        let mut h = Hashes::new(size, lbs as u32);
        if let Some(d) = &opts.domain {
            h.restrict(d);
        }
        h
    });
    let w_save = opts
        .checkpoints
        .then(|| {
            opts.mapfile
                .clone()
                .map(|m| (m, opts.command_line.clone(), stats.clone()))
        })
        .flatten();
    let writer_h = thread::Builder::new()
        .name("rescue-writer".into())
        .spawn(move || {
            writer_main(
                rx,
                w_dst,
                w_shared,
                pool_tx,
                hashes,
                w_stop,
                cluster as usize,
                w_save,
            )
        })
        .map_err(|e| Error::os("start the rescue writer thread", e))?;

    let mut meter = RateMeter::new(Duration::from_secs(10));
    let mut last_save = Instant::now();
    let mut cancelled = false;
    let report = |meter: &mut RateMeter| {
        let m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        snapshot_with(&m, &opts.job, meter, Some(&stats))
    };
    while !writer_h.is_finished() {
        if cancel.is_cancelled() && !cancelled {
            cancelled = true;
            stop.store(true, Ordering::SeqCst);
        }
        sink.progress(&report(&mut meter));
        if opts.checkpoints && last_save.elapsed() >= opts.save_every {
            want.store(true, Ordering::Relaxed);
            last_save = Instant::now();
        }
        if let Some(mf) = opts.mapfile.as_ref().filter(|_| !opts.checkpoints) {
            if last_save.elapsed() >= opts.save_every {
                let m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
                dst.sync()?;
                m.save_with(mf, &opts.command_line, &map_comments(&stats))?;
                last_save = Instant::now();
            }
        }
        // Sleep one tick, but notice the end of the run at once.
        let t = Instant::now();
        while t.elapsed() < opts.tick && !writer_h.is_finished() {
            thread::sleep(opts.tick.min(Duration::from_millis(10)));
        }
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
        final_map.current_pass = 1;
    }
    if let Some(mf) = opts.mapfile.as_ref().filter(|_| !opts.checkpoints) {
        if sync_res.is_ok() {
            final_map.save_with(mf, &opts.command_line, &map_comments(&stats))?;
        }
    }
    let hashes = wres?;
    sync_res?;
    let mut p = snapshot_with(&final_map, &opts.job, &mut meter, Some(&stats));
    p.rate_bytes_per_sec = (size as f64 / start.elapsed().as_secs_f64().max(1e-6)) as u64;
    sink.progress(&p);
    Ok(Outcome {
        map: final_map,
        hashes,
        cancelled: cancelled || cancel.is_cancelled(),
        duration: start.elapsed(),
        reads_total: stats.reads_total.load(Ordering::Relaxed),
        reads_failed: stats.reads_failed.load(Ordering::Relaxed),
    })
}

/// The parts of `[0, size)` outside the (unsorted, possibly overlapping) `domain` ranges.
fn outside(domain: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut d: Vec<(u64, u64)> = domain
        .iter()
        .map(|&(a, l)| (a.min(size), a.saturating_add(l).min(size)))
        .filter(|&(a, e)| a < e)
        .collect();
    d.sort_unstable();
    let mut out = Vec::new();
    let mut p = 0;
    for (a, e) in d {
        if a > p {
            out.push((p, a - p));
        }
        p = p.max(e);
    }
    if p < size {
        out.push((p, size - p));
    }
    out
}

/// The mapfile's comment line with the read counters (ddrescue ignores comments).
fn map_comments(stats: &Stats) -> Vec<String> {
    vec![format!(
        "reads_total: {}  reads_failed: {}",
        stats.reads_total.load(Ordering::Relaxed),
        stats.reads_failed.load(Ordering::Relaxed)
    )]
}

/// A progress snapshot of a map.
pub fn snapshot(m: &ExtentMap, job: &str, meter: &mut RateMeter) -> Progress {
    snapshot_with(m, job, meter, None)
}

/// A progress snapshot of a map, with the read counters of a running rescue.
fn snapshot_with(
    m: &ExtentMap,
    job: &str,
    meter: &mut RateMeter,
    stats: Option<&Stats>,
) -> Progress {
    let t = m.totals();
    // The phase the reader is in (the map's is where the writer is, a few buffers behind).
    let phase = stats
        .and_then(|s| char::from_u32(s.phase.load(Ordering::Relaxed)))
        .unwrap_or(m.current_phase);
    // Free areas (outside the domain) are not part of the job.
    let mut p = Progress::new(job, phase_name(phase), m.size() - t.free);
    p.done_bytes = t.finished + t.bad;
    p.bad_bytes = t.error_bytes();
    let (rate, eta) = meter.update(Instant::now(), p.done_bytes, p.total_bytes);
    p.rate_bytes_per_sec = rate;
    p.eta_secs = eta;
    p.map = Some(m.coarse(256));
    if let Some(s) = stats {
        p.pass = Some(s.pass.load(Ordering::Relaxed));
        p.reads_total = Some(s.reads_total.load(Ordering::Relaxed));
        p.reads_failed = Some(s.reads_failed.load(Ordering::Relaxed));
        p.ms_since_good_read = Some(s.ms_since_good_read());
    }
    p
}

/// Where checkpoints save the mapfile: path, command line, the counters for its comment.
type MapSave = (PathBuf, String, Arc<Stats>);

#[allow(clippy::too_many_arguments)]
fn writer_main(
    rx: Receiver<Msg>,
    dst: Arc<dyn RescueTarget>,
    shared: Arc<Shared>,
    pool: mpsc::Sender<AlignedBuf>,
    mut hashes: Option<Hashes>,
    stop: Arc<AtomicBool>,
    cluster: usize,
    save: Option<MapSave>,
) -> Result<Option<Hashes>> {
    let zeros = AlignedBuf::new(cluster);
    let mut copy_done = false;
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
                if let Some(h) = hashes.as_mut() {
                    if replaces_zeros {
                        h.replace_zeros(off, &buf[..len]);
                    } else {
                        h.add(off, &buf[..len]);
                    }
                }
                let buf = dst.write_owned(buf, len, off)?;
                {
                    let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner());
                    m.set(off, len as u64, Status::Finished);
                    m.current_pos = off;
                }
                let _ = pool.send(buf);
            }
            Msg::Mark { off, len, status } => {
                if status == Status::Bad {
                    dst.write_bad(off, len, &zeros)?;
                    if let Some(h) = hashes.as_mut() {
                        h.add_zeros(off, len);
                    }
                }
                let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner());
                m.set(off, len, status);
                m.current_pos = off;
            }
            Msg::Phase(c, pass) => {
                {
                    let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner());
                    m.current_phase = c;
                    m.current_pass = pass;
                }
                dst.phase(c, pass);
                // Only when trimming, scraping or retrying follow: on a healthy disk the run
                // is over, and the verify after it reads everything anyway.
                if matches!(c, '*' | '/' | '-') && !copy_done {
                    copy_done = true;
                    if let Some(h) = hashes.as_ref() {
                        let m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        dst.copy_done(&m, h);
                    }
                }
            }
            Msg::Checkpoint(at) => {
                let mut m = shared.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
                m.current_pos = at.pos;
                dst.checkpoint(&m, at)?;
                if let Some((path, cmd, stats)) = &save {
                    m.save_with(path, cmd, &map_comments(stats))?;
                }
            }
            Msg::Fatal(e) => return Err(e),
            Msg::Done => break,
        }
    }
    Ok(hashes)
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
