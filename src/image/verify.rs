//! `image verify`: every CRC, every chunk hash, the media hash, the chain, full byte coverage
//! of every volume, the footer's counts against the index; resumable with a `--state` file
//! (what a resumed run takes from the state is in [`super::resume`]).
use super::crypt::Keys;
use super::dio::Stored;
use super::format::*;
use super::ops::{links, ChainLink};
use super::reader::{Chain, PayloadReader, ZeroHash};
use crate::error::{Error, ErrorKind, Result};
use crate::io::AlignedBuf;
use crate::jobs::{Cancel, Progress, ProgressSink};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Problems listed in a verify report (all are counted).
const MAX_PROBLEMS: usize = 100;

/// What `image create` wrote, kept for its verify after writing ([`verify_written`]): per index
/// segment, the sum of [`fold`] over the stored chunks this process wrote — the chunk number,
/// the CRC32 of the chunk's disk bytes (as read from the source, before compression) and the
/// BLAKE3 hash it put in the index — and how many. 12 bytes per segment (1024 chunks), so
/// bounded whatever the disk size. A segment the digest does not cover whole (chunks written
/// by an earlier, interrupted run; an entry written twice) is verified in full.
#[derive(Debug, Clone, Default)]
pub struct WrittenDigest {
    segs: Vec<(u64, u32, bool)>,
    /// The stored chunks whose records were read back and checked while the image was being
    /// made (see `ahead`): the verify after writing does not read them again.
    ahead: super::ahead::Ahead,
}

impl WrittenDigest {
    /// Records stored chunk `i` of index segment `seg`: `crc` of its disk bytes, `hash` its
    /// index hash.
    pub(super) fn add(&mut self, seg: u64, i: u64, crc: u32, hash: &[u8; 32]) {
        let s = self.slot(seg);
        s.0 = s.0.wrapping_add(fold(i, crc, hash));
        s.1 += 1;
    }

    /// Marks segment `seg` as not covered (verified in full).
    pub(super) fn poison(&mut self, seg: u64) {
        self.slot(seg).2 = true;
    }

    /// What was read ahead while the image was being made (see `ahead`).
    pub(super) fn set_ahead(&mut self, ahead: super::ahead::Ahead) {
        self.ahead = ahead;
    }

    /// Stored chunks read back and checked while the image was being made.
    pub fn ahead_chunks(&self) -> u64 {
        self.ahead.chunks()
    }

    /// What was read ahead (see `ahead`).
    #[cfg(test)]
    pub(super) fn ahead(&self) -> &super::ahead::Ahead {
        &self.ahead
    }

    fn slot(&mut self, seg: u64) -> &mut (u64, u32, bool) {
        let k = seg as usize;
        if self.segs.len() <= k {
            self.segs.resize(k + 1, (0, 0, false));
        }
        &mut self.segs[k]
    }

    /// The sum and count recorded for segment `seg` when it covers all its `stored` chunks.
    fn covering(&self, seg: u64, stored: u32) -> Option<(u64, u32)> {
        match self.segs.get(seg as usize) {
            Some(&(sum, n, false)) if n == stored && n > 0 => Some((sum, n)),
            _ => None,
        }
    }
}

/// One chunk's share of a [`WrittenDigest`]: a 64-bit mix of its number, the CRC32 of its disk
/// bytes and its hash (summed, so the order chunks are written or checked in does not matter).
pub(super) fn fold(i: u64, crc: u32, hash: &[u8; 32]) -> u64 {
    let mut x = mix(i ^ 0x6C62_6976_6572_6966);
    x = mix(x ^ crc as u64);
    for w in hash.chunks_exact(8) {
        x = mix(x ^ u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    x
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Chunk `i`'s entry `e` as a 64-bit mix of the chunk number and every field of the entry
/// (place, length, kind, flags, CRC32, group member, hash): summed per segment over the chunks
/// read ahead (see `ahead`), so the verify after writing knows that the finished index holds
/// exactly the entries whose records were checked then.
pub(super) fn place(i: u64, e: &Entry) -> u64 {
    let mut b = [0u8; ENTRY_SIZE];
    e.encode_into(&mut b);
    let mut x = mix(i ^ 0x6168_6561_6470_6c63);
    for w in b.chunks_exact(8) {
        x = mix(x ^ u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    x
}

/// What `image verify --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub image: PathBuf,
    pub chain: Vec<ChainLink>,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub problem_count: u64,
    pub problems: Vec<String>,
    pub media_hash: String,
    pub bad_bytes: u64,
    /// Chunks whose payloads an earlier, interrupted run checked (`--state`).
    pub resumed_chunks: u64,
    /// The `--state` file kept up to date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    pub notes: Vec<String>,
    pub elapsed_secs: f64,
}

struct Problems {
    list: Vec<String>,
    count: u64,
    /// Problems found reading payloads (kept by a verify state: a resumed run does not read
    /// those payloads again; everything else is found again from the index).
    payload: Vec<String>,
    payload_count: u64,
}
impl Problems {
    fn add(&mut self, m: String) {
        self.count += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(m);
        }
    }
    fn add_payload(&mut self, m: String) {
        self.payload_count += 1;
        if self.payload.len() < MAX_PROBLEMS {
            self.payload.push(m.clone());
        }
        self.add(m);
    }
}

/// A verify's `--state` while it runs: where the payload checks are, saved every few seconds.
struct StateKeeper {
    path: PathBuf,
    st: super::resume::VerifyState,
    last: Instant,
    every: Duration,
}

impl StateKeeper {
    /// Records that the payloads up to chunk `i` of chain image `k` are checked; saves when due.
    fn advance(&mut self, k: usize, next: u64, probs: &Problems) -> Result<()> {
        self.st.image = k;
        self.st.next_chunk = next;
        if self.last.elapsed() >= self.every {
            self.save(probs)?;
        }
        Ok(())
    }
    fn save(&mut self, probs: &Problems) -> Result<()> {
        self.last = Instant::now();
        self.st.problem_count = probs.payload_count;
        self.st.problems = probs.payload.clone();
        self.st.save(&self.path)
    }
}

/// The footer's counts as the index says they are: verify recomputes each one, so a footer
/// changed after the fact (with a recomputed CRC) does not pass.
#[derive(Default)]
struct Counts {
    stored: u64,
    zero: u64,
    parent: u64,
    unallocated: u64,
    payload: u64,
    bad_bytes: u64,
    bad_ranges: u64,
    /// Chunks whose "has unreadable sectors" flag disagrees with the bad ranges.
    flag_mismatches: Vec<u64>,
}

/// The payload bytes an entry accounts for: a group's payload is counted once, at its first
/// member.
fn payload_share(e: &Entry) -> u64 {
    if e.kind == Kind::Group && e.member != 0 {
        0
    } else {
        e.len as u64
    }
}

impl Counts {
    fn add_segment(&mut self, seg: &Segment, h: &Header) {
        for (j, e) in seg.entries.iter().enumerate() {
            match e.kind {
                Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group => self.stored += 1,
                Kind::Zero => self.zero += 1,
                Kind::Parent => self.parent += 1,
                Kind::Unallocated => self.unallocated += 1,
            }
            self.payload += payload_share(e);
            let i = seg.first_chunk + j as u64;
            let a = i * h.chunk_size as u64;
            let b = a + h.chunk_len(i) as u64;
            let has_bad = seg.bad.iter().any(|&(s, l)| s < b && a < s + l);
            if has_bad != (e.flags & FLAG_BAD != 0) {
                self.flag_mismatches.push(i);
            }
        }
        self.bad_ranges += seg.bad.len() as u64;
        self.bad_bytes += seg.bad.iter().map(|&(_, l)| l).sum::<u64>();
    }

    fn compare(&self, f: &Footer, path: &Path, probs: &mut Problems) {
        let pairs = [
            ("stored chunks", f.stored_chunks, self.stored),
            ("zero chunks", f.zero_chunks, self.zero),
            ("unchanged chunks", f.parent_chunks, self.parent),
            ("unallocated chunks", f.unallocated_chunks, self.unallocated),
            ("payload bytes", f.payload_bytes, self.payload),
            ("unreadable bytes", f.bad_bytes, self.bad_bytes),
            ("unreadable ranges", f.bad_ranges, self.bad_ranges),
        ];
        for (what, footer, index) in pairs {
            if footer != index {
                probs.add(format!(
                    "{}: the footer says {footer} {what} but the index has {index}: the footer \
                     was changed after the image was written",
                    path.display()
                ));
            }
        }
        if let Some(&i) = self.flag_mismatches.first() {
            probs.add(format!(
                "{}: {} chunk(s) (first: chunk {i}) are flagged as holding unreadable sectors \
                 where the index lists none, or the other way round",
                path.display(),
                self.flag_mismatches.len()
            ));
        }
    }
}

/// One chunk (or one index problem) of a verify, waiting to be counted in chunk order: the
/// payload checks run on other threads and finish in any order, but problems, progress and the
/// `--state` advance exactly as a one-chunk-at-a-time verify would.
struct Rec {
    /// Chunk number, length and whether an earlier run checked its payload; None for a
    /// problem of the index that comes before the next chunk.
    chunk: Option<(u64, usize, bool)>,
    /// Problems found so far, `true` for a payload problem (kept by a `--state`).
    probs: Vec<(bool, String)>,
    /// The sequence number of its payload check still running (None: nothing to wait for).
    waiting: Option<u64>,
}

/// The chunks dispatched and not yet counted, and the payload results that arrived early.
#[derive(Default)]
struct InOrder {
    pending: std::collections::VecDeque<Rec>,
    results: std::collections::HashMap<u64, Option<String>>,
    /// Per index segment checked against a [`WrittenDigest`]: the sum of the chunks' folds and
    /// their count so far, and whether one of them had a problem of its own.
    fast: std::collections::HashMap<u64, (u64, u32, bool)>,
}

/// A payload check's result: its sequence number, the problem found, and for a chunk checked
/// against a [`WrittenDigest`] its segment and its [`fold`] (None when the check failed).
type Checked = (u64, Option<String>, Option<(u64, Option<u64>)>);

/// Where counting goes: the verify's problems, progress and `--state`.
struct Tally<'a> {
    k: usize,
    probs: &'a mut Problems,
    prog: &'a mut Progress,
    sink: &'a dyn ProgressSink,
    keep: Option<&'a mut StateKeeper>,
    checked: u64,
    cancel: &'a Cancel,
}

impl InOrder {
    /// Takes a payload check's result (counted later, in chunk order; a fold is a sum).
    fn got(&mut self, (seq, problem, fast): Checked) {
        if let Some((seg, f)) = fast {
            let s = self.fast.entry(seg).or_default();
            match f {
                Some(f) => {
                    s.0 = s.0.wrapping_add(f);
                    s.1 += 1;
                }
                None => s.2 = true,
            }
        }
        self.results.insert(seq, problem);
    }

    /// Counts every record at the front whose payload check has finished. Stops at a cancel
    /// before the next chunk, as a verify of one chunk at a time does (so a `--state` records
    /// exactly the chunks counted before it).
    fn apply(&mut self, t: &mut Tally) -> Result<()> {
        while let Some(front) = self.pending.front_mut() {
            if front.chunk.is_some() && t.cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            if let Some(seq) = front.waiting {
                match self.results.remove(&seq) {
                    Some(p) => {
                        front.probs.extend(p.map(|m| (true, m)));
                        front.waiting = None;
                    }
                    None => break,
                }
            }
            let r = self.pending.pop_front().expect("front exists");
            for (payload, m) in r.probs {
                if payload {
                    t.probs.add_payload(m);
                } else {
                    t.probs.add(m);
                }
            }
            if let Some((i, len, resumed)) = r.chunk {
                t.checked += 1;
                t.prog.done_bytes += len as u64;
                t.sink.progress(t.prog);
                if let Some(s) = t.keep.as_deref_mut().filter(|_| !resumed) {
                    s.advance(t.k, i + 1, t.probs)?;
                }
            }
        }
        Ok(())
    }
}

/// A stored payload to fetch: the chunks whose bytes it holds, each (sequence number, chunk,
/// entry) — one, or the members of one group (kind 6) next to each other in chunk order, so a
/// group is read and decompressed once.
struct Fetch {
    items: Vec<(u64, u64, Entry, bool)>,
}

impl Fetch {
    /// The group this fetch is of (None: a single payload).
    fn group_key(&self) -> Option<(u16, u64, u32, u32)> {
        let (_, _, e, _) = self.items.first()?;
        (e.kind == Kind::Group).then_some((e.volume, e.offset, e.len, e.crc))
    }
}

/// A fetched payload for a worker: its bytes (a buffer from the pool) or why it could not be read.
struct Fetched {
    f: Fetch,
    buf: Stored,
    res: Result<()>,
}

/// Payload checks in flight at most: buffers of one stored payload each (~1 MiB), so a verify's
/// memory is bounded whatever the image's size.
fn pipeline_buffers(workers: usize) -> usize {
    workers * 2 + 2
}

/// How many chunks may wait to be counted behind a payload check still running (zero and
/// unchanged chunks need no payload; this bounds the queue they form behind one that does).
const MAX_PENDING: usize = 4096;

/// Worker threads checking payloads (CRC, decompression, BLAKE3): one per core.
fn verify_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 16))
}

/// Checks one image of the chain (`k`), its payloads against CRCs and hashes and its
/// references against the parent's index. The index is walked on this thread; one reader
/// thread fetches the stored payloads in chunk order into a bounded pool of buffers while
/// worker threads check them (CRC, decompression, BLAKE3), so reading and checking overlap;
/// the results are counted in chunk order (see [`InOrder`]).
#[allow(clippy::too_many_arguments)]
fn verify_one(
    chain: &mut Chain,
    k: usize,
    probs: &mut Problems,
    prog: &mut Progress,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    keep: Option<&mut StateKeeper>,
    digest: Option<&WrittenDigest>,
) -> Result<u64> {
    let h = chain.images[k].header.clone();
    let cs = h.chunk_size as usize;
    let reader = chain.images[k].payload_reader();
    // Chunk hashes are keyed in an encrypted image.
    let hasher = chain.images[k].hasher();
    let workers = verify_workers();
    let nbuf = pipeline_buffers(workers);
    let mut tally = Tally {
        k,
        probs,
        prog,
        sink,
        keep,
        checked: 0,
        cancel,
    };
    let (fetch_tx, fetch_rx) = mpsc::sync_channel::<Fetch>(nbuf);
    let (free_tx, free_rx) = mpsc::sync_channel::<Stored>(nbuf);
    let room = max_payload_any(cs) + chain.images[k].record_overhead() as usize;
    for _ in 0..nbuf {
        let _ = free_tx.send(Stored::with_capacity(room));
    }
    let (work_tx, work_rx) = mpsc::sync_channel::<Fetched>(nbuf);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Checked>();
    let image_path = chain.images[k].path.clone();
    let res = std::thread::scope(|s| -> Result<Walked> {
        let r = &reader;
        // Named threads (`LIFEBOAT_THREAD_CPU`, `top -H`): where a verify's time goes is visible.
        let named = |n: &str| std::thread::Builder::new().name(n.into());
        // A thread that cannot start closes its channels: the walk then stops with an error.
        let _ = named("verify-read").spawn_scoped(s, move || {
            // Reads in chunk order, one payload at a time, whenever a buffer is free.
            for f in fetch_rx {
                if cancel.is_cancelled() {
                    break;
                }
                let Ok(mut buf) = free_rx.recv() else { break };
                let (_, i, e, _) = f.items[0];
                let res = r.fetch_into(i, &e, &mut buf);
                if work_tx.send(Fetched { f, buf, res }).is_err() {
                    break;
                }
            }
        });
        let h = &h;
        for _ in 0..workers {
            let (work_rx, free_tx, done_tx) = (&work_rx, free_tx.clone(), done_tx.clone());
            let path = &image_path;
            let _ = named("verify-check").spawn_scoped(s, move || {
                let mut out = AlignedBuf::new(cs);
                let mut group = Vec::new();
                let mut refetch = Vec::new();
                loop {
                    let job = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(Fetched { f, mut buf, res }) = job else { break };
                    // A chunk's decoded bytes: against its BLAKE3 hash (a problem, or none);
                    // in a segment a [`WrittenDigest`] covers, folded with the CRC32 of those
                    // bytes instead (compared per segment once all are in: see `verify_one`).
                    // A raw chunk's CRC32 is its entry's, which `decode` just checked.
                    let check = |i: u64, e: &Entry, plain: &[u8], fast: bool| {
                        if fast {
                            let crc = if e.kind == Kind::Raw {
                                e.crc
                            } else {
                                crc32fast::hash(plain)
                            };
                            return (None, Some(fold(i, crc, &e.hash)));
                        }
                        let bad = (hasher.hash(plain) != e.hash).then(|| {
                            let a = i * cs as u64;
                            let b = a + h.chunk_len(i) as u64;
                            format!(
                                "chunk {i} (disk bytes {a}..{b}) does not match its BLAKE3 hash in {}",
                                path.display()
                            )
                        });
                        (bad, None)
                    };
                    let outcome = |seq: u64,
                                   i: u64,
                                   fast: bool,
                                   p: Result<(Option<String>, Option<u64>)>|
                     -> Checked {
                        let seg = i / h.segment_chunks as u64;
                        match p {
                            Ok((bad, f)) => (seq, bad, fast.then_some((seg, f))),
                            Err(err) => (seq, Some(err.to_string()), fast.then_some((seg, None))),
                        }
                    };
                    let mut found = Vec::with_capacity(f.items.len());
                    match f.group_key() {
                        None => {
                            let (seq, i, e, fast) = f.items[0];
                            let p = res
                                .and_then(|()| r.decode(i, &e, buf.bytes(), &mut out))
                                .map(|plain| check(i, &e, plain, fast));
                            found.push(outcome(seq, i, fast, p));
                        }
                        Some(key) => {
                            // As `Image::read_payload` reads members one after the other: the
                            // group decompressed once; a member after a failure reads it again.
                            let mut res = Some(res);
                            let mut have = None;
                            for &(seq, i, e, fast) in &f.items {
                                let p = (|| -> Result<(Option<String>, Option<u64>)> {
                                    match res.take() {
                                        Some(first) => first?,
                                        None => r.check_group_entry(i, &e)?,
                                    }
                                    if have != Some(key) {
                                        let stored = if have.is_none() && found.is_empty() {
                                            buf.bytes()
                                        } else {
                                            r.fetch(i, &e, &mut refetch)?;
                                            &mut refetch[..]
                                        };
                                        r.decode_group(i, &e, stored, &mut group)?;
                                        have = Some(key);
                                    }
                                    let len = h.chunk_len(i);
                                    Ok(check(i, &e, r.group_member(i, &e, &group, len)?, fast))
                                })();
                                found.push(outcome(seq, i, fast, p));
                            }
                        }
                    }
                    let _ = free_tx.send(buf);
                    // Keeps draining even when the counting side has stopped, so the reader
                    // never waits on a full queue.
                    for r in found {
                        let _ = done_tx.send(r);
                    }
                }
            });
        }
        drop(free_tx);
        drop(done_tx);
        walk_index(
            chain, k, cancel, &reader, fetch_tx, &done_rx, &mut tally, digest,
        )
    });
    let Walked {
        media,
        coverage_ok,
        counts,
        covered,
        differ,
    } = res?;
    if let Some(s) = tally.keep.as_deref_mut() {
        s.advance(k + 1, 0, tally.probs)?;
    }
    let probs = tally.probs;
    for (first, n) in differ {
        recheck(&mut chain.images[k], first, n, probs)?;
    }
    let img = &chain.images[k];
    if media.finish() != img.footer.media_hash {
        probs.add(format!(
            "{}: the media hash does not match the chunk hashes",
            img.path.display()
        ));
    }
    if coverage_ok {
        let mut covered = covered;
        counts.compare(&img.footer, &img.path, probs);
        let lens = img.volume_lens();
        let last = lens.len() - 1;
        covered[last] += (img.footer.segments as u64) * SEGTAB_ENTRY as u64
            + FOOTER_SIZE as u64
            + img.footer.usage_len as u64;
        for (v, (p, l)) in lens.iter().enumerate() {
            if covered[v] != *l {
                probs.add(format!(
                    "{}: {} bytes of the file are not accounted for by the index (extra or overlapping data)",
                    p.display(),
                    l.abs_diff(covered[v])
                ));
            }
        }
    }
    Ok(tally.checked)
}

/// A segment (`n` chunks from `first`) whose chunks do not sum to what the job wrote: each
/// stored chunk read again and checked against its BLAKE3 hash, to name the chunks that differ;
/// when none does, the segment itself is the problem (its index holds other hashes than the
/// job computed, or its payloads other bytes than the job read, with CRCs to match).
fn recheck(img: &mut super::Image, first: u64, n: usize, probs: &mut Problems) -> Result<()> {
    let reader = img.payload_reader();
    let hasher = img.hasher();
    let mut out = AlignedBuf::new(img.header.chunk_size as usize);
    let mut scratch = Vec::new();
    let mut named = 0;
    for i in first..first + n as u64 {
        let e = img.entry(i)?;
        if !PayloadReader::is_stored(&e) {
            continue;
        }
        let (a, b) = img.chunk_range(i);
        let len = (b - a) as usize;
        let problem = match reader.read(i, &e, &mut out, &mut scratch) {
            Err(err) => Some(err.to_string()),
            Ok(()) => (hasher.hash(&out[..len]) != e.hash).then(|| {
                format!(
                    "chunk {i} (disk bytes {a}..{b}) does not match its BLAKE3 hash in {}",
                    img.path.display()
                )
            }),
        };
        if let Some(p) = problem {
            named += 1;
            probs.add(p);
        }
    }
    if named == 0 {
        let (a, _) = img.chunk_range(first);
        let (_, b) = img.chunk_range(first + n as u64 - 1);
        probs.add(format!(
            "chunks {first}..{} (disk bytes {a}..{b}) of {} read back consistent with their index \
             but not as this job wrote them (other hashes, or other bytes with CRCs to match)",
            first + n as u64,
            img.path.display()
        ));
    }
    Ok(())
}

/// The index side of [`verify_one`], on the calling thread: every segment and entry in chunk
/// order, the checks that need no payload done here, stored payloads handed to the reader
/// thread, every chunk counted in order as the results come back. Returns the media hasher,
/// whether every segment could be read, the counts and the bytes each volume's index covers.
#[allow(clippy::too_many_arguments)]
fn walk_index(
    chain: &mut Chain,
    k: usize,
    cancel: &Cancel,
    reader: &PayloadReader,
    fetch_tx: mpsc::SyncSender<Fetch>,
    done_rx: &mpsc::Receiver<Checked>,
    t: &mut Tally,
    digest: Option<&WrittenDigest>,
) -> Result<Walked> {
    let h = chain.images[k].header.clone();
    let cs = h.chunk_size as usize;
    let zero = ZeroHash::new(cs, chain.images[k].hasher());
    // A sealed record takes this much more room than its length in the index.
    let overhead = chain.images[k].record_overhead();
    let mut out = AlignedBuf::new(cs);
    let mut scratch = Vec::new();
    let mut media = MediaHasher::new(h.disk_size, h.chunk_size);
    let nvol = chain.images[k].volume_lens().len();
    let mut covered = vec![HEADER_SIZE as u64; nvol];
    let mut coverage_ok = true;
    let mut counts = Counts::default();
    let mut q = InOrder::default();
    let mut seq = 0u64;
    // Segments checked against the digest: (number, first chunk, chunks, sum, stored chunks).
    let mut expected = Vec::new();
    // The members of one group gathered so far (sent when the next stored chunk is not one).
    let mut open: Option<Fetch> = None;
    // The reader and the workers stop early only when cancelled (or when one panicked).
    let lost = || {
        if cancel.is_cancelled() {
            Error::cancelled()
        } else {
            Error::new(ErrorKind::Io, "the verify's worker threads stopped")
        }
    };
    let segs = chain.images[k].segment_refs().to_vec();
    for (s, r) in segs.iter().enumerate() {
        covered[r.volume as usize - 1] += r.len as u64 + overhead;
        let seg = match chain.images[k].segment(s) {
            Ok(seg) => seg.clone(),
            Err(e) => {
                q.pending.push_back(Rec {
                    chunk: None,
                    probs: vec![(false, e.to_string())],
                    waiting: None,
                });
                coverage_ok = false;
                continue;
            }
        };
        counts.add_segment(&seg, &h);
        // Checked against what this job wrote when the digest covers the segment whole.
        let segno = seg.first_chunk / h.segment_chunks as u64;
        let stored_n = seg
            .entries
            .iter()
            .filter(|e| PayloadReader::is_stored(e))
            .count() as u32;
        let fast = digest.and_then(|d| d.covering(segno, stored_n));
        // The chunks of such a segment whose records were read back while the image was made.
        let ahead = digest
            .filter(|_| fast.is_some())
            .and_then(|d| d.ahead.seg(segno));
        // The places of the index's entries of those chunks, and how many.
        let (mut places, mut seen) = (0u64, 0u32);
        for (j, e) in seg.entries.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            let i = seg.first_chunk + j as u64;
            let len = h.chunk_len(i);
            media.add(&e.hash);
            let stored = PayloadReader::is_stored(e);
            if stored && (e.volume as usize) >= 1 && (e.volume as usize) <= nvol {
                let share = payload_share(e);
                if share > 0 {
                    covered[e.volume as usize - 1] += share + overhead;
                }
            }
            // Payloads an earlier run checked (`--state`) are not read again; the index checks are.
            let resumed = t.keep.as_ref().is_some_and(|s| s.st.checked(k, i));
            // Nor are those read back while the image was made, if their entries are the ones
            // checked then (compared per segment below).
            let early = stored && !resumed && ahead.is_some_and(|a| a.has(j));
            if early {
                places = places.wrapping_add(place(i, e));
                seen += 1;
            }
            let mut rec = Rec {
                chunk: Some((i, len, resumed)),
                probs: Vec::new(),
                waiting: None,
            };
            if stored && !resumed && !early {
                rec.waiting = Some(seq);
                let key = (e.kind == Kind::Group).then_some((e.volume, e.offset, e.len, e.crc));
                match &mut open {
                    // The next member of the group being gathered.
                    Some(f) if key.is_some() && f.group_key() == key => {
                        f.items.push((seq, i, *e, fast.is_some()))
                    }
                    _ => {
                        if let Some(f) = open.take() {
                            fetch_tx.send(f).map_err(|_| lost())?;
                        }
                        let f = Fetch {
                            items: vec![(seq, i, *e, fast.is_some())],
                        };
                        if key.is_some() {
                            open = Some(f);
                        } else {
                            fetch_tx.send(f).map_err(|_| lost())?;
                        }
                    }
                }
                seq += 1;
            } else {
                // No payload to read (or read before): checked here, from the index.
                let read = if resumed || early {
                    Ok(())
                } else {
                    reader.read(i, e, &mut out, &mut scratch)
                };
                match read {
                    Err(err) => rec.probs.push((true, err.to_string())),
                    Ok(()) => {
                        let (a, b) = chain.images[k].chunk_range(i);
                        match e.kind {
                            Kind::Zero | Kind::Unallocated if zero.get(len) != e.hash => {
                                rec.probs.push((false, format!("chunk {i} (disk bytes {a}..{b}): zero or unallocated chunk with a wrong hash")))
                            }
                            // An image verified alone (a copy): its references are checked for their form only.
                            Kind::Parent if chain.alone => {}
                            Kind::Parent => match chain.images.get_mut(k + 1).map(|p| p.entry(i)) {
                                Some(Ok(pe)) if pe.hash == e.hash => {}
                                Some(Ok(_)) => rec.probs.push((false, format!(
                                    "chunk {i} (disk bytes {a}..{b}) is marked unchanged but the parent {} holds other data",
                                    chain.images[k + 1].path.display()
                                ))),
                                Some(Err(err)) => rec.probs.push((false, err.to_string())),
                                None => rec.probs.push((false, format!("chunk {i} refers to a parent the image does not have"))),
                            },
                            _ => {}
                        }
                    }
                }
            }
            q.pending.push_back(rec);
            while let Ok(c) = done_rx.try_recv() {
                q.got(c);
            }
            q.apply(t)?;
            if q.pending.len() > MAX_PENDING {
                // About to wait for results: what is gathered must be on its way.
                if let Some(f) = open.take() {
                    fetch_tx.send(f).map_err(|_| lost())?;
                }
            }
            while q.pending.len() > MAX_PENDING {
                let c = done_rx.recv().map_err(|_| lost())?;
                q.got(c);
                q.apply(t)?;
            }
        }
        if let Some((sum, n)) = fast {
            let early = ahead.map(|a| (a.place, a.fold, a.n, places, seen));
            expected.push((segno, seg.first_chunk, seg.entries.len(), sum, n, early));
        }
    }
    // Everything is dispatched: the reader ends after the last fetch, the workers after the last check.
    if let Some(f) = open.take() {
        fetch_tx.send(f).map_err(|_| lost())?;
    }
    drop(fetch_tx);
    while !q.pending.is_empty() {
        q.apply(t)?;
        if q.pending.is_empty() {
            break;
        }
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(c) => q.got(c),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(lost()),
        }
    }
    // Every result is in: each segment checked against the digest sums to what was written,
    // unless one of its chunks already had a problem of its own (reported).
    // Chunks read back while the image was made count with the shares checked then, when the
    // index holds exactly the entries checked then (else the segment is read again in full).
    let differ = expected
        .into_iter()
        .filter(|&(segno, _, _, sum, n, early)| {
            let (fold, m0) = match early {
                None => (0, 0),
                Some((place, fold, m, places, seen)) if place == places && m == seen => (fold, m),
                Some(_) => return true,
            };
            match q.fast.get(&segno) {
                Some(&(_, _, true)) => false,
                Some(&(got, m, false)) => (got.wrapping_add(fold), m + m0) != (sum, n),
                None => (fold, m0) != (sum, n),
            }
        })
        .map(|(_, first, len, _, _, _)| (first, len))
        .collect();
    Ok(Walked {
        media,
        coverage_ok,
        counts,
        covered,
        differ,
    })
}

/// What [`walk_index`] found: the media hasher, whether every segment could be read, the
/// counts, the bytes each volume's index covers, and the segments checked against a
/// [`WrittenDigest`] that do not match it (first chunk, chunks).
struct Walked {
    media: MediaHasher,
    coverage_ok: bool,
    counts: Counts,
    covered: Vec<u64>,
    differ: Vec<(u64, usize)>,
}

/// Verifies the image at `path` and every parent it needs.
pub fn verify(path: &Path, sink: &dyn ProgressSink, cancel: &Cancel) -> Result<VerifyReport> {
    verify_resumable(path, sink, cancel, None)
}

/// [`verify`] with a state file (`--state`): resumed from it when it holds an unfinished verify
/// of this image, kept up to date every few seconds, when stopped and at the end (see
/// [`super::resume`] for what a resumed run checks again and what it takes from the state).
pub fn verify_resumable(
    path: &Path,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    state: Option<&Path>,
) -> Result<VerifyReport> {
    let mut chain = Chain::open(path)?;
    verify_chain(
        &mut chain,
        path,
        sink,
        cancel,
        state,
        "image-verify",
        usize::MAX,
        None,
    )
}

/// The verify after writing (`image create`): every volume of the image at `path` is read
/// from its storage, not from the memory that wrote it — with O_DIRECT, as clone's verify
/// reads its target, or where the filesystem refuses that, fsynced and its pages dropped from
/// the page cache first ([`crate::io::drop_file_cache`]; see [`super::dio`]); then the image
/// is verified in full — every CRC, every payload's BLAKE3
/// hash, the media hash, the counts, the coverage of every byte, each reference to the parent's
/// index — except the parents' own payloads (they were verified when they were written).
/// Progress is reported as `job`'s `verifying` phase.
/// With `written` (what the create that just wrote the image recorded: see [`WrittenDigest`]),
/// the decoded bytes of each stored chunk in a segment it covers are checked by their CRC32
/// against it instead of by recomputing their BLAKE3 hash: the payload's own CRC32 (and tag)
/// proves the storage returned what was written, the digest that it decodes to the bytes the
/// job read from the source and that the index holds the hashes it computed from them (see
/// `docs/image-format.md`, "Verify after writing"). A segment that differs is checked again
/// chunk by chunk with BLAKE3 to name the chunks.
/// `parent`: where the parent of an incremental just written is (it may be on another
/// partition than the image, mounted by the job, which its recorded location does not say).
/// An encrypted image is opened with `keys` (the job's, already unlocked once: no second KDF
/// run) and every record's tag is checked too.
pub fn verify_written(
    path: &Path,
    parent: Option<&Path>,
    keys: &Keys,
    written: Option<&WrittenDigest>,
    job: &str,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    test_pause_before_verify();
    let top = super::Image::open_from_storage(path, keys)?;
    let mut chain = match parent {
        Some(p) => {
            let mut chain = Chain::open_with(p, keys)?;
            chain.images.insert(0, top);
            chain
        }
        None => Chain::from_top(top, keys)?,
    };
    verify_chain(&mut chain, path, sink, cancel, None, job, 1, written)
}

/// Tests only, and only in debug builds (release builds ignore it): with
/// `LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY=DIR` the verify after writing creates `DIR/ready` and
/// waits (up to 10 minutes) for `DIR/go`, so that a test can change the storage under the
/// written image while the image's pages are still in the page cache — the verify must see
/// the change (tests/image_copy.rs).
pub(super) fn test_pause_before_verify() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(dir) = std::env::var_os("LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY").map(PathBuf::from) else {
        return;
    };
    let _ = std::fs::write(dir.join("ready"), b"");
    let until = Instant::now() + Duration::from_secs(600);
    while !dir.join("go").exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Verifies the one image whose first volume is `path` and whose volume `n` is the file
/// `volume(n)` (a copy under its `.partial` names) in full, without its parents, read from
/// its storage ([`super::Image::open_named_from_storage`]): references to the parent are
/// checked for their form, not against the parent's index. An encrypted image needs its key
/// (`keys`) for this: every record's tag is checked as it is opened.
pub(super) fn verify_files(
    path: &Path,
    volume: &dyn Fn(u32) -> PathBuf,
    keys: &Keys,
    job: &str,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let img = super::Image::open_named_from_storage(path, keys, volume)?;
    let mut chain = Chain::alone(img);
    verify_chain(&mut chain, path, sink, cancel, None, job, 1, None)
}

/// Verifies the first `depth` images of the opened `chain` of the image at `path` (all of it
/// with `usize::MAX`; every image of the chain was opened and its links checked either way).
#[allow(clippy::too_many_arguments)]
fn verify_chain(
    chain: &mut Chain,
    path: &Path,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    state: Option<&Path>,
    job: &str,
    depth: usize,
    digest: Option<&WrittenDigest>,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let depth = depth.min(chain.images.len());
    let total: u64 = chain.images[..depth]
        .iter()
        .map(|i| i.header.disk_size)
        .sum();
    let mut prog = Progress::new(job, "verifying", total);
    let mut notes = Vec::new();
    let mut keep = match state {
        Some(p) => {
            let ids = super::resume::chain_ids(chain);
            let st = super::resume::VerifyState::load_or_new(p, ids, &mut notes)?;
            Some(StateKeeper {
                path: p.to_path_buf(),
                st,
                last: Instant::now(),
                every: super::resume::save_interval(super::resume::SAVE_EVERY),
            })
        }
        None => None,
    };
    // Problems an earlier run found in payloads it read (this run does not read them again).
    let (payload, payload_count) = keep.as_ref().map_or((Vec::new(), 0), |s| {
        (s.st.problems.clone(), s.st.problem_count)
    });
    let mut probs = Problems {
        list: payload.clone(),
        count: payload_count,
        payload,
        payload_count,
    };
    let resumed_chunks = keep.as_ref().map_or(0, |s| {
        (0..s.st.image.min(chain.images.len()))
            .map(|k| chain.images[k].header.chunk_count())
            .sum::<u64>()
            + s.st.next_chunk
    });
    let mut checked = 0;
    for k in 0..depth {
        let d = if k == 0 { digest } else { None };
        match verify_one(
            chain,
            k,
            &mut probs,
            &mut prog,
            sink,
            cancel,
            keep.as_mut(),
            d,
        ) {
            Ok(n) => checked += n,
            Err(e) => {
                // Stopped (cancelled, or the state could not be saved): keep what is checked.
                if let Some(s) = keep.as_mut() {
                    let _ = s.save(&probs);
                }
                return Err(e);
            }
        }
    }
    if let Some(s) = keep.as_mut() {
        s.st.complete = true;
        s.save(&probs)?;
    }
    let top = chain.top();
    Ok(VerifyReport {
        ok: probs.count == 0,
        image: path.to_path_buf(),
        chain: links(chain),
        chunks_checked: checked,
        bytes_checked: prog.done_bytes,
        problem_count: probs.count,
        problems: probs.list,
        media_hash: hex(&top.footer.media_hash),
        bad_bytes: top.footer.bad_bytes,
        resumed_chunks,
        state_file: state.map(Path::to_path_buf),
        notes,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::format::Compression;
    use crate::image::{create, CreateOptions, SourceIdentity};
    use crate::jobs::NoProgress;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    fn dir(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("verify-{tag}"))
    }

    /// A 40 MiB disk of compressible, incompressible and zero chunks, imaged (all sectors).
    fn image(d: &Path) -> PathBuf {
        image_as(d, "disk", Compression::Zstd(2), 0).0
    }

    /// [`image`] compressed with `compress`, chunk 13's bytes changed by `seed` (0: not),
    /// named `NAME.lbi`; with what the create wrote.
    fn image_as(d: &Path, name: &str, compress: Compression, seed: u8) -> (PathBuf, WrittenDigest) {
        let disk = d.join("disk.raw");
        let mut bytes = vec![0u8; 40 * MIB as usize];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for (c, chunk) in bytes.chunks_mut(MIB as usize).enumerate() {
            match c % 4 {
                0 => {}
                1 => chunk
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (j / 512 + c) as u8),
                _ => chunk.iter_mut().for_each(|b| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }),
            }
        }
        bytes[13 * MIB as usize + 77] ^= seed;
        std::fs::write(&disk, &bytes).unwrap();
        let img = d.join(format!("{name}.lbi"));
        let dev = crate::io::Device::open(&disk, crate::io::Access::Read).unwrap();
        let opts = CreateOptions {
            all_sectors: true,
            compress,
            force: true,
            ..Default::default()
        };
        let rep = create(
            std::sync::Arc::new(dev),
            &SourceIdentity::default(),
            &img,
            &opts,
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
        (img, rep.written.expect("what the create wrote"))
    }

    /// Rewrites segment 0 of `img` after `change` (its CRC recomputed: the index reads back
    /// as valid).
    fn rewrite_index(img: &Path, change: impl FnOnce(&mut Segment)) {
        let mut im = super::super::Image::open(img).unwrap();
        let r = im.segment_refs()[0];
        let mut seg = im.segment(0).unwrap().clone();
        change(&mut seg);
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        let b = seg.encode();
        assert_eq!(b.len(), r.len as usize);
        f.write_all_at(&b, r.offset).unwrap();
    }

    fn after_writing(img: &Path, written: Option<&WrittenDigest>) -> VerifyReport {
        let keys = Keys::global();
        verify_written(img, None, &keys, written, "t", &NoProgress, &Cancel::new()).unwrap()
    }

    #[test]
    fn the_verify_after_writing_checks_the_bytes_read_back_against_what_was_written() {
        // Read with O_DIRECT, and (`no-odirect`: direct reads refused, see `dio`) through the
        // page cache dropped first: the same findings.
        for tag in ["written", "written-no-odirect"] {
            after_writing_finds(&dir(tag));
        }
    }

    fn after_writing_finds(d: &Path) {
        let direct = !d.to_string_lossy().contains("no-odirect");
        for compress in [Compression::Lz4, Compression::Zstd(2)] {
            let (img, digest) = image_as(d, "a", compress, 0);
            let r = after_writing(&img, Some(&digest));
            assert!(r.ok, "{compress:?}: {:?}", r.problems);
            // How it read (a filesystem here without O_DIRECT reads the dropped cache too).
            let im = super::super::Image::open_from_storage(&img, &Keys::global()).unwrap();
            let mut st = Stored::with_capacity(0);
            let mut plain = super::super::Image::open(&img).unwrap();
            let (i, e) = (0..im.header.chunk_count())
                .map(|i| (i, plain.entry(i).unwrap()))
                .find(|(_, e)| PayloadReader::is_stored(e))
                .unwrap();
            im.payload_reader().fetch_into(i, &e, &mut st).unwrap();
            if direct {
                if !im.reads_directly() {
                    crate::errln!(
                        "note: {} has no O_DIRECT: both runs read the cache",
                        d.display()
                    );
                }
            } else {
                assert!(
                    !im.reads_directly(),
                    "the refused direct reads did not fall back"
                );
            }
            assert_eq!(r.bytes_checked, 40 * MIB);
            // Two stored chunks of one kind whose entries point at each other's payloads (with
            // each other's CRC32s, each keeping its own hash): every payload reads back with its
            // CRC and decodes; only the bytes' own check finds them, and names both.
            let (x, y) = match compress {
                Compression::Lz4 => (2, 7), // raw (incompressible)
                _ => (1, 2),                // members of one zstd group
            };
            let bad = d.join("swapped.lbi");
            std::fs::copy(&img, &bad).unwrap();
            rewrite_index(&bad, |seg| {
                let (a, b) = (seg.entries[x], seg.entries[y]);
                let swap = |to: &mut Entry, from: &Entry| {
                    (
                        to.offset, to.len, to.volume, to.kind, to.crc, to.member, to.members,
                    ) = (
                        from.offset,
                        from.len,
                        from.volume,
                        from.kind,
                        from.crc,
                        from.member,
                        from.members,
                    );
                };
                assert_eq!(a.kind, b.kind, "{compress:?}");
                swap(&mut seg.entries[x], &b);
                swap(&mut seg.entries[y], &a);
            });
            for written in [Some(&digest), None] {
                let r = after_writing(&bad, written);
                assert!(!r.ok, "{compress:?}");
                for c in [x, y] {
                    assert!(
                        r.problems
                            .iter()
                            .any(|p| p.starts_with(&format!("chunk {c} ")) && p.contains("BLAKE3")),
                        "{compress:?} {}: chunk {c}: {:?}",
                        written.is_some(),
                        r.problems
                    );
                }
            }
            // An image that is whole, but not the one this job wrote (chunk 13 differs): only
            // the comparison with what was written can see it.
            let (other, _) = image_as(d, "b", compress, 0x5a);
            assert!(after_writing(&other, None).ok);
            let r = after_writing(&other, Some(&digest));
            assert!(
                !r.ok,
                "{compress:?}: another image passed as the one written"
            );
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.contains("not as this job wrote them")),
                "{compress:?}: {:?}",
                r.problems
            );
        }
        let _ = std::fs::remove_dir_all(d);
    }

    /// Flips a byte in the payload of each of the chunks `which` (stored ones; a payload shared
    /// by a group's members once). Returns every chunk whose payload is now damaged, in order.
    fn damage(img: &Path, which: &[u64]) -> Vec<u64> {
        let mut im = super::super::Image::open(img).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .unwrap();
        let mut hit = std::collections::BTreeSet::new();
        for &i in which {
            let e = im.entry(i).unwrap();
            assert!(PayloadReader::is_stored(&e), "chunk {i} is not stored");
            if hit.insert(e.offset) {
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, e.offset + 3).unwrap();
                f.write_all_at(&[b[0] ^ 0x10], e.offset + 3).unwrap();
            }
        }
        (0..im.header.chunk_count())
            .filter(|&i| {
                let e = im.entry(i).unwrap();
                PayloadReader::is_stored(&e) && hit.contains(&e.offset)
            })
            .collect()
    }

    /// Cancels once the progress passes `at` bytes.
    struct CancelAt(Cancel, u64);
    impl ProgressSink for CancelAt {
        fn progress(&self, p: &Progress) {
            if p.done_bytes >= self.1 {
                self.0.cancel();
            }
        }
    }

    fn chunk_of(problem: &str) -> u64 {
        let rest = problem.split("chunk ").nth(1).expect("names a chunk");
        rest.split(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn problems_come_in_chunk_order_however_the_workers_finish() {
        let d = dir("order");
        let img = image(&d);
        let bad = damage(&img, &[2, 3, 6, 17, 18, 30, 39]);
        assert!(bad.len() >= 5, "{bad:?}");
        let r = verify(&img, &NoProgress, &Cancel::new()).unwrap();
        assert!(!r.ok);
        assert_eq!(r.chunks_checked, 40);
        assert_eq!(r.bytes_checked, 40 * MIB);
        assert_eq!(r.problem_count, bad.len() as u64, "{:?}", r.problems);
        let order: Vec<u64> = r.problems.iter().map(|p| chunk_of(p)).collect();
        assert_eq!(order, bad, "{:?}", r.problems);
        // The same image, intact again in those chunks, verifies clean.
        damage(&img, &[2, 3, 6, 17, 18, 30, 39]);
        let r = verify(&img, &NoProgress, &Cancel::new()).unwrap();
        assert!(r.ok, "{:?}", r.problems);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_resumed_verify_reports_what_an_uninterrupted_one_does() {
        let d = dir("resume");
        let img = image(&d);
        damage(&img, &[3, 10, 22, 35]);
        let whole = verify(&img, &NoProgress, &Cancel::new()).unwrap();
        for at in [MIB, 11 * MIB, 23 * MIB, 39 * MIB] {
            let st = d.join(format!("state-{at}"));
            let cancel = Cancel::new();
            let e = verify_resumable(&img, &CancelAt(cancel.clone(), at), &cancel, Some(&st))
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Cancelled);
            let r = verify_resumable(&img, &NoProgress, &Cancel::new(), Some(&st)).unwrap();
            // Counted up to the chunk that crossed `at`, exactly as a one-at-a-time verify.
            assert_eq!(r.resumed_chunks, at / MIB, "stopped at {at}");
            assert_eq!(r.problems, whole.problems, "stopped at {at}");
            assert_eq!(r.problem_count, whole.problem_count);
            assert_eq!(r.chunks_checked, whole.chunks_checked);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
