//! The read side of images: `info`, `restore` onto a disk or file and `export` to a sparse raw
//! file (`verify` is in [`super::verify`], re-exported here).
use super::create::{is_zero, partial_name, sync_dir};
use super::format::*;
use super::reader::{incomplete_error, Chain, Image};
use crate::error::{Error, ErrorKind, Result};
use crate::io::{AlignedBuf, BlockSource};
use crate::jobs::{Cancel, Progress, ProgressSink, RateMeter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use super::verify::{verify, verify_resumable, VerifyReport};

/// One image of a chain, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    pub path: PathBuf,
    pub uuid: String,
    pub incremental: bool,
    pub media_hash: String,
}

pub(crate) fn links(chain: &Chain) -> Vec<ChainLink> {
    chain
        .images
        .iter()
        .map(|i| ChainLink {
            path: i.path.clone(),
            uuid: uuid_str(&i.header.uuid),
            incremental: i.header.has_parent(),
            media_hash: hex(&i.footer.media_hash),
        })
        .collect()
}

/// What `image info --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InfoReport {
    pub image: PathBuf,
    pub complete: bool,
    pub format_version: u16,
    pub uuid: String,
    pub created: String,
    pub created_unix: u64,
    pub source: SourceInfo,
    pub chunk_size: u32,
    pub chunks: u64,
    pub stored_chunks: u64,
    pub zero_chunks: u64,
    pub unchanged_chunks: u64,
    /// Chunks without a used block (version 2): not stored, zeros logically.
    pub unallocated_chunks: u64,
    /// Whether only used blocks were imaged (the `USED_BLOCKS` feature).
    pub used_blocks: bool,
    /// The used-block plan: per partition filesystem, used bytes, mode and why (version 2).
    pub partitions: Option<Vec<crate::fs::PartitionUsage>>,
    pub payload_bytes: u64,
    pub image_bytes: u64,
    /// Disk bytes per image byte (higher is better).
    pub compression_ratio: f64,
    pub volumes: Vec<PathBuf>,
    pub bad_bytes: u64,
    pub bad_range_count: u64,
    pub bad_ranges: Vec<(u64, u64)>,
    pub media_hash: String,
    pub parent: Option<ParentInfo>,
    pub chain: Vec<ChainLink>,
    /// Why the chain could not be followed, if it could not.
    pub chain_error: Option<String>,
    /// Encryption: the cipher and the key slots in use (null for an image without).
    pub encryption: Option<EncryptionInfo>,
}

/// An encrypted image's cipher and key slots (`info`).
#[derive(Debug, Clone, Serialize)]
pub struct EncryptionInfo {
    pub cipher: &'static str,
    /// Whether the source's model and serial are readable without the passphrase.
    pub identity_in_clear: bool,
    pub key_slots: Vec<super::cmd_keys::SlotInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub model: String,
    pub serial: String,
    pub name: String,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParentInfo {
    pub path: String,
    pub uuid: String,
    pub media_hash: String,
}

/// "2026-11-25T14:47:46Z" for a Unix time.
pub fn iso8601(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Describes an image (and follows its chain as far as it can).
pub fn info(path: &Path) -> Result<InfoReport> {
    let mut img = Image::open(path)?;
    let bad_ranges = img.bad_ranges(10_000)?;
    let h = img.header.clone();
    let f = img.footer.clone();
    let (chain, chain_error) = match Chain::open(path) {
        Ok(c) => (links(&c), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let image_bytes = img.file_bytes();
    Ok(InfoReport {
        image: path.to_path_buf(),
        complete: true,
        format_version: h.version,
        uuid: uuid_str(&h.uuid),
        created: iso8601(h.created),
        created_unix: h.created,
        source: SourceInfo {
            model: h.model.clone(),
            serial: h.serial.clone(),
            name: h.source_name.clone(),
            size_bytes: h.disk_size,
            logical_sector_size: h.sector_size,
        },
        chunk_size: h.chunk_size,
        chunks: f.chunks,
        stored_chunks: f.stored_chunks,
        zero_chunks: f.zero_chunks,
        unchanged_chunks: f.parent_chunks,
        unallocated_chunks: f.unallocated_chunks,
        used_blocks: h.incompat & FEAT_USED_BLOCKS != 0,
        partitions: img.usage.as_ref().map(|u| u.partitions.clone()),
        payload_bytes: f.payload_bytes,
        image_bytes,
        compression_ratio: if image_bytes == 0 {
            0.0
        } else {
            h.disk_size as f64 / image_bytes as f64
        },
        volumes: img.volume_paths(),
        bad_bytes: f.bad_bytes,
        bad_range_count: f.bad_ranges,
        bad_ranges,
        media_hash: hex(&f.media_hash),
        parent: h.has_parent().then(|| ParentInfo {
            path: h.parent_path.clone(),
            uuid: uuid_str(&h.parent_uuid),
            media_hash: hex(&h.parent_media_hash),
        }),
        chain,
        chain_error,
        encryption: h.crypt.as_ref().map(|c| EncryptionInfo {
            cipher: super::crypt::cipher_name(c.cipher),
            identity_in_clear: c.identity_clear,
            key_slots: super::cmd_keys::slot_infos(c),
        }),
    })
}

/// The header of an image that has no footer (for `info` on an incomplete file).
pub fn partial_header(path: &Path) -> Option<Header> {
    let f = crate::io::open::open_regular(path, "an image file").ok()?;
    let mut b = [0u8; HEADER_SIZE];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0).ok()?;
    Header::decode(&b).ok()
}

/// Where restored bytes go.
pub trait RestoreSink {
    /// Writes `data` (one whole chunk, `IO_ALIGN`-aligned) at disk offset `off`. `zero` says the
    /// chunk is all zeros (a sparse sink may skip it). Returns how many of the chunk's bytes
    /// are now on the target (fewer past the end of a smaller target).
    fn write_chunk(&mut self, data: &[u8], off: u64, zero: bool) -> Result<u64>;
    /// Whether chunks that held no used block are left alone (true: the target's free space
    /// keeps its old bytes, or stays a hole) rather than written as zeros.
    fn skip_unallocated(&self) -> bool {
        true
    }
    /// What becomes of a chunk that held no used block when [`skip_unallocated`] (`data` is
    /// its zeros, `off` its disk offset): by default the target is left as it is.
    ///
    /// [`skip_unallocated`]: RestoreSink::skip_unallocated
    fn free_chunk(&mut self, _data: &[u8], _off: u64) -> Result<Freed> {
        Ok(Freed::Kept)
    }
    /// Makes every byte `write_chunk` and `free_chunk` have returned for durable on the target
    /// (a restore map marks them written only after this; a sink may defer work until here).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What [`RestoreSink::free_chunk`] did with a chunk that held no used block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// Left alone: the target's old bytes (or a file's hole) stay.
    Kept,
    /// Made to read as zeros (this many bytes of the target).
    Zeroed(u64),
    /// Discarded (TRIM): this many bytes; what they read now is up to the device.
    Discarded(u64),
}

/// What restore/export report.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub ok: bool,
    pub image: PathBuf,
    pub target: PathBuf,
    pub chain: Vec<ChainLink>,
    pub disk_size_bytes: u64,
    pub written_bytes: u64,
    pub zero_bytes: u64,
    /// Bytes of chunks without a used block, not written (`--zero-free` writes them as zeros).
    pub unallocated_bytes: u64,
    /// Of those, bytes discarded (TRIM) on the target (`--discard`).
    pub discarded_bytes: u64,
    /// Disk ranges that were unreadable when the image was made (restored as zeros).
    pub bad_bytes: u64,
    pub bad_ranges: Vec<(u64, u64)>,
    pub media_hash: String,
    pub media_hash_verified: bool,
    /// What the partition-table fix-up did for a target of another size (restore only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<crate::clone::gpt::FixReport>,
    /// Things to know (e.g. a target that cannot discard).
    pub notes: Vec<String>,
    /// Bytes a `--map` of an earlier, interrupted restore had already written (not rewritten).
    pub resumed_bytes: u64,
    /// The `--map` file kept up to date (restore only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_file: Option<PathBuf>,
    pub elapsed_secs: f64,
}

struct Filled {
    i: u64,
    buf: AlignedBuf,
    zero: bool,
    unallocated: bool,
    /// Already on the target (a restore map says so): not read, not written.
    done: bool,
}

/// Streams every chunk of the chain at `path`, checked (CRC, BLAKE3, media hash), into `out`.
/// One thread reads and decompresses, the calling thread writes; buffers are reused.
pub fn stream(
    path: &Path,
    out: &mut dyn RestoreSink,
    job: &str,
    target: &Path,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<RestoreReport> {
    stream_resumable(path, out, job, target, sink, cancel, None, None)
}

/// [`stream`] keeping a restore map: chunks it marks written are not written again when the
/// target, read back through `written` (the target's reading side), holds them — the chunk's
/// bytes hash to its index hash, which then goes into the media hash; a chunk that differs
/// there (a map that says more than was written, a target changed since the interrupted run)
/// is read from the image and written again. Chunks written now are marked, and the map is
/// saved after a flush of the target every few seconds, at the end, and when the restore
/// stops early.
#[allow(clippy::too_many_arguments)]
pub fn stream_resumable(
    path: &Path,
    out: &mut dyn RestoreSink,
    job: &str,
    target: &Path,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
    mut map: Option<&mut super::resume::RestoreMap>,
    written_back: Option<&dyn BlockSource>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    // Without a way to read the target back, nothing is taken as written already.
    let done_map = map
        .as_ref()
        .filter(|_| written_back.is_some())
        .map(|m| m.snapshot());
    let resumed_bytes = map.as_ref().map_or(0, |m| m.resumed_bytes);
    let mut chain = Chain::open(path)?;
    let h = chain.top().header.clone();
    let expect_media = chain.top().footer.media_hash;
    let bad_bytes = chain.top().footer.bad_bytes;
    let bad_ranges = chain.images[0].bad_ranges(10_000)?;
    let link_list = links(&chain);
    let cs = h.chunk_size as usize;
    let chunks = h.chunk_count();
    const SLOTS: usize = 4;
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(SLOTS);
    for _ in 0..SLOTS {
        let _ = free_tx.send(AlignedBuf::new(cs));
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Filled>>(SLOTS);
    let mut prog = Progress::new(job, "restoring", h.disk_size);
    let mut meter = RateMeter::new(Duration::from_secs(10));
    let (mut written, mut zero_bytes, mut unalloc_bytes) = (0u64, 0u64, 0u64);
    let mut discarded = 0u64;
    let skip_unalloc = out.skip_unallocated();
    // Bytes of chunks the map had as written that the target did not hold.
    let mut redone = 0u64;
    let redone_ref = &mut redone;
    let hr = &h;
    let res: Result<[u8; 32]> = std::thread::scope(|s| {
        let done_map = done_map.as_ref();
        let reader = s.spawn(move || -> [u8; 32] {
            let h = hr;
            let mut media = MediaHasher::new(h.disk_size, h.chunk_size);
            let mut scratch = Vec::with_capacity(max_payload_any(cs));
            let hasher = chain.images[0].hasher();
            for i in 0..chunks {
                if cancel.is_cancelled() {
                    break;
                }
                let Ok(mut buf) = free_rx.recv() else { break };
                let len = h.chunk_len(i);
                if let Some(back) =
                    written_back.filter(|_| done_map.is_some_and(|m| chunk_written(m, h, i)))
                {
                    // Written by an earlier run, says the map: the target must hold it.
                    let e = match chain.images[0].entry(i) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            break;
                        }
                    };
                    buf.set_len(len);
                    if held_on_target(back, &mut buf, i * cs as u64, &hasher, &e.hash) {
                        media.add(&e.hash);
                        let f = Filled {
                            i,
                            buf,
                            zero: false,
                            unallocated: false,
                            done: true,
                        };
                        if full_tx.send(Ok(f)).is_err() {
                            break;
                        }
                        continue;
                    }
                    // Not there after all: restored again below.
                    *redone_ref += len as u64;
                }
                buf.set_len(cs);
                let r = chain
                    .read_chunk_resolved(i, &mut buf, &mut scratch)
                    .map(|(e, kind)| {
                        media.add(&e.hash);
                        buf.set_len(len);
                        let unallocated = kind == Kind::Unallocated;
                        let zero = unallocated || is_zero(&buf);
                        Filled {
                            i,
                            buf,
                            zero,
                            unallocated,
                            done: false,
                        }
                    });
                let stop = r.is_err();
                if full_tx.send(r).is_err() || stop {
                    break;
                }
            }
            media.finish()
        });
        let mut last = Instant::now();
        let mut n = 0u64;
        let mut err = None;
        while n < chunks {
            if cancel.is_cancelled() {
                err = Some(Error::cancelled());
                break;
            }
            let f = match full_rx.recv() {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    err = Some(e);
                    break;
                }
                Err(_) => {
                    err = Some(Error::cancelled());
                    break;
                }
            };
            let off = f.i * cs as u64;
            if f.done {
                // Already on the target (the map says so).
            } else if f.unallocated && skip_unalloc {
                match out.free_chunk(&f.buf, off) {
                    Ok(Freed::Kept) => unalloc_bytes += f.buf.len() as u64,
                    Ok(Freed::Discarded(n)) => {
                        unalloc_bytes += f.buf.len() as u64;
                        discarded += n;
                    }
                    Ok(Freed::Zeroed(n)) => {
                        zero_bytes += n;
                        written += n;
                        if let Some(m) = map.as_deref_mut() {
                            m.mark(off, n);
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            } else {
                let placed = match out.write_chunk(&f.buf, off, f.zero) {
                    Ok(n) => n,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                };
                if f.zero {
                    zero_bytes += placed;
                }
                written += placed;
                if let Some(m) = map.as_deref_mut() {
                    m.mark(off, placed);
                }
            }
            if let Some(m) = map.as_deref_mut().filter(|m| m.due()) {
                if let Err(e) = checkpoint(out, m) {
                    err = Some(e);
                    break;
                }
            }
            prog.done_bytes += f.buf.len() as u64;
            let _ = free_tx.send(f.buf);
            n += 1;
            if last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                let (r, eta) = meter.update(last, prog.done_bytes, prog.total_bytes);
                prog.rate_bytes_per_sec = r;
                prog.eta_secs = eta;
                sink.progress(&prog);
            }
        }
        drop(full_rx);
        drop(free_tx);
        let media = reader
            .join()
            .map_err(|_| Error::new(ErrorKind::Io, "the image reader thread panicked"))?;
        match err {
            Some(e) => Err(e),
            None => Ok(media),
        }
    });
    // What the sink deferred is done; the map records what is on the target now, whatever
    // happened (a failed flush leaves the last saved map, which is still true).
    let saved = match map.as_deref_mut() {
        Some(m) => checkpoint(out, m),
        None => out.flush(),
    };
    // Whether the map now records this run (the target full, its directory too: it may not).
    let map_saved = map.is_some().then_some(saved.is_ok());
    if res.is_ok() {
        saved.map_err(|e| e.with_report("written_bytes", written))?;
    }
    // A failure says how far the target got (the caller tells the user it is incomplete) and
    // whether the map says so too.
    let media = res.map_err(|e| {
        let e = e.with_report("written_bytes", written);
        match map_saved {
            Some(ok) => e.with_report("map_saved", ok),
            None => e,
        }
    })?;
    if media != expect_media {
        return Err(
            Error::corrupt("the restored data does not match the image's media hash")
                .at_path(path)
                .with_report("written_bytes", written),
        );
    }
    prog.done_bytes = h.disk_size;
    sink.progress(&prog);
    Ok(RestoreReport {
        ok: true,
        image: path.to_path_buf(),
        target: target.to_path_buf(),
        chain: link_list,
        disk_size_bytes: h.disk_size,
        written_bytes: written,
        zero_bytes,
        unallocated_bytes: unalloc_bytes,
        discarded_bytes: discarded,
        bad_bytes,
        bad_ranges,
        media_hash: hex(&media),
        media_hash_verified: true,
        partition_table: None,
        notes: if redone > 0 {
            vec![format!(
                "{} the restore map had as written were not on the target (changed since, or \
                 never written): restored again",
                crate::jobs::fmt_bytes(redone)
            )]
        } else {
            Vec::new()
        },
        resumed_bytes: resumed_bytes.saturating_sub(redone),
        map_file: map.as_ref().map(|m| m.path().to_path_buf()),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// Whether the target (`back`) holds at `off` the chunk whose index hash is `hash`: `buf` (the
/// chunk's length) is read from it and hashed. A chunk past the target's end, or one that
/// cannot be read back, is not held (it is written again).
fn held_on_target(
    back: &dyn BlockSource,
    buf: &mut [u8],
    off: u64,
    hasher: &super::crypt::ChunkHasher,
    hash: &[u8; 32],
) -> bool {
    off + buf.len() as u64 <= back.size()
        && back.read_at(buf, off).ok() == Some(buf.len())
        && hasher.hash(buf) == *hash
}

/// Whether chunk `i` is all written according to the restore map `m`.
fn chunk_written(m: &crate::rescue::ExtentMap, h: &Header, i: u64) -> bool {
    let a = i * h.chunk_size as u64;
    super::resume::all_written(m, a, a + h.chunk_len(i) as u64)
}

/// Makes what was written durable, then saves the map that says so.
fn checkpoint(out: &mut dyn RestoreSink, m: &mut super::resume::RestoreMap) -> Result<()> {
    out.flush()?;
    m.save()
}

/// What a restore does where the image holds no used block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    /// The default: the target keeps its old bytes there.
    Keep,
    /// `--zero-free`: zeros (`BLKZEROOUT` on a block device: its WRITE ZEROES when it has one).
    Zero,
    /// `--discard`: TRIM (`BLKDISCARD`); the device decides what those bytes read afterwards.
    Discard,
}

/// A sink writing every chunk to a block device or an existing file. Bytes past the end of a
/// smaller target are dropped: the safety check made sure the partitions fit, and the GPT
/// fix-up rewrites the backup table at the real end afterwards. Free-space work (zeroing,
/// discarding) is gathered into runs of neighbouring chunks, done at the latest in `flush`.
pub struct DeviceSink<'a> {
    device: &'a crate::io::Device,
    free: FreeSpace,
    /// The run of free chunks not yet zeroed or discarded: (offset, length).
    pending: Option<(u64, u64)>,
}

/// The longest run of free space zeroed or discarded at once (each is one ioctl the kernel
/// splits as the device needs; bounded so a cancel is not held up for long).
const FREE_RUN: u64 = 1 << 30;

impl<'a> DeviceSink<'a> {
    pub fn new(device: &'a crate::io::Device, free: FreeSpace) -> Self {
        DeviceSink {
            device,
            free,
            pending: None,
        }
    }

    /// Zeroes or discards the gathered run of free chunks.
    fn free_pending(&mut self) -> Result<()> {
        let Some((off, len)) = self.pending.take() else {
            return Ok(());
        };
        match self.free {
            FreeSpace::Zero => self.device.zero_out(off, len),
            FreeSpace::Discard => self.device.discard(off, len),
            FreeSpace::Keep => Ok(()),
        }
    }
}

impl RestoreSink for DeviceSink<'_> {
    fn free_chunk(&mut self, data: &[u8], off: u64) -> Result<Freed> {
        use crate::io::BlockSource;
        let end = self.device.size();
        if self.free == FreeSpace::Keep || off >= end {
            return Ok(Freed::Kept);
        }
        let n = (data.len() as u64).min(end - off);
        match self.pending {
            Some((a, l)) if a + l == off && l + n <= FREE_RUN => self.pending = Some((a, l + n)),
            _ => {
                self.free_pending()?;
                self.pending = Some((off, n));
            }
        }
        Ok(match self.free {
            FreeSpace::Zero => Freed::Zeroed(n),
            _ => Freed::Discarded(n),
        })
    }
    fn write_chunk(&mut self, data: &[u8], off: u64, _zero: bool) -> Result<u64> {
        use crate::io::BlockSource;
        let end = self.device.size();
        if off >= end {
            return Ok(0);
        }
        let n = (data.len() as u64).min(end - off) as usize;
        self.device.write_all_at(&data[..n], off)?;
        Ok(n as u64)
    }
    fn flush(&mut self) -> Result<()> {
        self.free_pending()?;
        self.device.sync()
    }
}

/// A sink writing a regular file through the page cache; `sparse` leaves holes for zero chunks.
pub struct SparseFileSink {
    pub file: std::fs::File,
    pub path: PathBuf,
    pub sparse: bool,
}
impl RestoreSink for SparseFileSink {
    fn skip_unallocated(&self) -> bool {
        self.sparse
    }
    fn write_chunk(&mut self, data: &[u8], off: u64, zero: bool) -> Result<u64> {
        // A hole reads as the zeros it stands for: those bytes are on the target too.
        if !(zero && self.sparse) {
            std::os::unix::fs::FileExt::write_all_at(&self.file, data, off)
                .map_err(|e| Error::io("write", &self.path, e).at_offset(off))?;
        }
        Ok(data.len() as u64)
    }
}

/// `image export`: a plain raw disk file, sparse where the disk was zero, written under a
/// temporary name and renamed when complete.
pub fn export(
    path: &Path,
    raw: &Path,
    force: bool,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<RestoreReport> {
    if raw.exists() && !force {
        return Err(Error::refused(format!(
            "{} already exists; use --force to replace it",
            raw.display()
        )));
    }
    let size = Image::open(path)?.header.disk_size;
    let tmp = partial_name(raw);
    // Never through what had the `.partial` name (a hard link of another image, a symlink).
    let file = crate::io::open::create_fresh(&tmp)?;
    let mut s = SparseFileSink {
        file,
        path: tmp.clone(),
        sparse: true,
    };
    let r = stream(path, &mut s, "image-export", raw, sink, cancel).and_then(|r| {
        s.file
            .set_len(size)
            .map_err(|e| Error::io("set the size of", &tmp, e))?;
        s.file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, raw).map_err(|e| Error::io("rename the export to", raw, e))?;
        sync_dir(raw);
        Ok(r)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Checks an image is complete before a destructive restore (the error names the file).
pub fn require_complete(path: &Path) -> Result<()> {
    if !path.exists() && partial_name(path).exists() {
        return Err(incomplete_error(&partial_name(path)));
    }
    Ok(())
}
