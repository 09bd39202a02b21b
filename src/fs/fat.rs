//! FAT12/16/32 used blocks: FAT32 by its boot sector (a 16-bit FAT size of 0, as Linux and
//! dosfstools decide), FAT12/16 by cluster count. The reserved area (boot sector, FSInfo, backup
//! boot sector), every FAT copy and the FAT12/16 root directory are always used; a data cluster
//! is used when its entry is non-zero in *any* FAT copy (copies that disagree after a crash lose
//! nothing) and not marked bad. Each copy must start with the boot sector's media byte, else the
//! map is refused, and so is a volume marked dirty (not cleanly unmounted: Linux's flag in the
//! boot sector, Windows' clean-shutdown bit in FAT entry 1). Memory: one piece of [`PIECE`]
//! bytes per FAT copy.
use super::{le16, le32, Range, Region, UsedMap};
use crate::error::{Error, Result};
use std::collections::VecDeque;

/// Bytes of each FAT copy examined at once.
const PIECE: u64 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bits {
    B12,
    B16,
    B32,
}

/// The streamed map (see the module doc).
pub struct FatMap<'a> {
    r: Region<'a>,
    bits: Bits,
    cluster: u64,
    fat_start: u64,
    fat_bytes: u64,
    nfats: u64,
    data_start: u64,
    clusters: u64,
    /// Next FAT entry (cluster number) to examine.
    next: u64,
    queue: VecDeque<Range>,
    tail_done: bool,
}

/// Opens the map of the FAT filesystem at the start of `r`.
pub fn open(r: Region<'_>) -> Result<FatMap<'_>> {
    let b = r.read(0, 512)?;
    let bad = |m: &str| Error::corrupt(format!("FAT boot sector: {m}"));
    let bps = u64::from(le16(&b, 11));
    let spc = u64::from(b[13]);
    let reserved = u64::from(le16(&b, 14));
    let nfats = u64::from(b[16]);
    let root_entries = u64::from(le16(&b, 17));
    let media = b[21];
    // FAT32 is told by its BPB (a 16-bit FAT size of 0), as Linux and dosfstools do: mkfs.fat
    // makes FAT32 with fewer than 65525 clusters when asked, and its entries are 32 bits.
    let fat32_bpb = le16(&b, 22) == 0;
    let fatsz = match le16(&b, 22) {
        0 => u64::from(le32(&b, 36)),
        n => u64::from(n),
    };
    let total = match le16(&b, 19) {
        0 => u64::from(le32(&b, 32)),
        n => u64::from(n),
    };
    if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Err(bad("invalid bytes per sector"));
    }
    if spc == 0 || !spc.is_power_of_two() || reserved == 0 || !(1..=4).contains(&nfats) {
        return Err(bad("invalid geometry"));
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + nfats * fatsz + root_sectors;
    if fatsz == 0 || total <= data_start || total * bps > r.len() {
        return Err(bad("sizes do not fit the partition"));
    }
    let clusters = (total - data_start) / spc;
    let bits = if fat32_bpb {
        Bits::B32
    } else if clusters < 4085 {
        Bits::B12
    } else if clusters < 65525 {
        Bits::B16
    } else {
        // Linux refuses a FAT16 BPB with more clusters than FAT16 can number.
        return Err(bad(
            "a FAT12/16 boot sector with more clusters than FAT16 holds",
        ));
    };
    let entry_bits = match bits {
        Bits::B12 => 12,
        Bits::B16 => 16,
        Bits::B32 => 32,
    };
    let fat_bytes = fatsz * bps;
    if ((clusters + 2) * entry_bits).div_ceil(8) > fat_bytes {
        return Err(bad("the FAT is too small for the cluster count"));
    }
    for k in 0..nfats {
        let head = r.read((reserved + k * fatsz) * bps, 4)?;
        if head[0] != media {
            return Err(Error::corrupt(format!(
                "FAT copy {} does not start with the media byte {media:#04x}",
                k + 1
            )));
        }
    }
    // Not cleanly unmounted: Linux sets bit 0 of the boot sector's state byte while mounted
    // (trusted where the extended boot signature says the byte is one), Windows clears the
    // clean-shutdown bit of FAT entry 1. After a crash or a yanked stick, a file's clusters may
    // be in its directory entry but not yet in the FAT.
    let (state_at, sig_at) = if bits == Bits::B32 {
        (65, 66)
    } else {
        (37, 38)
    };
    let linux_dirty = matches!(b[sig_at], 0x28 | 0x29) && b[state_at] & 1 != 0;
    let fat1 = r.read(reserved * bps, 8)?;
    let windows_dirty = match bits {
        Bits::B12 => false,
        Bits::B16 => le16(&fat1, 2) & 0x8000 == 0,
        Bits::B32 => le32(&fat1, 4) & 0x0800_0000 == 0,
    };
    if linux_dirty || windows_dirty {
        return Err(Error::refused(
            "the FAT volume was not cleanly unmounted (its dirty flag is set): its FAT may not \
             describe its files",
        ));
    }
    let mut queue = VecDeque::new();
    queue.push_back((0, data_start * bps));
    Ok(FatMap {
        r,
        bits,
        cluster: spc * bps,
        fat_start: reserved * bps,
        fat_bytes,
        nfats,
        data_start: data_start * bps,
        clusters,
        next: 2,
        queue,
        tail_done: false,
    })
}

impl FatMap<'_> {
    /// Entries per piece (FAT12 is at most 6 KiB: read whole).
    fn piece_entries(&self) -> u64 {
        match self.bits {
            Bits::B12 => self.clusters + 2,
            Bits::B16 => PIECE / 2,
            Bits::B32 => PIECE / 4,
        }
    }

    fn piece(&mut self) -> Result<()> {
        let first = self.next;
        let last = (first + self.piece_entries()).min(self.clusters + 2);
        let (boff, blen) = match self.bits {
            Bits::B12 => (0, self.fat_bytes.min(((self.clusters + 2) * 3).div_ceil(2))),
            Bits::B16 => (first * 2, (last - first) * 2),
            Bits::B32 => (first * 4, (last - first) * 4),
        };
        let mut used = vec![false; (last - first) as usize];
        for k in 0..self.nfats {
            let fat = self
                .r
                .read(self.fat_start + k * self.fat_bytes + boff, blen as usize)?;
            for c in first..last {
                let i = (c - first) as usize;
                let v = match self.bits {
                    Bits::B12 => {
                        let o = (c * 3 / 2) as usize;
                        let w = u16::from_le_bytes([fat[o], *fat.get(o + 1).unwrap_or(&0)]);
                        let v = if c % 2 == 0 { w & 0xFFF } else { w >> 4 };
                        (u32::from(v), 0xFF7)
                    }
                    Bits::B16 => (u32::from(le16(&fat, i * 2)), 0xFFF7),
                    Bits::B32 => (le32(&fat, i * 4) & 0x0FFF_FFFF, 0x0FFF_FFF7),
                };
                if v.0 != 0 && v.0 != v.1 {
                    used[i] = true;
                }
            }
        }
        let mut run: Option<u64> = None;
        for c in first..=last {
            let u = c < last && used[(c - first) as usize];
            match (u, run) {
                (true, None) => run = Some(c),
                (false, Some(s)) => {
                    let at = |x: u64| self.data_start + (x - 2) * self.cluster;
                    self.queue.push_back((at(s), at(c)));
                    run = None;
                }
                _ => {}
            }
        }
        self.next = last;
        Ok(())
    }
}

impl UsedMap for FatMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.next < self.clusters + 2 {
                self.piece()?;
                continue;
            }
            if !self.tail_done {
                self.tail_done = true;
                let end = self.data_start + self.clusters * self.cluster;
                if end < self.r.len() {
                    return Ok(Some((end, self.r.len())));
                }
            }
            return Ok(None);
        }
    }
}
