//! Layered storage named for what it is: a disk or partition that is not a filesystem but a
//! layer under one — an LVM physical volume, a Linux RAID (md) or Intel RST (IMSM) member, a
//! LUKS or BitLocker container, a ZFS pool member, an Apple APFS container, a Windows Storage
//! Spaces member or a dynamic (LDM) disk. Each is found from its own on-disk signature (or, for
//! Storage Spaces and dynamic disks, the partition type), named the way blkid names it
//! (`fs_type`), given a [`Role`] and a note saying what Lifeboat does with it. Lifeboat never
//! assembles, unlocks or imports any of them: clone and image copy them sector by sector
//! ([`Layer::reason`] is the all-sectors reason `fs` reports).
//!
//! Where the signatures sit (offsets from the start of the device or partition):
//! md 1.1 at 0, 1.2 at 4 KiB, 1.0 at `(size - 8 KiB)` rounded down to 4 KiB, 0.90 in the last
//! 64 KiB-aligned 64 KiB; IMSM's anchor two sectors before the end of the whole disk; LUKS and
//! BitLocker (`-FVE-FS-`) in the first sector; LVM's `LABELONE` in one of the first four
//! sectors; ZFS's first vdev label at 0 with its XDR name/value list at 16 KiB; APFS's `NXSB`
//! container superblock in block 0. Apart from the md places and IMSM's anchor at the end, all
//! of it lies in the first 68 KiB the filesystem probe reads (through the same `fs::Region`,
//! which keeps what it read), so naming a layer costs a few sectors at the end, no more.
use super::probe::{uuid_raw, ReadAt};
use super::{Disk, Partition};
use crate::fs::{le32, le64};
use serde::{Deserialize, Serialize};

/// What a layered device is, as `list --json` reports it (`role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    LvmPhysicalVolume,
    MdRaidMember,
    ImsmRaidMember,
    LuksContainer,
    BitlockerVolume,
    ZfsMember,
    ApfsContainer,
    StorageSpacesMember,
    DynamicDisk,
}

impl Role {
    /// The short all-sectors reason clone and image report for a partition of this kind.
    pub fn reason(self) -> &'static str {
        match self {
            Role::LvmPhysicalVolume => "LVM physical volume: its extents belong to volume groups",
            Role::MdRaidMember => "Linux RAID member: its blocks belong to an array",
            Role::ImsmRaidMember => "Intel RST (IMSM) RAID member: its blocks belong to an array",
            Role::LuksContainer => "LUKS-encrypted: which blocks are used is not visible",
            Role::BitlockerVolume => "BitLocker-encrypted: which blocks are used is not visible",
            Role::ZfsMember => "ZFS pool member: its blocks belong to a pool",
            Role::ApfsContainer => "Apple APFS container: which blocks are used is not visible",
            Role::StorageSpacesMember => "Windows dynamic disk or Storage Spaces member",
            Role::DynamicDisk => "Windows dynamic disk or Storage Spaces member",
        }
    }

    /// One short line for the console's Disks screen (≤ 60 columns).
    pub fn hint(self) -> &'static str {
        match self {
            Role::LvmPhysicalVolume => "LVM PV: copied whole; clone every PV of its group",
            Role::MdRaidMember => "RAID member: copied whole; clone every member",
            Role::ImsmRaidMember => "Intel RST RAID member: copied whole; clone every member",
            Role::LuksContainer => "LUKS encrypted: copied whole, cannot see inside",
            Role::BitlockerVolume => "BitLocker: copied whole; recovery key needed on a new PC",
            Role::ZfsMember => "ZFS member: copied whole; clone every disk of the pool",
            Role::ApfsContainer => "APFS container: copied whole, cannot see inside",
            Role::StorageSpacesMember => "Storage Spaces: copied whole; clone every pool disk",
            Role::DynamicDisk => "dynamic disk: copied whole; clone every disk it spans",
        }
    }
}

/// A layer found on a disk or partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub role: Role,
    /// blkid's TYPE when the layer has one ("linux_raid_member", "isw_raid_member",
    /// "crypto_LUKS", "BitLocker", "LVM2_member", "zfs_member", "apfs"); None for Storage
    /// Spaces and dynamic disks, which are known by their partition type.
    pub fs_type: Option<String>,
    /// blkid's LABEL (md array name, ZFS pool name) when the layer carries one.
    pub label: Option<String>,
    /// blkid's UUID (md array UUID, ZFS pool GUID, APFS container UUID) when read here.
    pub uuid: Option<String>,
    /// What it is and what Lifeboat does with it, for a person.
    pub note: String,
}

impl Layer {
    /// The all-sectors reason clone and image report.
    pub fn reason(&self) -> String {
        self.role.reason().to_string()
    }
}

/// GPT type GUIDs and MBR types that name a layer by themselves.
pub const RAID_GUID: &str = "A19D880F-05FC-4D3B-A006-743F0F84911E";
pub const LDM_METADATA_GUID: &str = "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3";
pub const LDM_DATA_GUID: &str = "AF9B60A0-1431-4F62-BC68-3311714A69AD";
pub const SPACES_GUID: &str = "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D";

const MD_MAGIC: u32 = 0xa92b_4efc;
const IMSM_SIG: &[u8] = b"Intel Raid ISM Cfg Sig. ";

/// Reads exactly `len` bytes at `off`, None when they cannot all be read.
fn get(r: &(impl ReadAt + ?Sized), off: u64, len: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; len];
    match r.read_at(&mut v, off) {
        Ok(n) if n == len => Some(v),
        _ => None,
    }
}

fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Text up to the first NUL, trimmed; None when empty or not printable.
fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_string();
    if s.is_empty() || s.chars().any(|c| c.is_control()) {
        None
    } else {
        Some(s)
    }
}

/// Finds the layer of a partition, or of a whole disk without a partition table. `type_id` is
/// the partition's type as `clone::gpt` spells it (an upper-case GUID or "0x42"), "" for none.
/// Reads the first 24 KiB (which the filesystem probe has read already: `fs::Region` keeps it)
/// and the md superblock places at the end.
pub(crate) fn detect(r: &(impl ReadAt + ?Sized), len: u64, type_id: &str) -> Option<Layer> {
    luks(r)
        .or_else(|| bitlocker(r))
        .or_else(|| lvm(r))
        .or_else(|| apfs(r))
        .or_else(|| md(r, len, None))
        .or_else(|| zfs(r, len))
        .or_else(|| by_type(type_id))
}

/// Finds a layer that owns a whole disk: an IMSM member (any partition table seen is the RAID
/// volume's, through its first member), or, with `parts` (the partitions' byte ranges of the
/// table the disk shows), a whole-disk md member with its superblock at the end (RAID-1,
/// metadata 1.0 or 0.90) outside every partition. Reads at most four sectors at the end.
pub(crate) fn detect_disk(
    r: &(impl ReadAt + ?Sized),
    len: u64,
    parts: Option<&[(u64, u64)]>,
) -> Option<Layer> {
    imsm(r, len).or_else(|| parts.and_then(|p| md(r, len, Some(p))))
}

/// Linux RAID (md) superblocks 0.90, 1.0, 1.1 and 1.2. With `whole_disk_parts` (a whole disk
/// showing a partition table), only the places at the end that lie outside every partition are
/// read (1.1 and 1.2 would overlap the table), and a 1.x superblock must say it is there (its
/// `super_offset`).
fn md(
    r: &(impl ReadAt + ?Sized),
    len: u64,
    whole_disk_parts: Option<&[(u64, u64)]>,
) -> Option<Layer> {
    let mut places: Vec<(u64, &str)> = Vec::new();
    if whole_disk_parts.is_none() {
        places.extend([(0, "1.1"), (4096, "1.2")]);
    }
    if len >= 128 << 10 {
        places.push((((len - 8192) & !4095).min(len - 4096), "1.0"));
        places.push(((len & !65535) - 65536, "0.90"));
    }
    for (off, version) in places {
        if let Some(parts) = whole_disk_parts {
            if parts.iter().any(|&(s, e)| off >= s && off < e) {
                continue;
            }
        }
        let Some(sb) = get(r, off, 256) else {
            continue;
        };
        if le32(&sb, 0) != MD_MAGIC {
            continue;
        }
        let major = le32(&sb, 4);
        let (level, disks, uuid, label) = match (version, major) {
            ("0.90", 0) => {
                let mut u = sb[20..24].to_vec();
                u.extend_from_slice(&sb[52..64]);
                (le32(&sb, 28) as i32, le32(&sb, 40), uuid_raw(&u), None)
            }
            (v, 1) if v != "0.90" => {
                // The superblock records its own position (in 512-byte sectors).
                if le64(&sb, 144) != off / 512 {
                    continue;
                }
                (
                    le32(&sb, 72) as i32,
                    le32(&sb, 92),
                    uuid_raw(&sb[16..32]),
                    text(&sb[32..64]),
                )
            }
            _ => continue,
        };
        let level_name = match level {
            -1 => "linear".to_string(),
            -4 => "multipath".to_string(),
            n => format!("RAID-{n}"),
        };
        let name = label
            .as_ref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default();
        let what = if level == 1 {
            "Each RAID-1 member holds all the data, but clone both members (onto disks at least as \
             large) to keep the array whole"
                .to_string()
        } else {
            format!("This member holds only part of the data: clone all {disks} members")
        };
        return Some(Layer {
            role: Role::MdRaidMember,
            fs_type: Some("linux_raid_member".into()),
            label,
            uuid,
            note: format!(
                "Linux RAID member (md metadata {version}) of {level_name} array{name} with \
                 {disks} devices. Lifeboat does not assemble arrays: it copies this member sector \
                 by sector. {what}."
            ),
        });
    }
    None
}

/// The Intel Matrix Storage Manager (Intel RST firmware RAID) anchor, two sectors before the end
/// (512-byte or 4096-byte sectors). Its checksum is checked when the block fits one sector.
fn imsm(r: &(impl ReadAt + ?Sized), len: u64) -> Option<Layer> {
    for ss in [512u64, 4096] {
        if len < 4 * ss {
            continue;
        }
        let Some(b) = get(r, len - 2 * ss, 512) else {
            continue;
        };
        if !b.starts_with(IMSM_SIG) {
            continue;
        }
        let size = le32(&b, 0x24) as usize;
        if (0xD8..=512).contains(&size) {
            let sum = b[..size & !3]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .fold(0u32, |a, x| a.wrapping_add(x));
            // The stored checksum is the sum of every other word.
            let stored = le32(&b, 0x20);
            if sum.wrapping_sub(stored) != stored {
                continue;
            }
        }
        let disks = b[0x38];
        let vols = b[0x39];
        let vol_at = 0xD8 + 48 * usize::from(disks);
        let volume = if vols > 0 {
            b.get(vol_at..vol_at + 16).and_then(text)
        } else {
            None
        };
        let name = volume
            .map(|v| format!(" (volume \"{v}\")"))
            .unwrap_or_default();
        return Some(Layer {
            role: Role::ImsmRaidMember,
            fs_type: Some("isw_raid_member".into()),
            label: None,
            uuid: None,
            note: format!(
                "Intel RST (IMSM) firmware RAID member, one of {disks} disks{name}; the RAID \
                 metadata is at the end of the disk. Lifeboat copies the whole disk sector by \
                 sector and does not assemble the array: clone every member onto disks at least \
                 as large and keep the firmware's RAID mode on."
            ),
        });
    }
    None
}

fn luks(r: &(impl ReadAt + ?Sized)) -> Option<Layer> {
    let b = get(r, 0, 8)?;
    if &b[0..6] != b"LUKS\xba\xbe" {
        return None;
    }
    let v = u16::from_be_bytes([b[6], b[7]]);
    Some(Layer {
        role: Role::LuksContainer,
        fs_type: Some("crypto_LUKS".into()),
        label: None,
        uuid: None,
        note: format!(
            "LUKS{v} encrypted container. Lifeboat cannot see inside, so it copies every sector; \
             the copy opens with the same passphrase or key."
        ),
    })
}

fn bitlocker(r: &(impl ReadAt + ?Sized)) -> Option<Layer> {
    let b = get(r, 0, 512)?;
    if &b[3..11] != b"-FVE-FS-" {
        return None;
    }
    Some(Layer {
        role: Role::BitlockerVolume,
        fs_type: Some("BitLocker".into()),
        label: None,
        uuid: None,
        note: "BitLocker-encrypted volume. Lifeboat cannot see inside, so it copies every \
               sector. Restored onto another machine (or after a firmware or disk change) \
               Windows asks for the BitLocker recovery key: have it at hand (Microsoft account \
               or your organisation's IT) before relying on the copy."
            .into(),
    })
}

/// An LVM2 physical volume (`LABELONE` … `LVM2 001`), with its volume group's name when the
/// metadata area has one.
fn lvm(r: &(impl ReadAt + ?Sized)) -> Option<Layer> {
    let head = get(r, 0, 2048)?;
    let s = (0..4).find(|s| {
        let l = &head[s * 512..s * 512 + 512];
        &l[0..8] == b"LABELONE" && &l[24..32] == b"LVM2 001"
    })?;
    let vg = lvm_vg_name(r, &head[s * 512..s * 512 + 512]);
    let group = match vg {
        Some(v) => format!("of volume group \"{v}\""),
        None => "(no volume group yet)".to_string(),
    };
    Some(Layer {
        role: Role::LvmPhysicalVolume,
        fs_type: Some("LVM2_member".into()),
        label: None,
        uuid: None,
        note: format!(
            "LVM2 physical volume {group}. Lifeboat does not activate volume groups: it copies \
             this volume sector by sector; a group spread over several disks needs every one."
        ),
    })
}

/// The volume group named by the first metadata area's current text ("vgname {").
fn lvm_vg_name(r: &(impl ReadAt + ?Sized), label: &[u8]) -> Option<String> {
    let ph = le32(label, 20) as usize;
    // pv_header: 32-byte UUID, device size, then {offset, size} lists: data areas, metadata areas.
    let mut o = ph.checked_add(40)?;
    let mut lists = 0;
    let mut mda = None;
    while o + 16 <= label.len() {
        let (off, size) = (le64(label, o), le64(label, o + 8));
        o += 16;
        if off == 0 && size == 0 {
            lists += 1;
            if lists == 2 {
                break;
            }
            continue;
        }
        if lists == 1 {
            mda = Some(off);
            break;
        }
    }
    let mda = mda?;
    let h = get(r, mda, 512)?;
    if &h[4..20] != b" LVM2 x[5A%r0N*>" {
        return None;
    }
    // raw_locns[0]: offset (from the area's start) and size of the current text.
    let (toff, tsize) = (le64(&h, 40), le64(&h, 48));
    if toff == 0 || tsize == 0 {
        return None;
    }
    let t = get(r, mda.checked_add(toff)?, tsize.min(256) as usize)?;
    let t = String::from_utf8_lossy(&t);
    let name = t.split_once(" {")?.0.trim();
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c));
    ok.then(|| name.to_string())
}

/// A ZFS vdev label (L0, at the start) with a pool name and GUID in its name/value list. Only
/// L0: it lies inside what the filesystem probe read (the first 68 KiB), so looking costs no
/// read; L1-L3 would be reads of their own on every partition.
fn zfs(r: &(impl ReadAt + ?Sized), len: u64) -> Option<Layer> {
    if len < 1 << 20 {
        return None;
    }
    let b = get(r, 16 << 10, 8192)?;
    let pairs = xdr_nvlist(&b);
    let find = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(NvVal::Str(pool)), Some(NvVal::U64(guid))) = (find("name"), find("pool_guid")) else {
        return None;
    };
    Some(Layer {
        role: Role::ZfsMember,
        fs_type: Some("zfs_member".into()),
        label: Some(pool.clone()),
        uuid: Some(guid.to_string()),
        note: format!(
            "ZFS pool member (pool \"{pool}\"). Lifeboat does not import pools: it copies this \
             device sector by sector; clone every disk of the pool."
        ),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NvVal {
    U64(u64),
    Str(String),
    Other,
}

/// The top-level pairs of an XDR-encoded nvlist (ZFS's label format): strings and 64-bit
/// integers are decoded, everything else is skipped by its encoded size.
fn xdr_nvlist(b: &[u8]) -> Vec<(String, NvVal)> {
    let mut out = Vec::new();
    // Header: encoding 1 (XDR), endianness, two reserved bytes; then version and flags.
    if b.first() != Some(&1) || b.len() < 12 {
        return out;
    }
    let xdr_str = |o: usize| -> Option<(String, usize)> {
        let n = be32(b, o) as usize;
        let s = b.get(o + 4..o.checked_add(4)?.checked_add(n)?)?;
        Some((
            String::from_utf8_lossy(s).into_owned(),
            o + 4 + n.div_ceil(4) * 4,
        ))
    };
    let mut o = 12;
    while o + 8 <= b.len() && out.len() < 256 {
        let enc = be32(b, o) as usize;
        if enc == 0 {
            break;
        }
        let Some((name, mut p)) = xdr_str(o + 8) else {
            break;
        };
        let ty = be32(b, p);
        p += 8; // type, number of elements
        let v = match ty {
            8 => b
                .get(p..p + 8)
                .map(|s| NvVal::U64(u64::from_be_bytes(s.try_into().unwrap_or([0; 8]))))
                .unwrap_or(NvVal::Other),
            9 => xdr_str(p)
                .map(|(s, _)| NvVal::Str(s))
                .unwrap_or(NvVal::Other),
            _ => NvVal::Other,
        };
        out.push((name, v));
        if enc < 8 {
            break;
        }
        o += enc;
    }
    out
}

/// An APFS container superblock (`NXSB`, object type 1) in block 0.
fn apfs(r: &(impl ReadAt + ?Sized)) -> Option<Layer> {
    let b = get(r, 0, 128)?;
    let block = le32(&b, 36);
    if &b[32..36] != b"NXSB"
        || le32(&b, 24) & 0xffff != 1
        || !(4096..=65536).contains(&block)
        || !block.is_power_of_two()
    {
        return None;
    }
    Some(Layer {
        role: Role::ApfsContainer,
        fs_type: Some("apfs".into()),
        label: None,
        uuid: uuid_raw(&b[72..88]),
        note: "Apple APFS container. Lifeboat cannot read inside, so it copies every sector."
            .into(),
    })
}

/// Storage Spaces and dynamic disks, known by their partition types.
fn by_type(type_id: &str) -> Option<Layer> {
    let (role, fs_type, note) = match type_id {
        SPACES_GUID => (
            Role::StorageSpacesMember,
            None,
            "Windows Storage Spaces member: its slabs belong to a pool spread over one or more \
             disks. Lifeboat copies it sector by sector; clone every disk of the pool.",
        ),
        LDM_METADATA_GUID | LDM_DATA_GUID | "0x42" => (
            Role::DynamicDisk,
            None,
            "Windows dynamic disk (LDM): its volumes are described by the LDM database, not the \
             partition table. Lifeboat copies it sector by sector; a volume spanning disks needs \
             every one of them.",
        ),
        RAID_GUID | "0xFD" => (
            Role::MdRaidMember,
            Some("linux_raid_member"),
            "Partition typed Linux RAID (no md superblock found). Lifeboat copies it sector by \
             sector; clone every member of the array.",
        ),
        _ => return None,
    };
    Some(Layer {
        role,
        fs_type: fs_type.map(String::from),
        label: None,
        uuid: None,
        note: note.into(),
    })
}

/// The partition types of the table `whole` shows, by partition number, spelled as
/// `clone::gpt` spells them ("0x42", upper-case GUIDs): MBR primary entries, or the GPT entry
/// array (read through the same region as the table probe, so LBA 0 and 1 are not read again).
fn partition_types(whole: &(impl ReadAt + ?Sized), lbs: u64) -> Vec<(u32, String)> {
    let Some(head) = get(whole, 0, 2 * lbs as usize) else {
        return vec![];
    };
    if head[510..512] != [0x55, 0xAA] {
        return vec![];
    }
    let mbr: Vec<(u32, u8)> = (0..4)
        .map(|i| (i as u32 + 1, head[446 + 16 * i + 4]))
        .filter(|(_, t)| *t != 0)
        .collect();
    let h = &head[lbs as usize..];
    if !mbr.iter().any(|(_, t)| *t == 0xEE) || &h[0..8] != b"EFI PART" {
        return mbr
            .into_iter()
            .map(|(n, t)| (n, format!("0x{t:02X}")))
            .collect();
    }
    let (first, count, size) = (le64(h, 72), le32(h, 80) as usize, le32(h, 84) as usize);
    if !(128..=4096).contains(&size) || count == 0 {
        return vec![];
    }
    let count = count.min(256);
    let Some(entries) = first
        .checked_mul(lbs)
        .and_then(|off| get(whole, off, count * size))
    else {
        return vec![];
    };
    entries
        .chunks_exact(size)
        .enumerate()
        .filter_map(|(i, e)| {
            let g = super::probe::guid_le(&e[0..16])?;
            Some((i as u32 + 1, g.to_uppercase()))
        })
        .collect()
}

/// Names the layers of a scanned disk and its partitions (`role`, `note`, and `fs_type`,
/// `label`, `uuid` where the layer has them) through the regions the scan probed: `whole` the
/// disk, `parts` one per partition of `d` (same order), so what the probes read is not read
/// again.
pub(crate) fn annotate_regions(
    d: &mut Disk,
    whole: &(impl ReadAt + ?Sized),
    parts: &[crate::fs::Region],
) {
    let size = d.size_bytes;
    let has_table = d.partition_table != "none" || !d.partitions.is_empty();
    let ranges: Vec<(u64, u64)> = d
        .partitions
        .iter()
        .map(|p| (p.start_bytes, p.start_bytes.saturating_add(p.size_bytes)))
        .collect();
    let disk_layer = if has_table {
        detect_disk(whole, size, Some(&ranges))
    } else {
        detect_disk(whole, size, None).or_else(|| detect(whole, size, ""))
    };
    let types = if d.partitions.is_empty() {
        vec![]
    } else {
        partition_types(whole, u64::from(d.logical_block_size.max(512)))
    };
    for (p, r) in d.partitions.iter_mut().zip(parts) {
        let ty = types
            .iter()
            .find(|(n, _)| *n == p.number)
            .map(|(_, t)| t.as_str())
            .unwrap_or("");
        if let Some(l) = detect(r, r.len(), ty) {
            apply_part(p, l);
        }
    }
    let layer = disk_layer.or_else(|| {
        // A disk whose partitions are Storage Spaces or LDM is that kind of disk as a whole.
        d.partitions
            .iter()
            .filter_map(|p| p.role)
            .find(|r| matches!(r, Role::StorageSpacesMember | Role::DynamicDisk))
            .and_then(|r| {
                let ty = if r == Role::DynamicDisk {
                    "0x42"
                } else {
                    SPACES_GUID
                };
                by_type(ty)
            })
    });
    if let Some(l) = layer {
        if let Some(t) = l.fs_type {
            d.fs_type = Some(t);
            d.label = l.label.or(d.label.take());
            d.uuid = l.uuid.or(d.uuid.take());
        }
        d.role = Some(l.role);
        d.note = Some(l.note);
    }
}

/// [`annotate_regions`] on an open source (tests build disks in memory).
#[cfg(test)]
pub(crate) fn annotate_from(d: &mut Disk, src: &dyn crate::io::BlockSource) {
    use crate::fs::Region;
    let whole = Region::new(src, 0, src.size());
    let parts: Vec<Region> = d
        .partitions
        .iter()
        .map(|p| Region::new(src, p.start_bytes, p.size_bytes))
        .collect();
    if let Some(t) = super::probe::probe_table_reader(&whole, src.logical_block_size()) {
        d.partition_table = t.kind.to_string();
    }
    annotate_regions(d, &whole, &parts);
}

fn apply_part(p: &mut Partition, l: Layer) {
    if let Some(t) = l.fs_type {
        p.fs_type = Some(t);
        p.label = l.label.or(p.label.take());
        p.uuid = l.uuid.or(p.uuid.take());
    }
    p.role = Some(l.role);
    p.note = Some(l.note);
}

/// The GUID string of a GPT type as `clone::gpt` spells it (tests build tables by hand).
#[cfg(test)]
fn type_guid_bytes(g: &str) -> [u8; 16] {
    let hex: String = g.chars().filter(|c| *c != '-').collect();
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    raw[0..4].reverse();
    raw[4..6].reverse();
    raw[6..8].reverse();
    debug_assert_eq!(
        super::probe::guid_le(&raw)
            .map(|s| s.to_uppercase())
            .as_deref(),
        Some(g)
    );
    raw
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
