//! exFAT used blocks: the boot regions and FATs (everything before the cluster heap), the
//! allocation bitmap, the upcase table and the root directory are always used; a heap cluster
//! is used when its bit in the allocation bitmap (found through the root directory) is set.
//! A volume marked dirty is refused, and so is a bitmap that does not mark its own clusters.
//! Memory: one [`PIECE`] of the bitmap plus its cluster runs (one run when contiguous, as
//! mkfs.exfat, Windows and Linux write it).
use super::{bit_runs, le16, le32, le64, ListMap, Range, Region, Union, UsedMap};
use crate::error::{Error, Result};
use std::collections::VecDeque;

/// Bitmap bytes examined at once.
const PIECE: u64 = 256 << 10;
/// Root directory bytes searched for the bitmap and upcase entries.
const ROOT_SCAN_MAX: u64 = 1 << 20;

struct Geo {
    cluster: u64,
    fat: u64,
    /// Where the first FAT ends.
    fat_end: u64,
    heap: u64,
    clusters: u64,
}

impl Geo {
    fn at(&self, c: u64) -> u64 {
        self.heap + (c - 2) * self.cluster
    }
    fn valid(&self, c: u64) -> bool {
        c >= 2 && c < self.clusters + 2
    }
}

/// Cluster runs (first cluster, count) of a chain, following the FAT; a zero entry inside a
/// chain of known length means a contiguous (NoFatChain) allocation.
fn chain(r: &Region, g: &Geo, first: u64, need: Option<u64>) -> Result<Vec<(u64, u64)>> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut c = first;
    let mut n = 0u64;
    let limit = need.unwrap_or(g.clusters);
    while g.valid(c) && n < limit {
        match runs.last_mut() {
            Some(l) if l.0 + l.1 == c => l.1 += 1,
            _ => runs.push((c, 1)),
        }
        n += 1;
        // Read ahead within the FAT only: the next entries of the chain are most likely there.
        let next = u64::from(le32(&r.read_in(g.fat + c * 4, 4, g.fat_end)?, 0));
        c = if g.valid(next) {
            next
        } else if next == 0 && need.is_some() {
            c + 1
        } else {
            break;
        };
    }
    if need.is_some_and(|k| n < k) {
        return Err(Error::corrupt(
            "exFAT: a system file's cluster chain is shorter than its size",
        ));
    }
    Ok(runs)
}

/// The streamed bitmap part of the map.
pub struct BitmapMap<'a> {
    r: Region<'a>,
    g: Geo,
    runs: Vec<(u64, u64)>,
    /// Next bitmap byte to examine.
    next: u64,
    bytes: u64,
    queue: VecDeque<Range>,
    tail_done: bool,
}

impl BitmapMap<'_> {
    /// Bitmap bytes `[off, off+len)` through the bitmap's cluster runs.
    fn read_bitmap(&self, mut off: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        for &(c, n) in &self.runs {
            let rb = n * self.g.cluster;
            if off >= rb {
                off -= rb;
                continue;
            }
            let take = (rb - off).min(len - out.len() as u64);
            out.extend(self.r.read(self.g.at(c) + off, take as usize)?);
            off = 0;
            if out.len() as u64 == len {
                break;
            }
        }
        Ok(out)
    }
}

impl UsedMap for BitmapMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.next < self.bytes {
                let len = PIECE.min(self.bytes - self.next);
                let bits = self.read_bitmap(self.next, len)?;
                let base = self.next * 8;
                let nbits = (self.g.clusters - base).min(len * 8);
                let (g, q) = (&self.g, &mut self.queue);
                bit_runs(&bits, nbits, |b, k| {
                    q.push_back((g.at(base + b + 2), g.at(base + b + k + 2)));
                });
                self.next += len;
                continue;
            }
            if !self.tail_done {
                self.tail_done = true;
                let end = self.g.at(self.g.clusters + 2);
                if end < self.r.len() {
                    return Ok(Some((end, self.r.len())));
                }
            }
            return Ok(None);
        }
    }
}

/// Opens the map of the exFAT filesystem at the start of `r`.
pub fn open(r: Region<'_>) -> Result<Union<ListMap, BitmapMap<'_>>> {
    let b = r.read(0, 512)?;
    let bad = |m: &str| Error::corrupt(format!("exFAT boot sector: {m}"));
    if b.get(3..11) != Some(b"EXFAT   ") {
        return Err(bad("no exFAT signature"));
    }
    let (bshift, cshift) = (u64::from(b[108]), u64::from(b[109]));
    if !(9..=12).contains(&bshift) || bshift + cshift > 25 {
        return Err(bad("invalid sector or cluster size"));
    }
    let bps = 1u64 << bshift;
    if le16(&b, 106) & 0x2 != 0 {
        return Err(Error::refused(
            "the exFAT volume is marked dirty (not cleanly unmounted): its bitmap may be stale",
        ));
    }
    let g = Geo {
        cluster: bps << cshift,
        fat: u64::from(le32(&b, 80)) * bps,
        fat_end: (u64::from(le32(&b, 80)) + u64::from(le32(&b, 84))) * bps,
        heap: u64::from(le32(&b, 88)) * bps,
        clusters: u64::from(le32(&b, 92)),
    };
    let vol = le64(&b, 72).saturating_mul(bps);
    if g.heap == 0 || g.fat == 0 || g.at(g.clusters + 2) > vol.min(r.len()) {
        return Err(bad("the cluster heap does not fit the partition"));
    }
    let root = u64::from(le32(&b, 96));
    if !g.valid(root) {
        return Err(bad("invalid root directory cluster"));
    }
    let root_runs = chain(&r, &g, root, None)?;
    let (mut bitmap, mut upcase) = (None, None);
    let mut scanned = 0u64;
    'scan: for &(c, n) in &root_runs {
        for k in 0..n {
            let d = r.read(g.at(c + k), g.cluster as usize)?;
            for e in d.chunks_exact(32) {
                match e[0] {
                    0x00 => break 'scan,
                    // The first bitmap (a TexFAT volume has two; bit 0 of the flags says which).
                    0x81 if e[1] & 1 == 0 && bitmap.is_none() => {
                        bitmap = Some((u64::from(le32(e, 20)), le64(e, 24)))
                    }
                    0x82 => upcase = Some((u64::from(le32(e, 20)), le64(e, 24))),
                    _ => {}
                }
            }
            scanned += g.cluster;
            if scanned >= ROOT_SCAN_MAX || (bitmap.is_some() && upcase.is_some()) {
                break 'scan;
            }
        }
    }
    let (bfirst, blen) = bitmap.ok_or_else(|| bad("no allocation bitmap in the root directory"))?;
    let bytes = g.clusters.div_ceil(8);
    if blen < bytes || !g.valid(bfirst) {
        return Err(bad(
            "the allocation bitmap is smaller than the cluster count",
        ));
    }
    let bruns = chain(&r, &g, bfirst, Some(blen.div_ceil(g.cluster)))?;
    let mut always = vec![(0, g.heap)];
    let mut sys = bruns.clone();
    sys.extend(root_runs.iter().copied());
    if let Some((uf, ul)) = upcase.filter(|u| g.valid(u.0)) {
        sys.extend(chain(&r, &g, uf, Some(ul.div_ceil(g.cluster).max(1)))?);
    }
    for &(c, n) in &sys {
        always.push((g.at(c), g.at(c + n)));
    }
    let map = BitmapMap {
        r,
        g,
        runs: bruns,
        next: 0,
        bytes,
        queue: VecDeque::new(),
        tail_done: false,
    };
    // The bitmap must mark the system files' own first clusters, else it is not the bitmap.
    for &(c, _) in &sys {
        let byte = map.read_bitmap((c - 2) / 8, 1)?;
        if byte.first().is_none_or(|x| x >> ((c - 2) % 8) & 1 == 0) {
            return Err(Error::corrupt(format!(
                "exFAT: the allocation bitmap does not mark system cluster {c} as used"
            )));
        }
    }
    Ok(Union::new(ListMap::new(always), map))
}
