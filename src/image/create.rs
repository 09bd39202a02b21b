//! `image create`: the pipeline (one reader thread, N compressor threads, the ordered writer on
//! the calling thread, bounded queues, reused buffers), rescue-grade reading of a failing source,
//! incrementals against a parent, and the temp-name + fsync + rename commit (the volumes
//! themselves are written by [`super::volumes::VolumeWriter`]).
use super::format::*;
use super::reader::{Chain, Image};
use super::volumes::VolumeWriter;
use crate::error::{Error, Result};
pub use crate::io::is_zero;
use crate::io::{AlignedBuf, BlockSource};
use crate::jobs::{Cancel, Progress, ProgressSink, RateMeter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `image create` compresses with unless told otherwise (see README's figures).
/// zstd level 1: on the reused-disk benchmark it made smaller images than LZ4 *and* finished
/// sooner (less to write); `--compress lz4` remains for CPU-starved machines.
pub const DEFAULT_COMPRESSION: Compression = Compression::Zstd(1);

/// Smallest accepted `--split` size: room for a header, a raw chunk and an index segment.
pub const MIN_SPLIT: u64 = 4 << 20;
/// Bytes tried at once when narrowing a read error down (before going sector by sector).
const NARROW_STEP: usize = 64 << 10;
/// Attempts per sector before it is recorded as unreadable.
const SECTOR_TRIES: u32 = 2;

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
}

struct Slot {
    data: AlignedBuf,
    out: Vec<u8>,
}

struct Job {
    i: u64,
    slot: Slot,
    /// No used block in the chunk: nothing was read.
    unallocated: bool,
    bad: Vec<(u64, u64)>,
    parent_hash: Option<[u8; 32]>,
}

struct Done {
    i: u64,
    slot: Slot,
    kind: Kind,
    stored: usize,
    crc: u32,
    hash: [u8; 32],
    bad: Vec<(u64, u64)>,
}

/// Reads `buf` at `off` fully, except past the end of the source (`size`): the last sector of
/// a source whose size is not a sector multiple is read with a padded, aligned length.
fn read_full(src: &dyn BlockSource, buf: &mut [u8], off: u64, size: u64) -> std::io::Result<()> {
    let need = (buf.len() as u64).min(size.saturating_sub(off)) as usize;
    let mut done = 0;
    while done < need {
        match src.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "source ended early",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn push_bad(bad: &mut Vec<(u64, u64)>, s: u64, l: u64) {
    if let Some(last) = bad.last_mut() {
        if last.0 + last.1 == s {
            last.1 += l;
            return;
        }
    }
    bad.push((s, l));
}

/// Reads one chunk like a rescue tool: the whole chunk first; on an error, 64 KiB pieces, then
/// the failing pieces sector by sector with a bounded number of tries. Unreadable sectors become
/// zeros and are returned as disk byte ranges. An early end of the source is an error. `buf`
/// may extend past the end of the source (sector padding); only bytes before it count.
pub fn read_chunk_rescue(
    src: &dyn BlockSource,
    buf: &mut [u8],
    off: u64,
) -> Result<Vec<(u64, u64)>> {
    let size = src.size();
    let mut bad = Vec::new();
    let fatal =
        |e: std::io::Error, at: u64| Error::io("read the source", src.name(), e).at_offset(at);
    match read_full(src, buf, off, size) {
        Ok(()) => return Ok(bad),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(fatal(e, off)),
        Err(_) => {}
    }
    let lbs = (src.logical_block_size() as usize).max(512);
    let mut p = 0;
    while p < buf.len() && off + (p as u64) < size {
        let n = NARROW_STEP.min(buf.len() - p);
        match read_full(src, &mut buf[p..p + n], off + p as u64, size) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(fatal(e, off + p as u64))
            }
            Err(_) => {
                let mut q = p;
                while q < p + n && off + (q as u64) < size {
                    let m = lbs.min(p + n - q);
                    let mut ok = false;
                    for _ in 0..SECTOR_TRIES {
                        match read_full(src, &mut buf[q..q + m], off + q as u64, size) {
                            Ok(()) => {
                                ok = true;
                                break;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                                return Err(fatal(e, off + q as u64))
                            }
                            Err(_) => {}
                        }
                    }
                    if !ok {
                        buf[q..q + m].fill(0);
                        let real = (m as u64).min(size - (off + q as u64));
                        push_bad(&mut bad, off + q as u64, real);
                    }
                    q += m;
                }
            }
        }
        p += n;
    }
    Ok(bad)
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
    src: &dyn BlockSource,
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
    let mut plan = crate::fs::UsageMap::analyze(src);
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
    let stop = AtomicBool::new(false);
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

    let result = std::thread::scope(|s| {
        let stop = &stop;
        let header_r = &header;
        let plan_r = &plan;
        let reader = s.spawn(move || -> Result<()> {
            let mut parent = parent;
            let mut cursor = used_mode.then(|| crate::fs::UsedCursor::new(plan_r.extents(src)));
            let lbs = (src.logical_block_size() as usize).max(512);
            for i in 0..chunks {
                if stop.load(Ordering::Relaxed) || cancel.is_cancelled() {
                    return Ok(());
                }
                let Ok(mut slot) = free_rx.recv() else {
                    return Ok(());
                };
                let len = header_r.chunk_len(i);
                let start = i * cs as u64;
                let used = cursor
                    .as_mut()
                    .map(|c| c.used_in(start, start + len as u64));
                // Read whole sectors (O_DIRECT); a source that ends mid-sector is padded.
                let padded = len
                    .div_ceil(lbs)
                    .saturating_mul(lbs)
                    .min(slot.data.capacity());
                slot.data.set_len(padded);
                let mut bad = Vec::new();
                let unallocated = used.as_ref().is_some_and(|u| u.is_empty());
                match &used {
                    // No used block: nothing is read (bad sectors there are never tried).
                    Some(_) if unallocated => slot.data.fill(0),
                    Some(u) if u.as_slice() != [(start, start + len as u64)] => {
                        // Only the used blocks are kept; the free ones become zeros (deleted
                        // data is neither stored nor leaked). A chunk that is mostly used is
                        // read in one request and its free blocks zeroed; if that read fails,
                        // or the chunk is mostly free, each used range is read on its own (bad
                        // sectors in free space are never tried).
                        let used_len: u64 = u.iter().map(|r| r.1 - r.0).sum();
                        if used_len * 2 >= len as u64
                            && read_full(src, &mut slot.data, start, src.size()).is_ok()
                        {
                            let mut pos = 0usize;
                            for &(a, b) in u {
                                slot.data[pos..(a - start) as usize].fill(0);
                                pos = (b - start) as usize;
                            }
                            slot.data[pos..].fill(0);
                        } else {
                            slot.data.fill(0);
                            for &(a, b) in u {
                                let ra = ((a - start) as usize) / lbs * lbs;
                                let rb = ((b - start) as usize).div_ceil(lbs) * lbs;
                                let rb = rb.min(padded);
                                bad.extend(read_chunk_rescue(
                                    src,
                                    &mut slot.data[ra..rb],
                                    start + ra as u64,
                                )?);
                            }
                        }
                    }
                    _ => bad = read_chunk_rescue(src, &mut slot.data, start)?,
                }
                slot.data.set_len(len);
                let parent_hash = match parent.as_mut() {
                    Some(p) => Some(p.entry(i)?.hash),
                    None => None,
                };
                if job_tx
                    .send(Job {
                        i,
                        slot,
                        unallocated,
                        bad,
                        parent_hash,
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(())
        });
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let compress = opts.compress;
            s.spawn(move || {
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
            });
        }
        drop(done_tx);
        let w = write_loop(
            &mut vw, &header, &usage, done_rx, free_tx, sink, cancel, started,
        );
        if w.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let r = reader.join().unwrap_or_else(|_| {
            Err(Error::new(
                crate::error::ErrorKind::Io,
                "the reader thread panicked",
            ))
        });
        match (r, w) {
            (Err(e), _) => Err(e),
            (Ok(()), w) => w,
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
    })
}

/// Bad ranges kept for the report (all of them are in the index regardless).
const REPORT_BAD_RANGES: usize = 10_000;

#[allow(clippy::too_many_arguments)]
fn write_loop(
    vw: &mut VolumeWriter,
    header: &Header,
    usage: &[u8],
    done_rx: Receiver<Done>,
    free_tx: SyncSender<Slot>,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    started: Instant,
) -> Result<(Footer, Vec<(u64, u64)>)> {
    let chunks = header.chunk_count();
    let sc = header.segment_chunks as u64;
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let mut media = MediaHasher::new(header.disk_size, header.chunk_size);
    let mut seg = Segment {
        first_chunk: 0,
        entries: Vec::with_capacity(sc as usize),
        bad: Vec::new(),
    };
    let mut segtab: Vec<SegRef> = Vec::new();
    let mut f = Footer {
        uuid: header.uuid,
        chunks,
        ..Default::default()
    };
    let mut report_bad = Vec::new();
    let mut prog = Progress::new("image-create", "imaging", header.disk_size);
    let mut meter = RateMeter::new(Duration::from_secs(10));
    let mut last_report = Instant::now();
    // Coarse disk map for displays: '+' imaged, '-' has unreadable sectors, '.' not yet read.
    const MAP_CELLS: u64 = 64;
    let cells = MAP_CELLS.min(chunks.max(1));
    let mut bad_cell = vec![false; cells as usize];
    let cell_of = |i: u64| ((i * cells) / chunks.max(1)) as usize;
    while next < chunks {
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let Ok(d) = done_rx.recv() else {
            // The reader stopped (error or cancel): the caller reports why.
            if cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                "image creation stopped before the end of the source",
            ));
        };
        pending.insert(d.i, d);
        while let Some(d) = pending.remove(&next) {
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
            let mut flags = 0;
            if !d.bad.is_empty() {
                bad_cell[cell_of(d.i).min(cells as usize - 1)] = true;
            }
            for &(s, l) in &d.bad {
                flags = FLAG_BAD;
                f.bad_bytes += l;
                push_bad(&mut seg.bad, s, l);
                if report_bad.len() < REPORT_BAD_RANGES {
                    push_bad(&mut report_bad, s, l);
                }
            }
            seg.entries.push(Entry {
                offset,
                len: d.stored as u32,
                volume,
                kind: d.kind,
                flags,
                crc: d.crc,
                hash: d.hash,
            });
            media.add(&d.hash);
            let _ = free_tx.send(d.slot);
            next += 1;
            if seg.entries.len() as u64 == sc || next == chunks {
                f.bad_ranges += seg.bad.len() as u64;
                let bytes = seg.encode();
                let (volume, offset) = vw.record(&[&bytes])?;
                segtab.push(SegRef {
                    offset,
                    volume,
                    len: bytes.len() as u32,
                    first_chunk: seg.first_chunk,
                });
                seg.entries.clear();
                seg.bad.clear();
                seg.first_chunk = next;
            }
            prog.done_bytes = (next * header.chunk_size as u64).min(header.disk_size);
            prog.bad_bytes = f.bad_bytes;
        }
        if last_report.elapsed() >= Duration::from_millis(200) {
            last_report = Instant::now();
            let (r, eta) = meter.update(last_report, prog.done_bytes, prog.total_bytes);
            prog.rate_bytes_per_sec = r;
            prog.eta_secs = eta;
            let done_cells = cell_of(next);
            prog.map = Some(
                (0..cells as usize)
                    .map(|c| match (c < done_cells, bad_cell[c]) {
                        (_, true) => '-',
                        (true, false) => '+',
                        _ => '.',
                    })
                    .collect(),
            );
            sink.progress(&prog);
        }
    }
    drop(free_tx);
    // Tail: usage record + segment table + footer, in one record (never split across volumes).
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
    prog.done_bytes = header.disk_size;
    prog.phase = "syncing".into();
    prog.rate_bytes_per_sec =
        (header.disk_size as f64 / started.elapsed().as_secs_f64().max(1e-3)) as u64;
    prog.eta_secs = Some(0);
    sink.progress(&prog);
    Ok((f, report_bad))
}
