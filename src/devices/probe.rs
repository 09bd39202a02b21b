//! Content probing: which filesystem a partition holds (from the filesystem's own superblock,
//! with its label and UUID formatted the way `blkid` prints them) and which partition table a
//! disk carries (GPT, MBR or none). Reads a bounded prefix of the device, exactly the sectors
//! looked at (O_DIRECT where the device allows it: no kernel read-ahead); never writes.
use crate::fs::{le16, le32, le64, Region};
use crate::io::{Access, BlockSource, Device};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a superblock says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    /// blkid's TYPE: "ext4", "vfat", "exfat", "ntfs", "btrfs", "xfs", "swap", "crypto_LUKS", ...
    pub fs_type: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

/// Bytes read from the start of a device for probing: covers the btrfs superblock at 64 KiB,
/// the ISO 9660 volume descriptor at 32 KiB and swap signatures for pages up to 64 KiB.
const PROBE_LEN: usize = 0x11000;
/// Upper bound on what is read from a directory (FAT/exFAT root) when looking for a label.
const DIR_READ_MAX: usize = 64 * 1024;

/// Positional reads on a device or file with short reads tolerated (a small device or image).
pub(crate) trait ReadAt {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        if off >= self.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.len() - off);
        buf[..n].copy_from_slice(&self[off..off + n]);
        Ok(n)
    }
}

/// Reads `len` bytes at `off`; missing bytes past the end are zero.
fn read_vec(r: &(impl ReadAt + ?Sized), off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    r.read_at(&mut v, off)?;
    Ok(v)
}

fn at(b: &[u8], o: usize, n: usize) -> &[u8] {
    b.get(o..o + n).unwrap_or(&[])
}

/// 16 raw bytes as 8-4-4-4-12 lowercase hex, bytes in on-disk order (ext, xfs, btrfs, swap;
/// md and APFS in `layers`, blkid's format); None when all zero.
pub(crate) fn uuid_raw(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// A Microsoft-style GUID (first three fields little-endian), as in GPT headers and entries.
pub(crate) fn guid_le(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let mut r = [0u8; 16];
    r.copy_from_slice(b);
    r[0..4].reverse();
    r[4..6].reverse();
    r[6..8].reverse();
    uuid_raw(&r)
}

/// A NUL/space padded 8-bit label; None when empty.
fn label_bytes(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]);
    let s = s.trim_end_matches([' ', '\0']).to_string();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// A UTF-16LE label of `units` code units; None when empty.
fn label_utf16(b: &[u8], units: usize) -> Option<String> {
    let v: Vec<u16> = b
        .chunks_exact(2)
        .take(units)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    let s = String::from_utf16_lossy(&v[..end]).trim_end().to_string();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Probes the filesystem on `dev` (a block device or an image file). None when nothing known
/// is found or the device cannot be read. Read with O_DIRECT where the device allows it
/// ([`Device`]), exactly the sectors the probe looks at: buffered reads would let the kernel
/// read ahead, and on a failing disk read sectors nobody asked for.
pub fn probe_fs(dev: &Path) -> Option<FsInfo> {
    let d = Device::open(dev, Access::Read).ok()?;
    probe_reader(&Region::new(&d, 0, d.size()))
}

/// Probes any positional reader (a device, a file, or a byte slice in tests).
pub(crate) fn probe_reader(r: &(impl ReadAt + ?Sized)) -> Option<FsInfo> {
    let head = read_vec(r, 0, PROBE_LEN).ok()?;
    // Order matters: signatures that are unambiguous first, FAT (the weakest check) last.
    probe_luks(&head)
        .or_else(|| probe_xfs(&head))
        .or_else(|| probe_btrfs(&head))
        .or_else(|| probe_ext(&head))
        .or_else(|| probe_swap(&head))
        .or_else(|| probe_lvm(&head))
        .or_else(|| probe_exfat(r, &head))
        .or_else(|| probe_ntfs(r, &head))
        .or_else(|| probe_iso9660(&head))
        .or_else(|| probe_fat(r, &head))
}

fn probe_luks(b: &[u8]) -> Option<FsInfo> {
    if at(b, 0, 6) != b"LUKS\xba\xbe" {
        return None;
    }
    let version = u16::from_be_bytes([b[6], b[7]]);
    // LUKS1 and LUKS2 both keep the UUID string at 168; LUKS2 has a label at 24.
    let uuid = label_bytes(at(b, 168, 40));
    let label = if version == 2 {
        label_bytes(at(b, 24, 48))
    } else {
        None
    };
    Some(FsInfo {
        fs_type: "crypto_LUKS".into(),
        label,
        uuid,
    })
}

fn probe_xfs(b: &[u8]) -> Option<FsInfo> {
    if at(b, 0, 4) != b"XFSB" {
        return None;
    }
    Some(FsInfo {
        fs_type: "xfs".into(),
        label: label_bytes(at(b, 108, 12)),
        uuid: uuid_raw(at(b, 32, 16)),
    })
}

fn probe_btrfs(b: &[u8]) -> Option<FsInfo> {
    const SB: usize = 0x10000;
    if at(b, SB + 0x40, 8) != b"_BHRfS_M" {
        return None;
    }
    Some(FsInfo {
        fs_type: "btrfs".into(),
        label: label_bytes(at(b, SB + 0x12b, 256)),
        uuid: uuid_raw(at(b, SB + 0x20, 16)),
    })
}

fn probe_ext(b: &[u8]) -> Option<FsInfo> {
    let sb = at(b, 1024, 1024);
    if le16(sb, 0x38) != 0xEF53 {
        return None;
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    // What ext3 understands (FILETYPE | RECOVER | META_BG; SPARSE_SUPER | LARGE_FILE | BTREE_DIR):
    // anything beyond that (extents, 64bit, flex_bg, huge_file, dir_nlink, metadata_csum...) is ext4.
    const EXT3_INCOMPAT_SUPP: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT_SUPP: u32 = 0x1 | 0x2 | 0x4;
    let fs_type = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if incompat & !EXT3_INCOMPAT_SUPP != 0 || ro_compat & !EXT3_RO_COMPAT_SUPP != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(FsInfo {
        fs_type: fs_type.into(),
        label: label_bytes(at(sb, 0x78, 16)),
        uuid: uuid_raw(at(sb, 0x68, 16)),
    })
}

fn probe_swap(b: &[u8]) -> Option<FsInfo> {
    for page in [4096usize, 8192, 16384, 65536] {
        let sig = at(b, page - 10, 10);
        if sig == b"SWAPSPACE2" {
            return Some(FsInfo {
                fs_type: "swap".into(),
                label: label_bytes(at(b, 1052, 16)),
                uuid: uuid_raw(at(b, 1036, 16)),
            });
        }
        if sig == b"SWAP-SPACE" {
            return Some(FsInfo {
                fs_type: "swap".into(),
                label: None,
                uuid: None,
            });
        }
    }
    None
}

fn probe_lvm(b: &[u8]) -> Option<FsInfo> {
    // The label may sit in any of the first four sectors.
    for s in 0..4usize {
        let l = at(b, s * 512, 512);
        if at(l, 0, 8) == b"LABELONE" && at(l, 24, 8) == b"LVM2 001" {
            let off = le32(l, 20) as usize;
            let id = at(l, off, 32);
            let id = String::from_utf8_lossy(id).to_string();
            let uuid = if id.len() == 32 {
                // blkid groups the 32 characters 6-4-4-4-4-4-6.
                let g = [6, 4, 4, 4, 4, 4, 6];
                let mut parts = Vec::new();
                let mut i = 0;
                for n in g {
                    parts.push(&id[i..i + n]);
                    i += n;
                }
                Some(parts.join("-"))
            } else {
                None
            };
            return Some(FsInfo {
                fs_type: "LVM2_member".into(),
                label: None,
                uuid,
            });
        }
    }
    None
}

/// "XXXX-XXXX" from a 32-bit volume serial (FAT, exFAT).
fn serial32(v: u32) -> Option<String> {
    Some(format!("{:04X}-{:04X}", v >> 16, v & 0xffff))
}

fn probe_exfat(r: &(impl ReadAt + ?Sized), b: &[u8]) -> Option<FsInfo> {
    if at(b, 3, 8) != b"EXFAT   " {
        return None;
    }
    let uuid = serial32(le32(b, 100));
    let bps_shift = u32::from(*b.get(108)?);
    let spc_shift = u32::from(*b.get(109)?);
    let heap = u64::from(le32(b, 88));
    let root = u64::from(le32(b, 96));
    let mut label = None;
    if (9..=12).contains(&bps_shift) && bps_shift + spc_shift <= 25 && root >= 2 {
        let cluster = 1usize << (bps_shift + spc_shift);
        let off = (heap << bps_shift) + ((root - 2) << (bps_shift + spc_shift));
        if let Ok(dir) = read_vec(r, off, cluster.min(DIR_READ_MAX)) {
            for e in dir.chunks_exact(32) {
                match e[0] {
                    0x00 => break,
                    0x83 => {
                        let n = usize::from(e[1]).min(11);
                        label = label_utf16(&e[2..2 + 2 * n], n);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    Some(FsInfo {
        fs_type: "exfat".into(),
        label,
        uuid,
    })
}

fn probe_ntfs(r: &(impl ReadAt + ?Sized), b: &[u8]) -> Option<FsInfo> {
    if at(b, 3, 8) != b"NTFS    " {
        return None;
    }
    let uuid = Some(format!("{:016X}", le64(b, 0x48)));
    let label = ntfs_label(r, b);
    Some(FsInfo {
        fs_type: "ntfs".into(),
        label,
        uuid,
    })
}

/// The volume name: the $VOLUME_NAME attribute of MFT record 3 ($Volume).
fn ntfs_label(r: &(impl ReadAt + ?Sized), b: &[u8]) -> Option<String> {
    let bps = u64::from(le16(b, 11));
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
        return None;
    }
    let spc_raw = *b.get(13)?;
    let spc = if spc_raw > 0x80 {
        1u64 << (256 - u32::from(spc_raw)).min(31)
    } else {
        u64::from(spc_raw)
    };
    let cluster = bps * spc;
    let cpr = *b.get(0x40)? as i8;
    let rec_size = if cpr < 0 {
        1u64 << (-i32::from(cpr)).min(20)
    } else {
        u64::from(cpr as u8) * cluster
    };
    if !(512..=65536).contains(&rec_size) {
        return None;
    }
    let mft = le64(b, 0x30).checked_mul(cluster)?;
    let mut rec = read_vec(r, mft.checked_add(3 * rec_size)?, rec_size as usize).ok()?;
    if at(&rec, 0, 4) != b"FILE" {
        return None;
    }
    // Undo the update sequence: the last two bytes of each sector are stored in the array.
    let usa_ofs = usize::from(le16(&rec, 4));
    let usa_cnt = usize::from(le16(&rec, 6));
    for i in 1..usa_cnt {
        let end = i * bps as usize;
        let src = usa_ofs + 2 * i;
        if end > rec.len() || src + 2 > rec.len() {
            break;
        }
        let v = [rec[src], rec[src + 1]];
        rec[end - 2..end].copy_from_slice(&v);
    }
    let mut off = usize::from(le16(&rec, 0x14));
    while off + 24 <= rec.len() {
        let ty = le32(&rec, off);
        let len = le32(&rec, off + 4) as usize;
        if ty == 0xFFFF_FFFF || len == 0 {
            break;
        }
        if ty == 0x60 && rec.get(off + 8) == Some(&0) {
            let vlen = le32(&rec, off + 0x10) as usize;
            let voff = usize::from(le16(&rec, off + 0x14));
            let v = at(&rec, off + voff, vlen);
            return label_utf16(v, vlen / 2);
        }
        off += len;
    }
    None
}

fn probe_iso9660(b: &[u8]) -> Option<FsInfo> {
    let pvd = at(b, 0x8000, 2048);
    if at(pvd, 1, 5) != b"CD001" || pvd.first() != Some(&1) {
        return None;
    }
    let label = label_bytes(at(pvd, 40, 32));
    // blkid's UUID for ISO 9660 is the creation time (or modification time) "YYYY-MM-DD-HH-MM-SS-CC".
    let date = |o: usize| {
        let d = at(pvd, o, 16);
        if d.iter().all(|c| c.is_ascii_digit()) && d.iter().any(|&c| c != b'0') {
            let s = String::from_utf8_lossy(d).to_string();
            Some(format!(
                "{}-{}-{}-{}-{}-{}-{}",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[8..10],
                &s[10..12],
                &s[12..14],
                &s[14..16]
            ))
        } else {
            None
        }
    };
    let uuid = date(830).or_else(|| date(813));
    Some(FsInfo {
        fs_type: "iso9660".into(),
        label,
        uuid,
    })
}

/// Whether a boot sector has the shape of a FAT BIOS parameter block.
fn fat_bpb_ok(b: &[u8]) -> bool {
    let bps = le16(b, 11);
    let spc = b.get(13).copied().unwrap_or(0);
    let reserved = le16(b, 14);
    let nfats = b.get(16).copied().unwrap_or(0);
    let media = b.get(21).copied().unwrap_or(0);
    let magic =
        at(b, 0x36, 3) == b"FAT" || at(b, 0x52, 5) == b"FAT32" || at(b, 0x36, 5) == b"MSWIN";
    (512..=4096).contains(&bps)
        && bps.is_power_of_two()
        && spc != 0
        && spc.is_power_of_two()
        && reserved != 0
        && (1..=4).contains(&nfats)
        && (media == 0xF0 || media >= 0xF8)
        && magic
}

fn probe_fat(r: &(impl ReadAt + ?Sized), b: &[u8]) -> Option<FsInfo> {
    if !fat_bpb_ok(b) {
        return None;
    }
    let bps = u64::from(le16(b, 11));
    let spc = u64::from(b[13]);
    let reserved = u64::from(le16(b, 14));
    let nfats = u64::from(b[16]);
    let root_entries = u64::from(le16(b, 17));
    let fat16_size = u64::from(le16(b, 22));
    let fat32 = fat16_size == 0;
    let (serial_off, label_off) = if fat32 { (0x43, 0x47) } else { (0x27, 0x2B) };
    // The extended boot signature (0x28/0x29) says whether serial and label are present.
    let sig = b.get(if fat32 { 0x42 } else { 0x26 }).copied().unwrap_or(0);
    let ext = sig == 0x29 || sig == 0x28;
    let uuid = if ext {
        serial32(le32(b, serial_off))
    } else {
        None
    };
    let bs_label = if sig == 0x29 {
        label_bytes(at(b, label_off, 11)).filter(|l| l != "NO NAME")
    } else {
        None
    };
    // blkid prefers the volume-label entry of the root directory over the boot sector copy.
    let root_dir = if fat32 {
        let fat_size = u64::from(le32(b, 0x24));
        let root_cluster = u64::from(le32(b, 0x2C));
        let data = reserved + nfats * fat_size;
        root_cluster
            .checked_sub(2)
            .map(|c| ((data + c * spc) * bps, (spc * bps) as usize))
    } else {
        Some((
            (reserved + nfats * fat16_size) * bps,
            (root_entries * 32) as usize,
        ))
    };
    let mut dir_label = None;
    if let Some((off, len)) = root_dir {
        if let Ok(dir) = read_vec(r, off, len.min(DIR_READ_MAX)) {
            for e in dir.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                // A volume label entry: attribute 0x08 and not a long-name entry (0x0F), not deleted.
                if e[0] != 0xE5 && e[11] & 0x08 != 0 && e[11] & 0x0F != 0x0F {
                    let mut raw = e[0..11].to_vec();
                    if raw[0] == 0x05 {
                        raw[0] = 0xE5;
                    }
                    dir_label = label_bytes(&raw);
                    break;
                }
            }
        }
    }
    Some(FsInfo {
        fs_type: "vfat".into(),
        label: dir_label.or(bs_label),
        uuid,
    })
}

/// What the first sectors of a disk say about its partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// "gpt", "mbr" or "none".
    pub kind: &'static str,
    /// GPT disk GUID or the MBR disk signature ("xxxxxxxx"), as blkid's PTUUID.
    pub uuid: Option<String>,
}

/// Reads LBA 0 and 1 of a disk and classifies its partition table (exactly those sectors,
/// with O_DIRECT where possible, as [`probe_fs`]).
pub fn probe_table(dev: &Path, logical_block_size: u32) -> Option<TableInfo> {
    let d = Device::open(dev, Access::Read).ok()?;
    probe_table_reader(&Region::new(&d, 0, d.size()), logical_block_size)
}

pub(crate) fn probe_table_reader(r: &(impl ReadAt + ?Sized), lbs: u32) -> Option<TableInfo> {
    let lbs = if (512..=65536).contains(&lbs) && lbs.is_power_of_two() {
        lbs as usize
    } else {
        512
    };
    let head = read_vec(r, 0, 2 * lbs).ok()?;
    Some(classify_table(&head, lbs))
}

fn classify_table(head: &[u8], lbs: usize) -> TableInfo {
    let none = TableInfo {
        kind: "none",
        uuid: None,
    };
    if le16(head, 510) != 0xAA55 {
        return none;
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| at(head, 446 + 16 * i, 16)).collect();
    let protective = entries.iter().any(|e| e.get(4) == Some(&0xEE));
    if protective && at(head, lbs, 8) == b"EFI PART" {
        return TableInfo {
            kind: "gpt",
            uuid: guid_le(at(head, lbs + 56, 16)),
        };
    }
    if protective {
        // A protective MBR without a GPT header where we expect it: damaged or a different
        // sector size; report as no usable table rather than a one-partition MBR.
        return none;
    }
    // A FAT/NTFS/exFAT boot sector also ends in 55AA: a filesystem on the whole disk is not an MBR.
    if fat_bpb_ok(head) || at(head, 3, 8) == b"NTFS    " || at(head, 3, 8) == b"EXFAT   " {
        return none;
    }
    let mut used = 0;
    for e in &entries {
        let boot = e.first().copied().unwrap_or(0xFF);
        if boot != 0 && boot != 0x80 {
            return none;
        }
        let ty = e.get(4).copied().unwrap_or(0);
        if ty != 0 {
            if le32(e, 8) == 0 || le32(e, 12) == 0 {
                return none;
            }
            used += 1;
        }
    }
    if used == 0 {
        return none;
    }
    let sig = le32(head, 440);
    TableInfo {
        kind: "mbr",
        uuid: if sig != 0 {
            Some(format!("{sig:08x}"))
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], o: usize, v: &[u8]) {
        b[o..o + v.len()].copy_from_slice(v);
    }

    #[test]
    fn ext_kinds_by_features() {
        let mut img = vec![0u8; 4096];
        put(&mut img, 1024 + 0x38, &0xEF53u16.to_le_bytes());
        put(
            &mut img,
            1024 + 0x68,
            &[
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
            ],
        );
        put(&mut img, 1024 + 0x78, b"root");
        let fs = probe_reader(&img[..]).unwrap();
        assert_eq!(fs.fs_type, "ext2");
        assert_eq!(fs.label.as_deref(), Some("root"));
        assert_eq!(
            fs.uuid.as_deref(),
            Some("12345678-9abc-def0-0102-030405060708")
        );
        put(&mut img, 1024 + 0x5C, &4u32.to_le_bytes());
        assert_eq!(probe_reader(&img[..]).unwrap().fs_type, "ext3");
        put(&mut img, 1024 + 0x60, &0x40u32.to_le_bytes()); // extents
        assert_eq!(probe_reader(&img[..]).unwrap().fs_type, "ext4");
    }

    #[test]
    fn luks_header_by_hand() {
        let mut img = vec![0u8; 4096];
        put(&mut img, 0, b"LUKS\xba\xbe\x00\x02");
        put(&mut img, 24, b"vault");
        put(&mut img, 168, b"0b7f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
        let fs = probe_reader(&img[..]).unwrap();
        assert_eq!(fs.fs_type, "crypto_LUKS");
        assert_eq!(fs.label.as_deref(), Some("vault"));
        assert_eq!(
            fs.uuid.as_deref(),
            Some("0b7f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
        );
        put(&mut img, 6, &[0, 1]);
        assert_eq!(probe_reader(&img[..]).unwrap().label, None);
    }

    #[test]
    fn zeros_are_nothing() {
        assert_eq!(probe_reader(&vec![0u8; 100_000][..]), None);
        assert_eq!(probe_reader(&[][..]), None);
        assert_eq!(
            probe_table_reader(&vec![0u8; 1024][..], 512).unwrap().kind,
            "none"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random sectors with each signature planted: no panic, any answer.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..200 {
            let mut img = vec![0u8; PROBE_LEN];
            for b in img.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            match round % 6 {
                0 => put(&mut img, 3, b"NTFS    "),
                1 => put(&mut img, 3, b"EXFAT   "),
                2 => {
                    put(&mut img, 11, &512u16.to_le_bytes());
                    img[13] = 4;
                    img[16] = 2;
                    img[21] = 0xF8;
                    put(&mut img, 0x36, b"FAT");
                }
                3 => put(&mut img, 0, b"LABELONE"),
                4 => put(&mut img, 510, &[0x55, 0xAA]),
                _ => put(&mut img, 0x8001, b"CD001"),
            }
            let _ = probe_reader(&img[..]);
            let _ = probe_table_reader(&img[..], 512);
            let _ = probe_table_reader(&img[..], 4096);
        }
    }

    #[test]
    fn mbr_gpt_and_superfloppy() {
        let mut s = vec![0u8; 1024];
        put(&mut s, 510, &[0x55, 0xAA]);
        put(&mut s, 440, &0xdeadbeefu32.to_le_bytes());
        // One Linux partition at 2048, 4096 sectors.
        let e = 446;
        s[e + 4] = 0x83;
        put(&mut s, e + 8, &2048u32.to_le_bytes());
        put(&mut s, e + 12, &4096u32.to_le_bytes());
        let t = classify_table(&s, 512);
        assert_eq!(
            t,
            TableInfo {
                kind: "mbr",
                uuid: Some("deadbeef".into())
            }
        );
        // Protective entry and a GPT header at LBA 1.
        s[e + 4] = 0xEE;
        put(&mut s, 512, b"EFI PART");
        let g = [
            0x78u8, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        put(&mut s, 512 + 56, &g);
        let t = classify_table(&s, 512);
        assert_eq!(t.kind, "gpt");
        assert_eq!(
            t.uuid.as_deref(),
            Some("12345678-9abc-def0-0102-030405060708")
        );
        // With 4096-byte sectors the header is not at 512: no table.
        assert_eq!(classify_table(&s, 4096).kind, "none");
        // A bad boot flag is not an MBR.
        s[e + 4] = 0x83;
        s[e] = 0x12;
        assert_eq!(classify_table(&s, 512).kind, "none");
    }
}
