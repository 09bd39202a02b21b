//! The reader side of a rescue run: the phases over the extent map, in the spirit of GNU
//! ddrescue (copy with skipping, delimit the skipped areas backwards, sweep, trim, scrape,
//! retry) but with a failed-read unit no larger than ddrescue's and large reads on good areas.
//!
//! On a failing drive a read that hits a bad sector costs seconds, so the design counts failed
//! reads first and time second:
//! - Good areas are read in `cluster` units (1 MiB). When such a large read fails, the failed
//!   range is *located*: re-read forwards in `probe` units (16 KiB) until one fails; only that
//!   piece is marked non-trimmed, the rest of the failed range stays untried. Then the reader
//!   is *careful*: `small` reads (64 KiB, ddrescue's cluster) until a whole `cluster` of good
//!   data has been read, so an error zone costs one failed read per 64 KiB at most, as in
//!   ddrescue, and a failed `small` read is marked non-trimmed as a whole.
//! - Pass 1 (forwards) skips after each failure (the skip doubles on consecutive failures and
//!   resets on good data); pass 2 reads each skipped area backwards from its end until the first
//!   failure (it delimits bad areas from the other side); pass 3 sweeps what is left, forwards,
//!   without skipping. A short untried fragment wedged between failed areas is not read at all
//!   but left to trimming (it would most likely fail as a whole).
//! - Trimming reads sector by sector from the leading edge of each non-trimmed area until a
//!   sector fails, then from the trailing edge; an edge already next to a bad sector is not
//!   trimmed again. Scraping reads the rest sector by sector; retry passes re-read bad sectors.
//! - A failed read of a single sector marks it bad at once (as ddrescue does).
//! - Sector-by-sector reads (trimming, scraping, retrying) collect contiguous good sectors in
//!   one buffer, and contiguous bad sectors in one mark, so the writer gets one write per run
//!   instead of one per sector.
//!
//! Every read is counted (`reads_total`, `reads_failed`), with the time of the last good read
//! and the current pass, for progress, the report and the mapfile.
use super::engine::{is_media_error, Msg};
use super::map::{ExtentMap, Status};
use crate::error::Error;
use crate::io::{AlignedBuf, BlockSource};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// Read counters shared between the reader and the reporting thread.
#[derive(Debug)]
pub struct Stats {
    pub reads_total: AtomicU64,
    pub reads_failed: AtomicU64,
    /// Milliseconds from `start` to the end of the last read that returned data (`u64::MAX`:
    /// none yet).
    pub last_good_ms: AtomicU64,
    /// The current pass of the current phase (1-based).
    pub pass: AtomicU32,
    /// The reader's current phase (a map status character, as `u32`): set before the phase's
    /// first read, so progress shows the phase being read, not the one the writer has reached.
    pub phase: AtomicU32,
    pub start: Instant,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            reads_total: AtomicU64::new(0),
            reads_failed: AtomicU64::new(0),
            last_good_ms: AtomicU64::new(u64::MAX),
            pass: AtomicU32::new(1),
            phase: AtomicU32::new('?' as u32),
            start: Instant::now(),
        }
    }
    /// Milliseconds since the last good read (since the start when there was none).
    pub fn ms_since_good_read(&self) -> u64 {
        let now = self.start.elapsed().as_millis() as u64;
        match self.last_good_ms.load(Ordering::Relaxed) {
            u64::MAX => now,
            t => now.saturating_sub(t),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Why the reader stopped early.
pub(super) enum Halt {
    /// Cancelled, or the writer went away.
    Stop,
    Fatal(Error),
}

/// Sizes and limits of the reader, all multiples of the logical sector size.
pub(super) struct Geometry {
    pub lbs: u64,
    pub size: u64,
    /// Read size on good areas.
    pub cluster: u64,
    /// Read size near errors; a failed read of this size is marked non-trimmed as a whole.
    pub small: u64,
    /// Unit that locates the error inside a failed `cluster` read.
    pub probe: u64,
    pub min_skip: u64,
    pub max_skip: u64,
    pub retries: u32,
}

/// Contiguous sectors read one by one, waiting to go to the writer as one piece. Forwards runs
/// fill the buffer from its start, backwards runs from its end.
pub(super) struct SectorRun {
    buf: AlignedBuf,
    /// Disk offset of the first byte of the run.
    start: u64,
    len: usize,
    back: bool,
    replaces_zeros: bool,
}

pub(super) struct Reader {
    pub src: Arc<dyn BlockSource>,
    pub g: Geometry,
    /// The reader's view of the map (areas outside the rescue domain show as finished).
    pub plan: ExtentMap,
    pub tx: SyncSender<Msg>,
    pub pool: Receiver<AlignedBuf>,
    pub spare: Vec<AlignedBuf>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// Good sectors not sent yet (see `SectorRun`).
    pub run: Option<SectorRun>,
    /// Bad sectors not marked yet: `(start, len)`.
    pub bad_run: Option<(u64, u64)>,
    /// Set when a checkpoint is wanted: the reader sends one at its next calm point.
    pub want_checkpoint: Option<Arc<AtomicBool>>,
    /// A checkpoint at every calm point, whatever `want_checkpoint` says (`save_every` zero):
    /// where checkpoints fall then depends on the reads only, never on the clock.
    pub checkpoint_always: bool,
    /// Where to start (a checkpoint of an earlier run); `None`: from the beginning.
    pub resume: Option<ResumePoint>,
}

/// A point of the run where the reader's whole state is the map plus this: the phase, its
/// pass and the position the phase goes on from. A run started there with the map of that
/// moment reads exactly what the uninterrupted run read from there on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// ddrescue's status character of the phase: `?` copy, `*` trim, `/` scrape, `-` retry,
    /// `+` finished.
    pub phase: char,
    pub pass: u32,
    pub pos: u64,
}

impl ResumePoint {
    /// The order of phases and passes.
    fn rank(phase: char, pass: u32) -> u32 {
        match phase {
            '?' => pass.clamp(1, 3) - 1,
            '*' => 3,
            '/' => 4,
            '-' => 4 + pass.max(1),
            _ => u32::MAX,
        }
    }
}

fn round_up(x: u64, unit: u64) -> u64 {
    x.div_ceil(unit) * unit
}

impl Reader {
    pub fn main(&mut self) {
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

    /// Marks a range whose read failed: non-trimmed, or bad at once when it is one sector.
    fn mark_failed(&mut self, off: u64, len: u64) -> Result<(), Halt> {
        let st = if len <= self.g.lbs {
            Status::Bad
        } else {
            Status::NonTrimmed
        };
        self.mark(off, len, st)
    }

    fn phase(&mut self, c: char, pass: u32) -> Result<(), Halt> {
        self.flush_runs()?;
        self.plan.current_phase = c;
        self.stats.pass.store(pass, Ordering::Relaxed);
        self.stats.phase.store(c as u32, Ordering::Relaxed);
        self.send(Msg::Phase(c, pass))
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
            self.stats.reads_total.fetch_add(1, Ordering::Relaxed);
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
                    let n = if (n as u64) < (len - got) && pos + (n as u64) < self.g.size {
                        // A short read in the middle: keep whole sectors only.
                        (n as u64 / self.g.lbs * self.g.lbs) as usize
                    } else {
                        n
                    };
                    if n == 0 {
                        self.spare.push(buf);
                        return Ok(got);
                    }
                    self.stats.last_good_ms.store(
                        self.stats.start.elapsed().as_millis() as u64,
                        Ordering::Relaxed,
                    );
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
                    self.stats.reads_failed.fetch_add(1, Ordering::Relaxed);
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

    /// Sends the pending good sectors and marks the pending bad ones.
    fn flush_runs(&mut self) -> Result<(), Halt> {
        if let Some((a, l)) = self.bad_run.take() {
            self.send(Msg::Mark {
                off: a,
                len: l,
                status: Status::Bad,
            })?;
        }
        if let Some(mut r) = self.run.take() {
            if r.len == 0 {
                self.spare.push(r.buf);
                return Ok(());
            }
            if r.back {
                let cap = r.buf.capacity();
                r.buf.copy_within(cap - r.len..cap, 0);
            }
            r.buf.set_len(r.len);
            self.send(Msg::Data {
                off: r.start,
                buf: r.buf,
                len: r.len,
                replaces_zeros: r.replaces_zeros,
            })?;
        }
        Ok(())
    }

    /// Marks `[pos, pos+n)` bad, merged with the pending bad run when contiguous.
    fn mark_bad_sector(&mut self, pos: u64, n: u64) -> Result<(), Halt> {
        self.plan.set(pos, n, Status::Bad);
        match &mut self.bad_run {
            Some((a, l)) if *a + *l == pos => *l += n,
            Some((a, l)) if pos + n == *a => {
                *a = pos;
                *l += n;
            }
            _ => {
                if let Some((a, l)) = self.bad_run.replace((pos, n)) {
                    self.send(Msg::Mark {
                        off: a,
                        len: l,
                        status: Status::Bad,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Reads the one sector `[pos, pos+n)` into the pending run (forwards, or backwards when
    /// `back`); returns whether it read.
    fn sector_read(
        &mut self,
        pos: u64,
        n: u64,
        back: bool,
        replaces_zeros: bool,
    ) -> Result<bool, Halt> {
        self.check()?;
        let fits = |r: &SectorRun| {
            r.back == back
                && r.replaces_zeros == replaces_zeros
                && r.len + n as usize <= r.buf.capacity()
                && if back {
                    pos + n == r.start
                } else {
                    r.start + r.len as u64 == pos
                }
        };
        if self.run.as_ref().is_some_and(|r| !fits(r)) {
            let r = self.bad_run.take();
            self.flush_runs()?;
            self.bad_run = r;
        }
        if self.run.is_none() {
            let mut buf = self.buffer()?;
            let cap = buf.capacity();
            buf.set_len(cap);
            self.run = Some(SectorRun {
                buf,
                start: if back { pos + n } else { pos },
                len: 0,
                back,
                replaces_zeros,
            });
        }
        let Some(r) = self.run.as_mut() else {
            return Ok(false);
        };
        let cap = r.buf.capacity();
        let slot = if back {
            cap - r.len - n as usize..cap - r.len
        } else {
            r.len..r.len + n as usize
        };
        loop {
            self.stats.reads_total.fetch_add(1, Ordering::Relaxed);
            match self.src.read_at(&mut r.buf[slot.clone()], pos) {
                Ok(k) if k as u64 == n => {
                    r.len += n as usize;
                    if back {
                        r.start = pos;
                    }
                    self.plan.set(pos, n, Status::Finished);
                    self.stats.last_good_ms.store(
                        self.stats.start.elapsed().as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    return Ok(true);
                }
                Ok(0) => {
                    return Err(Halt::Fatal(Error::corrupt(format!(
                        "{} ended at byte {pos} but reported a size of {} bytes",
                        self.src.name(),
                        self.src.size()
                    ))))
                }
                // A short read of one sector: nothing usable.
                Ok(_) => return Ok(false),
                Err(e) if is_media_error(&e) => {
                    self.stats.reads_failed.fetch_add(1, Ordering::Relaxed);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Halt::Fatal(
                        Error::io("read", self.src.name(), e).at_offset(pos),
                    ))
                }
            }
        }
    }

    fn phases(&mut self) -> Result<(), Halt> {
        // A resumed run skips the phases before its checkpoint's and starts that one at its
        // position; the conditions for entering a phase are those of the uninterrupted run.
        let r = self.resume.take();
        let from = r.map_or(0, |r| ResumePoint::rank(r.phase, r.pass));
        let at = |rank: u32, default: u64| match r {
            Some(r) if from == rank => r.pos,
            _ => default,
        };
        let entered = |rank: u32| r.is_some() && from == rank;
        let size = self.g.size;
        if from == 0 {
            self.phase('?', 1)?;
            self.copy_forward(true, at(0, 0))?;
        }
        if from <= 1 && (entered(1) || self.plan.next_with(Status::Untried, 0).is_some()) {
            self.phase('?', 2)?;
            self.delimit_backward(at(1, size))?;
        }
        if from <= 2 && (entered(2) || self.plan.next_with(Status::Untried, 0).is_some()) {
            self.phase('?', 3)?;
            self.copy_forward(false, at(2, 0))?;
        }
        if from <= 3 {
            self.phase('*', 1)?;
            self.trim(at(3, 0))?;
        }
        if from <= 4 {
            self.phase('/', 1)?;
            self.scrape(at(4, 0))?;
        }
        if from <= 4 + self.g.retries && (from > 4 || self.plan.next_with(Status::Bad, 0).is_some())
        {
            for pass in 1..=self.g.retries {
                if from <= 4 + pass {
                    self.phase('-', pass)?;
                    self.retry(at(4 + pass, 0))?;
                }
            }
        }
        self.phase('+', 1)?;
        // The end of the reads: a resumed run goes straight to whatever follows them.
        if self.want_checkpoint.is_some() {
            self.send(Msg::Checkpoint(ResumePoint {
                phase: '+',
                pass: 1,
                pos: 0,
            }))?;
        }
        Ok(())
    }

    /// At a calm point (nothing pending, nothing but the map and `(phase, pass, pos)` to
    /// remember): sends a checkpoint when one is wanted.
    fn calm(&mut self, phase: char, pass: u32, pos: u64) -> Result<(), Halt> {
        let Some(w) = &self.want_checkpoint else {
            return Ok(());
        };
        if !w.swap(false, Ordering::Relaxed) && !self.checkpoint_always {
            return Ok(());
        }
        self.flush_runs()?;
        self.send(Msg::Checkpoint(ResumePoint { phase, pass, pos }))
    }

    /// After a failed read of `[off, off+len)`: when the read was a large one, locates the
    /// error by re-reading forwards in `probe` units until one fails; marks the failed piece
    /// (or, without locating, the whole range). Returns where the marked area ends (the rest of
    /// a located range stays untried).
    fn failed_read(&mut self, off: u64, len: u64, locate: bool) -> Result<u64, Halt> {
        if !locate || len <= self.g.probe {
            self.mark_failed(off, len)?;
            return Ok(off + len);
        }
        let end = off + len;
        let mut q = off;
        while q < end {
            self.check()?;
            let n = end.min((q / self.g.probe + 1) * self.g.probe) - q;
            let good = self.try_range(q, n, false)?;
            if good < n {
                self.mark_failed(q + good, n - good)?;
                return Ok(q + n);
            }
            q += n;
        }
        // Everything read after all (a transient error).
        Ok(end)
    }

    /// A forwards copy pass over the untried areas. With `skipping`, a failure is followed by
    /// a skip (left untried for the next passes) that doubles on each further failure and
    /// resets on good data.
    fn copy_forward(&mut self, skipping: bool, from: u64) -> Result<(), Halt> {
        let g = &self.g;
        let (small, cluster, min_skip, max_skip) = (g.small, g.cluster, g.min_skip, g.max_skip);
        let pass = if skipping { 1 } else { 3 };
        let mut p = from;
        let mut skip = min_skip;
        let mut careful = false;
        let mut streak = 0u64;
        while let Some((a, l)) = self.plan.next_with(Status::Untried, p) {
            let end = a + l;
            if !skipping && l <= small && self.wedged(a, end) {
                // Between failed areas and too short to be worth a failed read of its own.
                self.mark(a, l, Status::NonTrimmed)?;
                p = end;
                continue;
            }
            let mut q = a;
            while q < end {
                self.check()?;
                if !careful && skip == min_skip {
                    self.calm('?', pass, q)?;
                }
                let unit = if careful { small } else { cluster };
                let len = end.min((q / unit + 1) * unit) - q;
                let good = self.try_range(q, len, false)?;
                if good == len {
                    q += len;
                    streak += len;
                    skip = min_skip;
                    if streak >= cluster {
                        careful = false;
                    }
                    continue;
                }
                if good > 0 {
                    skip = min_skip;
                }
                q = self.failed_read(q + good, len - good, !careful)?;
                careful = true;
                streak = 0;
                if skipping && q < end {
                    q = round_up(q + skip, small).min(end);
                    skip = (skip * 2).min(max_skip);
                }
            }
            p = end;
        }
        Ok(())
    }

    /// Whether `[a, end)` lies between failed (non-trimmed or bad) areas on both sides.
    fn wedged(&self, a: u64, end: u64) -> bool {
        let failed = |s: Option<Status>| matches!(s, Some(Status::NonTrimmed | Status::Bad));
        a > 0
            && end < self.g.size
            && failed(self.plan.status_at(a - 1))
            && failed(self.plan.status_at(end))
    }

    /// Pass 2: reads each untried area backwards from its end, careful first, until the first
    /// failure; the rest of that area is left for the sweep.
    fn delimit_backward(&mut self, from: u64) -> Result<(), Halt> {
        let (small, cluster) = (self.g.small, self.g.cluster);
        let mut before = from;
        while let Some((a, l)) = self.plan.prev_with(Status::Untried, before) {
            self.calm('?', 2, before)?;
            let mut e = a + l;
            let mut careful = true;
            let mut streak = 0u64;
            while e > a {
                self.check()?;
                let unit = if careful { small } else { cluster };
                let s = ((e - 1) / unit * unit).max(a);
                let n = e - s;
                let good = self.try_range(s, n, false)?;
                if good == n {
                    e = s;
                    streak += n;
                    if streak >= cluster {
                        careful = false;
                    }
                    continue;
                }
                // The failure is in [s+good, e). A failed large read is located backwards.
                if careful || e - (s + good) <= self.g.probe {
                    self.mark_failed(s + good, e - s - good)?;
                } else {
                    self.locate_backward(s + good, e)?;
                }
                break;
            }
            before = a;
        }
        Ok(())
    }

    /// Re-reads `[a, e)` backwards in `probe` units until one fails and marks it.
    fn locate_backward(&mut self, a: u64, mut e: u64) -> Result<(), Halt> {
        while e > a {
            self.check()?;
            let s = ((e - 1) / self.g.probe * self.g.probe).max(a);
            let n = e - s;
            let good = self.try_range(s, n, false)?;
            if good < n {
                return self.mark_failed(s + good, n - good);
            }
            e = s;
        }
        Ok(())
    }

    fn sector_len(&self, pos: u64, end: u64) -> u64 {
        self.g.lbs.min(end - pos)
    }

    /// Trims each non-trimmed area: sector by sector from its start until a read fails, then
    /// from its end backwards until a read fails; those failing sectors are bad, the rest
    /// non-scraped. An edge next to a bad sector is already trimmed.
    fn trim(&mut self, from: u64) -> Result<(), Halt> {
        let mut p = from;
        while let Some((a, l)) = self.plan.next_with(Status::NonTrimmed, p) {
            self.calm('*', 1, p)?;
            let end = a + l;
            let lbad = a > 0 && self.plan.status_at(a - 1) == Some(Status::Bad);
            let rbad = self.plan.status_at(end) == Some(Status::Bad);
            let mut lo = a;
            if !lbad {
                while lo < end {
                    let n = self.sector_len(lo, end);
                    let good = self.sector_read(lo, n, false, false)?;
                    if !good {
                        self.mark_bad_sector(lo, n)?;
                        lo += n;
                        break;
                    }
                    lo += n;
                }
            }
            let mut hi = end;
            if !rbad {
                while hi > lo {
                    let rem = (hi - a) % self.g.lbs;
                    let s = if rem != 0 { hi - rem } else { hi - self.g.lbs }.max(lo);
                    let n = hi - s;
                    let good = self.sector_read(s, n, true, false)?;
                    hi = s;
                    if !good {
                        self.mark_bad_sector(s, n)?;
                        break;
                    }
                }
            }
            self.flush_runs()?;
            self.mark(lo, hi - lo, Status::NonScraped)?;
            p = end;
        }
        Ok(())
    }

    /// Reads every non-scraped sector once; failures are bad sectors.
    fn scrape(&mut self, from: u64) -> Result<(), Halt> {
        self.sector_pass(Status::NonScraped, false, ('/', 1), from)
    }

    /// One more read of every bad sector; recovered ones replace the zeros written for them.
    fn retry(&mut self, from: u64) -> Result<(), Halt> {
        let pass = self.stats.pass.load(Ordering::Relaxed);
        self.sector_pass(Status::Bad, true, ('-', pass), from)
    }

    fn sector_pass(
        &mut self,
        status: Status,
        retry: bool,
        (phase, pass): (char, u32),
        from: u64,
    ) -> Result<(), Halt> {
        let mut p = from;
        while let Some((a, l)) = self.plan.next_with(status, p) {
            self.calm(phase, pass, p)?;
            let end = a + l;
            let mut s = a;
            while s < end {
                let n = self.sector_len(s, end);
                let good = self.sector_read(s, n, false, retry)?;
                if !good && !retry {
                    self.mark_bad_sector(s, n)?;
                }
                s += n;
            }
            p = end;
        }
        self.flush_runs()
    }
}
