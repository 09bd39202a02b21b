//! Hashes taken while copying, for the verify pass: per fixed-size chunk, the XOR of a per-sector
//! hash (a 32-bit digest of the sector, `digest`, mixed with its index). XOR makes the chunk hash
//! independent of the order sectors arrive in (copy, trim, scrape and retry all contribute), and
//! a count per chunk says whether the chunk was wholly written by this run. Memory: 12 bytes per
//! chunk, at most ~1 Mi chunks whatever the disk size.
//!
//! The sector digest is a multiply-xorshift over 64-bit words rather than a table CRC: every
//! byte of a rescued disk is digested twice (while copying and while verifying), and in the
//! rescue environment under QEMU's TCG (no SSE4.2/PCLMUL) a table CRC makes ~9 memory loads per
//! 8 bytes where this makes one. A changed word always changes the 64-bit state (odd
//! multipliers and xorshifts are bijections); folded to 32 bits a change goes unseen with odds
//! of about 2^-32, as with a CRC32. A check against corruption, not a cryptographic hash.
//!
//! A rescue limited to a domain ([`Hashes::restrict`]) is verified over exactly that domain:
//! a chunk counts as written when every domain sector in it was, and only those sectors are
//! re-read and compared (the rest of the target keeps bytes the copy never wrote).
use super::map::{ExtentMap, Status};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, BlockSource};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const MAX_CHUNKS: u64 = 1 << 20;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Hashes {
    size: u64,
    lbs: u64,
    chunk: u64,
    acc: Vec<u64>,
    count: Vec<u32>,
    zero_crc: u32,
    /// The domain (sorted, merged `[start, end)`) and the sectors of it in each chunk; `None`:
    /// everything.
    domain: Option<Arc<Domain>>,
}

#[derive(Debug)]
struct Domain {
    ranges: Vec<(u64, u64)>,
    sectors: Vec<u32>,
    bytes: u64,
}

/// The 32-bit digest of one sector (or the shorter last piece of an odd-sized disk).
pub fn digest(d: &[u8]) -> u32 {
    const K: u64 = 0x9FB2_1C65_1E98_DF25;
    let mut h: u64 = 0x6A09_E667_F3BC_C909 ^ (d.len() as u64).wrapping_mul(K);
    let mut words = d.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ x).wrapping_mul(K);
        h ^= h >> 29;
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(tail) ^ 0xFF).wrapping_mul(K);
    let h = mix(h);
    (h ^ (h >> 32)) as u32
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The outcome of a verify pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyResult {
    /// Bytes compared (chunks this run wrote completely).
    pub verified_bytes: u64,
    /// `[start, len]` of chunks whose contents differ from what was written (or cannot be read).
    pub mismatches: Vec<(u64, u64)>,
}

impl VerifyResult {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl Hashes {
    /// Hashes for a copy of `size` bytes in `lbs`-byte sectors.
    pub fn new(size: u64, lbs: u32) -> Hashes {
        let lbs = lbs.max(512) as u64;
        let mut chunk: u64 = 1 << 20;
        while size.div_ceil(chunk) > MAX_CHUNKS {
            chunk *= 2;
        }
        let n = size.div_ceil(chunk) as usize;
        Hashes {
            size,
            lbs,
            chunk,
            acc: vec![0; n],
            count: vec![0; n],
            zero_crc: digest(&vec![0u8; lbs as usize]),
            domain: None,
        }
    }

    /// Limits verification to `domain` (`[start, len]` ranges, any order; sector-aligned
    /// starts): see the module documentation.
    pub fn restrict(&mut self, domain: &[(u64, u64)]) {
        let mut r: Vec<(u64, u64)> = domain
            .iter()
            .map(|&(a, l)| (a.min(self.size), a.saturating_add(l).min(self.size)))
            .filter(|&(a, e)| a < e)
            .collect();
        r.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (a, e) in r {
            match ranges.last_mut() {
                Some(l) if a <= l.1 => l.1 = l.1.max(e),
                _ => ranges.push((a, e)),
            }
        }
        let mut sectors = vec![0u32; self.acc.len()];
        for &(a, e) in &ranges {
            let mut p = a;
            while p < e {
                let c = p / self.chunk;
                let ce = ((c + 1) * self.chunk).min(e);
                sectors[c as usize] += (ce - p).div_ceil(self.lbs) as u32;
                p = ce;
            }
        }
        let bytes = ranges.iter().map(|r| r.1 - r.0).sum();
        self.domain = Some(Arc::new(Domain {
            ranges,
            sectors,
            bytes,
        }));
    }

    /// Bytes a verify pass goes through: the domain, or everything.
    pub fn covered(&self) -> u64 {
        self.domain.as_ref().map_or(self.size, |d| d.bytes)
    }

    /// Bytes covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }

    fn sector_hash(&self, idx: u64, crc: u32) -> u64 {
        mix(((crc as u64) << 32 | 0x5EC7) ^ mix(idx.wrapping_add(0x1234_5678)))
    }

    fn each_sector(
        &mut self,
        off: u64,
        data: &[u8],
        mut f: impl FnMut(&mut Self, usize, u64, u32, usize),
    ) {
        let mut o = 0usize;
        while o < data.len() {
            let pos = off + o as u64;
            let n = (self.lbs as usize).min(data.len() - o);
            let crc = digest(&data[o..o + n]);
            let idx = pos / self.lbs;
            let c = (pos / self.chunk) as usize;
            if c < self.acc.len() {
                f(self, c, idx, crc, n);
            }
            o += n;
        }
    }

    /// Records data written at `off` (sector aligned) for sectors written for the first time.
    pub fn add(&mut self, off: u64, data: &[u8]) {
        self.each_sector(off, data, |h, c, idx, crc, _| {
            h.acc[c] ^= h.sector_hash(idx, crc);
            h.count[c] += 1;
        });
    }

    /// Records zeros written at `off` (unreadable sectors).
    pub fn add_zeros(&mut self, off: u64, len: u64) {
        let mut p = off;
        let end = off + len;
        while p < end {
            let n = self.lbs.min(end - p);
            let crc = if n == self.lbs {
                self.zero_crc
            } else {
                digest(&vec![0u8; n as usize])
            };
            let c = (p / self.chunk) as usize;
            if c < self.acc.len() {
                self.acc[c] ^= self.sector_hash(p / self.lbs, crc);
                self.count[c] += 1;
            }
            p += n;
        }
    }

    /// Records data that replaces zeros written earlier in this run (a sector recovered by a retry).
    pub fn replace_zeros(&mut self, off: u64, data: &[u8]) {
        let zero = self.zero_crc;
        let lbs = self.lbs as usize;
        self.each_sector(off, data, |h, c, idx, crc, n| {
            let z = if n == lbs {
                zero
            } else {
                digest(&vec![0u8; n])
            };
            h.acc[c] ^= h.sector_hash(idx, z) ^ h.sector_hash(idx, crc);
        });
    }

    fn sectors_in_chunk(&self, c: usize) -> u32 {
        if let Some(d) = &self.domain {
            return d.sectors[c];
        }
        let a = c as u64 * self.chunk;
        let b = (a + self.chunk).min(self.size);
        (b - a).div_ceil(self.lbs) as u32
    }

    /// Re-reads `target` (which must bypass the page cache) and compares every chunk this run
    /// wrote completely. `done` counts bytes checked; `stop` abandons the pass.
    pub fn verify(
        &self,
        target: &dyn BlockSource,
        done: &AtomicU64,
        stop: &AtomicBool,
    ) -> Result<VerifyResult> {
        self.verify_where(target, done, stop, |_| true)
    }

    /// Which chunks `map` (the run's map, of the same size) says are settled: no sector of them
    /// is still to be read or retried (untried, non-trimmed, non-scraped, bad), so nothing
    /// written to them, and none of their hashes, changes from now on.
    pub fn settled(&self, map: &ExtentMap) -> Vec<bool> {
        let mut v = vec![true; self.acc.len()];
        for e in map.extents() {
            if matches!(e.status, Status::Finished | Status::Free) || e.size == 0 {
                continue;
            }
            let first = (e.pos / self.chunk) as usize;
            let last = ((e.end() - 1) / self.chunk) as usize;
            for c in first..=last.min(v.len().saturating_sub(1)) {
                v[c] = false;
            }
        }
        v
    }

    /// Chunk `c`'s accumulated hash and sector count: equal in two snapshots of one run, the
    /// chunk was not written in between.
    pub fn chunk_state(&self, c: usize) -> (u64, u32) {
        (self.acc[c], self.count[c])
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.acc.len()
    }

    /// Merges the result of a verify of some chunks (`a`) with that of the others (`b`).
    pub fn merge(a: VerifyResult, b: VerifyResult) -> VerifyResult {
        let mut all: Vec<(u64, u64)> = a.mismatches.into_iter().chain(b.mismatches).collect();
        all.sort_unstable();
        let mut mismatches: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (o, l) in all {
            match mismatches.last_mut() {
                Some(m) if m.0 + m.1 == o => m.1 += l,
                _ => mismatches.push((o, l)),
            }
        }
        VerifyResult {
            verified_bytes: a.verified_bytes + b.verified_bytes,
            mismatches,
        }
    }

    /// [`verify`](Self::verify) of the chunks `want` selects; the others count as done without
    /// being read.
    pub fn verify_where(
        &self,
        target: &dyn BlockSource,
        done: &AtomicU64,
        stop: &AtomicBool,
        want: impl Fn(usize) -> bool,
    ) -> Result<VerifyResult> {
        let mut buf = AlignedBuf::new(self.chunk as usize);
        let mut res = VerifyResult {
            verified_bytes: 0,
            mismatches: vec![],
        };
        // Index of the first domain range that may reach into the current chunk.
        let mut di = 0usize;
        // The target's sector: reads are aligned to it (at most a chunk, which is aligned).
        let talign = (target.logical_block_size() as u64)
            .max(self.lbs)
            .min(self.chunk);
        for c in 0..self.acc.len() {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::cancelled());
            }
            let a = c as u64 * self.chunk;
            let len = (self.chunk).min(self.size - a);
            // The parts of the chunk to compare: all of it, or its pieces of the domain.
            let pieces: Vec<(u64, u64)> = match &self.domain {
                None => vec![(a, a + len)],
                Some(d) => {
                    while di < d.ranges.len() && d.ranges[di].1 <= a {
                        di += 1;
                    }
                    d.ranges[di..]
                        .iter()
                        .take_while(|r| r.0 < a + len)
                        .map(|r| (r.0.max(a), r.1.min(a + len)))
                        .collect()
                }
            };
            let plen: u64 = pieces.iter().map(|p| p.1 - p.0).sum();
            done.fetch_add(plen, Ordering::Relaxed);
            if plen == 0 || self.count[c] != self.sectors_in_chunk(c) || !want(c) {
                continue;
            }
            let mut x = 0u64;
            let mut failed = false;
            for &(pa, pe) in &pieces {
                // Read whole target sectors (O_DIRECT onto a disk with larger sectors than the
                // source's); hash only the piece.
                let ra = pa / talign * talign;
                let need = (pe - ra) as usize;
                let rl = ((pe - ra).div_ceil(talign) * talign) as usize;
                buf.set_len(rl);
                let mut got = 0usize;
                while got < need {
                    match target.read_at(&mut buf[got..rl], ra + got as u64) {
                        Ok(0) | Err(_) => {
                            failed = true;
                            break;
                        }
                        Ok(n) => got += n,
                    }
                }
                if failed {
                    break;
                }
                let mut o = (pa - ra) as usize;
                while o < need {
                    let n = (self.lbs as usize).min(need - o);
                    x ^= self.sector_hash((ra + o as u64) / self.lbs, digest(&buf[o..o + n]));
                    o += n;
                }
            }
            res.verified_bytes += plen;
            if failed || x != self.acc[c] {
                match res.mismatches.last_mut() {
                    Some(m) if m.0 + m.1 == a => m.1 += len,
                    _ => res.mismatches.push((a, len)),
                }
            }
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn digest_sees_every_flipped_bit_and_word_order() {
        let mut d: Vec<u8> = (0..512u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let base = digest(&d);
        for bit in 0..512 * 8 {
            d[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(digest(&d), base, "bit {bit}");
            d[bit / 8] ^= 1 << (bit % 8);
        }
        let mut swapped = d.clone();
        swapped[..8].copy_from_slice(&d[8..16]);
        swapped[8..16].copy_from_slice(&d[..8]);
        assert_ne!(digest(&swapped), base);
        assert_ne!(digest(&d[..500]), digest(&d[..501]));
        assert_ne!(digest(&[0u8; 512]), digest(&[0u8; 4096]));
    }

    use super::*;
    use crate::rescue::sim::SimDevice;

    #[test]
    fn order_independent_and_detects_changes() {
        let data = SimDevice::pattern(3 << 20, 1);
        let mut a = Hashes::new(data.len() as u64, 512);
        a.add(0, &data);
        let mut b = Hashes::new(data.len() as u64, 512);
        b.add(1 << 20, &data[1 << 20..]);
        b.add_zeros(4096, 512);
        b.replace_zeros(4096, &data[4096..4608]);
        b.add(0, &data[..4096]);
        b.add(4608, &data[4608..1 << 20]);
        assert_eq!(a.acc, b.acc);
        assert_eq!(a.count, b.count);
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let r = a
            .verify(&SimDevice::new(data.clone(), 512), &done, &stop)
            .unwrap();
        assert!(r.ok());
        assert_eq!(r.verified_bytes, 3 << 20);
        let mut bad = data.clone();
        bad[(2 << 20) + 7] ^= 1;
        let r = a.verify(&SimDevice::new(bad, 512), &done, &stop).unwrap();
        assert_eq!(r.mismatches, vec![(2 << 20, 1 << 20)]);
    }

    #[test]
    fn settled_chunks_are_those_with_nothing_left_to_read() {
        const M: u64 = 1 << 20;
        let h = Hashes::new(5 * M + 4096, 512);
        let mut map = ExtentMap::new(5 * M + 4096);
        map.set(0, 5 * M + 4096, Status::Finished);
        map.set(M + 512, 512, Status::Bad);
        map.set(3 * M - 4096, 8192, Status::NonTrimmed);
        map.set(5 * M, 4096, Status::Free);
        assert_eq!(h.settled(&map), [true, false, false, false, true, true]);
        let mut all = ExtentMap::new(5 * M + 4096);
        all.set(0, 5 * M + 4096, Status::Untried);
        assert!(h.settled(&all).iter().all(|s| !s));
    }

    #[test]
    fn merged_results_add_up_and_join_neighbouring_mismatches() {
        let a = VerifyResult {
            verified_bytes: 3,
            mismatches: vec![(0, 1), (4, 1)],
        };
        let b = VerifyResult {
            verified_bytes: 5,
            mismatches: vec![(1, 2), (9, 1)],
        };
        let m = Hashes::merge(a, b);
        assert_eq!(m.verified_bytes, 8);
        assert_eq!(m.mismatches, [(0, 3), (4, 1), (9, 1)]);
    }

    #[test]
    fn a_domain_is_verified_exactly() {
        let data = SimDevice::pattern(3 << 20, 2);
        let domain = [((1 << 20) + 4096, 8192u64), (512, 1024), (0, 512)];
        let mut h = Hashes::new(data.len() as u64, 512);
        h.restrict(&domain);
        assert_eq!(h.covered(), 8192 + 1536);
        for &(a, l) in &domain {
            h.add(a, &data[a as usize..(a + l) as usize]);
        }
        // Bytes outside the domain differ on the target: not compared.
        let mut target = SimDevice::pattern(3 << 20, 3);
        for &(a, l) in &domain {
            target[a as usize..(a + l) as usize]
                .copy_from_slice(&data[a as usize..(a + l) as usize]);
        }
        let (stop, done) = (AtomicBool::new(false), AtomicU64::new(0));
        let r = h
            .verify(&SimDevice::new(target.clone(), 512), &done, &stop)
            .unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.verified_bytes, 8192 + 1536);
        assert_eq!(done.load(Ordering::Relaxed), 8192 + 1536);
        // A target with 4096-byte sectors is read in whole sectors of its own (O_DIRECT).
        let r = h
            .verify(&SimDevice::new(target.clone(), 4096), &done, &stop)
            .unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.verified_bytes, 8192 + 1536);
        // A changed byte inside the domain is found.
        target[(1 << 20) + 4096 + 8000] ^= 4;
        let r = h
            .verify(&SimDevice::new(target, 512), &done, &stop)
            .unwrap();
        assert_eq!(r.mismatches, vec![(1 << 20, 1 << 20)]);
        // A chunk whose domain sectors were not all written by this run is not compared.
        let mut part = Hashes::new(data.len() as u64, 512);
        part.restrict(&domain);
        part.add(0, &data[..512]);
        let r = part
            .verify(&SimDevice::new(data.clone(), 512), &done, &stop)
            .unwrap();
        assert_eq!(r.verified_bytes, 0);
    }
}
