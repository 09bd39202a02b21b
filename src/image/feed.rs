//! Image create's reader side: the source is read by the rescue engine ([`crate::rescue`], the
//! same as clone: good data first across the whole disk — copy passes forwards with skips,
//! backwards, a sweep — then trim, scrape, retry), and this module turns the engine's pieces,
//! which arrive in any order, into whole chunks for the image pipeline.
//!
//! The bridge between an out-of-order reader and an image of ordered, hashed, compressed chunks:
//! - The rescue domain is what the image needs: the used blocks (rounded out to whole sectors)
//!   plus everything outside partitions, or the whole disk with `--all-sectors`: the engine's
//!   domain (outside it the map says *free*: never read).
//! - [`Feed`] is the engine's [`RescueTarget`]. It counts, per chunk, the domain bytes not yet
//!   delivered. A chunk is *complete* when its last one arrives: it is emitted at once (the
//!   next sequence number) to the compressors and the writer. On a healthy disk every chunk is
//!   one 1 MiB read and is emitted as it is read.
//! - Chunks that end with unreadable sectors never complete during the run: they are emitted
//!   after the engine has finished (after trim, scrape and retry), in disk order, with zeros
//!   at their unreadable sectors and those listed as the chunk's bad ranges (the final map's,
//!   exactly the ranges clone reports). So is every chunk with nothing to read (unallocated).
//! - The index maps chunk → (volume, offset), so payloads may be stored in this emission
//!   order; index segments are written when all their chunks are (`create::write_loop`).
//! - Memory stays bounded: the good bytes of chunks delivered in several pieces are kept in a
//!   cache of at most [`cache_chunks`] chunks (64 MiB, less on a machine with less than 512 MiB
//!   available, never fewer than [`CACHE_CHUNKS`] chunks): on a disk with a few dozen scattered
//!   bad areas every held-back chunk stays in memory until it is stored. When a chunk leaves
//!   the cache before it is emitted (or the run was resumed), its good bytes are read again
//!   from the source when it is emitted: re-reading sectors that read well is cheap; sectors
//!   that failed are never read again here (the engine's retries are the only ones). Should
//!   such a re-read fail all the same, those sectors are stored as zeros and reported as
//!   unreadable (`reread_failed_bytes`).
//! - The held-back chunks are hashed ahead, while the engine trims, scrapes and retries (the
//!   compressors are idle then): one thread ([`Feed::prehash`]) hashes each aligned
//!   [`treehash::SUBTREE`] of a cached chunk whose bytes are all final (delivered, or outside
//!   the domain), and the chunk goes to the compressors with those subtrees' BLAKE3 chaining
//!   values and CRC32s ([`treehash::Partial`]): only the subtrees around its unreadable
//!   sectors are hashed when it is stored. The hash and CRC are those of the whole chunk's
//!   bytes, so the image's bytes do not depend on how far that thread got.
//!
//! Whether a chunk is complete depends only on the sequence of pieces, never on the cache, so
//! the order of emission (and the image's bytes) is the same for the same source and map.
//! A checkpoint names the chunks emitted since the start of the current compressor batch (see
//! `writer`); a resumed create emits them again first ([`Feed::replay`]).
use super::create::{Job, Slot};
use super::reader::Image;
use super::treehash::{self, Partial, SUBTREE};
use super::writer::WMsg;
use crate::error::{Error, ErrorKind, Result};
use crate::io::{AlignedBuf, BlockSource};
use crate::rescue::engine::ResumePoint;
use crate::rescue::{ExtentMap, RescueTarget, Status};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

/// The fewest chunks whose good bytes are kept between pieces (see [`cache_chunks`]).
pub const CACHE_CHUNKS: usize = 16;
/// The most memory the kept chunks take ([`cache_chunks`]).
pub const CACHE_BYTES: u64 = 64 << 20;

/// Chunks of `chunk` bytes whose good bytes are kept between pieces: [`CACHE_BYTES`] worth,
/// at most an eighth of the `available` memory, never fewer than [`CACHE_CHUNKS`].
pub fn cache_chunks(chunk: u64, available: u64) -> usize {
    let bytes = CACHE_BYTES.min(available / 8);
    ((bytes / chunk.max(1)).min(usize::MAX as u64) as usize).max(CACHE_CHUNKS)
}
/// Tries per sector when a re-read of good sectors fails.
const REREAD_TRIES: u32 = 3;

/// Byte ranges `[start, end)`, ascending and disjoint.
pub type Ranges = Vec<(u64, u64)>;

/// The ranges of `v` (ascending, disjoint) inside `[a, b)`, clipped.
pub fn clip(v: &[(u64, u64)], a: u64, b: u64) -> Ranges {
    let i = v.partition_point(|r| r.1 <= a);
    v[i..]
        .iter()
        .take_while(|r| r.0 < b)
        .map(|r| (r.0.max(a), r.1.min(b)))
        .filter(|r| r.0 < r.1)
        .collect()
}

/// `a` minus `b` (both ascending, disjoint).
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while s < e {
            match b.get(k) {
                Some(&(bs, be)) if bs < e => {
                    if bs > s {
                        out.push((s, bs));
                    }
                    s = s.max(be);
                    k += 1;
                }
                _ => {
                    out.push((s, e));
                    break;
                }
            }
        }
    }
    out
}

/// Adds `[s, e)` to ascending disjoint ranges (merging).
fn add_range(v: &mut Ranges, s: u64, e: u64) {
    if s >= e {
        return;
    }
    let i = v.partition_point(|r| r.1 < s);
    let mut j = i;
    let (mut ns, mut ne) = (s, e);
    while j < v.len() && v[j].0 <= ne {
        ns = ns.min(v[j].0);
        ne = ne.max(v[j].1);
        j += 1;
    }
    v.splice(i..j, [(ns, ne)]);
}

/// Ranges of `map` with `status` inside `[a, b)`.
pub fn map_ranges(map: &ExtentMap, status: Status, a: u64, b: u64) -> Ranges {
    let mut out = Vec::new();
    let mut p = a;
    while let Some((s, l)) = map.next_with(status, p) {
        if s >= b {
            break;
        }
        out.push((s, (s + l).min(b)));
        p = s + l;
    }
    out
}

/// What the image needs of the disk.
pub struct Domain {
    /// The bytes to store: used blocks and everything outside partitions (`None`: every byte).
    /// `[start, end)` ranges.
    pub used: Option<Ranges>,
    /// `used` rounded out to whole sectors: what the engine reads.
    pub read: Ranges,
}

impl Domain {
    pub fn new(used: Option<Ranges>, size: u64, lbs: u64) -> Domain {
        let read = match &used {
            None => vec![(0, size)],
            Some(u) => {
                let mut r: Ranges = Vec::with_capacity(u.len());
                for &(s, e) in u {
                    let (s, e) = (s / lbs * lbs, e.div_ceil(lbs).saturating_mul(lbs).min(size));
                    match r.last_mut() {
                        Some(l) if l.1 >= s => l.1 = l.1.max(e),
                        _ if s < e => r.push((s, e)),
                        _ => {}
                    }
                }
                r
            }
        };
        Domain { used, read }
    }
    /// The engine's starting map for a new image: everything outside the domain free.
    pub fn fresh_map(&self, size: u64) -> ExtentMap {
        let mut m = ExtentMap::new(size);
        let mut p = 0;
        for &(s, e) in &self.read {
            if s > p {
                m.set(p, s - p, Status::Free);
            }
            p = e;
        }
        if p < size {
            m.set(p, size - p, Status::Free);
        }
        m
    }
}

struct Cached {
    buf: AlignedBuf,
    /// Disk ranges held in `buf`.
    valid: Ranges,
    last_use: u64,
    /// Which use of a buffer this is (the tick it was taken at): a subtree hashed from the
    /// bytes of an earlier use is not kept.
    gen: u64,
    /// Its subtrees hashed ahead (a whole chunk of a power-of-two number of subtrees).
    pre: Option<Partial>,
}

struct State {
    jobs: Option<SyncSender<Job>>,
    /// To the writer: checkpoints.
    writer: Option<Sender<WMsg>>,
    free: Receiver<Slot>,
    parent: Option<Image>,
    /// Chunk → domain bytes not delivered yet (chunks touched in this run, not complete).
    open: HashMap<u64, u64>,
    cache: HashMap<u64, Cached>,
    tick: u64,
    /// One bit per chunk: emitted.
    emitted: Vec<u64>,
    /// The next emission's sequence number.
    seq: u64,
    /// The chunks emitted since the last sequence number that starts a compressor batch.
    batch_so_far: Vec<u64>,
    rereads: u64,
    reread_bytes: u64,
    /// Sectors that read well during the rescue but failed when read again.
    reread_failed: Ranges,
    /// Subtrees `(chunk, k)` of cached chunks whose bytes are all final, not hashed yet.
    todo: BTreeSet<(u64, usize)>,
    /// The engine is past its copy passes: [`Feed::prehash`] works.
    tail: bool,
    /// The chunks are being stored (or the feed closed): [`Feed::prehash`] ends.
    finishing: bool,
    prehashed: u64,
}

/// Counters of a feed, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedStats {
    pub rereads: u64,
    pub reread_bytes: u64,
    pub reread_failed_bytes: u64,
    /// Bytes of held-back chunks hashed ahead, while the engine trimmed, scraped and retried.
    pub prehashed_bytes: u64,
}

/// See the module documentation.
pub struct Feed {
    src: Arc<dyn BlockSource>,
    chunk: u64,
    size: u64,
    chunks: u64,
    lbs: u64,
    domain: Arc<Domain>,
    /// The map the run started from: bytes finished in it are never delivered by this run.
    start: ExtentMap,
    /// Chunks per compressor batch (see `pack`): checkpoints name the current batch's chunks.
    batch: u64,
    /// Chunks kept at most ([`cache_chunks`]).
    cache_max: usize,
    st: Mutex<State>,
    /// Wakes [`Feed::prehash`].
    wake: Condvar,
}

fn stopped() -> Error {
    Error::new(ErrorKind::Io, "image creation stopped")
}

impl Feed {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        src: Arc<dyn BlockSource>,
        chunk: u32,
        domain: Arc<Domain>,
        start: ExtentMap,
        emitted: Vec<u64>,
        seq: u64,
        jobs: SyncSender<Job>,
        free: Receiver<Slot>,
        parent: Option<Image>,
        writer: Sender<WMsg>,
        batch: usize,
        cache_max: usize,
    ) -> Feed {
        let size = src.size();
        let chunks = size.div_ceil(chunk as u64);
        let lbs = src.logical_block_size().max(512) as u64;
        Feed {
            src,
            chunk: chunk as u64,
            size,
            chunks,
            lbs,
            domain,
            start,
            batch: batch.max(1) as u64,
            cache_max: cache_max.max(1),
            wake: Condvar::new(),
            st: Mutex::new(State {
                jobs: Some(jobs),
                writer: Some(writer),
                free,
                parent,
                open: HashMap::new(),
                cache: HashMap::new(),
                tick: 0,
                emitted,
                seq,
                batch_so_far: Vec::new(),
                rereads: 0,
                reread_bytes: 0,
                reread_failed: Vec::new(),
                todo: BTreeSet::new(),
                tail: false,
                finishing: false,
                prehashed: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty emitted-chunk bitset for `chunks` chunks.
    pub fn no_chunks_emitted(chunks: u64) -> Vec<u64> {
        vec![0u64; chunks.div_ceil(64) as usize]
    }

    fn span(&self, c: u64) -> (u64, u64) {
        let s = c * self.chunk;
        (s, (s + self.chunk).min(self.size))
    }

    /// Emits every chunk not emitted yet, in disk order, as the final `map` describes it
    /// (after the engine has finished): good bytes, zeros and bad ranges at unreadable ones.
    pub fn finish(&self, map: &ExtentMap, cancel: &crate::jobs::Cancel) -> Result<()> {
        let mut st = self.lock();
        self.stop_prehash(&mut st);
        for c in 0..self.chunks {
            if is_set(&st.emitted, c) {
                continue;
            }
            if cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            self.emit_as_mapped(&mut st, c, map)?;
        }
        st.open.clear();
        Ok(())
    }

    /// A resumed create, before the engine goes on: emits again, in order, the chunks a
    /// checkpoint inside a compressor batch named (the journal's `open_batch`; they were
    /// complete then, so the map the run starts from has all their bytes finished), their good
    /// sectors read again from the source.
    pub fn replay(&self, chunks: &[u64]) -> Result<()> {
        let mut st = self.lock();
        for &c in chunks {
            if c >= self.chunks || is_set(&st.emitted, c) {
                return Err(Error::corrupt(format!(
                    "the journal names chunk {c} as emitted again first, but it is {}",
                    if c >= self.chunks {
                        "past the disk's end"
                    } else {
                        "already in the index"
                    }
                )));
            }
            self.emit_as_mapped(&mut st, c, &self.start)?;
        }
        Ok(())
    }

    /// Emits chunk `c` as `map` describes it: its good bytes (from the cache or read again),
    /// zeros and bad ranges where the map has not finished it.
    fn emit_as_mapped(&self, st: &mut State, c: u64, map: &ExtentMap) -> Result<()> {
        let (a, b) = self.span(c);
        let cached = st.cache.remove(&c);
        let mut bad = Vec::new();
        for s in [
            Status::Bad,
            Status::NonScraped,
            Status::NonTrimmed,
            Status::Untried,
        ] {
            for r in map_ranges(map, s, a, b) {
                add_range(&mut bad, r.0, r.1);
            }
        }
        let bad = clip_all(&bad, &self.domain.read);
        let good = subtract(&clip(&self.domain.read, a, b), &bad);
        self.emit(st, c, cached, None, &good, bad)
    }

    /// Closes the queue to the compressors (the writer then finishes).
    pub fn close(&self) {
        let mut st = self.lock();
        st.jobs = None;
        st.writer = None;
        self.stop_prehash(&mut st);
    }

    fn stop_prehash(&self, st: &mut State) {
        st.finishing = true;
        st.todo.clear();
        self.wake.notify_all();
    }

    /// The engine's phase (see [`RescueTarget::phase`]): past the copy passes, the held-back
    /// chunks are hashed ahead.
    fn set_phase(&self, phase: char) {
        if phase != '?' {
            let mut st = self.lock();
            if !st.tail {
                st.tail = true;
                self.wake.notify_all();
            }
        }
    }

    /// Hashes ahead, until the chunks are stored (see the module documentation): each
    /// subtree's bytes copied out under the lock, hashed outside it. Run on its own thread.
    pub(super) fn prehash(&self, hasher: super::crypt::ChunkHasher) {
        let mut bytes = vec![0u8; SUBTREE];
        let mut st = self.lock();
        loop {
            if st.finishing {
                return;
            }
            let next = if st.tail { st.todo.pop_first() } else { None };
            let Some((c, k)) = next else {
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let Some(gen) = self.subtree_bytes(&st, c, k, &mut bytes) else {
                continue;
            };
            drop(st);
            let part = treehash::subtree(&hasher, k, &bytes);
            st = self.lock();
            if let Some(p) = st
                .cache
                .get_mut(&c)
                .filter(|e| e.gen == gen)
                .and_then(|e| e.pre.as_mut())
            {
                p.set(k, part);
                st.prehashed += SUBTREE as u64;
            }
        }
    }

    /// Whether subtree `k` of chunk `c` is final in the cache: every byte of the domain in
    /// it delivered (or it holds none).
    fn subtree_final(&self, e: &Cached, c: u64, k: usize) -> bool {
        let s = c * self.chunk + (k * SUBTREE) as u64;
        subtract(&clip(&self.domain.read, s, s + SUBTREE as u64), &e.valid).is_empty()
    }

    /// Copies the final bytes of subtree `k` of cached chunk `c` into `out` (what `emit`
    /// makes of them: the used bytes as delivered, zeros elsewhere) and returns the cache
    /// entry's use, or `None` when it is not cached, hashed already or not final.
    fn subtree_bytes(&self, st: &State, c: u64, k: usize, out: &mut [u8]) -> Option<u64> {
        let e = st.cache.get(&c)?;
        if e.pre.as_ref().is_none_or(|p| p.has(k)) || !self.subtree_final(e, c, k) {
            return None;
        }
        let a = c * self.chunk;
        let s = a + (k * SUBTREE) as u64;
        let t = s + SUBTREE as u64;
        let keep = match &self.domain.used {
            None => vec![(s, t)],
            Some(u) => clip(u, s, t),
        };
        out.fill(0);
        for (x, y) in keep {
            let (i, j) = ((x - a) as usize, (y - a) as usize);
            out[(x - s) as usize..(y - s) as usize].copy_from_slice(&e.buf[i..j]);
        }
        Some(e.gen)
    }

    pub fn stats(&self) -> FeedStats {
        let st = self.lock();
        FeedStats {
            rereads: st.rereads,
            reread_bytes: st.reread_bytes,
            reread_failed_bytes: st.reread_failed.iter().map(|r| r.1 - r.0).sum(),
            prehashed_bytes: st.prehashed,
        }
    }

    /// Builds chunk `c` from the cache, the current `piece` and re-reads of whatever else of
    /// `good` is missing, and sends it to the compressors.
    fn emit(
        &self,
        st: &mut State,
        c: u64,
        cached: Option<Cached>,
        piece: Option<(u64, &[u8])>,
        good: &[(u64, u64)],
        mut bad: Ranges,
    ) -> Result<()> {
        let (a, b) = self.span(c);
        let len = (b - a) as usize;
        let mut slot = st.free.recv().map_err(|_| stopped())?;
        // A chunk without a used block (most of a reused disk's free space, all emitted by
        // `finish` at the end while the compressors have nothing else to do) carries no bytes:
        // nothing reads its buffer (its hash is the zero chunk's), so nothing is filled.
        if cached.is_none()
            && piece.is_none()
            && good.is_empty()
            && bad.is_empty()
            && self
                .domain
                .used
                .as_ref()
                .is_some_and(|u| clip(u, a, b).is_empty())
        {
            slot.data.set_len(len);
            return self.send(st, c, slot, true, Vec::new(), None);
        }
        let lbs = self.lbs as usize;
        // Room for whole sectors: a source that ends mid-sector is read with a padded length.
        let padded = len
            .div_ceil(lbs)
            .saturating_mul(lbs)
            .min(slot.data.capacity());
        slot.data.set_len(padded);
        // Zeros only where nothing below writes: the cached ranges, the piece and the good
        // ranges (read again, or zeroed where that fails) are all written over (on a healthy
        // disk the piece is the whole chunk, so this is nothing; a whole-chunk memset was ~2 %
        // of a create's CPU).
        let mut covered: Ranges = good.to_vec();
        if let Some(cch) = &cached {
            for &(s, e) in &cch.valid {
                add_range(&mut covered, s, e);
            }
        }
        if let Some((off, bytes)) = piece {
            add_range(&mut covered, off, off + bytes.len() as u64);
        }
        for (s, e) in subtract(&[(a, a + padded as u64)], &covered) {
            slot.data[(s - a) as usize..(e - a) as usize].fill(0);
        }
        let mut have: Ranges = Vec::new();
        if let Some(cch) = &cached {
            for &(s, e) in &cch.valid {
                slot.data[(s - a) as usize..(e - a) as usize]
                    .copy_from_slice(&cch.buf[(s - a) as usize..(e - a) as usize]);
                add_range(&mut have, s, e);
            }
        }
        if let Some((off, bytes)) = piece {
            let o = (off - a) as usize;
            slot.data[o..o + bytes.len()].copy_from_slice(bytes);
            add_range(&mut have, off, off + bytes.len() as u64);
        }
        for (s, e) in subtract(good, &have) {
            let failed = self.reread(st, &mut slot.data, a, s, e)?;
            for r in failed {
                add_range(&mut bad, r.0, r.1);
                add_range(&mut st.reread_failed, r.0, r.1);
            }
        }
        slot.data.set_len(len);
        let unallocated = self.keep_used(&mut slot.data, a);
        let bad = bad.iter().map(|r| (r.0, r.1 - r.0)).collect();
        // The subtrees hashed ahead were hashed from these same cached bytes.
        let pre = cached
            .and_then(|cch| cch.pre)
            .filter(|p| p.known() > 0 && p.subtrees() * SUBTREE == len);
        self.send(st, c, slot, unallocated, bad, pre)
    }

    /// Only the used blocks are kept: free blocks (and the rest of a sector read with them)
    /// are made zeros in `data` (the chunk at `a`), so deleted data is neither stored nor
    /// leaked. Returns whether the chunk has no used block.
    fn keep_used(&self, data: &mut [u8], a: u64) -> bool {
        let Some(u) = &self.domain.used else {
            return false;
        };
        let keep = clip(u, a, a + data.len() as u64);
        let mut p = a;
        for &(s, e) in &keep {
            data[(p - a) as usize..(s - a) as usize].fill(0);
            p = e;
        }
        data[(p - a) as usize..].fill(0);
        keep.is_empty()
    }

    /// Chunk `c` complete in one piece, `buf` (a whole chunk read, as long as a chunk buffer):
    /// `buf` becomes the chunk's buffer as it is, and a free chunk buffer is given back for
    /// the engine's next read (no copy).
    fn emit_whole(&self, st: &mut State, c: u64, buf: AlignedBuf) -> Result<AlignedBuf> {
        let mut slot = st.free.recv().map_err(|_| stopped())?;
        let old = std::mem::replace(&mut slot.data, buf);
        let unallocated = self.keep_used(&mut slot.data, c * self.chunk);
        self.send(st, c, slot, unallocated, Vec::new(), None)?;
        Ok(old)
    }

    /// Hands chunk `c` (its bytes in `slot`) to the compressors as the next sequence number.
    fn send(
        &self,
        st: &mut State,
        c: u64,
        slot: Slot,
        unallocated: bool,
        bad: Vec<(u64, u64)>,
        pre: Option<Partial>,
    ) -> Result<()> {
        let parent_hash = match st.parent.as_mut() {
            Some(p) => Some(p.entry(c)?.hash),
            None => None,
        };
        set(&mut st.emitted, c);
        let seq = st.seq;
        st.seq += 1;
        if seq.is_multiple_of(self.batch) {
            st.batch_so_far.clear();
        }
        st.batch_so_far.push(c);
        let tx = st.jobs.as_ref().ok_or_else(stopped)?;
        tx.send(Job {
            seq,
            i: c,
            slot,
            unallocated,
            bad,
            parent_hash,
            pre,
        })
        .map_err(|_| stopped())
    }

    /// Reads `[s, e)` (good sectors) again into `buf` (chunk starting at `a`); returns the
    /// sectors that failed all the same.
    fn reread(&self, st: &mut State, buf: &mut [u8], a: u64, s: u64, e: u64) -> Result<Ranges> {
        st.rereads += 1;
        st.reread_bytes += e - s;
        let lbs = self.lbs;
        let cap = a + buf.len() as u64;
        let end_padded = |x: u64| (x.div_ceil(lbs) * lbs).min(cap);
        let whole = (s - a) as usize..(end_padded(e) - a) as usize;
        if read_exact(self.src.as_ref(), &mut buf[whole], s, self.size).is_ok() {
            return Ok(vec![]);
        }
        let mut failed = Vec::new();
        let mut p = s;
        while p < e {
            let n = lbs.min(e - p);
            let r = (p - a) as usize..(end_padded(p + n) - a) as usize;
            let mut ok = false;
            for _ in 0..REREAD_TRIES {
                st.rereads += 1;
                match read_exact(self.src.as_ref(), &mut buf[r.clone()], p, self.size) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(err) if crate::rescue::engine::is_media_error(&err) => {}
                    Err(err) => return Err(Error::io("read", self.src.name(), err).at_offset(p)),
                }
            }
            if !ok {
                buf[r].fill(0);
                add_range(&mut failed, p, p + n);
            }
            p += n;
        }
        Ok(failed)
    }

    /// Keeps `piece` (disk offset `off`) of chunk `c` for when the chunk completes; the
    /// subtrees it makes final are to be hashed ahead.
    fn keep(&self, st: &mut State, c: u64, off: u64, piece: &[u8]) {
        st.tick += 1;
        let tick = st.tick;
        let full = Partial::new(self.span(c).1 as usize - (c * self.chunk) as usize);
        if !st.cache.contains_key(&c) {
            if st.cache.len() >= self.cache_max {
                // The least recently used leaves (its bytes are read again when needed); its
                // buffer is reused.
                let Some((&old, _)) = st.cache.iter().min_by_key(|(_, v)| v.last_use) else {
                    return;
                };
                let Some(mut ev) = st.cache.remove(&old) else {
                    return;
                };
                ev.valid.clear();
                ev.last_use = tick;
                ev.gen = tick;
                ev.pre = full;
                st.cache.insert(c, ev);
            } else {
                st.cache.insert(
                    c,
                    Cached {
                        buf: AlignedBuf::new(self.chunk as usize),
                        valid: Vec::new(),
                        last_use: tick,
                        gen: tick,
                        pre: full,
                    },
                );
            }
        }
        let a = c * self.chunk;
        let Some(e) = st.cache.get_mut(&c) else {
            return;
        };
        let o = (off - a) as usize;
        e.buf[o..o + piece.len()].copy_from_slice(piece);
        add_range(&mut e.valid, off, off + piece.len() as u64);
        e.last_use = tick;
        if st.finishing || e.pre.is_none() {
            return;
        }
        let first = o / SUBTREE;
        let last = (o + piece.len()).div_ceil(SUBTREE);
        let Some(e) = st.cache.get(&c) else {
            return;
        };
        let ready: Vec<usize> = (first..last)
            .filter(|&k| self.subtree_final(e, c, k))
            .collect();
        if !ready.is_empty() {
            st.todo.extend(ready.into_iter().map(|k| (c, k)));
            if st.tail {
                self.wake.notify_one();
            }
        }
    }
}

/// `v` clipped to the ranges of `dom` (both ascending, disjoint).
fn clip_all(v: &[(u64, u64)], dom: &[(u64, u64)]) -> Ranges {
    let mut out = Vec::new();
    for &(s, e) in v {
        out.extend(clip(dom, s, e));
    }
    out
}

fn is_set(bits: &[u64], i: u64) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set(bits: &mut [u64], i: u64) {
    if let Some(w) = bits.get_mut((i / 64) as usize) {
        *w |= 1 << (i % 64);
    }
}

fn read_exact(src: &dyn BlockSource, buf: &mut [u8], off: u64, size: u64) -> std::io::Result<()> {
    let need = (buf.len() as u64).min(size.saturating_sub(off)) as usize;
    let mut done = 0;
    while done < need {
        match src.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the source ended early",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl RescueTarget for Feed {
    fn write_owned(&self, buf: AlignedBuf, len: usize, off: u64) -> Result<AlignedBuf> {
        // The common case on a healthy disk: one read is one whole chunk (the engine's cluster
        // is the chunk size and reads are cluster-aligned), and nothing of it came before.
        let c = off / self.chunk;
        let (a, b) = self.span(c);
        let whole = off == a
            && len as u64 == b - a
            && len as u64 == self.chunk
            && buf.capacity() == self.chunk as usize;
        if whole {
            let mut st = self.lock();
            let fresh = !is_set(&st.emitted, c)
                && !st.open.contains_key(&c)
                && !st.cache.contains_key(&c)
                && [
                    Status::Untried,
                    Status::NonTrimmed,
                    Status::NonScraped,
                    Status::Bad,
                ]
                .iter()
                .flat_map(|&k| map_ranges(&self.start, k, a, b))
                .map(|r| r.1 - r.0)
                .sum::<u64>()
                    == b - a;
            if fresh {
                let mut buf = buf;
                buf.set_len(len);
                return self.emit_whole(&mut st, c, buf);
            }
        }
        self.write_at(&buf[..len], off)?;
        Ok(buf)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let end = off + buf.len() as u64;
        let mut st = self.lock();
        let mut c = off / self.chunk;
        while c < self.chunks && c * self.chunk < end {
            let (a, b) = self.span(c);
            let (s, e) = (off.max(a), end.min(b));
            c += 1;
            if s >= e {
                continue;
            }
            let piece = &buf[(s - off) as usize..(e - off) as usize];
            if is_set(&st.emitted, c - 1) {
                return Err(Error::invalid(format!(
                    "internal error: bytes {s}..{e} arrived for a chunk already stored"
                )));
            }
            let start = &self.start;
            let rem = st.open.entry(c - 1).or_insert_with(|| {
                let unfinished: u64 = [
                    Status::Untried,
                    Status::NonTrimmed,
                    Status::NonScraped,
                    Status::Bad,
                ]
                .iter()
                .flat_map(|&k| map_ranges(start, k, a, b))
                .map(|r| r.1 - r.0)
                .sum();
                unfinished
            });
            *rem = rem.saturating_sub(e - s);
            if *rem == 0 {
                st.open.remove(&(c - 1));
                let cached = st.cache.remove(&(c - 1));
                let good = clip(&self.domain.read, a, b);
                self.emit(&mut st, c - 1, cached, Some((s, piece)), &good, vec![])?;
            } else {
                self.keep(&mut st, c - 1, s, piece);
            }
        }
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn phase(&self, phase: char, _pass: u32) {
        self.set_phase(phase);
    }
    fn write_bad(&self, _off: u64, _len: u64, _zeros: &[u8]) -> Result<()> {
        // The image records unreadable sectors in its index (the final map's bad ranges).
        Ok(())
    }
    fn checkpoint(&self, map: &ExtentMap, at: ResumePoint) -> Result<()> {
        // Every chunk complete at this point has been handed on (pieces are handled in
        // order); the writer saves the journal once all of them are written.
        // (Once every chunk is handed on, the writer finishes the image by itself; a writer
        // that stopped on an error reports it, not this.)
        let st = self.lock();
        if let Some(w) = st.writer.as_ref().filter(|_| st.seq < self.chunks) {
            let open_batch = if st.seq.is_multiple_of(self.batch) {
                Vec::new()
            } else {
                st.batch_so_far.clone()
            };
            let _ = w.send(WMsg::Checkpoint {
                at_seq: st.seq,
                open_batch,
                map: super::journal::map_delta(map, &self.domain),
                resume: Some(at),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::crypt::ChunkHasher;
    use crate::rescue::SimDevice;
    use std::sync::mpsc;

    /// A held-back chunk (64 KiB: four subtrees; used bytes `0..40_000`, a bad sector in
    /// subtree 1): the subtrees its pieces make final are hashed ahead once the engine is past
    /// copying, none before; the chunk goes out with them and they finish into the hash and
    /// CRC of exactly the bytes stored (zeros at the bad sector and after the used bytes).
    #[test]
    fn held_back_chunks_are_hashed_ahead_from_their_final_bytes() {
        const CS: usize = 64 << 10;
        let size = 2 * CS as u64;
        let data = SimDevice::pattern(size as usize, 9);
        let src: Arc<dyn BlockSource> = Arc::new(SimDevice::new(data.clone(), 512));
        let domain = Arc::new(Domain::new(Some(vec![(0, 40_000)]), size, 512));
        assert_eq!(domain.read, vec![(0, 40_448)]);
        let (jtx, jrx) = mpsc::sync_channel::<Job>(4);
        let (ftx, frx) = mpsc::sync_channel::<Slot>(4);
        for _ in 0..4 {
            ftx.send(Slot {
                data: AlignedBuf::new(CS),
                out: Vec::new(),
            })
            .unwrap();
        }
        let (wtx, _wrx) = mpsc::channel();
        let start = domain.fresh_map(size);
        let feed = Arc::new(Feed::new(
            src,
            CS as u32,
            domain.clone(),
            start.clone(),
            Feed::no_chunks_emitted(2),
            0,
            jtx,
            frx,
            None,
            wtx,
            1,
            16,
        ));
        let hasher = ChunkHasher::Keyed([5; 32]);
        let worker = {
            let f = feed.clone();
            std::thread::spawn(move || f.prehash(hasher))
        };
        let bad = (20_480u64, 512u64);
        let mut map = start;
        for (s, e) in [(0u64, bad.0), (bad.0 + bad.1, 40_448)] {
            feed.write_at(&data[s as usize..e as usize], s).unwrap();
            map.set(s, e - s, Status::Finished);
        }
        map.set(bad.0, bad.1, Status::Bad);
        // Subtrees 0 and 2 are final (3 holds no byte to read but no piece touched it; 1 has
        // the bad sector); still copying: nothing hashed yet.
        assert_eq!(feed.lock().todo.len(), 2);
        assert_eq!(feed.stats().prehashed_bytes, 0);
        feed.phase('*', 1);
        let mut waited = 0;
        while feed.stats().prehashed_bytes < 2 * SUBTREE as u64 {
            assert!(waited < 6000, "the subtrees were not hashed ahead");
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        feed.finish(&map, &crate::jobs::Cancel::new()).unwrap();
        feed.close();
        worker.join().unwrap();
        let job = jrx.recv().unwrap();
        assert_eq!((job.i, job.unallocated), (0, false));
        assert_eq!(job.bad, vec![bad]);
        let mut want = data[..CS].to_vec();
        want[bad.0 as usize..(bad.0 + bad.1) as usize].fill(0);
        want[40_000..].fill(0);
        assert!(job.slot.data[..] == want[..]);
        let pre = job
            .pre
            .expect("the subtrees hashed ahead go with the chunk");
        assert_eq!(pre.known(), 2);
        assert!(pre.has(0) && pre.has(2));
        assert_eq!(
            pre.finish(&hasher, &job.slot.data),
            (hasher.hash(&want), crc32fast::hash(&want))
        );
        // The second chunk holds no used block: nothing hashed ahead.
        let j2 = jrx.recv().unwrap();
        assert!(j2.unallocated && j2.pre.is_none());
        assert_eq!(feed.stats().reread_bytes, 0);
    }

    #[test]
    fn range_helpers() {
        let v = vec![(0, 10), (20, 30), (40, 50)];
        assert_eq!(clip(&v, 5, 45), vec![(5, 10), (20, 30), (40, 45)]);
        assert_eq!(clip(&v, 10, 20), vec![]);
        assert_eq!(
            subtract(&v, &[(5, 25), (45, 60)]),
            vec![(0, 5), (25, 30), (40, 45)]
        );
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (30, 40)]),
            vec![(0, 10), (20, 30), (40, 100)]
        );
        let mut r = vec![(0, 10), (20, 30)];
        add_range(&mut r, 10, 20);
        assert_eq!(r, vec![(0, 30)]);
        add_range(&mut r, 40, 50);
        add_range(&mut r, 35, 41);
        assert_eq!(r, vec![(0, 30), (35, 50)]);
        let d = Domain::new(Some(vec![(100, 600), (1000, 1030)]), 4096, 512);
        assert_eq!(d.read, vec![(0, 1536)]);
        let m = d.fresh_map(4096);
        assert_eq!(m.status_at(0), Some(Status::Untried));
        assert_eq!(m.status_at(1536), Some(Status::Free));
    }
}
