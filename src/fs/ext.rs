//! ext2/3/4 used blocks: the block bitmap of every group, read group by group through the group
//! descriptors (classic layout, `meta_bg`, 32- or 64-byte descriptors), `BLOCK_UNINIT` groups
//! computed the way the kernel does (superblock and GDT backups + the group's own bitmaps and
//! inode table), `flex_bg` (metadata of other groups is in their host group's bitmap) and
//! `bigalloc` (one bit per cluster). Metadata and the journal are in the bitmaps, so they count
//! as used. Each group's free count must equal its bitmap's free bits, else the map is refused.
//! A filesystem that needs journal recovery, was not cleanly unmounted or has recorded errors
//! is refused too (its bitmaps may not describe its data), and so is a block bitmap that fails
//! its metadata_csum checksum. Memory: one descriptor block, one bitmap block and the
//! [`Region`] window.
use super::crc32c::crc32c_raw;
use super::{bit_runs, le16, le32, Range, Region, UsedMap};
use crate::error::{Error, Result};
use std::collections::VecDeque;

const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const BG_BLOCK_UNINIT: u16 = 0x2;

/// The geometry the map needs, from the superblock.
#[derive(Debug, Clone)]
struct Geo {
    bs: u64,
    ratio: u64,
    first_data_block: u64,
    blocks: u64,
    bpg: u64,
    groups: u64,
    desc_size: u64,
    dpb: u64,
    gdb_count: u64,
    reserved_gdt: u64,
    meta_bg: bool,
    first_meta_bg: u64,
    sparse: bool,
    sparse2: Option<[u64; 2]>,
    uninit_ok: bool,
    itable_blocks: u64,
    /// metadata_csum: the checksum seed (block bitmaps are checked against their descriptors).
    csum_seed: Option<u32>,
    cpg: u64,
    /// Blocks reserved for root (`s_r_blocks_count`).
    r_blocks: u64,
    /// The extents feature (the kernel keeps a reserve of its own on such a filesystem).
    extents: bool,
}

impl Geo {
    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block + g * self.bpg
    }
    /// Clusters (bitmap bits) that exist in group `g` (the last group may be short).
    fn group_clusters(&self, g: u64) -> u64 {
        let left = self.blocks.saturating_sub(self.group_first(g));
        left.min(self.bpg).div_ceil(self.ratio)
    }
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(b) = self.sparse2 {
            return g == b[0] || g == b[1];
        }
        if g == 1 || !self.sparse {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut x = g;
            while x.is_multiple_of(p) {
                x /= p;
            }
            x == 1
        })
    }
    /// Block holding descriptor block `k` (the descriptors of groups k*dpb..).
    fn desc_block(&self, k: u64) -> u64 {
        // The superblock's own block: 1 with 1 KiB blocks (even when bigalloc makes the first
        // data block 0), else 0.
        let sb_block = 1024 / self.bs;
        if !self.meta_bg || k < self.first_meta_bg {
            sb_block + 1 + k
        } else {
            let g = k * self.dpb;
            let extra = u64::from(k == 0 && self.bs == 1024 && self.first_data_block == 0);
            self.group_first(g) + u64::from(self.has_super(g)) + extra
        }
    }
    /// Blocks at the start of group `g` taken by the superblock and descriptor copies (the
    /// kernel's ext4_num_base_meta_clusters, in blocks).
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        if !self.meta_bg || g < self.first_meta_bg * self.dpb {
            if sup == 0 {
                0
            } else {
                let gdb = if self.meta_bg {
                    self.first_meta_bg
                } else {
                    self.gdb_count
                };
                sup + gdb + self.reserved_gdt
            }
        } else {
            let first = g / self.dpb * self.dpb;
            let meta = u64::from(g == first || g == first + 1 || g == first + self.dpb - 1);
            sup + meta
        }
    }
}

/// Reads and checks the superblock.
fn geometry(r: &Region) -> Result<Geo> {
    let sb = r.read(1024, 1024)?;
    let bad = |m: &str| Error::corrupt(format!("ext superblock: {m}"));
    if le16(&sb, 0x38) != 0xEF53 {
        return Err(bad("no ext2/3/4 signature"));
    }
    let compat = le32(&sb, 0x5C);
    let incompat = le32(&sb, 0x60);
    let ro = le32(&sb, 0x64);
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Err(bad("an external journal device, not a filesystem"));
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(Error::refused(
            "the ext journal needs recovery (not cleanly unmounted): its bitmaps may be stale",
        ));
    }
    let state = le16(&sb, 0x3A);
    if state & 1 == 0 {
        return Err(Error::refused(
            "the ext filesystem was not cleanly unmounted: its bitmaps may be stale",
        ));
    }
    if state & 2 != 0 {
        return Err(Error::refused(
            "the ext filesystem has errors recorded (run e2fsck on the source's copy)",
        ));
    }
    let log_bs = le32(&sb, 0x18);
    let log_cs = le32(&sb, 0x1C);
    if log_bs > 6 {
        return Err(bad("invalid block size"));
    }
    let bs = 1024u64 << log_bs;
    let bigalloc = ro & RO_COMPAT_BIGALLOC != 0;
    let ratio = if bigalloc {
        if log_cs < log_bs || log_cs - log_bs > 16 {
            return Err(bad("invalid cluster size"));
        }
        1u64 << (log_cs - log_bs)
    } else {
        1
    };
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let mut blocks = u64::from(le32(&sb, 0x04));
    if is64 {
        blocks |= u64::from(le32(&sb, 0x150)) << 32;
    }
    let mut r_blocks = u64::from(le32(&sb, 0x08));
    if is64 {
        r_blocks |= u64::from(le32(&sb, 0x154)) << 32;
    }
    let first_data_block = u64::from(le32(&sb, 0x14));
    let bpg = u64::from(le32(&sb, 0x20));
    let cpg = if bigalloc {
        u64::from(le32(&sb, 0x24))
    } else {
        bpg
    };
    if bpg == 0 || cpg == 0 || cpg > 8 * bs || bpg != cpg * ratio {
        return Err(bad("invalid blocks per group"));
    }
    if blocks <= first_data_block || blocks.saturating_mul(bs) > r.len() {
        return Err(bad("block count does not fit the partition"));
    }
    let desc_size = if is64 { u64::from(le16(&sb, 0xFE)) } else { 32 };
    if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
        return Err(bad("invalid group descriptor size"));
    }
    let groups = (blocks - first_data_block).div_ceil(bpg);
    let dpb = bs / desc_size;
    let ipg = u64::from(le32(&sb, 0x28));
    let rev = le32(&sb, 0x4C);
    let isize = if rev == 0 {
        128
    } else {
        u64::from(le16(&sb, 0x58))
    };
    let sparse2 = (compat & COMPAT_SPARSE_SUPER2 != 0)
        .then(|| [u64::from(le32(&sb, 0x24C)), u64::from(le32(&sb, 0x250))]);
    Ok(Geo {
        bs,
        ratio,
        first_data_block,
        blocks,
        bpg,
        groups,
        desc_size,
        dpb,
        gdb_count: groups.div_ceil(dpb),
        reserved_gdt: u64::from(le16(&sb, 0xCE)),
        meta_bg: incompat & INCOMPAT_META_BG != 0,
        first_meta_bg: u64::from(le32(&sb, 0x104)),
        sparse: ro & RO_COMPAT_SPARSE_SUPER != 0,
        sparse2,
        uninit_ok: ro & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
        itable_blocks: (ipg * isize).div_ceil(bs),
        csum_seed: (ro & RO_COMPAT_METADATA_CSUM != 0).then(|| {
            if incompat & INCOMPAT_CSUM_SEED != 0 {
                le32(&sb, 0x270)
            } else {
                crc32c_raw(!0, &sb[0x68..0x78])
            }
        }),
        cpg,
        r_blocks,
        extents: incompat & INCOMPAT_EXTENTS != 0,
    })
}

/// Bytes of the free blocks of the ext filesystem at the start of `r` that no ordinary file can
/// have once it is mounted: the blocks reserved for root (`s_r_blocks_count`, 5 % by default)
/// and the kernel's own reserve for extent changes it cannot refuse (with the extents feature:
/// 2 % of the clusters or 4096 clusters, whichever is fewer — `ext4_calculate_resv_clusters`).
/// `statvfs`'s `f_bavail` of the mounted filesystem is its free blocks less exactly these.
pub fn reserved_bytes(r: &Region) -> Result<u64> {
    let geo = geometry(r)?;
    let kernel = if geo.extents {
        (geo.blocks / geo.ratio / 50).min(4096) * geo.ratio
    } else {
        0
    };
    Ok(geo.r_blocks.saturating_add(kernel).saturating_mul(geo.bs))
}

/// One group descriptor's fields.
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free: u64,
    flags: u16,
    /// The block bitmap's checksum (metadata_csum), 16 or 32 bits.
    bitmap_csum: u32,
}

/// The streamed map (see the module doc).
pub struct ExtMap<'a> {
    r: Region<'a>,
    geo: Geo,
    next_group: u64,
    queue: VecDeque<Range>,
    desc_cache: Option<(u64, Vec<u8>)>,
    tail_done: bool,
}

/// Opens the map of the ext filesystem at the start of `r`.
pub fn open(r: Region<'_>) -> Result<ExtMap<'_>> {
    let geo = geometry(&r)?;
    let mut queue = VecDeque::new();
    // Boot block(s) and the primary superblock.
    queue.push_back((0, ((geo.first_data_block + 1) * geo.bs).max(2048)));
    Ok(ExtMap {
        r,
        geo,
        next_group: 0,
        queue,
        desc_cache: None,
        tail_done: false,
    })
}

impl ExtMap<'_> {
    fn desc(&mut self, g: u64) -> Result<Desc> {
        let geo = &self.geo;
        let k = g / geo.dpb;
        if self.desc_cache.as_ref().map(|c| c.0) != Some(k) {
            let blk = geo.desc_block(k);
            let b = self.r.read(blk * geo.bs, geo.bs as usize)?;
            self.desc_cache = Some((k, b));
        }
        let b = &self.desc_cache.as_ref().expect("cached").1;
        let o = ((g % geo.dpb) * geo.desc_size) as usize;
        let d = &b[o..o + geo.desc_size as usize];
        let hi = |off: usize| {
            if geo.desc_size >= 64 {
                u64::from(le32(d, off)) << 32
            } else {
                0
            }
        };
        let free_hi = if geo.desc_size >= 64 {
            u64::from(le16(d, 0x2C)) << 16
        } else {
            0
        };
        Ok(Desc {
            block_bitmap: u64::from(le32(d, 0)) | hi(0x20),
            inode_bitmap: u64::from(le32(d, 4)) | hi(0x24),
            inode_table: u64::from(le32(d, 8)) | hi(0x28),
            free: u64::from(le16(d, 0x0C)) | free_hi,
            flags: le16(d, 0x12),
            bitmap_csum: u32::from(le16(d, 0x18))
                | if geo.desc_size >= 0x3A {
                    u32::from(le16(d, 0x38)) << 16
                } else {
                    0
                },
        })
    }

    /// Where the block bitmaps of the groups after `g` stop lying right after `g`'s own (flex_bg
    /// keeps a flex group's bitmaps side by side): the byte offset reading `g`'s bitmap may read
    /// ahead to, so they cost one read, and nothing that is not a bitmap is read. Only the
    /// descriptors of `g`'s descriptor block are looked at.
    fn bitmap_run_end(&mut self, g: u64, bitmap: u64) -> Result<u64> {
        let (bs, dpb, groups) = (self.geo.bs, self.geo.dpb, self.geo.groups);
        let max = (super::WINDOW as u64 / bs).max(1);
        let mut n = 1;
        while n < max && g + n < groups && (g + n) / dpb == g / dpb {
            if self.desc(g + n)?.block_bitmap != bitmap + n {
                break;
            }
            n += 1;
        }
        Ok((bitmap + n) * bs)
    }

    /// Queues the used ranges of group `g`.
    fn group(&mut self, g: u64) -> Result<()> {
        let d = self.desc(g)?;
        let geo = self.geo.clone();
        let first = geo.group_first(g);
        let nclus = geo.group_clusters(g);
        let bs = geo.bs;
        let mut runs: Vec<Range> = Vec::new();
        let used = if geo.uninit_ok && d.flags & BG_BLOCK_UNINIT != 0 {
            // No bitmap on disk: the kernel derives it from the layout.
            let base = geo.base_meta_blocks(g);
            if base > 0 {
                runs.push((first, first + base));
            }
            let end = first + nclus * geo.ratio;
            for (b, n) in [
                (d.block_bitmap, 1),
                (d.inode_bitmap, 1),
                (d.inode_table, geo.itable_blocks),
            ] {
                if b >= first && b < end {
                    runs.push((b, (b + n).min(end)));
                }
            }
            runs.sort_unstable();
            // Count used clusters as the kernel's bitmap would have them.
            let mut bits = vec![0u8; nclus.div_ceil(8) as usize];
            for &(s, e) in &runs {
                for c in (s - first) / geo.ratio..(e - first).div_ceil(geo.ratio) {
                    bits[(c / 8) as usize] |= 1 << (c % 8);
                }
            }
            bits.iter().map(|b| u64::from(b.count_ones())).sum::<u64>()
        } else {
            if d.block_bitmap == 0 || d.block_bitmap >= geo.blocks {
                return Err(Error::corrupt(format!(
                    "ext group {g}: block bitmap location {} is outside the filesystem",
                    d.block_bitmap
                )));
            }
            let ahead = self.bitmap_run_end(g, d.block_bitmap)?;
            let bits = self.r.read_in(d.block_bitmap * bs, bs as usize, ahead)?;
            if let Some(seed) = geo.csum_seed {
                // The kernel refuses a bitmap whose checksum fails (the group is marked
                // corrupt): bits flipped both ways keep the free count and lose used blocks.
                let mut sum = crc32c_raw(seed, &bits[..(geo.cpg / 8).min(bs) as usize]);
                if geo.desc_size < 0x3A {
                    sum &= 0xFFFF;
                }
                if sum != d.bitmap_csum {
                    return Err(Error::corrupt(format!(
                        "ext group {g}: its block bitmap fails its checksum"
                    )));
                }
            }
            let mut n = 0u64;
            bit_runs(&bits, nclus, |c, k| {
                n += k;
                runs.push((first + c * geo.ratio, first + (c + k) * geo.ratio));
            });
            n
        };
        let free = nclus - used.min(nclus);
        if free != d.free {
            return Err(Error::corrupt(format!(
                "ext group {g}: its free count ({}) disagrees with its block bitmap ({free} free)",
                d.free
            )));
        }
        for (s, e) in runs {
            self.queue.push_back((s * bs, e.min(geo.blocks) * bs));
        }
        Ok(())
    }
}

impl UsedMap for ExtMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.next_group < self.geo.groups {
                let g = self.next_group;
                self.next_group += 1;
                self.group(g)?;
                continue;
            }
            if !self.tail_done {
                self.tail_done = true;
                // The partition's bytes after the filesystem: not ours to judge, copied.
                let end = self.geo.blocks * self.geo.bs;
                if end < self.r.len() {
                    return Ok(Some((end, self.r.len())));
                }
            }
            return Ok(None);
        }
    }
}
