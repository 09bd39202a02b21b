//! `image create`: the pipeline — the source read by the rescue engine through [`super::feed`]
//! (good data first across the whole disk, then trim, scrape, retry; chunks handed over as they
//! complete), N compressor threads, the writer that stores payloads in completion order and
//! each index segment once all its chunks are stored, bounded queues, reused buffers —,
//! incrementals against a parent, and the temp-name + fsync + rename commit (the volumes
//! themselves are written by [`super::volumes::VolumeWriter`]).
use super::feed;
use super::format::*;
use super::reader::{Chain, Image};
use super::volumes::VolumeWriter;
use crate::error::{Error, Result};
pub use crate::io::is_zero;
use crate::io::{AlignedBuf, BlockSource};
use crate::jobs::{Cancel, ProgressSink};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What `image create` compresses with unless told otherwise (see README's figures).
/// zstd level 1: on the reused-disk benchmark it made smaller images than LZ4 *and* finished
/// sooner (less to write); `--compress lz4` remains for CPU-starved machines.
pub const DEFAULT_COMPRESSION: Compression = Compression::Zstd(1);

/// Smallest accepted `--split` size: room for a header, a raw chunk and an index segment.
pub const MIN_SPLIT: u64 = 4 << 20;

/// Who the source is (recorded in the header).
#[derive(Debug, Clone, Default)]
pub struct SourceIdentity {
    pub model: String,
    pub serial: String,
    pub name: String,
}

/// Options of one create job.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The parent image's first volume (an incremental); `parent_hint` is recorded.
    pub parent: Option<PathBuf>,
    pub parent_hint: String,
    /// Maximum volume size in bytes.
    pub split: Option<u64>,
    pub force: bool,
    /// Compressor threads (0 = one per core).
    pub threads: usize,
    pub chunk_size: u32,
    /// Read every sector (`--all-sectors`): no used-block maps, today's forensic copy.
    pub all_sectors: bool,
    /// How chunks are compressed (`--compress`).
    pub compress: Compression,
    /// Retry passes of the rescue engine over unreadable sectors.
    pub retries: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            parent: None,
            parent_hint: String::new(),
            split: None,
            force: false,
            threads: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
            all_sectors: false,
            compress: DEFAULT_COMPRESSION,
            retries: 1,
        }
    }
}

/// What `image create --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub ok: bool,
    pub image: PathBuf,
    pub volumes: Vec<PathBuf>,
    pub uuid: String,
    pub parent: Option<PathBuf>,
    pub parent_uuid: Option<String>,
    pub disk_size_bytes: u64,
    pub chunk_size: u32,
    pub chunks: u64,
    pub stored_chunks: u64,
    pub zero_chunks: u64,
    pub unchanged_chunks: u64,
    /// Chunks without a used block: not read, not stored.
    pub unallocated_chunks: u64,
    /// Bytes the used-block plan said to read (the whole disk in all-sectors mode).
    pub used_bytes: u64,
    /// Per partition: filesystem, used bytes, mode (used blocks / all sectors) and why.
    pub partitions: Vec<crate::fs::PartitionUsage>,
    pub image_bytes: u64,
    pub bad_bytes: u64,
    pub bad_ranges: Vec<(u64, u64)>,
    pub media_hash: String,
    pub elapsed_secs: f64,
    /// Reads issued to the source while imaging (the rescue engine's, and the re-reads of good
    /// sectors of chunks that were not kept in memory), and how many of the engine's failed.
    pub reads_total: u64,
    pub reads_failed: u64,
    /// Good bytes read a second time (see `image::feed`), and those of them that failed then
    /// (stored as zeros and counted as unreadable).
    pub reread_bytes: u64,
    pub reread_failed_bytes: u64,
}

pub(super) struct Slot {
    pub(super) data: AlignedBuf,
    pub(super) out: Vec<u8>,
}

/// One chunk for the compressors: `seq` is its place in the data stream (the order in which
/// the reader side completed it), `i` the chunk number.
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) i: u64,
    pub(super) slot: Slot,
    /// No used block in the chunk: nothing was read.
    pub(super) unallocated: bool,
    /// Unreadable `(start, len)` ranges inside the chunk (zeros in `slot.data`).
    pub(super) bad: Vec<(u64, u64)>,
    pub(super) parent_hash: Option<[u8; 32]>,
}

struct Done {
    seq: u64,
    i: u64,
    slot: Slot,
    kind: Kind,
    stored: usize,
    crc: u32,
    hash: [u8; 32],
    bad: Vec<(u64, u64)>,
}

pub(super) fn push_bad(bad: &mut Vec<(u64, u64)>, s: u64, l: u64) {
    if let Some(last) = bad.last_mut() {
        if last.0 + last.1 == s {
            last.1 += l;
            return;
        }
    }
    bad.push((s, l));
}

pub(crate) fn partial_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".partial");
    PathBuf::from(s)
}

pub(crate) fn sync_dir(p: &Path) {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates an image of `src` at `image` (the first volume's path).
pub fn create(
    src: Arc<dyn BlockSource>,
    id: &SourceIdentity,
    image: &Path,
    opts: &CreateOptions,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<CreateReport> {
    let started = Instant::now();
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
        return Err(Error::invalid(
            "chunk size must be a power of two between 64 KiB and 16 MiB",
        ));
    }
    if let Some(s) = opts.split {
        if s < MIN_SPLIT {
            return Err(Error::invalid(format!(
                "--split must be at least {MIN_SPLIT} bytes (4 MiB)"
            )));
        }
    }
    if image.exists() && !opts.force {
        return Err(Error::refused(format!(
            "{} already exists; use --force to replace it (the old image stays until the new one is complete)",
            image.display()
        )));
    }
    if let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::not_found(format!(
                "directory {} does not exist",
                dir.display()
            )));
        }
    }
    let size = src.size();
    // The parent: open its whole chain now so a missing grandparent fails before any work.
    let mut parent: Option<Image> = None;
    if let Some(pp) = &opts.parent {
        let chain = Chain::open(pp)?;
        let mut imgs = chain.images;
        let p = imgs.swap_remove(0);
        if p.header.disk_size != size {
            return Err(Error::invalid(format!(
                "the parent image {} is of a {}-byte disk, the source has {} bytes: an incremental needs the same disk",
                pp.display(),
                p.header.disk_size,
                size
            )));
        }
        if p.header.chunk_size != cs {
            return Err(Error::invalid(format!(
                "the parent image {} uses another chunk size",
                pp.display()
            )));
        }
        if p.header.uuid == [0; 16] {
            return Err(Error::corrupt("parent image has no UUID"));
        }
        parent = Some(p);
    }
    // The used-block plan: which bytes hold data (filesystem maps; all sectors where unknown).
    let mut plan = crate::fs::UsageMap::analyze(src.as_ref());
    if opts.all_sectors {
        plan.force_all_sectors("--all-sectors was given");
    }
    let used_mode = plan.any_used_blocks();
    let usage = encode_usage(
        &serde_json::to_vec(&plan)
            .map_err(|e| Error::invalid("cannot encode the used-block plan").caused_by(e))?,
    );
    if usage.len() > MAX_USAGE_LEN as usize {
        return Err(Error::invalid(
            "the disk has too many partitions for the image's usage record",
        ));
    }
    let mut incompat = 0;
    if used_mode {
        incompat |= FEAT_USED_BLOCKS;
    }
    if parent.is_some() {
        incompat |= FEAT_INCREMENTAL;
    }
    if matches!(opts.compress, Compression::Zstd(_)) {
        incompat |= FEAT_ZSTD;
    }
    if opts.split.is_some() {
        incompat |= FEAT_SPLIT;
    }
    let header = Header {
        version: VERSION,
        compat: 0,
        incompat,
        volume: 1,
        uuid: new_uuid()?,
        parent_uuid: parent.as_ref().map(|p| p.header.uuid).unwrap_or([0; 16]),
        parent_media_hash: parent
            .as_ref()
            .map(|p| p.footer.media_hash)
            .unwrap_or([0; 32]),
        created: now_secs(),
        disk_size: size,
        sector_size: if src.logical_block_size() == 4096 {
            4096
        } else {
            512
        },
        chunk_size: cs,
        segment_chunks: DEFAULT_SEGMENT_CHUNKS,
        split_size: opts.split.unwrap_or(0),
        model: id.model.clone(),
        serial: id.serial.clone(),
        source_name: id.name.clone(),
        parent_path: opts.parent_hint.clone(),
    };
    let chunks = header.chunk_count();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    }
    .clamp(1, 64);
    let nslots = threads * 2 + 2;
    let out_cap = max_payload_any(cs as usize);

    let mut vw = VolumeWriter::new(image, header.clone(), opts.split)?;
    let (free_tx, free_rx) = mpsc::sync_channel::<Slot>(nslots);
    for _ in 0..nslots {
        let _ = free_tx.send(Slot {
            data: AlignedBuf::new(cs as usize),
            out: vec![0u8; out_cap],
        });
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(nslots);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let zero_full = *blake3::hash(&vec![0u8; cs as usize]).as_bytes();
    // The reader side: the rescue engine over the domain, through the feed (see `feed`).
    let lbs = src.logical_block_size().max(512) as u64;
    let domain = Arc::new(feed::Domain::new(
        used_mode.then(|| plan.extents(src.as_ref()).collect()),
        size,
        lbs,
    ));
    let map = domain.fresh_map(size);
    let feed = Arc::new(feed::Feed::new(
        src.clone(),
        cs,
        domain.clone(),
        map.clone(),
        feed::Feed::no_chunks_emitted(chunks),
        0,
        job_tx,
        free_rx,
        parent,
    ));
    let ropts = crate::rescue::Options {
        retries: opts.retries,
        hash: false,
        mapfile: None,
        job: "image-create".into(),
        ..crate::rescue::Options::default()
    };

    let mut rescued: Option<crate::rescue::Outcome> = None;
    let result = std::thread::scope(|s| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let compress = opts.compress;
            s.spawn(move || compress_loop(job_rx, done_tx, compress, cs, zero_full));
        }
        drop(done_tx);
        let vw_r = &mut vw;
        let (header_r, usage_r) = (&header, &usage);
        let writer = s.spawn(move || write_loop(vw_r, header_r, usage_r, done_rx, free_tx));
        // The engine reports progress (phase, pass, reads, time since the last good read) on
        // this thread; its writer thread hands the pieces to the feed.
        let r = crate::rescue::run(src.clone(), feed.clone(), map, &ropts, sink, cancel).and_then(
            |out| {
                if out.cancelled {
                    return Err(Error::cancelled());
                }
                feed.finish(&out.map, cancel)?;
                rescued = Some(out);
                Ok(())
            },
        );
        feed.close();
        let w = writer.join().unwrap_or_else(|_| {
            Err(Error::new(
                crate::error::ErrorKind::Io,
                "the image writer thread panicked",
            ))
        });
        match (r, w) {
            // The writer's own failure is the cause (the reader side then only saw the queue close).
            (_, Err(w)) => Err(w),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(Some(x))) => Ok(x),
            (Ok(()), Ok(None)) => Err(Error::new(
                crate::error::ErrorKind::Io,
                "image creation stopped before the end of the source",
            )),
        }
    });
    let (footer, bad_ranges) = match result {
        Ok(x) => x,
        Err(e) => {
            vw.abandon();
            return Err(e);
        }
    };
    let volumes = vw.commit()?;
    let fs = feed.stats();
    let image_bytes = volumes
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(CreateReport {
        ok: true,
        image: image.to_path_buf(),
        volumes,
        uuid: uuid_str(&header.uuid),
        parent: opts.parent.clone(),
        parent_uuid: opts.parent.as_ref().map(|_| uuid_str(&header.parent_uuid)),
        disk_size_bytes: size,
        chunk_size: cs,
        chunks,
        stored_chunks: footer.stored_chunks,
        zero_chunks: footer.zero_chunks,
        unchanged_chunks: footer.parent_chunks,
        unallocated_chunks: footer.unallocated_chunks,
        used_bytes: plan.used_bytes,
        partitions: plan.partitions.clone(),
        image_bytes,
        bad_bytes: footer.bad_bytes,
        bad_ranges,
        media_hash: hex(&footer.media_hash),
        elapsed_secs: started.elapsed().as_secs_f64(),
        reads_total: rescued.as_ref().map_or(0, |o| o.reads_total) + fs.rereads,
        reads_failed: rescued.as_ref().map_or(0, |o| o.reads_failed),
        reread_bytes: fs.reread_bytes,
        reread_failed_bytes: fs.reread_failed_bytes,
    })
}

/// Bad ranges kept for the report (all of them are in the index regardless).
const REPORT_BAD_RANGES: usize = 10_000;

/// A compressor thread: hashes each chunk, recognises zero / unallocated / unchanged chunks and
/// compresses the rest (raw when that does not help).
fn compress_loop(
    job_rx: Arc<Mutex<Receiver<Job>>>,
    done_tx: mpsc::Sender<Done>,
    compress: Compression,
    cs: u32,
    zero_full: [u8; 32],
) {
    let mut zc = match compress {
        Compression::Zstd(level) => zstd::bulk::Compressor::new(level).ok(),
        Compression::Lz4 => None,
    };
    loop {
        let job = match job_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let data = &job.slot.data[..];
        let len = data.len();
        let (kind, stored, crc, hash);
        if job.unallocated {
            hash = if len == cs as usize {
                zero_full
            } else {
                *blake3::hash(data).as_bytes()
            };
            (kind, stored, crc) = (Kind::Unallocated, 0, 0);
        } else if is_zero(data) {
            hash = if len == cs as usize {
                zero_full
            } else {
                *blake3::hash(data).as_bytes()
            };
            (kind, stored, crc) = (Kind::Zero, 0, 0);
        } else {
            hash = *blake3::hash(data).as_bytes();
            if job.parent_hash == Some(hash) {
                (kind, stored, crc) = (Kind::Parent, 0, 0);
            } else {
                let out = &mut job.slot.out[..];
                let packed = match zc.as_mut() {
                    Some(z) => z
                        .compress_to_buffer(data, out)
                        .ok()
                        .map(|n| (Kind::Zstd, n)),
                    None => lz4_flex::block::compress_into(data, out)
                        .ok()
                        .map(|n| (Kind::Lz4, n)),
                };
                match packed {
                    Some((k, n)) if n < len => {
                        (kind, stored, crc) = (k, n, crc32fast::hash(&out[..n]));
                    }
                    _ => (kind, stored, crc) = (Kind::Raw, len, crc32fast::hash(data)),
                }
            }
        }
        let d = Done {
            seq: job.seq,
            i: job.i,
            slot: job.slot,
            kind,
            stored,
            crc,
            hash,
            bad: job.bad,
        };
        if done_tx.send(d).is_err() {
            return;
        }
    }
}

/// An index segment being filled: chunks arrive in the order the reader side completed them.
#[derive(Debug, Clone, Default)]
pub(super) struct OpenSegment {
    pub(super) entries: Vec<Option<Entry>>,
    pub(super) filled: usize,
    pub(super) bad: Vec<(u64, u64)>,
}

/// The index as written so far: what a resumed create needs to go on (see `journal`).
#[derive(Debug, Clone, Default)]
pub(super) struct IndexState {
    /// Segments written, in the order written.
    pub(super) segtab: Vec<SegRef>,
    /// Segments not complete yet (by segment number): their chunks written so far.
    pub(super) open: BTreeMap<u64, OpenSegment>,
    pub(super) footer: Footer,
    /// Chunks written (entries made).
    pub(super) written: u64,
    /// The next sequence number to write.
    pub(super) next_seq: u64,
}

/// A finished image's footer and its bad ranges (capped for the report).
type Written = (Footer, Vec<(u64, u64)>);

/// Writes the chunks in sequence order (payloads of stored chunks; an index segment as soon
/// as all its chunks are written), then the tail; returns the footer and the bad ranges
/// (capped for the report), or `None` when the reader side stopped before the end.
fn write_loop(
    vw: &mut VolumeWriter,
    header: &Header,
    usage: &[u8],
    done_rx: Receiver<Done>,
    free_tx: SyncSender<Slot>,
) -> Result<Option<Written>> {
    let chunks = header.chunk_count();
    let sc = header.segment_chunks as u64;
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut idx = IndexState {
        footer: Footer {
            uuid: header.uuid,
            chunks,
            ..Default::default()
        },
        ..Default::default()
    };
    while idx.written < chunks {
        let Ok(d) = done_rx.recv() else {
            // The reader side stopped (error or cancel): the caller reports why.
            return Ok(None);
        };
        pending.insert(d.seq, d);
        while let Some(d) = pending.remove(&idx.next_seq) {
            let f = &mut idx.footer;
            let len = header.chunk_len(d.i);
            let (volume, offset) = match d.kind {
                Kind::Zero | Kind::Parent | Kind::Unallocated => (0, 0),
                Kind::Lz4 | Kind::Zstd => vw.record(&[&d.slot.out[..d.stored]])?,
                Kind::Raw => vw.record(&[&d.slot.data[..len]])?,
            };
            match d.kind {
                Kind::Zero => f.zero_chunks += 1,
                Kind::Parent => f.parent_chunks += 1,
                Kind::Unallocated => f.unallocated_chunks += 1,
                _ => f.stored_chunks += 1,
            }
            f.payload_bytes += d.stored as u64;
            let entry = Entry {
                offset,
                len: d.stored as u32,
                volume,
                kind: d.kind,
                flags: if d.bad.is_empty() { 0 } else { FLAG_BAD },
                crc: d.crc,
                hash: d.hash,
            };
            let k = d.i / sc;
            let n = (chunks - k * sc).min(sc) as usize;
            let seg = idx.open.entry(k).or_insert_with(|| OpenSegment {
                entries: vec![None; n],
                filled: 0,
                bad: Vec::new(),
            });
            let slot = &mut seg.entries[(d.i - k * sc) as usize];
            if slot.is_none() {
                seg.filled += 1;
            }
            *slot = Some(entry);
            seg.bad.extend_from_slice(&d.bad);
            let _ = free_tx.send(d.slot);
            idx.written += 1;
            idx.next_seq += 1;
            if seg.filled == n {
                let Some(seg) = idx.open.remove(&k) else {
                    continue;
                };
                let mut bad = seg.bad;
                bad.sort_unstable();
                let mut merged = Vec::with_capacity(bad.len());
                for (s, l) in bad {
                    push_bad(&mut merged, s, l);
                }
                let f = &mut idx.footer;
                f.bad_ranges += merged.len() as u64;
                f.bad_bytes += merged.iter().map(|r| r.1).sum::<u64>();
                let segment = Segment {
                    first_chunk: k * sc,
                    entries: seg.entries.into_iter().flatten().collect(),
                    bad: merged,
                };
                let bytes = segment.encode();
                let (volume, offset) = vw.record(&[&bytes])?;
                idx.segtab.push(SegRef {
                    offset,
                    volume,
                    len: bytes.len() as u32,
                    first_chunk: k * sc,
                });
            }
        }
    }
    drop(free_tx);
    finish_tail(vw, header, usage, idx).map(Some)
}

/// The tail once every chunk is written: the media hash and the report's bad ranges from the
/// segments read back in chunk order, then usage record + segment table + footer in one record
/// (never split across volumes).
fn finish_tail(
    vw: &mut VolumeWriter,
    header: &Header,
    usage: &[u8],
    idx: IndexState,
) -> Result<(Footer, Vec<(u64, u64)>)> {
    let mut f = idx.footer;
    let mut segtab = idx.segtab;
    segtab.sort_by_key(|r| r.first_chunk);
    let sc = header.segment_chunks as u64;
    let chunks = header.chunk_count();
    let mut media = MediaHasher::new(header.disk_size, header.chunk_size);
    let mut report_bad = Vec::new();
    for r in &segtab {
        let mut b = vec![0u8; r.len as usize];
        vw.read_at(r.volume, r.offset, &mut b)?;
        let n = (chunks - r.first_chunk).min(sc) as usize;
        let seg = Segment::decode(&b, header, r.first_chunk, n).map_err(|m| {
            Error::corrupt(format!(
                "the index segment just written reads back wrong: {m}"
            ))
        })?;
        for e in &seg.entries {
            media.add(&e.hash);
        }
        for &(s, l) in &seg.bad {
            if report_bad.len() < REPORT_BAD_RANGES {
                push_bad(&mut report_bad, s, l);
            }
        }
    }
    let mut tab = vec![0u8; segtab.len() * SEGTAB_ENTRY];
    for (k, r) in segtab.iter().enumerate() {
        r.encode_into(&mut tab[k * SEGTAB_ENTRY..(k + 1) * SEGTAB_ENTRY]);
    }
    f.segments = segtab.len() as u32;
    f.segtab_crc = crc32fast::hash(&tab);
    f.media_hash = media.finish();
    f.finished = now_secs();
    // The footer must know its volume and offset: decide whether the tail needs a new volume first.
    let tail = (usage.len() + tab.len() + FOOTER_SIZE) as u64;
    let (volumes, at) = vw.reserve(tail)?;
    f.volumes = volumes;
    f.usage_len = usage.len() as u32;
    f.segtab_offset = at + usage.len() as u64;
    let fb = f.encode();
    vw.record(&[usage, &tab, &fb])?;
    Ok((f, report_bad))
}
