//! qcow2 (version 3) written in one pass, as QEMU's `docs/interop/qcow2.txt` describes it:
//! 64 KiB clusters; the header in cluster 0, the L1 table right after it, then data clusters
//! and L2 tables in the order the disk is streamed (an L2 table's cluster is taken when its
//! first data cluster arrives and filled when its 512 MiB are done), then the refcount table
//! and blocks at the end (every cluster of the file is used exactly once: refcount 1). Clusters
//! that are all zero are not allocated (they read as zeros: no backing file). Memory: one L2
//! table and the L1 table (8 bytes per 512 MiB of disk).
use super::{Out, VmWriter};
use crate::error::{Error, Result};

const CLUSTER_BITS: u32 = 16;
const CS: u64 = 1 << CLUSTER_BITS;
/// Entries of an L2 table (one cluster of u64).
const L2_ENTRIES: u64 = CS / 8;
/// 16-bit refcounts: entries of a refcount block.
const RC_ENTRIES: u64 = CS * 8 / 16;
/// Bit 63 of L1/L2 entries: refcount exactly one ("copied").
const COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

pub struct Qcow2 {
    out: Out,
    size: u64,
    l1: Vec<u64>,
    /// The L2 table being filled, with its L1 index and host offset.
    l2: Vec<u64>,
    l2_at: Option<(u64, u64)>,
    /// Next free host offset (cluster aligned).
    next: u64,
}

impl Qcow2 {
    pub fn new(out: Out, size: u64) -> Qcow2 {
        let l1_len = size.div_ceil(CS * L2_ENTRIES);
        let l1_clusters = (l1_len * 8).div_ceil(CS).max(1);
        Qcow2 {
            out,
            size,
            l1: vec![0; l1_len as usize],
            l2: vec![0; L2_ENTRIES as usize],
            l2_at: None,
            next: (1 + l1_clusters) * CS,
        }
    }

    fn alloc(&mut self) -> u64 {
        let at = self.next;
        self.next += CS;
        at
    }

    fn flush_l2(&mut self) -> Result<()> {
        if let Some((i, host)) = self.l2_at.take() {
            let b: Vec<u8> = self.l2.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.out.write_at(&b, host)?;
            self.l1[i as usize] = host | COPIED;
            self.l2.fill(0);
        }
        Ok(())
    }

    /// Host clusters needed for the refcount table and blocks covering `used` clusters plus
    /// themselves: (table clusters, blocks).
    fn refcount_layout(used: u64) -> (u64, u64) {
        let mut blocks = used.div_ceil(RC_ENTRIES).max(1);
        loop {
            let table = (blocks * 8).div_ceil(CS).max(1);
            let need = (used + table + blocks).div_ceil(RC_ENTRIES);
            if need <= blocks {
                return (table, blocks);
            }
            blocks = need;
        }
    }
}

impl VmWriter for Qcow2 {
    fn data(&mut self, off: u64, data: &[u8]) -> Result<()> {
        for (k, piece) in data.chunks(CS as usize).enumerate() {
            if crate::io::is_zero(piece) {
                continue;
            }
            let g = (off + (k as u64) * CS) / CS;
            let l1i = g / L2_ENTRIES;
            if self.l2_at.map(|(i, _)| i) != Some(l1i) {
                self.flush_l2()?;
                let host = self.alloc();
                self.l2_at = Some((l1i, host));
            }
            let host = self.alloc();
            self.out.write_at(piece, host)?;
            self.l2[(g % L2_ENTRIES) as usize] = host | COPIED;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_l2()?;
        let l1_bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.out.write_at(&l1_bytes, CS)?;
        let used = self.next / CS;
        let (table, blocks) = Qcow2::refcount_layout(used);
        let table_at = self.next;
        let blocks_at = table_at + table * CS;
        let total = used + table + blocks;
        let mut t = vec![0u8; (table * CS) as usize];
        for b in 0..blocks {
            let at = blocks_at + b * CS;
            t[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&at.to_be_bytes());
        }
        self.out.write_at(&t, table_at)?;
        let mut block = vec![0u8; CS as usize];
        for b in 0..blocks {
            block.fill(0);
            for e in 0..RC_ENTRIES {
                if b * RC_ENTRIES + e < total {
                    block[(e * 2) as usize..(e * 2 + 2) as usize]
                        .copy_from_slice(&1u16.to_be_bytes());
                }
            }
            self.out.write_at(&block, blocks_at + b * CS)?;
        }
        let mut h = vec![0u8; HEADER_LEN as usize + 8];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&(self.l1.len() as u32).to_be_bytes());
        h[40..48].copy_from_slice(&CS.to_be_bytes());
        h[48..56].copy_from_slice(&table_at.to_be_bytes());
        h[56..60].copy_from_slice(&(table as u32).to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&HEADER_LEN.to_be_bytes());
        // Bytes 104..112: the end-of-extensions marker (type 0, length 0).
        self.out.write_at(&h, 0)?;
        self.out.set_len(total * CS)
    }
}

/// Refuses what qcow2 cannot hold (QEMU's 32 MiB L1 limit is far beyond any disk).
pub fn check_size(size: u64) -> Result<()> {
    if size.div_ceil(CS * L2_ENTRIES) * 8 > 32 << 20 {
        return Err(Error::unsupported("the disk is too large for qcow2"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_cover_themselves() {
        for used in [
            1,
            2,
            RC_ENTRIES - 2,
            RC_ENTRIES - 1,
            RC_ENTRIES,
            10 * RC_ENTRIES + 5,
        ] {
            let (t, b) = Qcow2::refcount_layout(used);
            assert!(used + t + b <= b * RC_ENTRIES, "used {used}");
            assert!(b * 8 <= t * CS);
            // Minimal: one block fewer would not do.
            assert!(b == 1 || used + t + b - 1 > (b - 1) * RC_ENTRIES);
        }
    }
}
