//! The compressor stage of `image create`: each thread takes a batch of chunks consecutive in
//! the data stream (one chunk with LZ4, [`GROUP_CHUNKS`] with zstd; on a healthy disk they are
//! consecutive chunks; batch `k` is the sequence numbers `k × n .. (k + 1) × n`, so batch
//! boundaries depend only on the sequence, also in a resumed create: see `writer` and
//! `journal` for checkpoints inside a batch), hashes every chunk once
//! (BLAKE3), sorts out the unallocated, zero and unchanged ones, stores a batch of nothing but
//! random-looking chunks raw ([`looks_random`]), and compresses the rest — one
//! chunk alone, several together as a group (kind 6: one zstd frame, a larger compression unit
//! that keeps 1 MiB chunks for hashing, incrementals and used-block decisions). The batch goes
//! to the writer in one message, the payload already in the chunks' own output buffers.
use super::create::{Job, Slot};
use super::format::*;
use super::writer::WMsg;
use crate::io::is_zero;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Mutex;

/// Chunks per batch (and so per group at most) for `compress` and chunk size `cs`: 1 with LZ4,
/// else [`GROUP_CHUNKS`] as long as a group fits [`MAX_GROUP_BYTES`] (1 — no groups — when not
/// even two chunks fit).
pub(super) fn group_chunks(compress: Compression, cs: u32) -> usize {
    match compress {
        Compression::Lz4 => 1,
        Compression::Zstd(_) => match GROUP_CHUNKS.min(MAX_GROUP_BYTES / cs.max(1) as usize) {
            n if n >= 2 => n,
            _ => 1,
        },
    }
}

/// One chunk, ready to be written.
pub(super) struct Done {
    /// Place in the data stream (see [`Job`]); a batch's are consecutive.
    pub seq: u64,
    pub i: u64,
    pub slot: Slot,
    pub kind: Kind,
    /// Payload length (for a group member: the group's).
    pub stored: usize,
    /// Payload CRC32 (for a group member: the group's).
    pub crc: u32,
    /// CRC32 of the chunk's disk bytes, for a stored chunk when [`PackParams::plain_crc`]
    /// asks for it (a raw chunk's is its payload's): what the verify after writing checks the
    /// decoded bytes against (see `verify::WrittenDigest`).
    pub plain_crc: Option<u32>,
    pub hash: [u8; 32],
    pub bad: Vec<(u64, u64)>,
    /// Kind 6: position among the group's members and their number.
    pub member: u8,
    pub members: u8,
    /// Kind 6: how many of the group's payload bytes this chunk's `slot.out` holds (the payload
    /// is the members' pieces in member order).
    pub part: usize,
    /// CRC32 of the chunk's disk bytes when it was known with its hash (see `treehash`).
    pub data_crc: Option<u32>,
}

impl Done {
    /// CRC32 of the chunk's disk bytes.
    fn data_crc(&self) -> u32 {
        self.data_crc
            .unwrap_or_else(|| crc32fast::hash(&self.slot.data))
    }
}

/// A zstd compressor for units of `unit` bytes at `level` whose window is the whole unit, so a
/// match may reach back to its start (zstd's own window for levels 1–4 is 0.5–2 MiB). Otherwise
/// zstd's own parameters for the level: level 2 (the default) is zstd's "fast" strategy with a
/// 2^16-entry hash table and 6-byte minimum matches. Over 16 MiB groups that stores what level
/// 2 with 2^17 entries stored over 8 MiB groups plus ~1 %, for ~0.88× its CPU (the README's
/// figures, "Session 8").
pub(super) fn zstd_compressor(level: i32, unit: usize) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut z = zstd::bulk::Compressor::new(level).ok()?;
    let wlog = unit.next_power_of_two().trailing_zeros();
    z.set_parameter(CParameter::WindowLog(wlog)).ok()?;
    Some(z)
}

/// Takes the rest of the batch the next job belongs to: jobs up to and including the next
/// sequence number `k × n - 1` (fewer at the stream's end; the reader side sends them in
/// sequence, and holding the lock keeps a batch consecutive). Waiting for them holds no more
/// than `n - 1` slots: the reader side takes a free slot only to emit a complete chunk, and
/// every earlier batch gets written and its slots freed. Empty when the reader side is done.
/// Each job comes back hashed and sorted out ([`classify`]): while the queue is empty (the
/// reader side is behind: a slow source, the engine's trim/scrape/retry, or the chunks held
/// back around errors still to come), the jobs already taken are hashed as they wait, so a
/// batch's hashing is done by the time its last chunk arrives. Holding the lock meanwhile
/// keeps nothing from the other threads: whatever arrives next belongs to this batch.
fn take(rx: &Mutex<Receiver<Job>>, n: usize, p: &PackParams) -> Vec<Done> {
    let Ok(rx) = rx.lock() else {
        return Vec::new();
    };
    let mut done: Vec<Done> = Vec::with_capacity(n);
    let mut waiting: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        let last = waiting.back().map(|j| j.seq).or(done.last().map(|d| d.seq));
        if last.is_some_and(|s| (s + 1).is_multiple_of(n as u64)) {
            break;
        }
        match rx.try_recv() {
            Ok(j) => waiting.push_back(j),
            Err(TryRecvError::Empty) => match waiting.pop_front() {
                Some(j) => done.push(classify(j, p)),
                None => match rx.recv() {
                    Ok(j) => waiting.push_back(j),
                    Err(_) => break,
                },
            },
            Err(TryRecvError::Disconnected) => break,
        }
    }
    drop(rx);
    done.extend(waiting.into_iter().map(|j| classify(j, p)));
    done
}

/// What a compressor thread needs to know.
#[derive(Clone, Copy)]
pub(super) struct PackParams {
    pub compress: Compression,
    pub chunk_size: u32,
    /// The hash of a full zero chunk.
    pub zero_full: [u8; 32],
    /// How chunks are hashed (keyed in an encrypted image).
    pub hasher: super::crypt::ChunkHasher,
    /// Chunks per batch ([`group_chunks`]).
    pub batch: usize,
    /// The largest group payload that fits a volume (`--split`); a larger one is not made.
    pub max_group_payload: usize,
    /// Also compute the CRC32 of the disk bytes of each compressed chunk
    /// ([`Done::plain_crc`]; a raw chunk's is its payload's, computed anyway).
    pub plain_crc: bool,
}

/// One compressor thread: batches until the reader is done or the writer hangs up.
pub(super) fn run(rx: &Mutex<Receiver<Job>>, tx: Sender<WMsg>, p: PackParams) {
    let cs = p.chunk_size as usize;
    let batch = p.batch.max(1);
    let mut zc = match p.compress {
        Compression::Zstd(level) => zstd_compressor(level, cs * batch),
        Compression::Lz4 => None,
    };
    let mut unit_in = Vec::new();
    let mut unit_out = Vec::new();
    loop {
        let mut done = take(rx, batch, &p);
        if done.is_empty() {
            return;
        }
        // A batch whose every chunk to store looks like random bytes (encrypted volumes, a
        // disk filled with random data) is stored raw without running zstd over it.
        if zc.is_some() && all_look_random(&done, cs as u64) {
            for d in done.iter_mut().filter(|d| d.kind == Kind::Raw) {
                if stores_raw(d, cs as u64) {
                    store_raw(d);
                } else {
                    pack_one(d, zc.as_mut(), p.plain_crc);
                }
            }
            if tx.send(WMsg::Batch(done)).is_err() {
                return;
            }
            continue;
        }
        // Group members are full chunks (member p starts at p × chunk size); the disk's short
        // last chunk is compressed on its own.
        let (full, short): (Vec<usize>, Vec<usize>) = (0..done.len())
            .filter(|&k| done[k].kind == Kind::Raw)
            .partition(|&k| done[k].slot.data.len() == cs);
        if full.len() >= 2 && zc.is_some() {
            let max = p.max_group_payload;
            pack_group(
                &mut done,
                &full,
                zc.as_mut(),
                max,
                &mut unit_in,
                &mut unit_out,
                p.plain_crc,
            );
        } else {
            for &k in &full {
                pack_one(&mut done[k], zc.as_mut(), p.plain_crc);
            }
        }
        for &k in &short {
            pack_one(&mut done[k], zc.as_mut(), p.plain_crc);
        }
        if tx.send(WMsg::Batch(done)).is_err() {
            return;
        }
    }
}

/// Sample bytes per probe of [`looks_random`]: four slices spread over the chunk.
const PROBE_SLICE: usize = 16 << 10;

/// [`looks_random_around`] of a chunk with no unreadable sectors.
#[cfg(test)]
pub(super) fn looks_random(data: &[u8]) -> bool {
    looks_random_around(data, &[]) == Some(true)
}

/// Whether `data` looks like uniformly random bytes, judged on four [`PROBE_SLICE`]-byte
/// slices spread over it (all of it when smaller): their byte histogram is as flat as random
/// data's — Pearson's χ² against the uniform distribution (255 degrees of freedom: ~255 ± 23
/// for random bytes) at most [`RANDOM_CHI2`], about an order-0 entropy of 7.99 bits per byte
/// over 64 KiB, so Huffman coding would not shrink them — and LZ4 finds no repeats in them
/// (it saves less than 1/64 of each slice; a flat histogram alone is also that of counters and
/// other very compressible patterns). Integer arithmetic only: the same bytes always give the
/// same answer (the image's bytes must not depend on the machine, for byte-identical resumes).
///
/// Judged on the bytes outside `bad` (`[start, end)` offsets in `data`, ascending: unreadable
/// sectors, which hold zeros the job put there, not data): each probe slice moves forwards
/// past the bad ranges it meets. `None` when too little of `data` is readable to judge (no room
/// for the four slices).
fn looks_random_around(data: &[u8], bad: &[(usize, usize)]) -> Option<bool> {
    let slices: Vec<&[u8]> = if data.len() <= 4 * PROBE_SLICE {
        if !bad.is_empty() {
            return None;
        }
        vec![data]
    } else {
        let step = data.len() / 4;
        let mut v = Vec::with_capacity(4);
        for k in 0..4 {
            let mut at = k * step;
            while let Some(&(_, e)) = bad.iter().find(|&&(a, e)| a < at + PROBE_SLICE && e > at) {
                at = e;
            }
            if at + PROBE_SLICE > data.len() {
                return None;
            }
            v.push(&data[at..at + PROBE_SLICE]);
        }
        v
    };
    let mut h = [0u64; 256];
    let mut n = 0u64;
    for s in &slices {
        for &b in *s {
            h[b as usize] += 1;
        }
        n += s.len() as u64;
    }
    if n < 4096 {
        return Some(false);
    }
    // χ² = Σ (c - n/256)² / (n/256) = 256 Σ c² / n - n.
    let sq: u64 = h.iter().map(|&c| c * c).sum();
    if 256 * sq > (RANDOM_CHI2 + n) * n {
        return Some(false);
    }
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(PROBE_SLICE.max(4096))];
    Some(slices.iter().all(|s| {
        out.resize(lz4_flex::block::get_maximum_output_size(s.len()), 0);
        lz4_flex::block::compress_into(s, &mut out).is_ok_and(|k| k >= s.len() - s.len() / 64)
    }))
}

/// The χ² bound of [`looks_random`]. Compressed files (deflate, JPEG…) pass it as well as
/// random data does; that is why a batch is stored raw only when every chunk in it passes
/// (see [`all_look_random`]).
const RANDOM_CHI2: u64 = 900;

/// Whether every chunk of a batch still to be stored (kind `Raw` after [`classify`]) looks
/// random (and there is one). Only then is the batch stored without zstd: a single
/// random-looking chunk among others is often a compressed file that recurs within the group
/// (on the reused-disk sample, the ~80 such chunks compress to ~70 % in their groups; stored
/// raw they would add ~25 MiB), while a batch of nothing but random-looking chunks — an
/// encrypted volume, a disk filled with random data — does not shrink (zstd on it costs ~1 s
/// of CPU per GB natively, ~5 s per GB under QEMU's TCG, for nothing).
/// A chunk with unreadable sectors (held back around errors on a failing disk) is judged on
/// its readable bytes ([`looks_random_around`]), and not at all when too few are readable: the
/// zeros in its bad sectors would otherwise make a batch of random data look compressible and
/// cost a zstd pass over all of it (see [`stores_raw`] for how such a chunk is stored).
fn all_look_random(done: &[Done], chunk_size: u64) -> bool {
    let mut any = false;
    for d in done.iter().filter(|d| d.kind == Kind::Raw) {
        match looks_random_around(&d.slot.data, &bad_in_chunk(d, chunk_size)) {
            Some(true) => any = true,
            Some(false) => return false,
            None => {}
        }
    }
    any
}

/// The unreadable ranges of a chunk as `[start, end)` offsets in its bytes.
fn bad_in_chunk(d: &Done, chunk_size: u64) -> Vec<(usize, usize)> {
    let base = d.i * chunk_size;
    let len = d.slot.data.len() as u64;
    d.bad
        .iter()
        .map(|&(s, l)| {
            (
                s.saturating_sub(base).min(len),
                (s + l).saturating_sub(base).min(len),
            )
        })
        .filter(|&(a, e)| a < e)
        .map(|(a, e)| (a as usize, e as usize))
        .collect()
}

/// In a batch stored without zstd ([`all_look_random`]), whether a chunk is stored as it is:
/// yes unless a sixteenth or more of it is unreadable (its zeros are then worth compressing,
/// on its own: cheap, most of it is zeros).
fn stores_raw(d: &Done, chunk_size: u64) -> bool {
    let bad: usize = bad_in_chunk(d, chunk_size)
        .iter()
        .map(|&(a, e)| e - a)
        .sum();
    bad < d.slot.data.len() / 16
}

/// Stores a chunk as it is (kind `Raw`; its CRC32 is its payload's and its disk bytes').
fn store_raw(d: &mut Done) {
    let crc = d.data_crc();
    (d.kind, d.stored, d.crc, d.plain_crc) = (Kind::Raw, d.slot.data.len(), crc, Some(crc));
}

/// Hashes a chunk and decides its kind; a chunk with data to store comes out as `Raw` (the
/// caller compresses it).
fn classify(job: Job, p: &PackParams) -> Done {
    let data = &job.slot.data[..];
    let len = data.len();
    // The hash of `len` zero bytes (an unallocated chunk's buffer holds no bytes of its own:
    // see `feed`).
    let zero_hash = || {
        if len == p.chunk_size as usize {
            p.zero_full
        } else {
            p.hasher.hash(&vec![0u8; len])
        }
    };
    let (kind, stored, crc, hash);
    let mut data_crc = None;
    if job.unallocated {
        (kind, stored, crc, hash) = (Kind::Unallocated, 0, 0, zero_hash());
    } else if is_zero(data) {
        (kind, stored, crc, hash) = (Kind::Zero, 0, 0, zero_hash());
    } else {
        hash = match job.pre {
            // Subtrees hashed ahead: the rest now, the same hash (and the CRC with it).
            Some(pre) => {
                let (h, c) = pre.finish(&p.hasher, data);
                data_crc = Some(c);
                h
            }
            None => p.hasher.hash(data),
        };
        if job.parent_hash == Some(hash) {
            (kind, stored, crc) = (Kind::Parent, 0, 0);
        } else {
            (kind, stored, crc) = (Kind::Raw, len, 0);
        }
    }
    Done {
        seq: job.seq,
        i: job.i,
        slot: job.slot,
        kind,
        stored,
        crc,
        plain_crc: None,
        hash,
        bad: job.bad,
        member: 0,
        members: 0,
        part: 0,
        data_crc,
    }
}

/// Compresses one chunk on its own (zstd or LZ4); raw when that does not make it smaller.
/// `plain_crc`: see [`PackParams::plain_crc`].
fn pack_one(d: &mut Done, zc: Option<&mut zstd::bulk::Compressor<'static>>, plain_crc: bool) {
    let known_crc = d.data_crc;
    let data = &d.slot.data[..];
    let len = data.len();
    let out = &mut d.slot.out[..];
    let packed = match zc {
        Some(z) => z
            .compress_to_buffer(data, out)
            .ok()
            .map(|n| (Kind::Zstd, n)),
        None => lz4_flex::block::compress_into(data, out)
            .ok()
            .map(|n| (Kind::Lz4, n)),
    };
    (d.kind, d.stored, d.crc, d.plain_crc) = match packed {
        Some((k, n)) if n < len => (
            k,
            n,
            crc32fast::hash(&out[..n]),
            plain_crc.then(|| known_crc.unwrap_or_else(|| crc32fast::hash(data))),
        ),
        _ => {
            store_raw(d);
            return;
        }
    };
}

/// Compresses the chunks `members` of a batch together as one zstd frame (kind 6), the payload
/// spread over their output buffers in member order. When that does not save space each is
/// stored raw; when the frame would not fit a volume (more than `max` bytes, `--split`) each is
/// compressed on its own.
fn pack_group(
    done: &mut [Done],
    members: &[usize],
    mut zc: Option<&mut zstd::bulk::Compressor<'static>>,
    max: usize,
    unit_in: &mut Vec<u8>,
    unit_out: &mut Vec<u8>,
    plain_crc: bool,
) {
    unit_in.clear();
    for &k in members {
        unit_in.extend_from_slice(&done[k].slot.data);
    }
    // zstd writes into the Vec's spare capacity (the crate sets the length): no zero-filling.
    unit_out.clear();
    unit_out.reserve(zstd::zstd_safe::compress_bound(unit_in.len()));
    let n = zc
        .as_mut()
        .and_then(|z| z.compress_to_buffer(&unit_in[..], unit_out).ok());
    let room: usize = members.iter().map(|&k| done[k].slot.out.len()).sum();
    let Some(n) = n.filter(|&n| n < unit_in.len() && n <= room) else {
        for &k in members {
            store_raw(&mut done[k]);
        }
        return;
    };
    if n > max {
        for &k in members {
            pack_one(&mut done[k], zc.as_deref_mut(), plain_crc);
        }
        return;
    }
    let crc = crc32fast::hash(&unit_out[..n]);
    let mut at = 0;
    for (m, &k) in members.iter().enumerate() {
        let d = &mut done[k];
        let part = (n - at).min(d.slot.out.len());
        d.slot.out[..part].copy_from_slice(&unit_out[at..at + part]);
        at += part;
        (d.kind, d.stored, d.crc, d.part) = (Kind::Group, n, crc, part);
        let c = plain_crc.then(|| d.data_crc());
        d.plain_crc = c;
        (d.member, d.members) = (m as u8, members.len() as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;
    use std::sync::mpsc;

    const CS: usize = 64 << 10;

    fn chunk(c: u64) -> Vec<u8> {
        match c {
            5 => vec![0; CS],
            // Incompressible.
            9 => (0..CS)
                .map(|i| ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
                .collect(),
            _ => (0..CS).map(|i| ((i / 7) as u64 + c * 13) as u8).collect(),
        }
    }

    /// Runs one compressor thread over jobs `seqs` (chunk = seq) and returns its batches.
    fn run_over(seqs: std::ops::Range<u64>, max_group_payload: usize) -> Vec<Vec<Done>> {
        run_at(3, seqs, max_group_payload)
    }

    /// `run_over` at zstd level `level`.
    fn run_at(level: i32, seqs: std::ops::Range<u64>, max_group_payload: usize) -> Vec<Vec<Done>> {
        run_with(level, seqs, max_group_payload, chunk, false)
    }

    /// Random bytes (xorshift64) for seed `seed`.
    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// A job for chunk `seq` (its number too) holding `bytes`, with unreadable `bad` ranges.
    fn job_of(
        seq: u64,
        bytes: &[u8],
        bad: Vec<(u64, u64)>,
        pre: Option<crate::image::treehash::Partial>,
    ) -> Job {
        let mut data = AlignedBuf::new(CS);
        data.copy_from_slice(bytes);
        Job {
            seq,
            i: seq,
            slot: Slot {
                data,
                out: vec![0; max_payload_any(CS)],
            },
            unallocated: false,
            bad,
            parent_hash: None,
            pre,
        }
    }

    /// A compressor's parameters for zstd `level` over `CS`-byte chunks.
    fn params(level: i32, max_group_payload: usize) -> PackParams {
        PackParams {
            compress: Compression::Zstd(level),
            chunk_size: CS as u32,
            zero_full: *blake3::hash(&[0; CS]).as_bytes(),
            hasher: Default::default(),
            batch: group_chunks(Compression::Zstd(level), CS as u32),
            max_group_payload,
            plain_crc: true,
        }
    }

    /// `run_at` over the chunks `data(seq)`.
    fn run_with(
        level: i32,
        seqs: std::ops::Range<u64>,
        max_group_payload: usize,
        data_of: impl Fn(u64) -> Vec<u8>,
        prehash: bool,
    ) -> Vec<Vec<Done>> {
        let (jtx, jrx) = mpsc::sync_channel::<Job>(64);
        for s in seqs {
            let data = data_of(s);
            // With `prehash`: subtrees 0 and 2 hashed ahead (as `feed` does), the others not.
            let pre = prehash.then(|| {
                let mut p = crate::image::treehash::Partial::new(CS).unwrap();
                let st = crate::image::treehash::SUBTREE;
                for k in [0, 2] {
                    let part = crate::image::treehash::subtree(
                        &Default::default(),
                        k,
                        &data[k * st..(k + 1) * st],
                    );
                    p.set(k, part);
                }
                p
            });
            jtx.send(job_of(s, &data, vec![], pre)).unwrap();
        }
        drop(jtx);
        let (tx, rx) = mpsc::channel();
        let p = params(level, max_group_payload);
        run(&Mutex::new(jrx), tx, p);
        rx.try_iter()
            .map(|m| match m {
                WMsg::Batch(b) => b,
                WMsg::Checkpoint { .. } => panic!("a checkpoint from a compressor"),
            })
            .collect()
    }

    #[test]
    fn batches_are_cut_at_fixed_sequence_numbers() {
        assert_eq!(group_chunks(Compression::Lz4, 1 << 20), 1);
        assert_eq!(GROUP_CHUNKS, 16);
        assert_eq!(group_chunks(Compression::Zstd(1), 1 << 20), GROUP_CHUNKS);
        assert_eq!(group_chunks(Compression::Zstd(1), 4 << 20), 4);
        assert_eq!(group_chunks(Compression::Zstd(1), 8 << 20), 2);
        assert_eq!(group_chunks(Compression::Zstd(1), 16 << 20), 1);
        // A stream that starts inside a batch (seq 2) ends it at n - 1; the last batch is short.
        let n = group_chunks(Compression::Zstd(3), CS as u32) as u64;
        assert_eq!(n, GROUP_CHUNKS as u64);
        let b = run_over(2..2 * n + 5, usize::MAX);
        let seqs: Vec<Vec<u64>> = b
            .iter()
            .map(|b| b.iter().map(|d| d.seq).collect())
            .collect();
        assert_eq!(
            seqs,
            vec![
                (2..n).collect(),
                (n..2 * n).collect(),
                (2 * n..2 * n + 5).collect::<Vec<u64>>()
            ]
        );
    }

    /// A batch of random chunks, some with unreadable sectors (zeros) inside the probe slices,
    /// is stored without zstd: the chunks with a few bad sectors as they are, the one that is
    /// mostly unreadable compressed on its own. Without the bad ranges known, the zeros make
    /// the batch look compressible and it is grouped.
    #[test]
    fn unreadable_sectors_do_not_make_random_data_look_compressible() {
        let n = GROUP_CHUNKS as u64;
        let run_batch = |with_bad: bool| {
            let (jtx, jrx) = mpsc::sync_channel::<Job>(64);
            for q in 0..n {
                let mut bytes = random(CS, 300 + q);
                let mut bad = vec![];
                // Chunk 3: one bad sector at the start of the second probe slice; chunk 7:
                // all but its first 8 KiB unreadable.
                let base = q * CS as u64;
                if q == 3 {
                    let at = CS / 4;
                    bytes[at..at + 512].fill(0);
                    bad.push((base + at as u64, 512));
                }
                if q == 7 {
                    bytes[8192..].fill(0);
                    bad.push((base + 8192, CS as u64 - 8192));
                }
                jtx.send(job_of(q, &bytes, if with_bad { bad } else { vec![] }, None))
                    .unwrap();
            }
            drop(jtx);
            let (tx, rx) = mpsc::channel();
            let p = params(2, usize::MAX);
            run(&Mutex::new(jrx), tx, p);
            let b: Vec<Done> = rx
                .try_iter()
                .flat_map(|m| match m {
                    WMsg::Batch(b) => b,
                    WMsg::Checkpoint { .. } => panic!("a checkpoint from a compressor"),
                })
                .collect();
            b
        };
        let known = run_batch(true);
        for d in &known {
            let want = if d.i == 7 { Kind::Zstd } else { Kind::Raw };
            assert_eq!(d.kind, want, "chunk {}", d.i);
            assert_eq!(d.plain_crc, Some(crc32fast::hash(&d.slot.data)));
        }
        assert!(
            known[7].stored < 16 << 10,
            "chunk 7 stored {} bytes",
            known[7].stored
        );
        // The same bytes without their bad ranges: grouped, as before.
        let unknown = run_batch(false);
        assert!(unknown.iter().all(|d| d.kind == Kind::Group));
    }

    /// Jobs that trickle in (the reader side behind: each waits in the queue for the next)
    /// are hashed while they wait; the batches, kinds, hashes and payloads are those of jobs
    /// that were all queued at once, with two threads taking batches.
    #[test]
    fn jobs_that_trickle_in_give_the_same_batches() {
        let n = GROUP_CHUNKS as u64;
        let seqs = 3..2 * n + 7;
        let p = params(3, usize::MAX);
        let (jtx, jrx) = mpsc::sync_channel::<Job>(64);
        let jrx = Mutex::new(jrx);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (jrx, tx) = (&jrx, tx.clone());
                s.spawn(move || run(jrx, tx, p));
            }
            for q in seqs.clone() {
                jtx.send(job_of(q, &chunk(q), vec![], None)).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(jtx);
        });
        drop(tx);
        let mut got: Vec<Vec<Done>> = rx
            .try_iter()
            .map(|m| match m {
                WMsg::Batch(b) => b,
                WMsg::Checkpoint { .. } => panic!("a checkpoint from a compressor"),
            })
            .collect();
        got.sort_by_key(|b| b[0].seq);
        let want = run_over(seqs, usize::MAX);
        type Key = (u64, Kind, usize, u32, [u8; 32], Vec<u8>);
        let key = |b: &Vec<Done>| -> Vec<Key> {
            b.iter()
                .map(|d| {
                    let payload = match d.kind {
                        Kind::Raw => d.slot.data.to_vec(),
                        _ => d.slot.out[..d.part.max(d.stored.min(d.slot.out.len()))].to_vec(),
                    };
                    (d.seq, d.kind, d.stored, d.crc, d.hash, payload)
                })
                .collect()
        };
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            want.iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_group_decompresses_to_its_members_and_falls_back_when_too_large() {
        // Level 2 (the default, with its own hash table) and level 3.
        for level in [2, 3] {
            group_round_trip(level);
        }
    }

    fn group_round_trip(level: i32) {
        let n = GROUP_CHUNKS as u64;
        let b = run_at(level, 0..2 * n, usize::MAX);
        let kinds: Vec<Kind> = b.iter().flatten().map(|d| d.kind).collect();
        use Kind::*;
        // Chunk 5 is zero; 9 (incompressible) is still a member of its group.
        assert_eq!(kinds.len(), 2 * n as usize);
        for (k, kind) in kinds.iter().enumerate() {
            assert_eq!(*kind, if k == 5 { Zero } else { Group }, "chunk {k}");
        }
        assert_eq!(b.len(), 2);
        for batch in &b {
            let members: Vec<&Done> = batch.iter().filter(|d| d.kind == Group).collect();
            let payload: Vec<u8> = members
                .iter()
                .flat_map(|d| d.slot.out[..d.part].to_vec())
                .collect();
            assert_eq!(payload.len(), members[0].stored);
            assert_eq!(crc32fast::hash(&payload), members[0].crc);
            let whole = zstd::bulk::decompress(&payload, MAX_GROUP_BYTES).unwrap();
            let want: Vec<u8> = members.iter().flat_map(|d| chunk(d.i)).collect();
            assert!(whole == want, "batch at {}", batch[0].seq);
            for (k, d) in members.iter().enumerate() {
                assert_eq!((d.member as usize, d.members as usize), (k, members.len()));
                assert_eq!(d.hash, *blake3::hash(&chunk(d.i)).as_bytes());
                assert_eq!(d.plain_crc, Some(crc32fast::hash(&chunk(d.i))));
            }
        }
        // A group that would not fit a volume (--split): each chunk on its own.
        let b = run_at(level, 4..8, 1000);
        let kinds: Vec<Kind> = b.iter().flatten().map(|d| d.kind).collect();
        assert_eq!(kinds, [Zstd, Zero, Zstd, Zstd]);
        for d in b.iter().flatten().filter(|d| d.kind == Zstd) {
            let got = zstd::bulk::decompress(&d.slot.out[..d.stored], CS).unwrap();
            assert!(got == chunk(d.i));
            assert_eq!(d.plain_crc, Some(crc32fast::hash(&chunk(d.i))));
        }
    }

    #[test]
    fn random_bytes_look_random_and_text_or_zeros_do_not() {
        assert!(looks_random(&random(CS, 1)));
        assert!(looks_random(&random(1 << 20, 2)));
        let text: Vec<u8> = (0..1 << 20)
            .flat_map(|i: u32| format!("line {i} of a log file, value {}\n", i % 97).into_bytes())
            .take(1 << 20)
            .collect();
        assert!(!looks_random(&text));
        // A counter: a flat histogram, but repeats.
        assert!(!looks_random(&chunk(1)));
        assert!(!looks_random(&vec![0u8; CS]));
        // Bytes of 16 values only, without repeats a match finder could use: Huffman still
        // shrinks them by half, and they do not pass.
        assert!(!looks_random(
            &random(CS, 4).iter().map(|b| b % 16).collect::<Vec<u8>>()
        ));
        // Random bytes with a skewed histogram (one value in 16 bytes forced): not random.
        let mut skew = random(CS, 5);
        for b in skew.iter_mut().step_by(16) {
            *b = 0;
        }
        assert!(!looks_random(&skew));
        // Too few bytes to judge.
        assert!(!looks_random(&random(1000, 6)));
    }

    #[test]
    fn a_batch_of_random_chunks_is_stored_raw_and_a_mixed_one_is_grouped() {
        // Batch 0: random chunks and a zero one; batch 1: random chunks but one of text.
        let n = GROUP_CHUNKS as u64;
        let data = |s: u64| match s {
            3 => vec![0; CS],
            s if s == n + 4 => chunk(s),
            _ => random(CS, 100 + s),
        };
        let b = run_with(2, 0..2 * n, usize::MAX, data, false);
        use Kind::*;
        let kinds: Vec<Kind> = b.iter().flatten().map(|d| d.kind).collect();
        let mut want = vec![Raw; n as usize];
        want[3] = Zero;
        want.extend(vec![Group; n as usize]);
        assert_eq!(kinds, want);
        for d in b.iter().flatten().filter(|d| d.kind == Raw) {
            let crc = crc32fast::hash(&data(d.i));
            assert_eq!((d.stored, d.crc, d.plain_crc), (CS, crc, Some(crc)));
            assert_eq!(d.hash, *blake3::hash(&data(d.i)).as_bytes());
        }
        // The mixed batch decompresses to its members, the random ones included.
        let g = &b[1];
        let payload: Vec<u8> = g
            .iter()
            .flat_map(|d| d.slot.out[..d.part].to_vec())
            .collect();
        let whole = zstd::bulk::decompress(&payload, MAX_GROUP_BYTES).unwrap();
        assert!(whole == (n..2 * n).flat_map(data).collect::<Vec<u8>>());
    }

    #[test]
    fn subtrees_hashed_ahead_give_the_same_hashes_crcs_and_payloads() {
        // Random batches (stored raw), a mixed one (grouped) and a zero chunk, each chunk
        // with or without subtrees hashed ahead: the same results.
        let n = GROUP_CHUNKS as u64;
        let data = |s: u64| match s {
            3 => vec![0; CS],
            s if s == n + 4 => chunk(s),
            _ => random(CS, 200 + s),
        };
        let key = |d: &Done| {
            (
                d.kind,
                d.hash,
                d.crc,
                d.plain_crc,
                d.stored,
                d.slot.out[..d.part].to_vec(),
            )
        };
        let plain: Vec<_> = run_with(2, 0..2 * n, usize::MAX, data, false)
            .iter()
            .flatten()
            .map(key)
            .collect();
        let ahead: Vec<_> = run_with(2, 0..2 * n, usize::MAX, data, true)
            .iter()
            .flatten()
            .map(key)
            .collect();
        assert_eq!(plain.len(), 2 * n as usize);
        assert!(plain == ahead);
        assert!(plain.iter().any(|k| k.0 == Kind::Group) && plain.iter().any(|k| k.0 == Kind::Raw));
    }
}
