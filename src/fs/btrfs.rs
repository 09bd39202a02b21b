//! btrfs used blocks (single-device filesystems): the superblock's `sys_chunk_array` and the
//! chunk tree map logical addresses to physical stripes; the extent tree's `EXTENT_ITEM`s and
//! `METADATA_ITEM`s are the used logical ranges; every physical copy of every used range (DUP,
//! RAID1/1C3/1C4 copies, RAID0/RAID10 stripes) is used. The first MiB of the device and every
//! superblock mirror inside the partition (64 KiB, 64 MiB, 256 GiB) are always used, and so is
//! the partition's tail after the device's size.
//!
//! Every tree block read must pass its CRC32C, carry its own logical address, the filesystem's
//! metadata UUID and the level its parent implies, and its keys must ascend; the node keys must
//! be their children's first keys. A copy that fails is replaced by the next copy (DUP, RAID1),
//! as the kernel does. Each block group's `used` must equal the sum of its extents, and the
//! superblock's `bytes_used` their total.
//!
//! The map is refused (the partition is then copied sector by sector) for: more than one device
//! (`num_devices` > 1: the other devices hold part of the data), a log tree (`log_root` ≠ 0:
//! fsync'd data not yet replayed), a checksum type other than CRC32C, unknown incompatible
//! features, extent-tree-v2, zoned or RAID stripe tree filesystems, RAID5/6 chunks, superblock
//! flags saying an error was recorded or a conversion is under way, and any tree block that no
//! copy of reads back valid.
//!
//! Memory: the chunk map (about 90 bytes per chunk: a 16 TiB filesystem of 1 GiB data chunks
//! needs ~1.5 MiB; the kernel holds the same map) and one path of the tree being walked (at
//! most 8 blocks of at most 64 KiB). Tree blocks are read exactly, without read-ahead.
use super::crc32c::crc32c;
use super::xfs::read_exact;
use super::{le16, le32, le64, ListMap, Range, Region, Union, UsedMap};
use crate::error::{Error, Result};
use std::collections::VecDeque;

const SUPER_OFF: u64 = 64 << 10;
const SUPER_LEN: usize = 4096;
const HEADER: usize = 101;
const ITEM: usize = 25;
const KEY_PTR: usize = 33;
const MAX_LEVEL: u8 = 8;
const MAX_STRIPES: usize = 4;

const ROOT_ITEM: u8 = 132;
const EXTENT_ITEM: u8 = 168;
const METADATA_ITEM: u8 = 169;
const BLOCK_GROUP_ITEM: u8 = 192;
const CHUNK_ITEM: u8 = 228;
const EXTENT_TREE: u64 = 2;

const BG_RAID0: u64 = 1 << 3;
const BG_RAID1: u64 = 1 << 4;
const BG_DUP: u64 = 1 << 5;
const BG_RAID10: u64 = 1 << 6;
const BG_RAID5: u64 = 1 << 7;
const BG_RAID6: u64 = 1 << 8;
const BG_RAID1C3: u64 = 1 << 9;
const BG_RAID1C4: u64 = 1 << 10;

const INCOMPAT_RAID56: u64 = 1 << 7;
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// Incompatible features that leave the chunk and extent trees as this module reads them:
/// mixed backrefs, default subvolume, mixed block groups, LZO, ZSTD, big metadata, extended
/// inode refs, skinny metadata, no-holes, metadata UUID, RAID1C3/4.
const INCOMPAT_KNOWN: u64 =
    0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400 | 0x800;
const COMPAT_RO_BLOCK_GROUP_TREE: u64 = 1 << 3;
/// Superblock flags that say nothing against the trees: WRITTEN, RELOC, SEEDING.
const SUPER_FLAGS_OK: u64 = 0x1 | 0x2 | 1 << 32;

fn corrupt(m: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("btrfs: {m}"))
}

/// A B-tree key: (objectid, type, offset).
type Key = (u64, u8, u64);

fn key_at(b: &[u8], o: usize) -> Key {
    (le64(b, o), b[o + 8], le64(b, o + 9))
}

/// One chunk: logical `[start, start+len)` on `n` physical stripes.
#[derive(Debug, Clone)]
struct Chunk {
    start: u64,
    len: u64,
    /// Stripe unit (RAID0/RAID10 interleave in units of this many bytes).
    unit: u64,
    /// Distinct data stripes: 1 for single/DUP/RAID1*, the interleave width for RAID0/RAID10.
    groups: u8,
    n: u8,
    stripes: [u64; MAX_STRIPES],
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.len
    }
    fn copies(&self) -> usize {
        usize::from(self.n / self.groups)
    }
    /// Bytes of the device one stripe occupies.
    fn stripe_len(&self) -> u64 {
        self.len / u64::from(self.groups)
    }
    /// The physical addresses of every copy of logical byte `off` bytes into the chunk.
    fn phys(&self, off: u64) -> impl Iterator<Item = u64> + '_ {
        let g = u64::from(self.groups);
        let u = off / self.unit;
        let base = (u / g) * self.unit + off % self.unit;
        let first = (u % g) as usize * self.copies();
        (first..first + self.copies()).map(move |k| self.stripes[k] + base)
    }
}

/// Parses a `btrfs_chunk` at `c` (48 bytes + 32 per stripe) for logical address `start`.
fn parse_chunk(c: &[u8], start: u64, devid: u64) -> Result<Chunk> {
    let len = le64(c, 0);
    let unit = le64(c, 16);
    let ty = le64(c, 24);
    let n = usize::from(le16(c, 44));
    let sub = u64::from(le16(c, 46));
    let at = format!("chunk at logical {start}");
    if ty & (BG_RAID5 | BG_RAID6) != 0 {
        return Err(Error::unsupported(format!(
            "btrfs RAID5/6 {at}: its parity layout is not mapped"
        )));
    }
    if n == 0 || c.len() < 48 + 32 * n || len == 0 || unit == 0 || !unit.is_power_of_two() {
        return Err(corrupt(format!("{at} is malformed")));
    }
    if n > MAX_STRIPES {
        return Err(Error::unsupported(format!(
            "btrfs {at} has {n} stripes on one device"
        )));
    }
    let groups = if ty & BG_RAID0 != 0 {
        n as u64
    } else if ty & BG_RAID10 != 0 {
        if sub == 0 || !(n as u64).is_multiple_of(sub) {
            return Err(corrupt(format!("{at}: RAID10 sub-stripes do not divide")));
        }
        n as u64 / sub
    } else {
        let want = if ty & BG_DUP != 0 || ty & BG_RAID1 != 0 {
            2
        } else if ty & BG_RAID1C3 != 0 {
            3
        } else if ty & BG_RAID1C4 != 0 {
            4
        } else {
            1
        };
        if n != want {
            return Err(corrupt(format!("{at}: {n} stripes for its profile")));
        }
        1
    };
    if groups > 1 && !len.is_multiple_of(groups * unit) {
        return Err(corrupt(format!("{at}: length is not whole stripe units")));
    }
    let mut stripes = [0u64; MAX_STRIPES];
    for (k, s) in stripes.iter_mut().enumerate().take(n) {
        let o = 48 + 32 * k;
        if le64(c, o) != devid {
            return Err(Error::refused(format!(
                "btrfs {at} has a stripe on another device (devid {})",
                le64(c, o)
            )));
        }
        *s = le64(c, o + 8);
    }
    Ok(Chunk {
        start,
        len,
        unit,
        groups: groups as u8,
        n: n as u8,
        stripes,
    })
}

/// What the map needs from the superblock, and the chunk map.
struct Fs<'a> {
    r: Region<'a>,
    nodesize: usize,
    generation: u64,
    /// The UUID stamped in tree blocks (the metadata UUID with that feature).
    meta_fsid: [u8; 16],
    /// Chunks sorted by logical start.
    chunks: Vec<Chunk>,
}

impl Fs<'_> {
    fn chunk_of(&self, logical: u64) -> Option<&Chunk> {
        let i = self.chunks.partition_point(|c| c.start <= logical);
        self.chunks[..i].last().filter(|c| logical < c.end())
    }

    /// Reads and checks the tree block at `logical`, trying every copy until one is valid.
    fn block(&self, logical: u64, level: u8) -> Result<Vec<u8>> {
        let c = self
            .chunk_of(logical)
            .ok_or_else(|| corrupt(format!("tree block {logical} is in no chunk")))?;
        if logical + self.nodesize as u64 > c.end() {
            return Err(corrupt(format!(
                "tree block {logical} crosses its chunk's end"
            )));
        }
        let mut first_err = None;
        for p in c.phys(logical - c.start) {
            let got =
                read_exact(&self.r, p, self.nodesize).and_then(|b| self.check(b, logical, level));
            match got {
                Ok(b) => return Ok(b),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.expect("a chunk has at least one stripe"))
    }

    fn check(&self, b: Vec<u8>, logical: u64, level: u8) -> Result<Vec<u8>> {
        let bad = |m: &str| corrupt(format!("tree block {logical}: {m}"));
        if crc32c(&b[32..]) != le32(&b, 0) {
            return Err(bad("checksum mismatch"));
        }
        if le64(&b, 0x30) != logical || b[0x20..0x30] != self.meta_fsid {
            return Err(bad(
                "its address or filesystem UUID disagrees (a misplaced block)",
            ));
        }
        if b[0x64] != level || le64(&b, 0x50) > self.generation {
            return Err(bad("wrong level or a generation from the future"));
        }
        let n = le32(&b, 0x60) as usize;
        let ok = if level == 0 {
            HEADER + n * ITEM <= b.len()
                && (0..n).all(|i| {
                    let o = HEADER + i * ITEM;
                    let (off, sz) = (le32(&b, o + 17) as usize, le32(&b, o + 21) as usize);
                    off >= n * ITEM && HEADER + off + sz <= b.len()
                })
        } else {
            n >= 1 && HEADER + n * KEY_PTR <= b.len()
        };
        let step = if level == 0 { ITEM } else { KEY_PTR };
        if !ok
            || (1..n).any(|i| key_at(&b, HEADER + (i - 1) * step) >= key_at(&b, HEADER + i * step))
        {
            return Err(bad("invalid item count, item layout or key order"));
        }
        Ok(b)
    }
}

/// A position in one B-tree: the path from the root to a leaf, each block with its index.
struct Cursor {
    root: u64,
    root_level: u8,
    /// (logical address, block, index): a node's child being visited, a leaf's next item.
    path: Vec<(u64, Vec<u8>, usize)>,
    last: Option<Key>,
}

impl Cursor {
    fn new(root: u64, root_level: u8) -> Result<Cursor> {
        if root_level >= MAX_LEVEL {
            return Err(corrupt("a tree is deeper than btrfs allows"));
        }
        Ok(Cursor {
            root,
            root_level,
            path: Vec::new(),
            last: None,
        })
    }

    fn level(&self, depth: usize) -> u8 {
        self.root_level - depth as u8
    }

    /// Loads the block at `depth` (reusing the one on the path when it is the same block),
    /// checking that its first key is what its parent says.
    fn load(&mut self, fs: &Fs, depth: usize, logical: u64, parent_key: Option<Key>) -> Result<()> {
        if self.path.get(depth).is_some_and(|p| p.0 == logical) {
            self.path.truncate(depth + 1);
            return Ok(());
        }
        self.path.truncate(depth);
        let b = fs.block(logical, self.level(depth))?;
        if let Some(k) = parent_key {
            if le32(&b, 0x60) > 0 && key_at(&b, HEADER) != k {
                return Err(corrupt(format!(
                    "tree block {logical}: its first key is not its parent's key"
                )));
            }
        }
        self.path.push((logical, b, 0));
        Ok(())
    }

    /// Positions the cursor before the first item whose key is `>= key`.
    fn seek(&mut self, fs: &Fs, key: Key) -> Result<()> {
        let (mut logical, mut parent_key) = (self.root, None);
        for depth in 0..=usize::from(self.root_level) {
            self.load(fs, depth, logical, parent_key)?;
            let level = self.level(depth);
            let (_, b, idx) = &mut self.path[depth];
            let n = le32(b, 0x60) as usize;
            if level == 0 {
                *idx = (0..n)
                    .find(|&i| key_at(b, HEADER + i * ITEM) >= key)
                    .unwrap_or(n);
                break;
            }
            let i = (0..n)
                .take_while(|&i| key_at(b, HEADER + i * KEY_PTR) <= key)
                .last()
                .unwrap_or(0);
            *idx = i;
            parent_key = Some(key_at(b, HEADER + i * KEY_PTR));
            logical = le64(b, HEADER + i * KEY_PTR + 17);
        }
        self.last = None;
        Ok(())
    }

    /// The next item: its key and data.
    fn next(&mut self, fs: &Fs) -> Result<Option<(Key, Vec<u8>)>> {
        loop {
            let depth = match self.path.len() {
                0 => return Ok(None),
                d => d - 1,
            };
            let leaf = self.level(depth) == 0;
            let (_, b, idx) = self.path.last_mut().expect("path not empty");
            let n = le32(b, 0x60) as usize;
            if leaf {
                if *idx < n {
                    let o = HEADER + *idx * ITEM;
                    *idx += 1;
                    let key = key_at(b, o);
                    let (off, sz) = (le32(b, o + 17) as usize, le32(b, o + 21) as usize);
                    let data = b[HEADER + off..HEADER + off + sz].to_vec();
                    if self.last.is_some_and(|l| l >= key) {
                        return Err(corrupt("tree keys do not ascend across leaves"));
                    }
                    self.last = Some(key);
                    return Ok(Some((key, data)));
                }
                self.path.pop();
                // Advance the parent to its next child.
                if let Some((_, _, i)) = self.path.last_mut() {
                    *i += 1;
                }
                continue;
            }
            if *idx >= n {
                self.path.pop();
                if let Some((_, _, i)) = self.path.last_mut() {
                    *i += 1;
                }
                continue;
            }
            let o = HEADER + *idx * KEY_PTR;
            let (k, child) = (key_at(b, o), le64(b, o + 17));
            self.load(fs, depth + 1, child, Some(k))?;
        }
    }
}

/// The streamed map of the physical stripes (see the module doc).
pub struct StripeMap<'a> {
    fs: Fs<'a>,
    extent: Cursor,
    /// Every stripe, sorted by physical start: (physical start, chunk index, stripe index).
    devexts: Vec<(u64, u32, u8)>,
    next_devext: usize,
    /// The stripe being streamed: chunk index, stripe index, bytes of extents seen, BG used.
    cur: Option<(usize, usize, u64, Option<u64>)>,
    queue: VecDeque<Range>,
    block_group_tree: bool,
    bytes_used: u64,
    counted: u64,
}

impl StripeMap<'_> {
    /// Queues the physical ranges of logical extent `[a, b)` that lie on stripe `k` of `c`.
    fn map_extent(&mut self, ci: usize, k: usize, a: u64, b: u64) {
        let c = &self.fs.chunks[ci];
        let group = k / c.copies();
        let g = u64::from(c.groups);
        let (mut off, end) = (a - c.start, b - c.start);
        while off < end {
            let u = off / c.unit;
            let unit_end = if g == 1 {
                end
            } else {
                ((u + 1) * c.unit).min(end)
            };
            if (u % g) as usize == group {
                let p = c.stripes[k] + (u / g) * c.unit + off % c.unit;
                let q = p + (unit_end - off);
                match self.queue.back_mut() {
                    Some(last) if last.1 == p => last.1 = q,
                    _ => self.queue.push_back((p, q)),
                }
            }
            off = unit_end;
        }
    }
}

impl UsedMap for StripeMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        loop {
            if self.queue.len() > 1 || (self.queue.len() == 1 && self.cur.is_none()) {
                return Ok(self.queue.pop_front());
            }
            if let Some((ci, k, seen, bg)) = self.cur {
                let (start, end, len) = {
                    let c = &self.fs.chunks[ci];
                    (c.start, c.end(), c.len)
                };
                match self.extent.next(&self.fs)? {
                    Some((key, data)) if key.0 < end => {
                        let len_of = match key.1 {
                            EXTENT_ITEM => key.2,
                            METADATA_ITEM => self.fs.nodesize as u64,
                            BLOCK_GROUP_ITEM if key.0 == start && key.2 == len => {
                                self.cur = Some((ci, k, seen, Some(le64(&data, 0))));
                                continue;
                            }
                            _ => continue,
                        };
                        if len_of == 0 || key.0 + len_of > end || key.0 < start {
                            return Err(corrupt(format!(
                                "extent {}+{len_of} does not fit its chunk",
                                key.0
                            )));
                        }
                        self.cur = Some((ci, k, seen + len_of, bg));
                        self.map_extent(ci, k, key.0, key.0 + len_of);
                    }
                    _ => {
                        // The chunk's extents are done: check them against its block group.
                        self.cur = None;
                        match bg {
                            Some(used) if used != seen => {
                                return Err(corrupt(format!(
                                    "block group {start}: its used count ({used}) disagrees with its extents ({seen})"
                                )))
                            }
                            None if !self.block_group_tree => {
                                return Err(corrupt(format!(
                                    "chunk {start} has no block group item"
                                )))
                            }
                            _ => {}
                        }
                        if k == 0 {
                            self.counted += seen;
                        }
                    }
                }
                continue;
            }
            if let Some(&(_, ci, k)) = self.devexts.get(self.next_devext) {
                self.next_devext += 1;
                let start = self.fs.chunks[ci as usize].start;
                self.extent.seek(&self.fs, (start, 0, 0))?;
                self.cur = Some((ci as usize, usize::from(k), 0, None));
                continue;
            }
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.counted != self.bytes_used {
                return Err(corrupt(format!(
                    "the superblock's bytes used ({}) disagrees with the extent tree ({})",
                    self.bytes_used, self.counted
                )));
            }
            return Ok(None);
        }
    }
}

/// Opens the map of the single-device btrfs at the start of `r`.
pub fn open(r: Region<'_>) -> Result<Union<ListMap, StripeMap<'_>>> {
    let sb = read_exact(&r, SUPER_OFF, SUPER_LEN)?;
    if sb.get(0x40..0x48) != Some(b"_BHRfS_M") {
        return Err(corrupt("no superblock signature"));
    }
    let csum_type = le16(&sb, 0xC4);
    if csum_type != 0 {
        let name = match csum_type {
            1 => "xxhash64",
            2 => "sha256",
            3 => "blake2b",
            _ => "unknown",
        };
        return Err(Error::unsupported(format!(
            "btrfs checksum type {name} (only crc32c is read)"
        )));
    }
    if crc32c(&sb[32..]) != le32(&sb, 0) {
        return Err(corrupt("superblock checksum mismatch"));
    }
    if le64(&sb, 0x30) != SUPER_OFF {
        return Err(corrupt("the superblock is not where it says it is"));
    }
    let num_devices = le64(&sb, 0x88);
    if num_devices != 1 {
        return Err(Error::refused(format!(
            "btrfs spanning {num_devices} devices: the others hold part of its data"
        )));
    }
    if le64(&sb, 0x60) != 0 {
        return Err(Error::refused(
            "the btrfs log tree needs replay (fsync'd data since the last commit)",
        ));
    }
    let flags = le64(&sb, 0x38);
    if flags & !SUPER_FLAGS_OK != 0 {
        return Err(Error::refused(format!(
            "btrfs superblock flags 0x{flags:x}: an error was recorded or a conversion is under way"
        )));
    }
    let incompat = le64(&sb, 0xBC);
    if incompat & INCOMPAT_RAID56 != 0 {
        return Err(Error::unsupported("btrfs with RAID5/6 chunks"));
    }
    if incompat & !INCOMPAT_KNOWN != 0 {
        return Err(Error::unsupported(format!(
            "btrfs has incompatible features this version does not read (0x{:x}: zoned, \
             extent tree v2, RAID stripe tree or newer)",
            incompat & !INCOMPAT_KNOWN
        )));
    }
    let nodesize = le32(&sb, 0x94) as usize;
    let sectorsize = le32(&sb, 0x90);
    if !(4096..=65536).contains(&nodesize) || !nodesize.is_power_of_two() || sectorsize < 512 {
        return Err(corrupt("invalid node size"));
    }
    let dev = 0xC9;
    let devid = le64(&sb, dev);
    let dev_bytes = le64(&sb, dev + 8);
    if dev_bytes > r.len() {
        return Err(corrupt("the device is larger than its partition"));
    }
    let mut meta_fsid = [0u8; 16];
    let at = if incompat & INCOMPAT_METADATA_UUID != 0 {
        0x23B
    } else {
        0x20
    };
    meta_fsid.copy_from_slice(&sb[at..at + 16]);
    // The system chunks from the superblock, enough to read the chunk tree.
    let sys_len = le32(&sb, 0xA0) as usize;
    let arr = sb
        .get(0x32B..0x32B + sys_len)
        .filter(|_| sys_len <= 2048)
        .ok_or_else(|| corrupt("invalid system chunk array size"))?;
    let mut sys = Vec::new();
    let mut o = 0;
    while o < arr.len() {
        let key = key_at(arr, o);
        let c = arr.get(o + 17..).unwrap_or(&[]);
        if key.1 != CHUNK_ITEM || c.len() < 48 {
            return Err(corrupt("malformed system chunk array"));
        }
        sys.push(parse_chunk(c, key.2, devid)?);
        o += 17 + 48 + 32 * usize::from(le16(c, 44));
    }
    sys.sort_by_key(|c| c.start);
    let mut fs = Fs {
        r,
        nodesize,
        generation: le64(&sb, 0x48),
        meta_fsid,
        chunks: sys,
    };
    let mut chunks = Vec::new();
    let mut ct = Cursor::new(le64(&sb, 0x58), sb[0xC7])?;
    ct.seek(&fs, (0, 0, 0))?;
    while let Some((key, data)) = ct.next(&fs)? {
        if key.1 == CHUNK_ITEM {
            chunks.push(parse_chunk(&data, key.2, devid)?);
        }
    }
    drop(ct);
    chunks.sort_by_key(|c| c.start);
    if chunks.windows(2).any(|w| w[0].end() > w[1].start) {
        return Err(corrupt("chunks overlap"));
    }
    fs.chunks = chunks;
    // The extent tree's root, from the root tree.
    let mut rt = Cursor::new(le64(&sb, 0x50), sb[0xC6])?;
    rt.seek(&fs, (EXTENT_TREE, ROOT_ITEM, 0))?;
    let (root, level) = match rt.next(&fs)? {
        Some((k, d)) if k.0 == EXTENT_TREE && k.1 == ROOT_ITEM && d.len() >= 239 => {
            (le64(&d, 176), d[238])
        }
        _ => return Err(corrupt("the root tree has no extent tree")),
    };
    drop(rt);
    // Every stripe on the device, in physical order; they must not overlap.
    let mut devexts = Vec::new();
    for (ci, c) in fs.chunks.iter().enumerate() {
        for k in 0..usize::from(c.n) {
            devexts.push((c.stripes[k], ci as u32, k as u8));
        }
    }
    devexts.sort_unstable();
    let stripe_end = |&(p, ci, _): &(u64, u32, u8)| p + fs.chunks[ci as usize].stripe_len();
    if devexts.windows(2).any(|w| stripe_end(&w[0]) > w[1].0)
        || devexts.last().is_some_and(|d| stripe_end(d) > dev_bytes)
    {
        return Err(corrupt("chunk stripes overlap or lie outside the device"));
    }
    let mut always = vec![(0, (1u64 << 20).min(fs.r.len()))];
    for m in [64u64 << 20, 256 << 30] {
        if m + SUPER_LEN as u64 <= fs.r.len() {
            always.push((m, m + SUPER_LEN as u64));
        }
    }
    if dev_bytes < fs.r.len() {
        always.push((dev_bytes, fs.r.len()));
    }
    let map = StripeMap {
        extent: Cursor::new(root, level)?,
        block_group_tree: le64(&sb, 0xB4) & COMPAT_RO_BLOCK_GROUP_TREE != 0,
        bytes_used: le64(&sb, 0x78),
        fs,
        devexts,
        next_devext: 0,
        cur: None,
        queue: VecDeque::new(),
        counted: 0,
    };
    Ok(Union::new(ListMap::new(always), map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn chunk_bytes(len: u64, unit: u64, ty: u64, sub: u16, stripes: &[u64]) -> Vec<u8> {
        let mut c = vec![0u8; 48 + 32 * stripes.len()];
        c[0..8].copy_from_slice(&len.to_le_bytes());
        c[16..24].copy_from_slice(&unit.to_le_bytes());
        c[24..32].copy_from_slice(&ty.to_le_bytes());
        c[44..46].copy_from_slice(&(stripes.len() as u16).to_le_bytes());
        c[46..48].copy_from_slice(&sub.to_le_bytes());
        for (k, s) in stripes.iter().enumerate() {
            c[48 + 32 * k..56 + 32 * k].copy_from_slice(&1u64.to_le_bytes());
            c[56 + 32 * k..64 + 32 * k].copy_from_slice(&s.to_le_bytes());
        }
        c
    }

    #[test]
    fn chunk_profiles_map_every_copy() {
        let m = 1u64 << 20;
        // DUP: two full copies.
        let c = parse_chunk(
            &chunk_bytes(8 * m, 65536, 4 | BG_DUP, 0, &[10 * m, 20 * m]),
            0,
            1,
        )
        .unwrap();
        assert_eq!(
            c.phys(4096).collect::<Vec<_>>(),
            vec![10 * m + 4096, 20 * m + 4096]
        );
        // RAID0 over two stripes: 64 KiB units alternate.
        let c = parse_chunk(
            &chunk_bytes(8 * m, 65536, 1 | BG_RAID0, 0, &[10 * m, 20 * m]),
            0,
            1,
        )
        .unwrap();
        assert_eq!(c.phys(65536 + 5).collect::<Vec<_>>(), vec![20 * m + 5]);
        assert_eq!(
            c.phys(2 * 65536 + 5).collect::<Vec<_>>(),
            vec![10 * m + 65536 + 5]
        );
        assert_eq!(c.stripe_len(), 4 * m);
        // RAID10 over four stripes (two copies of two).
        let s = [10 * m, 20 * m, 30 * m, 40 * m];
        let c = parse_chunk(&chunk_bytes(8 * m, 65536, 1 | BG_RAID10, 2, &s), 0, 1).unwrap();
        assert_eq!(c.phys(65536).collect::<Vec<_>>(), vec![30 * m, 40 * m]);
        // Refusals: RAID5, a stripe on another device, a wrong stripe count.
        let e = parse_chunk(
            &chunk_bytes(8 * m, 65536, 1 | BG_RAID5, 0, &[m, 2 * m]),
            0,
            1,
        );
        assert_eq!(e.unwrap_err().kind, ErrorKind::Unsupported);
        assert!(parse_chunk(&chunk_bytes(8 * m, 65536, 1, 0, &[m]), 0, 2).is_err());
        assert!(parse_chunk(&chunk_bytes(8 * m, 65536, 1 | BG_DUP, 0, &[m]), 0, 1).is_err());
    }
}
