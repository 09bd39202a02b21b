//! XFS used blocks: used = everything − the free extents of every allocation group's free-space
//! B+tree by block number (bnobt), walked depth first from each AGF. The AG headers, the AGFL,
//! the internal log, inode chunks and every B-tree are not free space, so they count as used
//! without being named. v4 and v5 (CRC) filesystems: on v5 the superblock, every AGF and every
//! bnobt block must pass its CRC32C and carry the filesystem's UUID, its own disk address and AG.
//!
//! The map is refused (the partition is then copied sector by sector) when its free space may
//! not describe its data: a log that needs recovery (found as xfs_repair / the kernel find it:
//! the log head from the cycle numbers, then the last record before it must be a clean unmount
//! record ending at the head), log-incompatible features set, the `needsrepair` flag, a realtime
//! device or an external log, mkfs left unfinished, unknown incompatible features, a free count
//! that disagrees (bnobt records vs the AGF's `freeblks`, the AGFs vs the superblock's
//! `fdblocks`), a B-tree block that is unreadable, out of place or fails its checks.
//!
//! Memory: one path of the bnobt (at most [`MAX_LEVELS`] blocks of at most 64 KiB); the log
//! check reads cycle numbers in 64 KiB pieces. Every read is exactly the structure needed
//! ([`read_exact`]): no read-ahead into free space.
use super::crc32c::crc32c_raw;
use super::{Range, Region, UsedMap};
use crate::error::{Error, Result};

/// Deepest free-space B+tree accepted (the kernel's historical XFS_BTREE_MAXLEVELS).
pub const MAX_LEVELS: u16 = 9;
const NULL_AGBLOCK: u32 = u32::MAX;
const BB: u64 = 512;
/// Log blocks (512 B) the kernel examines around the head for torn or out-of-order writes:
/// 8 in-core logs of 256 KiB.
const LOG_SCAN_BB: u64 = 4096;

const INCOMPAT_FTYPE: u32 = 0x1;
const INCOMPAT_SPINODES: u32 = 0x2;
const INCOMPAT_META_UUID: u32 = 0x4;
const INCOMPAT_BIGTIME: u32 = 0x8;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_EXCHRANGE: u32 = 0x40;
const INCOMPAT_PARENT: u32 = 0x80;
/// Incompatible features that leave the AGF and bnobt as this module reads them.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .unwrap_or(0)
}
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        })
        .unwrap_or(0)
}

/// XFS's metadata checksum: CRC32C of `buf` with its 4-byte CRC field at `off` read as zero.
fn xfs_cksum_ok(buf: &[u8], off: usize) -> bool {
    if buf.len() < off + 4 {
        return false;
    }
    let c = crc32c_raw(!0, &buf[..off]);
    let c = crc32c_raw(c, &[0; 4]);
    let c = !crc32c_raw(c, &buf[off + 4..]);
    c == u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

fn corrupt(m: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("XFS: {m}"))
}

/// Reads exactly `[off, off+len)` of `r` (sector-aligned underneath), bypassing the region's
/// cache (tree blocks are read once each): metadata blocks scattered over a disk cost their own
/// size, and nothing beyond them (free space, where a failing disk's bad sectors must never be
/// tried) is read.
pub(crate) fn read_exact(r: &Region, off: u64, len: usize) -> Result<Vec<u8>> {
    if off.checked_add(len as u64).is_none_or(|e| e > r.len()) {
        return r.read(off, len); // the region's out-of-bounds error
    }
    Region::new(r.src, r.start() + off, len as u64).read(0, len)
}

/// What the map needs from the primary superblock.
#[derive(Debug, Clone)]
struct Sb {
    bs: u64,
    sectsize: u64,
    agblocks: u64,
    agcount: u64,
    agblklog: u32,
    dblocks: u64,
    crc: bool,
    /// The UUID stamped in metadata blocks (sb_meta_uuid with the meta_uuid feature).
    uuid: [u8; 16],
    fdblocks: u64,
    logstart: u64,
    logblocks: u64,
}

impl Sb {
    fn ag_len(&self, ag: u64) -> u64 {
        self.agblocks.min(self.dblocks - ag * self.agblocks)
    }
    /// Byte offset of block `agbno` of AG `ag`.
    fn byte(&self, ag: u64, agbno: u64) -> u64 {
        (ag * self.agblocks + agbno) * self.bs
    }
    /// Bytes of a short-form B-tree block header.
    fn hdr_len(&self) -> usize {
        if self.crc {
            56
        } else {
            16
        }
    }
}

/// Reads and checks the primary superblock.
fn superblock(r: &Region) -> Result<Sb> {
    let head = read_exact(r, 0, 512)?;
    if head.get(0..4) != Some(b"XFSB") {
        return Err(corrupt("no XFS superblock signature"));
    }
    let sectsize = u64::from(be16(&head, 102));
    if !(512..=32768).contains(&sectsize) || !sectsize.is_power_of_two() {
        return Err(corrupt("invalid sector size"));
    }
    let sb = read_exact(r, 0, sectsize as usize)?;
    let version = be16(&sb, 100) & 0xF;
    let crc = match version {
        4 => false,
        5 => true,
        v => return Err(Error::unsupported(format!("XFS superblock version {v}"))),
    };
    if crc && !xfs_cksum_ok(&sb, 224) {
        return Err(corrupt("superblock checksum mismatch"));
    }
    let bs = u64::from(be32(&sb, 4));
    if !(512..=65536).contains(&bs) || !bs.is_power_of_two() || bs < sectsize {
        return Err(corrupt("invalid block size"));
    }
    if sb[126] != 0 {
        return Err(Error::refused(
            "XFS: mkfs did not finish (the superblock says it is in progress)",
        ));
    }
    if be64(&sb, 16) != 0 || be64(&sb, 24) != 0 {
        return Err(Error::refused(
            "XFS with a realtime device: its data lies outside this partition",
        ));
    }
    let logstart = be64(&sb, 48);
    if logstart == 0 {
        return Err(Error::refused(
            "XFS with an external log: whether it needs recovery is not visible here",
        ));
    }
    if crc {
        let incompat = be32(&sb, 216);
        if incompat & INCOMPAT_NEEDSREPAIR != 0 {
            return Err(Error::refused(
                "XFS is marked as needing xfs_repair: its free space may be wrong",
            ));
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(Error::unsupported(format!(
                "XFS has incompatible features this version does not know (0x{:x})",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        if be32(&sb, 220) != 0 {
            return Err(Error::refused(
                "XFS log-incompatible features are set: the log was not cleanly unmounted",
            ));
        }
    }
    let agblocks = u64::from(be32(&sb, 84));
    let agcount = u64::from(be32(&sb, 88));
    let agblklog = u32::from(sb[124]);
    let dblocks = be64(&sb, 8);
    if agblocks < 16 || agcount == 0 || agblklog > 31 || agblocks > 1 << agblklog {
        return Err(corrupt("invalid allocation group geometry"));
    }
    if dblocks <= (agcount - 1) * agblocks || dblocks > agcount * agblocks {
        return Err(corrupt("block count disagrees with the allocation groups"));
    }
    if dblocks.saturating_mul(bs) > r.len() {
        return Err(corrupt("the filesystem is larger than its partition"));
    }
    let mut uuid = [0u8; 16];
    let meta_uuid = crc && be32(&sb, 216) & INCOMPAT_META_UUID != 0;
    uuid.copy_from_slice(&sb[if meta_uuid { 248 } else { 32 }..][..16]);
    Ok(Sb {
        bs,
        sectsize,
        agblocks,
        agcount,
        agblklog,
        dblocks,
        crc,
        uuid,
        fdblocks: be64(&sb, 144),
        logstart,
        logblocks: u64::from(be32(&sb, 96)),
    })
}

/// The AGF fields the walk needs.
struct Agf {
    bno_root: u32,
    bno_level: u16,
    freeblks: u64,
    /// freeblks + flcount + btreeblks: this AG's share of the superblock's fdblocks.
    fd_share: u64,
}

fn read_agf(r: &Region, sb: &Sb, ag: u64) -> Result<Agf> {
    let b = read_exact(r, sb.byte(ag, 0) + sb.sectsize, sb.sectsize as usize)?;
    let bad = |m: &str| corrupt(format!("AG {ag}: AGF {m}"));
    if b.get(0..4) != Some(b"XAGF") || be32(&b, 4) != 1 {
        return Err(bad("has no valid signature"));
    }
    if sb.crc {
        if !xfs_cksum_ok(&b, 216) {
            return Err(bad("checksum mismatch"));
        }
        if b[64..80] != sb.uuid {
            return Err(bad("belongs to another filesystem (UUID)"));
        }
    }
    let len = sb.ag_len(ag);
    if u64::from(be32(&b, 8)) != ag || u64::from(be32(&b, 12)) != len {
        return Err(bad("number or length disagrees with the superblock"));
    }
    let level = be32(&b, 28);
    let root = be32(&b, 16);
    if level == 0 || level > u32::from(MAX_LEVELS) || root == 0 || u64::from(root) >= len {
        return Err(bad("free-space tree root or height is invalid"));
    }
    let freeblks = u64::from(be32(&b, 52));
    if freeblks > len {
        return Err(bad("free count exceeds the AG"));
    }
    Ok(Agf {
        bno_root: root,
        bno_level: level as u16,
        freeblks,
        fd_share: freeblks + u64::from(be32(&b, 48)) + u64::from(be32(&b, 60)),
    })
}

/// One block on the walk's path: its bytes, the next entry and the entry count.
struct Node {
    buf: Vec<u8>,
    next: usize,
    n: usize,
    level: u16,
}

/// The depth-first walk of one AG's bnobt.
struct AgWalk {
    ag: u64,
    len: u64,
    freeblks: u64,
    /// Block number up to which the AG has been streamed (used or free).
    pos: u64,
    counted: u64,
    path: Vec<Node>,
    prev_leaf: u32,
    last_right: u32,
}

impl AgWalk {
    fn block(&mut self, r: &Region, sb: &Sb, agbno: u32, level: u16) -> Result<Node> {
        let ag = self.ag;
        let bad = |m: &str| corrupt(format!("AG {ag}: free-space tree block {agbno}: {m}"));
        if agbno == 0 || u64::from(agbno) >= self.len {
            return Err(bad("lies outside the AG"));
        }
        let buf = read_exact(r, sb.byte(ag, u64::from(agbno)), sb.bs as usize)?;
        let magic: &[u8] = if sb.crc { b"AB3B" } else { b"ABTB" };
        if &buf[0..4] != magic {
            return Err(bad("wrong signature"));
        }
        if sb.crc {
            if !xfs_cksum_ok(&buf, 52) {
                return Err(bad("checksum mismatch"));
            }
            let daddr = (ag * sb.agblocks + u64::from(agbno)) * sb.bs / BB;
            if be64(&buf, 16) != daddr || buf[32..48] != sb.uuid || u64::from(be32(&buf, 48)) != ag
            {
                return Err(bad(
                    "its owner or address disagrees (a stale or misplaced block)",
                ));
            }
        }
        if be16(&buf, 4) != level {
            return Err(bad("wrong level"));
        }
        let n = usize::from(be16(&buf, 6));
        let room = sb.bs as usize - sb.hdr_len();
        let maxrecs = if level == 0 { room / 8 } else { room / 12 };
        if n > maxrecs || (n == 0 && level > 0) {
            return Err(bad("invalid record count"));
        }
        if level == 0 {
            if be32(&buf, 8) != self.prev_leaf {
                return Err(bad("leaf chain broken (left sibling)"));
            }
            self.prev_leaf = agbno;
            self.last_right = be32(&buf, 12);
        }
        Ok(Node {
            buf,
            next: 0,
            n,
            level,
        })
    }

    /// The next free extent `(agbno, count)` in ascending order.
    fn next_free(&mut self, r: &Region, sb: &Sb) -> Result<Option<(u64, u64)>> {
        let hl = sb.hdr_len();
        loop {
            let Some(top) = self.path.last_mut() else {
                if self.last_right != NULL_AGBLOCK {
                    return Err(corrupt(format!(
                        "AG {}: free-space tree's last leaf has a right sibling",
                        self.ag
                    )));
                }
                return Ok(None);
            };
            if top.next >= top.n {
                self.path.pop();
                continue;
            }
            let i = top.next;
            top.next += 1;
            if top.level == 0 {
                let s = u64::from(be32(&top.buf, hl + 8 * i));
                let c = u64::from(be32(&top.buf, hl + 8 * i + 4));
                // The AG headers (sb, AGF, AGI, AGFL: the first four sectors) are never free.
                if c == 0 || s * sb.bs < 4 * sb.sectsize || s < self.pos || s + c > self.len {
                    return Err(corrupt(format!(
                        "AG {}: free extent {s}+{c} is out of order or outside the AG",
                        self.ag
                    )));
                }
                return Ok(Some((s, c)));
            }
            let maxrecs = (sb.bs as usize - hl) / 12;
            let ptr = be32(&top.buf, hl + 8 * maxrecs + 4 * i);
            let level = top.level - 1;
            let child = self.block(r, sb, ptr, level)?;
            self.path.push(child);
        }
    }
}

/// The streamed map (see the module doc).
pub struct XfsMap<'a> {
    r: Region<'a>,
    sb: Sb,
    next_ag: u64,
    walk: Option<AgWalk>,
    tail_done: bool,
}

/// Opens the map of the XFS filesystem at the start of `r`.
pub fn open(r: Region<'_>) -> Result<XfsMap<'_>> {
    let sb = superblock(&r)?;
    let mut fd = 0u64;
    for ag in 0..sb.agcount {
        fd += read_agf(&r, &sb, ag)?.fd_share;
    }
    if fd != sb.fdblocks {
        return Err(corrupt(format!(
            "the superblock's free block count ({}) disagrees with its AGFs ({fd})",
            sb.fdblocks
        )));
    }
    if !log::clean(&r, &sb)? {
        return Err(Error::refused(
            "the XFS log needs recovery (not cleanly unmounted): its free space may be stale",
        ));
    }
    Ok(XfsMap {
        r,
        sb,
        next_ag: 0,
        walk: None,
        tail_done: false,
    })
}

impl UsedMap for XfsMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        let sb = &self.sb;
        loop {
            if let Some(w) = self.walk.as_mut() {
                match w.next_free(&self.r, sb)? {
                    Some((s, c)) => {
                        w.counted += c;
                        let used = (w.pos, s);
                        w.pos = s + c;
                        if used.1 > used.0 {
                            return Ok(Some((sb.byte(w.ag, used.0), sb.byte(w.ag, used.1))));
                        }
                    }
                    None => {
                        let w = self.walk.take().expect("walk");
                        if w.counted != w.freeblks {
                            return Err(corrupt(format!(
                                "AG {}: its free count ({}) disagrees with its free-space tree ({})",
                                w.ag, w.freeblks, w.counted
                            )));
                        }
                        if w.pos < w.len {
                            return Ok(Some((sb.byte(w.ag, w.pos), sb.byte(w.ag, w.len))));
                        }
                    }
                }
                continue;
            }
            if self.next_ag < sb.agcount {
                let ag = self.next_ag;
                self.next_ag += 1;
                let agf = read_agf(&self.r, sb, ag)?;
                let mut w = AgWalk {
                    ag,
                    len: sb.ag_len(ag),
                    freeblks: agf.freeblks,
                    pos: 0,
                    counted: 0,
                    path: Vec::with_capacity(usize::from(agf.bno_level)),
                    prev_leaf: NULL_AGBLOCK,
                    last_right: NULL_AGBLOCK,
                };
                let root = w.block(&self.r, sb, agf.bno_root, agf.bno_level - 1)?;
                w.path.push(root);
                self.walk = Some(w);
                continue;
            }
            if !self.tail_done {
                self.tail_done = true;
                // The partition's bytes after the filesystem: not ours to judge, copied.
                let end = sb.dblocks * sb.bs;
                if end < self.r.len() {
                    return Ok(Some((end, self.r.len())));
                }
            }
            return Ok(None);
        }
    }
}

/// Whether the internal log is clean, decided as the kernel's log recovery would
/// (xlog_find_head / xlog_find_tail / xlog_check_unmount_rec).
mod log {
    use super::*;

    /// A log block's cycle number: its first word, or a record header's h_cycle after the magic.
    fn cycle_of(b: &[u8]) -> u32 {
        match be32(b, 0) {
            0xFEED_BABE => be32(b, 4),
            c => c,
        }
    }

    /// The internal log: where it is and how many 512-byte blocks it has.
    struct Log<'r, 'a> {
        r: &'r Region<'a>,
        off: u64,
        bbs: u64,
    }

    impl Log<'_, '_> {
        fn cycle(&self, b: u64) -> Result<u32> {
            Ok(cycle_of(&read_exact(self.r, self.off + b * BB, 8)?))
        }
        /// Checks that every block in `[from, to)` has cycle number `want`.
        fn all_cycle(&self, from: u64, to: u64, want: u32) -> Result<bool> {
            let mut b = from;
            while b < to {
                let n = (to - b).min(128);
                let d = read_exact(self.r, self.off + b * BB, (n * BB) as usize)?;
                if d.chunks(BB as usize).any(|c| cycle_of(c) != want) {
                    return Ok(false);
                }
                b += n;
            }
            Ok(true)
        }
    }

    pub(super) fn clean(r: &Region, sb: &Sb) -> Result<bool> {
        let ag = sb.logstart >> sb.agblklog;
        let agbno = sb.logstart & ((1u64 << sb.agblklog) - 1);
        let bbs = sb.logblocks * sb.bs / BB;
        if ag >= sb.agcount || agbno + sb.logblocks > sb.ag_len(ag) || bbs < 64 {
            return Err(corrupt("the internal log lies outside its AG"));
        }
        let log = Log {
            r,
            off: sb.byte(ag, agbno),
            bbs,
        };
        let n = log.bbs;
        let first = log.cycle(0)?;
        let last = log.cycle(n - 1)?;
        if first == 0 {
            // Never written: nothing to replay, if it is zero throughout the scan windows.
            return Ok(log.all_cycle(0, LOG_SCAN_BB.min(n), 0)?
                && log.all_cycle(n - LOG_SCAN_BB.min(n), n, 0)?);
        }
        // The head: blocks before it carry the current cycle, blocks from it the previous one
        // (or 0, never written). All equal: the head is at the start (the log just wrapped).
        let (head, cur, prev) = if first == last {
            (0, first, first)
        } else if last == first - 1 || last == 0 {
            let (mut lo, mut hi) = (0u64, n - 1);
            // Invariant: cycle(lo) == first, cycle(hi) == last.
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let c = log.cycle(mid)?;
                if c == first {
                    lo = mid;
                } else if c == last {
                    hi = mid;
                } else {
                    return Ok(false);
                }
            }
            (hi, first, last)
        } else {
            return Ok(false);
        };
        // Around the head, where writes may be torn or out of order, every block must follow
        // that split exactly; the kernel looks no further.
        let w = LOG_SCAN_BB;
        if !log.all_cycle(head.saturating_sub(w), head, cur)?
            || !log.all_cycle(head, (head + w).min(n), prev)?
            || (head < w && !log.all_cycle(n - (w - head).min(n - head), n, prev)?)
        {
            return Ok(false);
        }
        // The last record before the head must be an unmount record that ends at the head.
        let end = if head == 0 { n } else { head };
        let mut rec = None;
        for k in 1..=1024.min(end) {
            let b = end - k;
            let d = read_exact(log.r, log.off + b * BB, BB as usize)?;
            if be32(&d, 0) == 0xFEED_BABE {
                rec = Some((b, d));
                break;
            }
        }
        let Some((b, h)) = rec else {
            return Ok(false);
        };
        let cyc = be32(&h, 4);
        let version = be32(&h, 8);
        let len = u64::from(be32(&h, 12));
        let lsn = be64(&h, 16);
        let size = be32(&h, 320);
        if lsn != (u64::from(cyc) << 32 | b) || version & 3 == 0 || be32(&h, 40) != 1 {
            return Ok(false);
        }
        let hblks = if version & 2 != 0 && size > 32768 {
            u64::from(size.div_ceil(32768))
        } else {
            1
        };
        let total = hblks + len.div_ceil(BB);
        if b + total != end || total > 1024 {
            return Ok(false);
        }
        let all = read_exact(log.r, log.off + b * BB, (total * BB) as usize)?;
        let data = &all[(hblks * BB) as usize..];
        // The first log operation header: oh_flags XLOG_UNMOUNT_TRANS.
        if data.len() < 12 || data[9] & 0x20 == 0 {
            return Ok(false);
        }
        let stored = u32::from_le_bytes([h[32], h[33], h[34], h[35]]);
        if stored != 0 {
            // Zero: written without one (mkfs, old kernels); the kernel does not check it.
            // xlog_cksum: the header (CRC field as zero; 328 bytes, or 324 as i386 kernels
            // wrote it), the extended headers, the data.
            let ok = [328usize, 324].iter().any(|&hl| {
                let mut c = crc32c_raw(!0, &h[..32]);
                c = crc32c_raw(c, &[0; 4]);
                c = crc32c_raw(c, &h[36..hl]);
                for i in 1..len.div_ceil(32768).max(1) as usize {
                    let x = i * BB as usize;
                    c = crc32c_raw(c, &all[x..x + 256]);
                }
                !crc32c_raw(c, &data[..len as usize]) == stored
            });
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xfs_checksum_field_is_read_as_zero_and_checked() {
        use crate::fs::crc32c::crc32c;
        let mut b = vec![7u8; 64];
        let c = {
            let mut z = b.clone();
            z[8..12].fill(0);
            crc32c(&z)
        };
        b[8..12].copy_from_slice(&c.to_le_bytes());
        assert!(xfs_cksum_ok(&b, 8));
        b[40] ^= 1;
        assert!(!xfs_cksum_ok(&b, 8));
    }
    use crate::rescue::sim::SimDevice;

    /// A tiny v4 XFS: 1 AG of 64 blocks of 4 KiB, a bnobt of one leaf with free extents
    /// 10+5 and 40+24, a log of 16 blocks at block 20 (left zeroed: never written).
    fn tiny(free: &[(u32, u32)], freeblks: u32, fdblocks: u64) -> Vec<u8> {
        let bs = 4096usize;
        let mut d = vec![0u8; 64 * bs];
        d[0..4].copy_from_slice(b"XFSB");
        d[4..8].copy_from_slice(&4096u32.to_be_bytes());
        d[8..16].copy_from_slice(&64u64.to_be_bytes());
        d[48..56].copy_from_slice(&20u64.to_be_bytes());
        d[84..88].copy_from_slice(&64u32.to_be_bytes());
        d[88..92].copy_from_slice(&1u32.to_be_bytes());
        d[96..100].copy_from_slice(&16u32.to_be_bytes());
        d[100..102].copy_from_slice(&0xB4A4u16.to_be_bytes());
        d[102..104].copy_from_slice(&512u16.to_be_bytes());
        d[124] = 6;
        d[144..152].copy_from_slice(&fdblocks.to_be_bytes());
        let agf = 512;
        d[agf..agf + 4].copy_from_slice(b"XAGF");
        d[agf + 4..agf + 8].copy_from_slice(&1u32.to_be_bytes());
        d[agf + 12..agf + 16].copy_from_slice(&64u32.to_be_bytes());
        d[agf + 16..agf + 20].copy_from_slice(&1u32.to_be_bytes());
        d[agf + 28..agf + 32].copy_from_slice(&1u32.to_be_bytes());
        d[agf + 52..agf + 56].copy_from_slice(&freeblks.to_be_bytes());
        let leaf = bs;
        d[leaf..leaf + 4].copy_from_slice(b"ABTB");
        d[leaf + 6..leaf + 8].copy_from_slice(&(free.len() as u16).to_be_bytes());
        d[leaf + 8..leaf + 16].fill(0xFF);
        for (i, (s, c)) in free.iter().enumerate() {
            let o = leaf + 16 + 8 * i;
            d[o..o + 4].copy_from_slice(&s.to_be_bytes());
            d[o + 4..o + 8].copy_from_slice(&c.to_be_bytes());
        }
        d
    }

    fn map(d: Vec<u8>) -> Result<Vec<Range>> {
        let sim = SimDevice::new(d, 512);
        let r = Region::new(&sim, 0, sim.size());
        let mut m = open(r)?;
        super::super::collect(&mut m)
    }

    use crate::io::BlockSource;

    #[test]
    fn used_is_everything_but_the_free_extents() {
        let k = 4096u64;
        let got = map(tiny(&[(10, 5), (40, 24)], 29, 29)).unwrap();
        assert_eq!(got, vec![(0, 10 * k), (15 * k, 40 * k)]);
    }

    #[test]
    fn disagreeing_counts_and_bad_trees_are_refused() {
        // AGF freeblks vs the tree.
        let e = map(tiny(&[(10, 5), (40, 24)], 30, 30)).unwrap_err();
        assert!(e.to_string().contains("disagrees"), "{e}");
        // Superblock fdblocks vs the AGFs.
        let e = map(tiny(&[(10, 5), (40, 24)], 29, 28)).unwrap_err();
        assert!(e.to_string().contains("fdblocks") || e.to_string().contains("free block count"));
        // Overlapping or out-of-order extents, an extent past the AG, block 0 free.
        for free in [&[(10, 5), (12, 4)][..], &[(40, 25)], &[(0, 3)]] {
            let n: u32 = free.iter().map(|x| x.1).sum();
            assert!(map(tiny(free, n, u64::from(n))).is_err(), "{free:?}");
        }
        // A wrong tree height.
        let mut d = tiny(&[(10, 5)], 5, 5);
        d[512 + 28..512 + 32].copy_from_slice(&2u32.to_be_bytes());
        assert!(map(d).is_err());
    }

    #[test]
    fn dirty_log_realtime_and_external_log_are_refused() {
        // A log record that is not an unmount record, at the head.
        let mut d = tiny(&[(10, 5)], 5, 5);
        let log = 20 * 4096;
        d[log..log + 4].copy_from_slice(&0xFEED_BABEu32.to_be_bytes());
        d[log + 4..log + 8].copy_from_slice(&1u32.to_be_bytes());
        d[log + 8..log + 12].copy_from_slice(&2u32.to_be_bytes());
        d[log + 12..log + 16].copy_from_slice(&512u32.to_be_bytes());
        d[log + 16..log + 24].copy_from_slice(&(1u64 << 32).to_be_bytes());
        d[log + 40..log + 44].copy_from_slice(&1u32.to_be_bytes());
        d[log + 512..log + 516].copy_from_slice(&1u32.to_be_bytes());
        let e = map(d.clone()).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Refused, "{e}");
        assert!(e.to_string().contains("log needs recovery"), "{e}");
        // The same record as an unmount record (oh_flags XLOG_UNMOUNT_TRANS): clean.
        d[log + 512 + 9] = 0x20;
        map(d.clone()).unwrap();
        // A torn write before the head (a block of the previous cycle): dirty.
        d[log + 1024..log + 1028].copy_from_slice(&1u32.to_be_bytes());
        d[log + 2048..log + 2052].copy_from_slice(&1u32.to_be_bytes());
        assert!(map(d.clone()).is_err());
        let mut d = tiny(&[(10, 5)], 5, 5);
        d[16..24].copy_from_slice(&8u64.to_be_bytes());
        assert!(map(d).unwrap_err().to_string().contains("realtime"));
        let mut d = tiny(&[(10, 5)], 5, 5);
        d[48..56].fill(0);
        assert!(map(d).unwrap_err().to_string().contains("external log"));
    }
}
