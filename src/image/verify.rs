//! `image verify`: every CRC, every chunk hash, the media hash, the chain, full byte coverage
//! of every volume, the footer's counts against the index; resumable with a `--state` file
//! (what a resumed run takes from the state is in [`super::resume`]).
use super::format::*;
use super::ops::{links, ChainLink};
use super::reader::{Chain, ZeroHash};
use crate::error::{Error, Result};
use crate::io::AlignedBuf;
use crate::jobs::{Cancel, Progress, ProgressSink};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Problems listed in a verify report (all are counted).
const MAX_PROBLEMS: usize = 100;

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

/// Checks one image of the chain (`k`), its payloads against CRCs and hashes and its
/// references against the parent's index.
fn verify_one(
    chain: &mut Chain,
    k: usize,
    probs: &mut Problems,
    prog: &mut Progress,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    mut keep: Option<&mut StateKeeper>,
) -> Result<u64> {
    let h = chain.images[k].header.clone();
    let cs = h.chunk_size as usize;
    let hasher = chain.images[k].hasher();
    let zero = ZeroHash::new(cs, hasher);
    // A sealed record takes this much more room than its length in the index.
    let overhead = chain.images[k].record_overhead();
    let mut out = AlignedBuf::new(cs);
    let mut scratch = Vec::with_capacity(max_payload_any(cs));
    let mut media = MediaHasher::new(h.disk_size, h.chunk_size);
    let nvol = chain.images[k].volume_lens().len();
    let mut covered = vec![HEADER_SIZE as u64; nvol];
    let mut coverage_ok = true;
    let mut checked = 0u64;
    let mut counts = Counts::default();
    let segs = chain.images[k].segment_refs().to_vec();
    for (s, r) in segs.iter().enumerate() {
        covered[r.volume as usize - 1] += r.len as u64 + overhead;
        let seg = match chain.images[k].segment(s) {
            Ok(seg) => seg.clone(),
            Err(e) => {
                probs.add(e.to_string());
                coverage_ok = false;
                continue;
            }
        };
        counts.add_segment(&seg, &h);
        for (j, e) in seg.entries.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            let i = seg.first_chunk + j as u64;
            let len = h.chunk_len(i);
            media.add(&e.hash);
            if matches!(e.kind, Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group)
                && (e.volume as usize) >= 1
                && (e.volume as usize) <= nvol
            {
                let share = payload_share(e);
                if share > 0 {
                    covered[e.volume as usize - 1] += share + overhead;
                }
            }
            // Payloads an earlier run checked (`--state`) are not read again; the index checks are.
            let resumed = keep.as_ref().is_some_and(|s| s.st.checked(k, i));
            let read = if resumed {
                Ok(None)
            } else {
                chain.images[k]
                    .read_payload(i, &mut out, &mut scratch)
                    .map(Some)
            };
            match read {
                Err(err) => probs.add_payload(err.to_string()),
                Ok(read) => {
                    let (a, b) = chain.images[k].chunk_range(i);
                    match e.kind {
                        Kind::Zero | Kind::Unallocated if zero.get(len) != e.hash => {
                            probs.add(format!("chunk {i} (disk bytes {a}..{b}): zero or unallocated chunk with a wrong hash"))
                        }
                        Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group if read.is_some() && hasher.hash(&out[..len]) != e.hash => probs.add_payload(format!(
                            "chunk {i} (disk bytes {a}..{b}) does not match its BLAKE3 hash in {}",
                            chain.images[k].path.display()
                        )),
                        Kind::Parent => match chain.images.get_mut(k + 1).map(|p| p.entry(i)) {
                            Some(Ok(pe)) if pe.hash == e.hash => {}
                            Some(Ok(_)) => probs.add(format!(
                                "chunk {i} (disk bytes {a}..{b}) is marked unchanged but the parent {} holds other data",
                                chain.images[k + 1].path.display()
                            )),
                            Some(Err(err)) => probs.add(err.to_string()),
                            None => probs.add(format!("chunk {i} refers to a parent the image does not have")),
                        },
                        _ => {}
                    }
                }
            }
            checked += 1;
            prog.done_bytes += len as u64;
            sink.progress(prog);
            if let Some(s) = keep.as_deref_mut().filter(|_| !resumed) {
                s.advance(k, i + 1, probs)?;
            }
        }
    }
    if let Some(s) = keep {
        s.advance(k + 1, 0, probs)?;
    }
    let img = &chain.images[k];
    if media.finish() != img.footer.media_hash {
        probs.add(format!(
            "{}: the media hash does not match the chunk hashes",
            img.path.display()
        ));
    }
    if coverage_ok {
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
    Ok(checked)
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
    let started = Instant::now();
    let mut chain = Chain::open(path)?;
    let total: u64 = chain.images.iter().map(|i| i.header.disk_size).sum();
    let mut prog = Progress::new("image-verify", "verifying", total);
    let mut notes = Vec::new();
    let mut keep = match state {
        Some(p) => {
            let ids = super::resume::chain_ids(&chain);
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
    for k in 0..chain.images.len() {
        match verify_one(
            &mut chain,
            k,
            &mut probs,
            &mut prog,
            sink,
            cancel,
            keep.as_mut(),
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
        chain: links(&chain),
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
