//! `image create`: the pipeline — the source read by the rescue engine through [`super::feed`]
//! (good data first across the whole disk, then trim, scrape, retry; chunks handed over as they
//! complete), N compressor threads, the writer that stores payloads in completion order and
//! each index segment once all its chunks are stored, bounded queues, reused buffers —,
//! incrementals against a parent, and the temp-name + fsync + rename commit (the volumes
//! themselves are written by [`super::volumes::VolumeWriter`]).
use super::feed;
use super::format::*;
use super::journal;
use super::pack::{group_chunks, PackParams};
use super::reader::{Chain, Image};
use super::volumes::VolumeWriter;
use super::writer::{write_loop, IndexState, JournalCtx, WMsg};
use crate::error::{Error, Result};
pub use crate::io::is_zero;
use crate::io::{AlignedBuf, BlockSource};
use crate::jobs::{Cancel, ProgressSink};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What `image create` compresses with unless told otherwise (see README's figures).
/// zstd level 2 (zstd's own parameters, see `pack::zstd_compressor`) in groups of 16 chunks: on
/// the reused-disk benchmark it stores 0.9998× what Clonezilla's `partclone | zstd -3` pipeline
/// stores for ~0.88× the zstd CPU of level 2 with 2^17 hash entries in groups of 8 (the default
/// before, 0.987×); `--compress zstd:3` is ~3 % smaller, `zstd:1` or `lz4` remain for
/// CPU-starved machines.
pub const DEFAULT_COMPRESSION: Compression = Compression::Zstd(2);

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
    /// Also keep the engine's map here (GNU ddrescue's mapfile format), saved at checkpoints.
    pub map: Option<PathBuf>,
    /// How often the engine takes a checkpoint (volumes fsynced, journal rewritten).
    pub checkpoint_every: std::time::Duration,
    /// The source's identity (device and inode, serial, size): a resume of another source's
    /// unfinished image is refused.
    pub source_id: String,
    /// Recorded in the map file.
    pub command_line: String,
    /// Encrypt the image (`--encrypt`; an incremental of an encrypted parent always is, with
    /// the parent's data key and key slots).
    pub encrypt: bool,
    /// In an encrypted image, keep the source's model and serial in clear in the header.
    pub identity_clear: bool,
    /// Where the passphrase comes from (a new image's, or the one that opens the parent or
    /// the unfinished image being resumed).
    pub keys: super::crypt::Keys,
    /// The source's used-block plan when the caller read it already (the command does, for
    /// its free-space check); read here otherwise.
    pub plan: Option<crate::fs::UsageMap>,
    /// The image will be verified after writing (`verify::verify_written`, unless
    /// `--no-verify`): also keep the CRC32 of each compressed chunk's disk bytes, which that
    /// verify checks the decoded bytes against (see `verify::WrittenDigest`).
    pub verify_after_write: bool,
    /// Chunks whose good bytes are kept in memory while they wait for the engine's trim,
    /// scrape and retry (`None`: [`feed::cache_chunks`] of the machine's memory); the others
    /// are read again from their good sectors when they are stored.
    pub held_back_chunks: Option<usize>,
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
            map: None,
            checkpoint_every: std::time::Duration::from_secs(5),
            source_id: String::new(),
            command_line: String::new(),
            encrypt: false,
            identity_clear: false,
            keys: super::crypt::Keys::global(),
            plan: None,
            verify_after_write: true,
            held_back_chunks: None,
        }
    }
}

/// What `image create --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// True exactly when `exit_code` is 0, as in every report and `LIFEBOAT-RESULT`: an image
    /// with unreadable sectors is complete (exit 3) but not ok.
    pub ok: bool,
    /// The exit status of `image create` (0, or 3 with unreadable sectors), as clone reports it.
    pub exit_code: i32,
    pub image: PathBuf,
    pub volumes: Vec<PathBuf>,
    pub uuid: String,
    /// Whether the image is encrypted (`--encrypt`, or an encrypted parent).
    pub encrypted: bool,
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
    /// Bytes of the chunks held back around unreadable sectors that were hashed ahead, while
    /// the engine trimmed, scraped and retried (see `image::feed`).
    pub prehashed_bytes: u64,
    /// Where this run resumed an interrupted create (null: it started the image).
    pub resumed_from: Option<ResumedFrom>,
    /// The verify after writing (`image::verify::verify_written`, run by the command): true
    /// when the image read back from its storage passed every check, false when it did not,
    /// null when it was skipped (`--no-verify`).
    pub verified: Option<bool>,
    /// What that verify found wrong (empty when it passed or did not run).
    pub verify_problems: Vec<String>,
    /// How long that verify took.
    pub verify_elapsed_secs: Option<f64>,
    /// Stored chunks whose records that verify read back from the storage and checked while
    /// the image was still being made (during the engine's trim, scrape and retry phases, on
    /// idle CPU time), instead of after it was complete (see `docs/image-format.md`, "Verify
    /// after writing"); 0 with `--no-verify`.
    pub verified_ahead_chunks: u64,
    /// What this run wrote, which that verify checks the image read back against (not in the
    /// JSON report).
    #[serde(skip)]
    pub written: Option<super::verify::WrittenDigest>,
}

/// The checkpoint a resumed create went on from.
#[derive(Debug, Clone, Serialize)]
pub struct ResumedFrom {
    /// The engine's phase then (`copying`, `trimming`, `scraping`, `retrying`, `finished`),
    /// or `start` (interrupted before its first checkpoint).
    pub phase: String,
    pub pass: u32,
    pub pos_bytes: u64,
    /// Chunks already in the image then.
    pub chunks_written: u64,
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
    /// No used block in the chunk: nothing was read, and `slot.data` holds nothing of it
    /// (whatever its last use left: it is neither hashed nor stored).
    pub(super) unallocated: bool,
    /// Unreadable `(start, len)` ranges inside the chunk (zeros in `slot.data`).
    pub(super) bad: Vec<(u64, u64)>,
    pub(super) parent_hash: Option<[u8; 32]>,
    /// The chunk's subtrees hashed ahead (see `feed`), when any were.
    pub(super) pre: Option<super::treehash::Partial>,
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

/// A progress snapshot of the create's tail (after the engine's last phase, every byte of the
/// source done): `storing` (the chunks held back around unreadable areas) and `syncing` (the
/// volumes flushed to the storage before they are renamed).
fn tail_phase(sink: &dyn ProgressSink, phase: &str, size: u64, bad: Vec<(u64, u64)>) {
    let mut p = crate::jobs::Progress::new("image-create", phase, size);
    p.done_bytes = size;
    p.bad_bytes = bad.iter().map(|r| r.1).sum();
    sink.progress(&p);
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

pub(super) fn now_secs() -> u64 {
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
    crate::jobs::threadcpu::mark("create starts");
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
    let segments = size
        .div_ceil(cs as u64)
        .div_ceil(DEFAULT_SEGMENT_CHUNKS as u64);
    if segments > MAX_SEGMENTS {
        return Err(Error::unsupported(format!(
            "the source is {size} bytes: an image holds at most {MAX_SEGMENTS} index segments of \
             {DEFAULT_SEGMENT_CHUNKS} chunks; nothing was written"
        )));
    }
    // The parent: open its whole chain now so a missing grandparent fails before any work.
    let mut parent: Option<Image> = None;
    if let Some(pp) = &opts.parent {
        let chain = Chain::open_with(pp, &opts.keys)?;
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
    let mut plan = match &opts.plan {
        Some(p) => p.clone(),
        None => crate::fs::UsageMap::analyze(src.as_ref()),
    };
    if opts.all_sectors {
        plan.force_all_sectors("--all-sectors was given");
    }
    let used_mode = plan.any_used_blocks();
    // The used ranges, as the analysis read them (each map is read once: one that failed made
    // its partition all sectors there, and the plan, report and usage record say so).
    let used_ranges: Option<Vec<(u64, u64)>> = used_mode.then(|| plan.extents().collect());
    let usage = encode_usage(
        &serde_json::to_vec(&plan)
            .map_err(|e| Error::invalid("cannot encode the used-block plan").caused_by(e))?,
    );
    if usage.len() > MAX_USAGE_LEN as usize {
        return Err(Error::invalid(
            "the disk has too many partitions for the image's usage record",
        ));
    }
    // Encryption: a new data key, or the encrypted parent's (the chain shares one key).
    let parent_key = parent.as_ref().and_then(|p| p.data_key().cloned());
    if opts.encrypt && parent.is_some() && parent_key.is_none() {
        return Err(Error::invalid(
            "the parent image is not encrypted, so an incremental of it cannot be (the chunks \
             it shares with the parent would stay readable): make a new full image with --encrypt",
        ));
    }
    let encrypted = opts.encrypt || parent_key.is_some();
    // The cipher: an incremental keeps its parent's (one chain, one cipher: whatever reads the
    // parent reads its incrementals); a new image takes this CPU's fast one.
    let cipher = match parent.as_ref().and_then(|p| p.header.crypt.as_ref()) {
        Some(pc) => pc.cipher,
        None if encrypted => super::crypt::new_image_cipher()?,
        None => 0,
    };
    let mut incompat = 0;
    if encrypted {
        incompat |= FEAT_ENCRYPTED;
    }
    if used_mode {
        incompat |= FEAT_USED_BLOCKS;
    }
    if parent.is_some() {
        incompat |= FEAT_INCREMENTAL;
    }
    if matches!(opts.compress, Compression::Zstd(_)) {
        incompat |= FEAT_ZSTD;
        if group_chunks(opts.compress, cs) > 1 {
            incompat |= FEAT_GROUPS;
        }
    }
    if opts.split.is_some() {
        incompat |= FEAT_SPLIT;
    }
    let mut header = Header {
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
        crypt: encrypted.then(|| {
            let mut c = super::crypt::CryptHeader::with_cipher(opts.identity_clear, cipher);
            if let Some(pc) = parent.as_ref().and_then(|p| p.header.crypt.as_ref()) {
                c.slots = pc.slots;
            }
            c
        }),
    };
    let chunks = header.chunk_count();
    // The rescue domain: what the image needs of the disk.
    let lbs = src.logical_block_size().max(512) as u64;
    let domain = Arc::new(feed::Domain::new(used_ranges, size, lbs));
    let settings = journal::Settings {
        header: journal::settings_header(&header),
        // The group size too: batch boundaries depend on it (a journal of another version's
        // groups is not resumed).
        compress: format!(
            "{:?} in groups of {}",
            opts.compress,
            group_chunks(opts.compress, cs)
        ),
        retries: opts.retries,
        source: opts.source_id.clone(),
        plan: {
            let mut h = blake3::Hasher::new();
            h.update(&usage);
            for r in &domain.read {
                h.update(&r.0.to_le_bytes());
                h.update(&r.1.to_le_bytes());
            }
            hex(h.finalize().as_bytes())
        },
    };
    // An unfinished image of this same job is resumed from its journal (see `journal`).
    let resumed = match std::fs::symlink_metadata(partial_name(image)) {
        Ok(m) if m.is_file() => journal::Journal::load(image)?,
        _ => None,
    };
    if let Some(j) = &resumed {
        if let Some(why) = journal::resume_mismatch(&j.settings, &settings) {
            return Err(Error::refused(format!(
                "{} is the unfinished image of another job ({why}), so it cannot be resumed by \
                 this one; nothing was written: run the first command again to finish it, or \
                 delete {} and {} to start this image from the beginning",
                partial_name(image).display(),
                partial_name(image).display(),
                journal::journal_name(image).display()
            ))
            .at_path(partial_name(image)));
        }
        let fresh = header.clone();
        header = j.header(image)?;
        if header.is_encrypted() {
            // Sealed in the tail, not in the journal's header: the same job's (checked by the
            // settings).
            header.model = fresh.model;
            header.serial = fresh.serial;
            header.source_name = fresh.source_name;
            header.parent_path = fresh.parent_path;
        }
        // The header resumed with must be the one the (matching) settings describe: a journal
        // whose header says another disk size or layout (its volumes made to agree) would
        // otherwise finish, verified and reported complete, as an image of another disk.
        if journal::settings_header(&header) != settings.header {
            return Err(Error::corrupt(format!(
                "the journal {} of the unfinished image cannot be used (its image header is not \
                 the one its settings describe); delete it and the .partial volumes to start \
                 the image again",
                journal::journal_name(image).display()
            ))
            .at_path(journal::journal_name(image)));
        }
    }
    // The data key: the parent's; the unfinished image's (its passphrase is asked now, before
    // anything is written); or a new one, wrapped in key slot 1 for a new passphrase. That
    // slot's KDF (about a second, tuned) runs on its own thread beside the data path: the data
    // key is random and the header digest that binds every record leaves the slots out, so
    // sealing starts at once; the slot is written into the volumes before the first journal
    // and before the image is finished (`VolumeWriter::settle_slots`). Once the slot is ready
    // the engine is asked for a checkpoint (`first_journal`), so the first journal follows the
    // slot instead of the next timed checkpoint (none at all before the end of a create that
    // reads its whole disk sooner).
    let mut pending_slot = None;
    let first_journal = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let key = match (&header.crypt, parent_key, &resumed) {
        (None, _, _) => None,
        (Some(_), Some(k), _) => Some(k),
        (Some(c), None, Some(_)) => Some(opts.keys.unlock(image, c)?.0),
        (Some(_), None, None) => {
            let k = super::crypt::DataKey::random()?;
            let secret = opts.keys.new_secret(image)?;
            let (keys, dk, ask) = (opts.keys.clone(), k.clone(), first_journal.clone());
            pending_slot = Some(std::thread::spawn(move || {
                let slot = keys.wrap_new(&dk, &secret);
                ask.store(true, std::sync::atomic::Ordering::Relaxed);
                slot
            }));
            Some(k)
        }
    };
    // This run's number: one more than the interrupted run's (saved before anything is
    // written, below), so an AES-256-GCM record rewritten at the same place takes a new nonce.
    let run = match &resumed {
        None => 0,
        Some(j) => j.run.checked_add(1).ok_or_else(|| {
            Error::corrupt(format!(
                "the journal {} counts too many runs; delete it and the .partial volumes to \
                 start the image again",
                journal::journal_name(image).display()
            ))
        })?,
    };
    let sealer = key
        .as_ref()
        .map(|k| Arc::new(super::crypt::Sealer::new(k, &header).with_run(run)));
    let hasher = sealer.as_ref().map_or(Default::default(), |s| s.hasher());
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    }
    .clamp(1, 64);
    // Chunks per compressor batch (a zstd group at most; see `pack`), and the largest group
    // payload (a record never spans volumes: it must fit a volume after its header).
    let batch = group_chunks(opts.compress, cs);
    let out_cap = max_payload_any(cs as usize);
    // Each compressor holds its batch's chunk and output buffers and a group in and out
    // (~64 MiB at 1 MiB chunks in groups of 16): on a many-core machine that boots into RAM,
    // the threads are as many as half of the available memory holds, never fewer than one.
    let threads = threads_for_memory(
        threads,
        batch as u64 * (3 * cs as u64 + out_cap as u64),
        super::crypt::available_kib() as u64 * 1024,
    );
    let max_group_payload = opts.split.map_or(usize::MAX, |s| {
        let seal = if header.is_encrypted() {
            super::crypt::OVERHEAD as u64
        } else {
            0
        };
        (s - HEADER_SIZE as u64 - seal).min(usize::MAX as u64) as usize
    });
    // Every compressor holds a batch and one more batch is being read.
    let nslots = (threads + 1) * batch + 2;

    let (mut vw, idx, map, resume) = match &resumed {
        Some(j) => {
            let idx = j.index(image, &header)?;
            let map = journal::map_from_delta(&j.map, &domain, size).ok_or_else(|| {
                Error::corrupt(format!(
                    "the journal {} holds a damaged map; delete it and the .partial volumes to \
                     start the image again",
                    journal::journal_name(image).display()
                ))
            })?;
            j.clone().in_run(run).save(image)?;
            let vw = VolumeWriter::resume(image, header.clone(), opts.split, &j.volume_lens)?;
            (vw, idx, map, j.resume)
        }
        None => {
            let mut vw = VolumeWriter::new(image, header.clone(), opts.split)?;
            let idx = IndexState {
                footer: Footer {
                    uuid: header.uuid,
                    chunks,
                    ..Default::default()
                },
                ..Default::default()
            };
            let map = domain.fresh_map(size);
            match pending_slot.take() {
                // The first checkpoint: the header is written, nothing read yet.
                None => journal::Journal::new(
                    &settings,
                    &header,
                    vw.lens()?,
                    journal::map_delta(&map, &domain),
                    None,
                    &idx,
                    Vec::new(),
                )
                .save(image)?,
                // A new encrypted image: its first journal waits for its key slot (the next
                // checkpoint); stopped before that, the same command starts it again.
                Some(t) => vw.set_pending_slot(t),
            }
            (vw, idx, map, None)
        }
    };
    if let Some(s) = &sealer {
        vw.set_sealer(s.clone());
    }
    crate::jobs::threadcpu::mark("volume and journal started");
    // The verify after writing's reads of the records stored so far, from the engine's first
    // phase after copying on, on idle CPU time (see `ahead`).
    let (feeder, checker) = match opts.verify_after_write {
        true => {
            let (f, c) = super::ahead::start(image, &header, sealer.clone());
            (Some(f), Some(c))
        }
        false => (None, None),
    };
    let watch = super::ahead::PhaseWatch::new(sink, checker.as_ref());
    let (free_tx, free_rx) = mpsc::sync_channel::<Slot>(nslots);
    for _ in 0..nslots {
        let _ = free_tx.send(Slot {
            data: AlignedBuf::new(cs as usize),
            out: vec![0u8; out_cap],
        });
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(nslots);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<WMsg>();
    let zero_full = hasher.hash(&vec![0u8; cs as usize]);
    crate::jobs::threadcpu::mark("buffers allocated");
    // The reader side: the rescue engine over the domain, through the feed (see `feed`).
    let feed = Arc::new(feed::Feed::new(
        src.clone(),
        cs,
        domain.clone(),
        map.clone(),
        idx.emitted(&header),
        idx.next_seq,
        job_tx,
        free_rx,
        parent,
        done_tx.clone(),
        batch,
        opts.held_back_chunks.unwrap_or_else(|| {
            feed::cache_chunks(cs as u64, super::crypt::available_kib() as u64 * 1024)
        }),
    ));
    let ropts = crate::rescue::Options {
        retries: opts.retries,
        hash: false,
        mapfile: opts.map.clone(),
        command_line: opts.command_line.clone(),
        job: "image-create".into(),
        checkpoints: true,
        save_every: opts.checkpoint_every,
        domain: Some(domain.read.iter().map(|r| (r.0, r.1 - r.0)).collect()),
        resume,
        checkpoint_request: Some(first_journal),
        ..crate::rescue::Options::default()
    };
    let jctx = JournalCtx {
        image: image.to_path_buf(),
        settings: settings.clone(),
        batch: batch as u64,
        run,
    };

    let mut rescued: Option<crate::rescue::Outcome> = None;
    let result = std::thread::scope(|s| {
        let pack = PackParams {
            compress: opts.compress,
            chunk_size: cs,
            zero_full,
            hasher,
            batch,
            max_group_payload,
            plain_crc: opts.verify_after_write,
        };
        // Named threads (`top -H`, /proc/PID/task/*/comm): where the time goes is visible.
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name("image-pack".into())
                .spawn_scoped(s, move || super::pack::run(&job_rx, done_tx, pack))
                .map_err(|e| {
                    // The threads started wait for jobs: closing the queue ends them.
                    feed.close();
                    Error::os("start a compressor thread", e)
                })?;
        }
        drop(done_tx);
        let vw_r = &mut vw;
        let (header_r, usage_r) = (&header, &usage);
        let jctx = &jctx;
        let writer = std::thread::Builder::new()
            .name("image-writer".into())
            .spawn_scoped(s, move || {
                write_loop(vw_r, header_r, usage_r, done_rx, free_tx, idx, jctx, feeder)
            })
            .map_err(|e| {
                feed.close();
                Error::os("start the image writer thread", e)
            })?;
        // Hashes the held-back chunks ahead while the engine trims, scrapes and retries (see
        // `feed`); ends when they are stored. Without it they are hashed when stored.
        let prehash = feed.clone();
        let _ = std::thread::Builder::new()
            .name("image-prehash".into())
            .spawn_scoped(s, move || prehash.prehash(hasher));
        // The engine reports progress (phase, pass, reads, time since the last good read) on
        // this thread; its writer thread hands the pieces to the feed.
        let open_batch = resumed.as_ref().map_or(&[][..], |j| &j.open_batch[..]);
        let r = feed
            .replay(open_batch)
            .and_then(|()| {
                crate::rescue::run(src.clone(), feed.clone(), map, &ropts, &watch, cancel)
            })
            .and_then(|out| {
                if out.cancelled {
                    return Err(Error::cancelled());
                }
                crate::jobs::threadcpu::mark("engine finished");
                // The chunks held back around unreadable areas: their good bytes (kept, or
                // read again) stored now.
                tail_phase(
                    sink,
                    "storing",
                    size,
                    out.map.ranges(crate::rescue::Status::Bad),
                );
                feed.finish(&out.map, cancel)?;
                crate::jobs::threadcpu::mark("held-back chunks emitted");
                rescued = Some(out);
                Ok(())
            });
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
    let (footer, bad_ranges, digest) = match result {
        Ok(x) => x,
        Err(e) => {
            vw.abandon();
            return Err(e);
        }
    };
    crate::jobs::threadcpu::mark("image written");
    tail_phase(sink, "syncing", size, bad_ranges.clone());
    let volumes = vw.commit(|| journal::Journal::remove(image))?;
    crate::jobs::threadcpu::mark("image committed");
    let mut digest = digest;
    if let Some(c) = checker {
        digest.set_ahead(c.finish());
        crate::jobs::threadcpu::mark("reading ahead stopped");
    }
    let fs = feed.stats();
    let image_bytes = volumes
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let exit_code = if footer.bad_bytes > 0 {
        crate::error::exit::PARTIAL
    } else {
        crate::error::exit::OK
    };
    Ok(CreateReport {
        ok: exit_code == crate::error::exit::OK,
        exit_code,
        image: image.to_path_buf(),
        volumes,
        uuid: uuid_str(&header.uuid),
        encrypted: header.is_encrypted(),
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
        prehashed_bytes: fs.prehashed_bytes,
        resumed_from: resumed.as_ref().map(|j| ResumedFrom {
            phase: j
                .resume
                .map_or("start", |r| crate::rescue::engine::phase_name(r.phase))
                .to_string(),
            pass: j.resume.map_or(0, |r| r.pass),
            pos_bytes: j.resume.map_or(0, |r| r.pos),
            chunks_written: j.written,
        }),
        verified: None,
        verify_problems: Vec::new(),
        verify_elapsed_secs: None,
        verified_ahead_chunks: digest.ahead_chunks(),
        written: Some(digest),
    })
}

/// How many compressor threads of `per_thread` bytes each fit in half of `available` bytes,
/// counting one more batch being read: at most `wanted`, at least one. Memory stays bounded
/// by the machine's, not by its core count.
fn threads_for_memory(wanted: usize, per_thread: u64, available: u64) -> usize {
    let fit = (available / 2) / per_thread.max(1);
    (fit.saturating_sub(1).min(usize::MAX as u64) as usize).clamp(1, wanted.max(1))
}

#[cfg(test)]
mod tests {
    use super::threads_for_memory;

    #[test]
    fn compressor_threads_follow_the_memory_available() {
        let mib = 1u64 << 20;
        // 64 cores but 2 GiB available, 64 MiB a thread: 16 fit, one batch kept for reading.
        assert_eq!(threads_for_memory(64, 64 * mib, 2048 * mib), 15);
        // Plenty of memory: the cores decide.
        assert_eq!(threads_for_memory(2, 64 * mib, 16384 * mib), 2);
        // Almost none: still one thread.
        assert_eq!(threads_for_memory(8, 64 * mib, 32 * mib), 1);
        assert_eq!(threads_for_memory(0, 0, 0), 1);
    }
}
