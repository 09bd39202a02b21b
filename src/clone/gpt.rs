//! Partition tables as the clone needs them: read a GPT or MBR from any [`BlockSource`] (the
//! partitions and the end of the last one, which decides the smallest usable target), and the
//! fix-up after copying onto a target of another size (backup GPT header and table at the real
//! end, primary header updated, CRCs, a protective MBR that matches), so `sgdisk -v` is clean.
use crate::error::{Error, Result};
use crate::fs::{le16, le32, le64};
use crate::io::{AlignedBuf, BlockSource, Device};
use serde::Serialize;

const GPT_SIG: &[u8; 8] = b"EFI PART";
/// Entry arrays larger than this are treated as corrupt (the standard is 128 x 128 = 16 KiB).
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// The kind of partition table found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
    None,
}

/// One partition, in logical sectors of the table's sector size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// 1-based slot number (GPT entry index + 1; MBR 1..4, logical partitions from 5).
    pub number: u32,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    /// GPT type GUID as text, or the MBR type byte as "0xNN".
    pub type_id: String,
    /// GPT partition name (empty for MBR).
    pub name: String,
}

/// The GPT header fields the fix-up needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    /// The raw header sector (size = sector size).
    pub raw: Vec<u8>,
}

impl GptHeader {
    /// Bytes of the partition entry array.
    pub fn entries_bytes(&self) -> u64 {
        self.num_entries as u64 * self.entry_size as u64
    }
}

/// A parsed partition table.
#[derive(Debug, Clone)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Sector size the table was found with (512 or 4096).
    pub sector_size: u32,
    pub partitions: Vec<Part>,
    /// The GPT header the table was read from (primary, or backup when the primary is damaged).
    pub gpt: Option<GptHeader>,
    /// Whether the primary GPT header was damaged and the backup was used.
    pub used_backup: bool,
}

impl PartitionTable {
    /// End of the last partition in bytes (0 when there are none).
    pub fn end_bytes(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| (p.last_lba + 1) * self.sector_size as u64)
            .max()
            .unwrap_or(0)
    }

    /// The smallest disk that holds every partition and, for a GPT, the backup table and header
    /// after the last one. None when there is no table (the whole source is needed then).
    pub fn min_disk_bytes(&self) -> Option<u64> {
        let ss = self.sector_size as u64;
        match self.kind {
            TableKind::None => None,
            TableKind::Mbr => Some(self.end_bytes().max(ss)),
            TableKind::Gpt => {
                let h = self.gpt.as_ref()?;
                let tail = h.entries_bytes().div_ceil(ss) * ss + ss;
                // At least the primary structures + backup when there are no partitions.
                let floor = (h.first_usable * ss).max(2 * ss) + tail;
                Some((self.end_bytes() + tail).max(floor))
            }
        }
    }
}

/// Reads `len` bytes at `offset` (multiples of the sector size) through an aligned buffer.
fn read_exact(src: &dyn BlockSource, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(len);
    let mut done = 0;
    while done < len {
        let n = src
            .read_at(&mut buf[done..], offset + done as u64)
            .map_err(|e| {
                Error::io("read the partition table of", src.name(), e)
                    .at_offset(offset + done as u64)
            })?;
        if n == 0 {
            return Err(Error::corrupt(format!(
                "{}: partition table extends past the end of the disk",
                src.name()
            ))
            .at_offset(offset));
        }
        done += n;
    }
    Ok(buf.to_vec())
}

fn guid_text(g: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Parses and checks a GPT header sector found at `lba`; None when it is not a valid header.
fn parse_header(sector: &[u8], lba: u64) -> Option<GptHeader> {
    if &sector[0..8] != GPT_SIG {
        return None;
    }
    let hsize = le32(sector, 12) as usize;
    if !(92..=sector.len()).contains(&hsize) {
        return None;
    }
    let mut h = sector[..hsize].to_vec();
    let crc = le32(&h, 16);
    h[16..20].fill(0);
    if crc32fast::hash(&h) != crc {
        return None;
    }
    let hdr = GptHeader {
        my_lba: le64(sector, 24),
        alternate_lba: le64(sector, 32),
        first_usable: le64(sector, 40),
        last_usable: le64(sector, 48),
        entries_lba: le64(sector, 72),
        num_entries: le32(sector, 80),
        entry_size: le32(sector, 84),
        entries_crc: le32(sector, 88),
        raw: sector.to_vec(),
    };
    let ok = hdr.my_lba == lba
        && hdr.entry_size >= 128
        && hdr.entry_size.is_multiple_of(8)
        && hdr.entries_bytes() <= MAX_ENTRY_BYTES
        && hdr.first_usable <= hdr.last_usable.saturating_add(1);
    ok.then_some(hdr)
}

fn read_entries(src: &dyn BlockSource, h: &GptHeader, ss: u64) -> Result<Option<Vec<u8>>> {
    let len = (h.entries_bytes().div_ceil(ss) * ss) as usize;
    let off = h
        .entries_lba
        .checked_mul(ss)
        .ok_or_else(|| Error::corrupt("GPT entry array offset overflows"))?;
    if off + len as u64 > src.size() {
        return Ok(None);
    }
    let e = read_exact(src, off, len)?;
    Ok((crc32fast::hash(&e[..h.entries_bytes() as usize]) == h.entries_crc).then_some(e))
}

fn parse_entries(h: &GptHeader, e: &[u8]) -> Vec<Part> {
    let mut v = Vec::new();
    for i in 0..h.num_entries as usize {
        let o = i * h.entry_size as usize;
        let ent = &e[o..o + 128];
        if ent[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(ent, 32), le64(ent, 40));
        if last < first {
            continue;
        }
        let name: Vec<u16> = (0..36)
            .map(|k| le16(ent, 56 + 2 * k))
            .take_while(|&c| c != 0)
            .collect();
        v.push(Part {
            number: i as u32 + 1,
            first_lba: first,
            last_lba: last,
            type_id: guid_text(&ent[0..16]),
            name: String::from_utf16_lossy(&name),
        });
    }
    v
}

/// Tries a GPT with sector size `ss`: the primary at LBA 1, else the backup at the last LBA
/// (or at the primary's alternate LBA). The backup is read only when the primary gives no
/// table: on a failing disk the last sector is often bad, and each failed read costs seconds.
fn read_gpt(src: &dyn BlockSource, ss: u64) -> Result<Option<PartitionTable>> {
    if src.size() < 3 * ss {
        return Ok(None);
    }
    let table = |h: GptHeader, e: &[u8], backup: bool| PartitionTable {
        kind: TableKind::Gpt,
        sector_size: ss as u32,
        partitions: parse_entries(&h, e),
        gpt: Some(h),
        used_backup: backup,
    };
    let primary = read_exact(src, ss, ss as usize)
        .ok()
        .and_then(|s| parse_header(&s, 1));
    if let Some(h) = &primary {
        if let Ok(Some(e)) = read_entries(src, h, ss) {
            return Ok(Some(table(h.clone(), &e, false)));
        }
    }
    let last = src.size() / ss - 1;
    let mut places = vec![last];
    // A clone onto a smaller disk keeps the source's alternate LBA: look there too.
    if let Some(h) = &primary {
        let alt = h.alternate_lba;
        if alt != last && alt != 1 && (alt + 1) * ss <= src.size() {
            places.push(alt);
        }
    }
    for lba in places {
        let Some(h) = read_exact(src, lba * ss, ss as usize)
            .ok()
            .and_then(|s| parse_header(&s, lba))
        else {
            continue;
        };
        if let Ok(Some(e)) = read_entries(src, &h, ss) {
            return Ok(Some(table(h, &e, true)));
        }
    }
    Ok(None)
}

/// MBR primary and logical partitions; the extended container itself is not a partition end
/// that matters beyond its logicals, but it is included (its end bounds them).
fn read_mbr(src: &dyn BlockSource, mbr: &[u8], ss: u64) -> Result<Option<PartitionTable>> {
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut extended: Option<(u64, u64)> = None;
    for i in 0..4 {
        let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        let (boot, ty) = (e[0], e[4]);
        if boot != 0 && boot != 0x80 {
            return Ok(None); // not an MBR (e.g. a FAT boot sector)
        }
        let (start, count) = (le32(e, 8) as u64, le32(e, 12) as u64);
        if ty == 0 || count == 0 {
            continue;
        }
        if ty == 0xEE {
            return Ok(None); // protective MBR without a valid GPT: no usable table
        }
        if matches!(ty, 0x05 | 0x0F | 0x85) {
            extended = Some((start, count));
        }
        parts.push(Part {
            number: i as u32 + 1,
            first_lba: start,
            last_lba: start + count - 1,
            type_id: format!("0x{ty:02X}"),
            name: String::new(),
        });
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if let Some((ext_start, ext_len)) = extended {
        let mut ebr_lba = ext_start;
        let mut number = 5;
        for _ in 0..128 {
            if ebr_lba >= ext_start + ext_len {
                break;
            }
            let Ok(ebr) = read_exact(src, ebr_lba * ss, ss as usize) else {
                break;
            };
            if ebr[510] != 0x55 || ebr[511] != 0xAA {
                break;
            }
            let e1 = &ebr[446..462];
            let (s1, c1) = (le32(e1, 8) as u64, le32(e1, 12) as u64);
            if e1[4] != 0 && c1 > 0 {
                let first = ebr_lba + s1;
                parts.push(Part {
                    number,
                    first_lba: first,
                    last_lba: first + c1 - 1,
                    type_id: format!("0x{:02X}", e1[4]),
                    name: String::new(),
                });
                number += 1;
            }
            let e2 = &ebr[462..478];
            let next = le32(e2, 8) as u64;
            if e2[4] == 0 || next == 0 {
                break;
            }
            ebr_lba = ext_start + next;
        }
    }
    Ok(Some(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: ss as u32,
        partitions: parts,
        gpt: None,
        used_backup: false,
    }))
}

/// Reads the partition table of `src`: GPT (primary, or backup when the primary is damaged)
/// with the source's logical sector size (and, for image files, 4096 as well), else MBR.
pub fn read(src: &dyn BlockSource) -> Result<PartitionTable> {
    let lbs = src.logical_block_size().max(512) as u64;
    let mut sizes = vec![lbs];
    if lbs == 512 {
        sizes.push(4096);
    }
    for &ss in &sizes {
        if let Some(t) = read_gpt(src, ss)? {
            return Ok(t);
        }
    }
    if src.size() >= lbs {
        if let Ok(mbr) = read_exact(src, 0, lbs as usize) {
            if let Some(t) = read_mbr(src, &mbr, lbs)? {
                return Ok(t);
            }
        }
    }
    Ok(PartitionTable {
        kind: TableKind::None,
        sector_size: lbs as u32,
        partitions: vec![],
        gpt: None,
        used_backup: false,
    })
}

/// What [`fix_after_copy`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixReport {
    /// Whether anything was written.
    pub fixed: bool,
    pub kind: TableKind,
    pub detail: String,
}

fn write_at(dev: &Device, buf: &[u8], off: u64) -> Result<()> {
    let mut a = AlignedBuf::new(buf.len());
    a.copy_from_slice(buf);
    dev.write_all_at(&a, off)
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Rewrites a header sector for `my`/`alt`/`entries` LBAs and `last_usable`, with a fresh CRC.
fn header_for(h: &GptHeader, my: u64, alt: u64, entries: u64, last_usable: u64) -> Vec<u8> {
    let mut s = h.raw.clone();
    put64(&mut s, 24, my);
    put64(&mut s, 32, alt);
    put64(&mut s, 48, last_usable);
    put64(&mut s, 72, entries);
    let hsize = le32(&s, 12) as usize;
    put32(&mut s, 16, 0);
    let crc = crc32fast::hash(&s[..hsize]);
    put32(&mut s, 16, crc);
    s
}

/// After a whole-disk copy onto `target` (of any size): when the copied table is a GPT whose
/// backup is not at the target's last sector, writes the backup entry array and header at the
/// real end, updates the primary header (alternate LBA, last usable LBA, CRC), erases the stale
/// backup header the copy left inside the disk, and resizes the protective MBR entry. An MBR
/// needs nothing (its partitions fit, which the safety check made sure of). Syncs the target.
pub fn fix_after_copy(target: &Device) -> Result<FixReport> {
    let t = read(target)?;
    let Some(h) = t.gpt.clone().filter(|_| t.kind == TableKind::Gpt) else {
        return Ok(FixReport {
            fixed: false,
            kind: t.kind,
            detail: "no GPT: nothing to fix".into(),
        });
    };
    let ss = t.sector_size as u64;
    let last = target.size() / ss - 1;
    // Primary header: the one at LBA 1 (re-derived from the backup if the primary was unreadable).
    let primary_at_1 = !t.used_backup;
    let entries = read_entries(target, &h, ss)?
        .ok_or_else(|| Error::corrupt("GPT entry array is damaged"))?;
    let ent_sectors = h.entries_bytes().div_ceil(ss);
    let backup_entries_lba = last - ent_sectors;
    let new_last_usable = backup_entries_lba - 1;
    let end_lba = t.partitions.iter().map(|p| p.last_lba).max().unwrap_or(0);
    if end_lba > new_last_usable {
        return Err(Error::refused(format!(
            "the target is too small for the GPT: the last partition ends at sector {end_lba}, the backup table needs sectors {backup_entries_lba}..{last}"
        )));
    }
    // Where the primary header keeps things, as read.
    let (p_alt, p_last_usable) = if primary_at_1 {
        (h.alternate_lba, h.last_usable)
    } else {
        (u64::MAX, u64::MAX)
    };
    let backup_ok = read_exact(target, last * ss, ss as usize)
        .ok()
        .and_then(|s| parse_header(&s, last))
        .is_some_and(|b| b.last_usable == new_last_usable);
    if primary_at_1
        && p_alt == last
        && p_last_usable == new_last_usable
        && backup_ok
        && pmbr_ok(target, ss, last)?
    {
        return Ok(FixReport {
            fixed: false,
            kind: TableKind::Gpt,
            detail: "GPT already matches the disk size".into(),
        });
    }
    let old_alt = h.alternate_lba;
    let primary_entries_lba = if primary_at_1 { h.entries_lba } else { 2 };
    let primary = header_for(&h, 1, last, primary_entries_lba, new_last_usable);
    let backup = header_for(&h, last, 1, backup_entries_lba, new_last_usable);
    let ent = &entries[..(ent_sectors * ss) as usize];
    write_at(target, ent, backup_entries_lba * ss)?;
    write_at(target, &backup, last * ss)?;
    if !primary_at_1 {
        write_at(target, ent, primary_entries_lba * ss)?;
    }
    write_at(target, &primary, ss)?;
    // The old backup header (copied from the source's end) now lies inside the disk: erase it,
    // unless it is where a current structure lives. It lies past the old last usable LBA, so no
    // partition data is there.
    if old_alt != last && old_alt > 1 && old_alt < backup_entries_lba && old_alt > end_lba {
        write_at(target, &vec![0u8; ss as usize], old_alt * ss)?;
    }
    fix_pmbr(target, ss, last)?;
    target.sync()?;
    Ok(FixReport {
        fixed: true,
        kind: TableKind::Gpt,
        detail: format!("GPT backup moved from sector {old_alt} to {last}; last usable sector {new_last_usable}"),
    })
}

fn pmbr_entry(target: &Device, ss: u64) -> Result<(Vec<u8>, Option<usize>)> {
    let mbr = read_exact(target, 0, ss as usize)?;
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Ok((mbr, None));
    }
    let slot = (0..4).find(|i| mbr[446 + 16 * i + 4] == 0xEE);
    Ok((mbr, slot))
}

fn pmbr_size(last: u64) -> u32 {
    last.min(0xFFFF_FFFF) as u32
}

fn pmbr_ok(target: &Device, ss: u64, last: u64) -> Result<bool> {
    let (mbr, slot) = pmbr_entry(target, ss)?;
    Ok(match slot {
        Some(i) => le32(&mbr, 446 + 16 * i + 12) == pmbr_size(last),
        None => true,
    })
}

/// Sets the protective (0xEE) entry to cover the disk from LBA 1 to the end (capped at 2^32-1).
/// A hybrid MBR (other entries beside 0xEE) keeps its 0xEE entry's start and only gets its size
/// recomputed when it covered the whole old disk.
fn fix_pmbr(target: &Device, ss: u64, last: u64) -> Result<()> {
    let (mut mbr, slot) = pmbr_entry(target, ss)?;
    let Some(i) = slot else { return Ok(()) };
    let o = 446 + 16 * i;
    let start = le32(&mbr, o + 8) as u64;
    let hybrid = (0..4).any(|k| k != i && mbr[446 + 16 * k + 4] != 0);
    let size = if hybrid {
        (last + 1).saturating_sub(start).min(0xFFFF_FFFF) as u32
    } else {
        pmbr_size(last)
    };
    put32(&mut mbr, o + 12, size);
    // CHS end: the 0xFFFFFF "beyond CHS" marker, as sgdisk writes.
    if !hybrid {
        mbr[o + 5..o + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    }
    write_at(target, &mbr, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal in-memory source.
    struct Mem(Vec<u8>, u32);
    impl BlockSource for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn logical_block_size(&self) -> u32 {
            self.1
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
            let o = off as usize;
            let n = buf.len().min(self.0.len().saturating_sub(o));
            buf[..n].copy_from_slice(&self.0[o..o + n]);
            Ok(n)
        }
        fn name(&self) -> String {
            "mem".into()
        }
    }

    #[test]
    fn mbr_with_logical_partitions() {
        let mut d = vec![0u8; 4 << 20];
        d[510] = 0x55;
        d[511] = 0xAA;
        let put = |d: &mut Vec<u8>, base: usize, slot: usize, ty: u8, start: u32, count: u32| {
            let o = base + 446 + 16 * slot;
            d[o + 4] = ty;
            d[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
            d[o + 12..o + 16].copy_from_slice(&count.to_le_bytes());
        };
        put(&mut d, 0, 0, 0x83, 2048, 2048);
        put(&mut d, 0, 1, 0x05, 4096, 4096);
        // EBR at 4096: logical 1 at +1 len 100, next EBR at +2048.
        let e = 4096 * 512;
        d[e + 510] = 0x55;
        d[e + 511] = 0xAA;
        put(&mut d, e, 0, 0x83, 1, 100);
        put(&mut d, e, 1, 0x05, 2048, 1000);
        let e2 = (4096 + 2048) * 512;
        d[e2 + 510] = 0x55;
        d[e2 + 511] = 0xAA;
        put(&mut d, e2, 0, 0x83, 1, 999);
        let t = read(&Mem(d, 512)).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.partitions.len(), 4);
        assert_eq!(t.partitions[3].number, 6);
        assert_eq!(t.partitions[3].last_lba, 4096 + 2048 + 999);
        assert_eq!(t.end_bytes(), (4096 + 4096) * 512);
    }

    #[test]
    fn no_table_and_garbage() {
        let t = read(&Mem(vec![0u8; 1 << 20], 512)).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(t.min_disk_bytes(), None);
        let mut g = vec![0u8; 1 << 20];
        g[512..520].copy_from_slice(GPT_SIG);
        g[524] = 0xFF; // absurd header size
        let t = read(&Mem(g, 512)).unwrap();
        assert_eq!(t.kind, TableKind::None);
    }
}
