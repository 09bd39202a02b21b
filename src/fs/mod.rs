//! Which bytes of a disk hold data: allocation maps read from each filesystem's own structures
//! (ext2/3/4 block bitmaps, FAT tables, the exFAT allocation bitmap, NTFS `$Bitmap`, XFS
//! free-space B+trees, the btrfs chunk and extent trees), through
//! the same [`BlockSource`] as the data, so they work on failing and simulated disks alike.
//!
//! [`UsageMap::analyze`] reads the partition table (the clone's reader), names each partition's
//! filesystem and decides its mode: *used blocks* when its map was read and is self-consistent,
//! *all sectors* with a reason otherwise (unknown or encrypted content, a RAID/LVM member, counts
//! that disagree with a bitmap, an NTFS volume left dirty or hibernated, an XFS log that needs
//! recovery, a multi-device btrfs or one with a log tree, an unreadable bitmap).
//! Everything outside partitions (tables, gaps, boot code, the backup GPT) is always used. A
//! table that cannot be trusted (overlapping partitions, a GPT without a protective MBR, which
//! Linux and Windows ignore) makes the whole disk all sectors, each partition listed with why.
//!
//! Each map is read once, by the analysis, which keeps the used ranges it streamed (at most
//! [`domain::ANALYSIS_MAX_RANGES`], 16 MiB: past that the smallest free gaps count as used).
//! [`UsageMap::extents`] gives them back, sorted and coalesced, and [`UsageMap::domain`]
//! aligns them into a rescue domain (clone): on a failing disk no metadata sector is read
//! twice, and whether a map failed is decided in one place. Metadata is read exactly
//! ([`Region`]): a bad sector in free space beside a bitmap does not fail the map. Memory is
//! bounded: a filesystem map holds one piece of its bitmap at a time (one ext4 group, 256 KiB
//! of a FAT or bitmap) plus a few cached pieces (at most 8), so a map is below ~3 MiB whatever
//! the disk size (btrfs adds its chunk map, ~90 bytes a chunk: ~1.5 MiB for 16 TiB of 1 GiB
//! chunks) — never one bit per block of the whole disk.
pub mod btrfs;
pub mod crc32c;
pub mod domain;
pub mod exfat;
pub mod ext;
pub mod fat;
pub mod known_bad;
pub mod ntfs;
mod report;
pub mod xfs;

use crate::clone::gpt::{self, TableKind};
use crate::devices::probe::{probe_reader, ReadAt};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, BlockSource};
use domain::Bounded;
pub use domain::Domain;
pub use report::ALL_SECTORS_HELP;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The most bytes [`Region::read_in`] reads ahead at once: metadata that lies together (ext4
/// flex_bg bitmaps, exFAT's FAT) costs one read per window instead of one per block.
pub const WINDOW: usize = 256 << 10;

/// A byte range `[start, end)`.
pub type Range = (u64, u64);

/// Pieces a [`Region`] keeps: a map that goes back and forth between two structures (exFAT's
/// FAT and its root directory, a FAT and its copy) reads each once.
const CACHED_PIECES: usize = 8;

/// A window `[start, start+len)` of a block source (a partition), read with byte offsets relative
/// to its start. Reads are exact: the sectors holding what is asked for and nothing more (no
/// read-ahead into free space, where a failing disk's bad sectors must never be tried), unless
/// the caller knows the metadata goes on ([`Region::read_in`]); the last [`CACHED_PIECES`]
/// pieces read are kept, so a structure read in small parts is read once.
pub struct Region<'a> {
    src: &'a dyn BlockSource,
    start: u64,
    len: u64,
    /// (relative start, bytes), most recently used first.
    cache: Mutex<VecDeque<(u64, Vec<u8>)>>,
}

impl<'a> Region<'a> {
    pub fn new(src: &'a dyn BlockSource, start: u64, len: u64) -> Self {
        let len = len.min(src.size().saturating_sub(start));
        Region {
            src,
            start,
            len,
            cache: Mutex::new(VecDeque::new()),
        }
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Reads the sectors holding relative `[from, to)`, clipped to the region: (the relative
    /// start of what was read, the bytes), short at the end of the source.
    fn fetch(&self, from: u64, to: u64) -> Result<(u64, Vec<u8>)> {
        let lbs = (self.src.logical_block_size() as u64).max(512);
        let abs = self.start + from;
        let astart = abs / lbs * lbs;
        let aend = (self.start + to.min(self.len)).div_ceil(lbs) * lbs;
        let aend = aend.min(self.src.size().div_ceil(lbs) * lbs);
        let n = aend.saturating_sub(astart) as usize;
        let mut buf = AlignedBuf::new(n);
        let mut done = 0;
        while done < n && astart + (done as u64) < self.src.size() {
            match self.src.read_at(&mut buf[done..], astart + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io("read filesystem metadata on", self.src.name(), e)
                        .at_offset(astart + done as u64))
                }
            }
        }
        // Keep the whole sectors read, within the region.
        let first = astart.max(self.start);
        let skip = (first - astart) as usize;
        let keep = done
            .saturating_sub(skip)
            .min((self.start + self.len - first) as usize);
        Ok((first - self.start, buf[skip..skip + keep].to_vec()))
    }

    /// Reads `len` bytes at relative offset `off`, exactly (see the type's documentation); an
    /// error if they are not all inside the region.
    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        self.read_in(off, len, 0)
    }

    /// As [`Region::read`], reading ahead up to relative offset `ahead_to` (at most
    /// [`WINDOW`] bytes at once) on a miss: for a caller that knows the metadata it reads next
    /// lies there (a FAT, bitmaps side by side), so it costs one read instead of many.
    pub fn read_in(&self, off: u64, len: usize, ahead_to: u64) -> Result<Vec<u8>> {
        let end = off.checked_add(len as u64).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(Error::corrupt(format!(
                "{}: filesystem structure at byte {} (+{len}) lies outside its partition",
                self.src.name(),
                self.start + off
            )));
        };
        let mut out = Vec::with_capacity(len);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        while out.len() < len {
            let pos = off + out.len() as u64;
            let hit = cache
                .iter()
                .position(|(s, d)| pos >= *s && pos < *s + d.len() as u64);
            match hit {
                Some(i) => {
                    let w = cache.remove(i).expect("a cached piece");
                    cache.push_front(w);
                }
                None => {
                    // Up to what is asked (or read-ahead), never into a piece already cached.
                    let mut to = end.max(ahead_to.min(pos + WINDOW as u64)).min(self.len);
                    for (s, _) in cache.iter() {
                        if *s > pos && *s < to {
                            to = *s;
                        }
                    }
                    let (s, d) = self.fetch(pos, to)?;
                    if s + (d.len() as u64) <= pos {
                        return Err(Error::corrupt(format!(
                            "{}: the disk ended inside a filesystem structure",
                            self.src.name()
                        ))
                        .at_offset(self.start + pos));
                    }
                    cache.truncate(CACHED_PIECES - 1);
                    cache.push_front((s, d));
                }
            }
            let (s, d) = cache.front().expect("piece cached");
            let from = (pos - s) as usize;
            let n = (len - out.len()).min(d.len() - from);
            out.extend_from_slice(&d[from..from + n]);
        }
        Ok(out)
    }
}

/// The superblock probes' reads ([`probe_reader`]: the first 68 KiB of a partition, a root
/// directory). A read that fails is read again in [`PROBE_PIECE`]s and what cannot be read is
/// zeros: a bad sector in free space inside the probed span does not hide the filesystem (its
/// map then reads exactly what it needs, and fails if that is what is bad); a bad superblock
/// reads as no filesystem, and the partition is copied whole.
impl ReadAt for Region<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - off) as usize;
        let err = match self.read(off, n) {
            Ok(d) => {
                buf[..n].copy_from_slice(&d);
                return Ok(n);
            }
            Err(e) => std::io::Error::other(e.to_string()),
        };
        if n <= PROBE_PIECE {
            return Err(err);
        }
        let mut any = false;
        let mut pos = 0usize;
        while pos < n {
            let at = off + pos as u64;
            let k = (PROBE_PIECE - (at % PROBE_PIECE as u64) as usize).min(n - pos);
            match self.read(at, k) {
                Ok(d) => {
                    buf[pos..pos + k].copy_from_slice(&d);
                    any = true;
                }
                Err(_) => buf[pos..pos + k].fill(0),
            }
            pos += k;
        }
        if any {
            Ok(n)
        } else {
            Err(err)
        }
    }
}

/// The unit a failed probe read is read again in (see `impl ReadAt for Region`).
const PROBE_PIECE: usize = 4096;

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .unwrap_or(0)
}

/// Calls `f(first_bit, count)` for every run of set bits among the first `nbits` bits of `bits`
/// (bit 0 = least significant bit of byte 0, the order ext4, exFAT and NTFS bitmaps use).
pub fn bit_runs(bits: &[u8], nbits: u64, mut f: impl FnMut(u64, u64)) {
    let nbits = nbits.min(bits.len() as u64 * 8);
    let mut run: Option<u64> = None;
    let mut i = 0u64;
    while i < nbits {
        let byte = bits[(i / 8) as usize];
        if i.is_multiple_of(8) && i + 8 <= nbits && (byte == 0 || byte == 0xFF) {
            match (byte, run) {
                (0, Some(s)) => {
                    f(s, i - s);
                    run = None;
                }
                (0xFF, None) => run = Some(i),
                _ => {}
            }
            i += 8;
            continue;
        }
        let set = byte >> (i % 8) & 1 == 1;
        match (set, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                f(s, i - s);
                run = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = run {
        f(s, nbits - s);
    }
}

/// A filesystem's used byte ranges, relative to the start of its partition, in ascending order
/// of start (ranges may touch or overlap; [`UsedExtents`] coalesces them).
pub trait UsedMap {
    /// The next range, or None at the end. An error means the map cannot be trusted beyond
    /// what it already returned.
    fn next_range(&mut self) -> Result<Option<Range>>;
}

/// The ranges of a sorted list (small fixed sets: boot sectors, `$MFT` runs...).
pub struct ListMap(VecDeque<Range>);
impl ListMap {
    pub fn new(mut v: Vec<Range>) -> Self {
        v.retain(|r| r.1 > r.0);
        v.sort_unstable();
        ListMap(v.into())
    }
}
impl UsedMap for ListMap {
    fn next_range(&mut self) -> Result<Option<Range>> {
        Ok(self.0.pop_front())
    }
}

/// The union of two maps (each ascending), ascending.
pub struct Union<A: UsedMap, B: UsedMap> {
    a: A,
    b: B,
    pa: Option<Option<Range>>,
    pb: Option<Option<Range>>,
}
impl<A: UsedMap, B: UsedMap> Union<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Union {
            a,
            b,
            pa: None,
            pb: None,
        }
    }
}
impl<A: UsedMap, B: UsedMap> UsedMap for Union<A, B> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        if self.pa.is_none() {
            self.pa = Some(self.a.next_range()?);
        }
        if self.pb.is_none() {
            self.pb = Some(self.b.next_range()?);
        }
        let take_a = match (self.pa.flatten(), self.pb.flatten()) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => x.0 <= y.0,
        };
        Ok(if take_a {
            self.pa.take().flatten()
        } else {
            self.pb.take().flatten()
        })
    }
}

/// Drains a map into coalesced ranges, counting the used bytes (tests and analysis).
pub fn collect(map: &mut dyn UsedMap) -> Result<Vec<Range>> {
    let mut v: Vec<Range> = Vec::new();
    while let Some((s, e)) = map.next_range()? {
        if e <= s {
            continue;
        }
        match v.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => v.push((s, e)),
        }
    }
    Ok(v)
}

/// Why a partition is copied sector by sector, or that it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    UsedBlocks,
    AllSectors,
}

/// One partition as the used-block analysis saw it (the `--json` and `info` contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionUsage {
    /// The partition's slot number; 0 for a filesystem on the whole disk (no partition table).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// blkid's TYPE of what the partition holds, None when nothing known was found.
    pub filesystem: Option<String>,
    pub mode: Mode,
    /// Why the partition is copied sector by sector (None in used-blocks mode).
    pub reason: Option<String>,
    /// Bytes that will be read: the used blocks, or the whole partition.
    pub used_bytes: u64,
}

/// The used-block plan of a whole disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageMap {
    pub disk_size: u64,
    /// "gpt", "mbr" or "none".
    pub table: TableKind,
    pub partitions: Vec<PartitionUsage>,
    /// Bytes outside every partition (always copied).
    pub outside_bytes: u64,
    /// Total bytes that will be read.
    pub used_bytes: u64,
    /// The used byte ranges of the whole disk, `[start, len]`, sorted, not touching, as the
    /// analysis read them (at most [`domain::ANALYSIS_MAX_RANGES`]; not in the serialized
    /// record).
    #[serde(skip)]
    used: Vec<(u64, u64)>,
    /// Free gaps shorter than this are inside `used` to keep it bounded (0: none).
    #[serde(skip)]
    gaps_read_below: u64,
}

/// The smallest gap [`domain::Bounded`] takes in is 8 of these (then it doubles).
const RANGE_UNIT: u64 = 512;

/// What a partition holds, as far as the used-block maps care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Ext,
    Fat,
    Exfat,
    Ntfs,
    Xfs,
    Btrfs,
    Swap(u64),
}

/// Names the content of a partition and whether it has a used-block map: Err(reason) for
/// all-sectors mode.
fn classify(r: &Region, type_id: &str) -> (Option<String>, std::result::Result<Content, String>) {
    let len = r.len();
    // The filesystem's superblock first: the probe reads the start of the partition once, and
    // the layer checks below read from it.
    let probed = probe_reader(r);
    // RAID members, encrypted containers, LVM, ZFS, APFS, Storage Spaces and dynamic disks
    // decide first; the devices inventory names them the same way (`devices::layers`).
    if let Some(l) = crate::devices::layers::detect(r, len, type_id) {
        return (l.fs_type.clone(), Err(l.reason()));
    }
    let Some(info) = probed else {
        return (None, Err("no known filesystem".into()));
    };
    let fs = info.fs_type.clone();
    let content = match fs.as_str() {
        "ext2" | "ext3" | "ext4" => Ok(Content::Ext),
        "vfat" => Ok(Content::Fat),
        "exfat" => Ok(Content::Exfat),
        "ntfs" => Ok(Content::Ntfs),
        "xfs" => Ok(Content::Xfs),
        "btrfs" => Ok(Content::Btrfs),
        "swap" => {
            // The header is the first page; the signature ends it.
            let head = r.read(0, 65536.min(len as usize)).unwrap_or_default();
            let page = [4096u64, 8192, 16384, 65536]
                .into_iter()
                .find(|&p| {
                    let s = head.get(p as usize - 10..p as usize);
                    s == Some(b"SWAPSPACE2") || s == Some(b"SWAP-SPACE")
                })
                .unwrap_or(4096);
            Ok(Content::Swap(page))
        }
        "crypto_LUKS" => Err("LUKS-encrypted: which blocks are used is not visible".into()),
        "LVM2_member" => Err("LVM physical volume: its extents belong to volume groups".into()),
        other => Err(format!("no used-block map for {other}")),
    };
    (Some(fs), content)
}

/// Why a GPT found on the disk may not be the table in use, or None. Linux and Windows take a
/// GPT only behind a protective (or hybrid) MBR: the boot signature and a type 0xEE entry. A
/// disk relabelled MBR by a tool that writes only the first sector (busybox fdisk, an old fdisk,
/// `sfdisk --wipe never`), or a whole-disk filesystem made over a GPT disk, keeps a valid but
/// stale GPT; its partitions would let an old filesystem's bitmaps decide what is copied.
fn gpt_not_in_use(src: &dyn BlockSource) -> Option<String> {
    let mbr = match Region::new(src, 0, 512).read(0, 512) {
        Ok(b) => b,
        Err(e) => return Some(format!("the first sector cannot be read ({e})")),
    };
    if mbr[510..512] != [0x55, 0xAA] {
        return Some(
            "the disk has a GPT but no boot signature in its first sector: Linux and Windows \
             do not use that GPT, it may be stale"
                .into(),
        );
    }
    if !(0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE) {
        return Some(
            "the disk has a GPT behind an MBR without a protective entry: Linux and Windows use \
             the MBR, the GPT may be stale"
                .into(),
        );
    }
    None
}

/// Opens the used-block map of a classified partition.
fn open_map<'a>(r: Region<'a>, c: &Content) -> Result<Box<dyn UsedMap + 'a>> {
    Ok(match c {
        Content::Ext => Box::new(ext::open(r)?),
        Content::Fat => Box::new(fat::open(r)?),
        Content::Exfat => Box::new(exfat::open(r)?),
        Content::Ntfs => Box::new(ntfs::open(r)?),
        Content::Xfs => Box::new(xfs::open(r)?),
        Content::Btrfs => Box::new(btrfs::open(r)?),
        Content::Swap(page) => Box::new(ListMap::new(vec![(0, (*page).min(r.len()))])),
    })
}

/// Streams a partition's map into `acc` (absolute ranges, clipped to the region) and returns
/// the used bytes; on an error, what was added of this partition is already in `acc` and the
/// caller replaces it by the whole partition.
fn stream_partition(r: Region, c: &Content, acc: &mut Bounded) -> Result<u64> {
    let (base, len) = (r.start(), r.len());
    let mut m = open_map(r, c)?;
    let (mut used, mut done) = (0u64, 0u64);
    while let Some((s, e)) = m.next_range()? {
        let (s, e) = (s.max(done).min(len), e.min(len));
        if e > s {
            used += e - s;
            done = e;
            acc.push(base + s, base + e);
        }
    }
    Ok(used)
}

impl UsageMap {
    /// Reads the partition table and every partition's map (see [`UsageMap::analyze_with`]).
    pub fn analyze(src: &dyn BlockSource) -> UsageMap {
        // A read that failed is not sent again (the tail of a failing disk is read by several
        // probes).
        let src = known_bad::KnownBad::new(src);
        Self::analyze_with(&src, gpt::read(&src).ok().as_ref())
    }

    /// Reads every partition's map once, with the partition table already read from `src`
    /// (None: it could not be read), counting the used bytes, finding the fallbacks and keeping
    /// the used ranges (bounded: see [`domain`]) for [`UsageMap::extents`] and
    /// [`UsageMap::domain`], so a failing disk's metadata is read only once. Never fails:
    /// whatever cannot be read is copied sector by sector, with the reason, decided here only.
    pub fn analyze_with(src: &dyn BlockSource, table: Option<&gpt::PartitionTable>) -> UsageMap {
        let size = src.size();
        let Some(table) = table else {
            return Self::all_sectors(src);
        };
        let ss = table.sector_size as u64;
        let mut sorted = table.partitions.clone();
        if table.kind == TableKind::Gpt {
            if let Some(why) = gpt_not_in_use(src) {
                sorted.sort_by_key(|p| p.first_lba);
                return Self::whole_disk(src, table.kind, ss, &sorted, &why);
            }
        }
        if table.kind == TableKind::None && size >= ss {
            // No partition table: a filesystem on the whole disk (a "superfloppy" USB stick).
            sorted.push(gpt::Part {
                number: 0,
                first_lba: 0,
                last_lba: size / ss - 1,
                type_id: String::new(),
                name: String::new(),
            });
        }
        // An IMSM member or a whole-disk md member shows the array's own table (or none, a
        // RAID-0 member past the first): its partitions are the array's, not this disk's, so
        // none of them decides what to copy.
        let ranges: Vec<(u64, u64)> = sorted
            .iter()
            .map(|p| {
                (
                    p.first_lba.saturating_mul(ss),
                    (p.last_lba + 1).saturating_mul(ss),
                )
            })
            .collect();
        let parts = (table.kind != TableKind::None).then_some(ranges.as_slice());
        let whole = Region::new(src, 0, size);
        if let Some(l) = crate::devices::layers::detect_disk(&whole, size, parts) {
            sorted.sort_by_key(|p| p.first_lba);
            return Self::whole_disk(src, table.kind, ss, &sorted, &l.reason());
        }
        // Extended MBR containers hold logical partitions and EBRs: not a filesystem, and
        // overlapping their logicals. The EBRs stay outside every partition (always copied).
        sorted.retain(|p| !matches!(p.type_id.as_str(), "0x05" | "0x0F" | "0x85"));
        sorted.sort_by_key(|p| p.first_lba);
        let mut prev_end = 0u64;
        for p in &sorted {
            let start = p.first_lba.saturating_mul(ss);
            if start < prev_end {
                return Self::whole_disk(
                    src,
                    table.kind,
                    ss,
                    &sorted,
                    "partitions overlap: none can be trusted to own its bytes",
                );
            }
            prev_end = prev_end.max((p.last_lba + 1).saturating_mul(ss).min(size));
        }
        let mut acc = Bounded::new(RANGE_UNIT, domain::ANALYSIS_MAX_RANGES);
        let mut pos = 0u64;
        let mut partitions = Vec::new();
        let mut contents = Vec::new();
        for p in &sorted {
            let start = p.first_lba.saturating_mul(ss).min(size);
            let end = (p.last_lba + 1).saturating_mul(ss).min(size);
            // Tables, gaps and boot code before the partition.
            acc.push(pos, start);
            pos = end.max(pos);
            let r = Region::new(src, start, end.saturating_sub(start));
            let len = r.len();
            let (filesystem, content) = if r.is_empty() {
                (
                    None,
                    Err("partition lies past the end of the disk".to_string()),
                )
            } else {
                classify(&r, &p.type_id)
            };
            let (mode, reason, used, content) = match content {
                Ok(c) => match stream_partition(r, &c, &mut acc) {
                    Ok(used) => (Mode::UsedBlocks, None, used, Some(c)),
                    Err(e) => {
                        acc.replace_from(start, start + len);
                        (Mode::AllSectors, Some(e.to_string()), len, None)
                    }
                },
                Err(reason) => {
                    acc.push(start, start + len);
                    (Mode::AllSectors, Some(reason), len, None)
                }
            };
            partitions.push(PartitionUsage {
                number: p.number,
                start_bytes: start,
                size_bytes: len,
                filesystem,
                mode,
                reason,
                used_bytes: used,
            });
            contents.push(content);
        }
        // The rest of the disk (the backup GPT).
        acc.push(pos, size);
        let (used, gaps_read_below) = acc.finish();
        let inside: u64 = partitions.iter().map(|p| p.size_bytes).sum();
        let outside = size.saturating_sub(inside);
        UsageMap {
            disk_size: size,
            table: table.kind,
            used_bytes: outside + partitions.iter().map(|p| p.used_bytes).sum::<u64>(),
            partitions,
            outside_bytes: outside,
            used,
            gaps_read_below,
        }
    }

    /// The whole disk in all-sectors mode because the partition table itself cannot be trusted:
    /// every partition is listed with `reason`, so the report says why.
    fn whole_disk(
        src: &dyn BlockSource,
        table: TableKind,
        ss: u64,
        sorted: &[gpt::Part],
        reason: &str,
    ) -> UsageMap {
        let size = src.size();
        let (mut covered, mut pos) = (0u64, 0u64);
        let mut partitions = Vec::new();
        for p in sorted {
            let start = p.first_lba.saturating_mul(ss).min(size);
            let end = (p.last_lba + 1).saturating_mul(ss).min(size);
            covered += end.saturating_sub(start.max(pos));
            pos = pos.max(end);
            partitions.push(PartitionUsage {
                number: p.number,
                start_bytes: start,
                size_bytes: end.saturating_sub(start),
                filesystem: None,
                mode: Mode::AllSectors,
                reason: Some(reason.to_string()),
                used_bytes: end.saturating_sub(start),
            });
        }
        UsageMap {
            disk_size: size,
            table,
            partitions,
            outside_bytes: size - covered,
            used_bytes: size,
            used: vec![(0, size)],
            gaps_read_below: 0,
        }
    }

    /// The whole disk in all-sectors mode (`--all-sectors`).
    pub fn all_sectors(src: &dyn BlockSource) -> UsageMap {
        UsageMap {
            disk_size: src.size(),
            table: TableKind::None,
            partitions: vec![],
            outside_bytes: src.size(),
            used_bytes: src.size(),
            used: vec![(0, src.size())],
            gaps_read_below: 0,
        }
    }

    /// The used byte ranges of the whole disk (absolute `[start, end)`, ascending, coalesced),
    /// as the analysis read them: nothing is read again.
    pub fn extents(&self) -> impl Iterator<Item = Range> + '_ {
        self.used.iter().map(|&(a, l)| (a, a + l))
    }

    /// Free gaps shorter than this were counted used, to keep the ranges within
    /// [`domain::ANALYSIS_MAX_RANGES`] (0: none).
    pub fn gaps_read_below(&self) -> u64 {
        self.gaps_read_below
    }

    /// Turns every partition to all-sectors mode with `reason` (`--all-sectors`), keeping what
    /// the analysis found for the report.
    pub fn force_all_sectors(&mut self, reason: &str) {
        for p in self.partitions.iter_mut() {
            if p.mode == Mode::UsedBlocks {
                p.mode = Mode::AllSectors;
                p.reason = Some(reason.to_string());
                p.used_bytes = p.size_bytes;
            }
        }
        self.used = vec![(0, self.disk_size)];
        self.gaps_read_below = 0;
        self.used_bytes = self.disk_size;
    }

    /// Whether any partition is copied by used blocks (false: the plan is the whole disk).
    pub fn any_used_blocks(&self) -> bool {
        self.partitions.iter().any(|p| p.mode == Mode::UsedBlocks)
    }
}

/// Walks a used-range stream chunk by chunk (ascending, never backwards): which parts of
/// `[start, end)` are used. Holds one range of look-ahead.
pub struct UsedCursor<I: Iterator<Item = Range>> {
    it: I,
    cur: Option<Range>,
}

impl<I: Iterator<Item = Range>> UsedCursor<I> {
    pub fn new(mut it: I) -> Self {
        let cur = it.next();
        UsedCursor { it, cur }
    }
    /// The used ranges inside `[start, end)` (clipped); `start` must not go backwards.
    pub fn used_in(&mut self, start: u64, end: u64) -> Vec<Range> {
        let mut v = Vec::new();
        while let Some((s, e)) = self.cur {
            if e <= start {
                self.cur = self.it.next();
                continue;
            }
            if s >= end {
                break;
            }
            v.push((s.max(start), e.min(end)));
            if e <= end {
                self.cur = self.it.next();
            } else {
                break;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_runs_finds_every_run() {
        let bits = [0b1110_0001u8, 0xFF, 0x00, 0x80, 0xFF];
        let mut v = Vec::new();
        bit_runs(&bits, 36, |s, n| v.push((s, n)));
        assert_eq!(v, vec![(0, 1), (5, 11), (31, 5)]);
        // A property check against the obvious bit-by-bit answer.
        let data = crate::rescue::sim::SimDevice::pattern(4096, 3);
        for nbits in [0u64, 1, 63, 1000, 32768] {
            let mut got = vec![false; nbits as usize];
            bit_runs(&data, nbits, |s, n| {
                for b in s..s + n {
                    assert!(!got[b as usize], "bit {b} reported twice");
                    got[b as usize] = true;
                }
            });
            for (i, g) in got.iter().enumerate() {
                assert_eq!(*g, data[i / 8] >> (i % 8) & 1 == 1, "bit {i}");
            }
        }
    }

    #[test]
    fn union_and_cursor() {
        let a = ListMap::new(vec![(0, 10), (50, 60)]);
        let b = ListMap::new(vec![(5, 20), (30, 40), (55, 70)]);
        let mut u = Union::new(a, b);
        assert_eq!(collect(&mut u).unwrap(), vec![(0, 20), (30, 40), (50, 70)]);
        let mut c = UsedCursor::new(vec![(0u64, 20u64), (30, 40), (50, 70)].into_iter());
        assert_eq!(c.used_in(0, 16), vec![(0, 16)]);
        assert_eq!(c.used_in(16, 32), vec![(16, 20), (30, 32)]);
        assert_eq!(c.used_in(32, 48), vec![(32, 40)]);
        assert_eq!(c.used_in(48, 64), vec![(50, 64)]);
        assert_eq!(c.used_in(64, 80), vec![(64, 70)]);
        assert_eq!(c.used_in(80, 96), vec![]);
    }

    #[test]
    fn unknown_content_is_all_sectors() {
        let sim = crate::rescue::sim::SimDevice::new(
            crate::rescue::sim::SimDevice::pattern(4 << 20, 9),
            512,
        );
        let m = UsageMap::analyze(&sim);
        assert_eq!(m.used_bytes, 4 << 20);
        assert_eq!(m.extents().collect::<Vec<_>>(), vec![(0, 4 << 20)]);
    }
}
