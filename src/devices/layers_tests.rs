//! Recorded headers for each layer, built from the on-disk formats (md superblocks, the IMSM
//! anchor, BitLocker's boot sector, a ZFS vdev label, APFS's container superblock), and GPT
//! tables with Storage Spaces / LDM partition types; each must be named, and `fs` must copy it
//! all sectors with that reason.
use super::*;
use crate::devices::fixtures;
use crate::rescue::sim::SimDevice;

fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

const SET_UUID: [u8; 16] = [
    0x3b, 0x2a, 0x19, 0x08, 0xf7, 0xe6, 0xd5, 0xc4, 0xb3, 0xa2, 0x91, 0x80, 0x7f, 0x6e, 0x5d, 0x4c,
];

/// An md 1.x superblock (mdp_superblock_1) as mdadm writes it at `off` of a `len`-byte device.
fn md1(img: &mut [u8], off: usize, level: i32, disks: u32, name: &str) {
    put(img, off, &0xa92b_4efcu32.to_le_bytes());
    put(img, off + 4, &1u32.to_le_bytes());
    put(img, off + 16, &SET_UUID);
    put(img, off + 32, name.as_bytes());
    put(img, off + 72, &level.to_le_bytes());
    put(img, off + 92, &disks.to_le_bytes());
    put(img, off + 144, &((off / 512) as u64).to_le_bytes());
}

#[test]
fn md_superblocks_in_every_place() {
    let len = 1usize << 20;
    for (off, version) in [
        (4096usize, "1.2"),
        (0, "1.1"),
        (((len - 8192) & !4095), "1.0"),
    ] {
        let mut img = vec![0u8; len];
        md1(&mut img, off, 1, 2, "rescue:0");
        let l = detect(&img[..], len as u64, "").unwrap();
        assert_eq!(l.role, Role::MdRaidMember, "{version}");
        assert_eq!(l.fs_type.as_deref(), Some("linux_raid_member"));
        assert_eq!(l.label.as_deref(), Some("rescue:0"));
        assert_eq!(
            l.uuid.as_deref(),
            Some("3b2a1908-f7e6-d5c4-b3a2-91807f6e5d4c")
        );
        assert!(
            l.note.contains(&format!("metadata {version}")),
            "{}",
            l.note
        );
        assert!(l.note.contains("clone both members"), "{}", l.note);
        // A superblock that says it lives elsewhere is not this device's.
        put(&mut img, off + 144, &12345u64.to_le_bytes());
        assert_eq!(detect(&img[..], len as u64, ""), None, "{version}");
    }
    // RAID-5 of 3: this member alone is not the data.
    let mut img = vec![0u8; len];
    md1(&mut img, 4096, 5, 3, "");
    let l = detect(&img[..], len as u64, "").unwrap();
    assert!(
        l.note.contains("RAID-5") && l.note.contains("clone all 3 members"),
        "{}",
        l.note
    );
    assert_eq!(l.label, None);
    // 0.90: native-endian (x86: little) at the last 64 KiB boundary minus 64 KiB.
    let len = (1usize << 20) + 12345;
    let mut img = vec![0u8; len];
    let off = (len & !65535) - 65536;
    put(&mut img, off, &0xa92b_4efcu32.to_le_bytes());
    put(&mut img, off + 20, &SET_UUID[0..4]);
    put(&mut img, off + 28, &1u32.to_le_bytes());
    put(&mut img, off + 40, &2u32.to_le_bytes());
    put(&mut img, off + 52, &SET_UUID[4..16]);
    let l = detect(&img[..], len as u64, "").unwrap();
    assert!(l.note.contains("metadata 0.90"), "{}", l.note);
    assert_eq!(
        l.uuid.as_deref(),
        Some("3b2a1908-f7e6-d5c4-b3a2-91807f6e5d4c")
    );
    // On a whole disk with a table, a 0.90 superblock inside a partition is the partition's.
    assert_eq!(
        detect_disk(&img[..], len as u64, Some(&[(0, len as u64)])),
        None
    );
    assert!(detect_disk(&img[..], len as u64, Some(&[(0, 4096)])).is_some());
}

/// An IMSM anchor ("Intel Raid ISM Cfg Sig. 1.1.00") with `disks` disks and one volume,
/// checksummed the way the firmware does (sum of all words but the checksum itself).
fn imsm_anchor(disks: u8, volume: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    put(&mut b, 0, b"Intel Raid ISM Cfg Sig. 1.1.00");
    let size = 0xD8 + 48 * usize::from(disks) + 0x60;
    put(&mut b, 0x24, &(size as u32).to_le_bytes());
    put(&mut b, 0x28, &0x1234_5678u32.to_le_bytes());
    b[0x38] = disks;
    b[0x39] = 1;
    for i in 0..usize::from(disks) {
        put(&mut b, 0xD8 + 48 * i, format!("SERIAL{i}").as_bytes());
    }
    put(&mut b, 0xD8 + 48 * usize::from(disks), volume.as_bytes());
    let sum = b[..size]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .fold(0u32, |a, x| a.wrapping_add(x));
    put(&mut b, 0x20, &sum.to_le_bytes());
    b
}

#[test]
fn imsm_anchor_at_the_end() {
    let len = 4usize << 20;
    let mut img = vec![0u8; len];
    put(&mut img, len - 1024, &imsm_anchor(2, "Volume0"));
    let l = detect_disk(&img[..], len as u64, Some(&[(1 << 20, 3 << 20)])).unwrap();
    assert_eq!(l.role, Role::ImsmRaidMember);
    assert_eq!(l.fs_type.as_deref(), Some("isw_raid_member"));
    assert!(
        l.note.contains("one of 2 disks (volume \"Volume0\")"),
        "{}",
        l.note
    );
    // 4Kn: two 4096-byte sectors from the end.
    let mut img4 = vec![0u8; len];
    put(&mut img4, len - 8192, &imsm_anchor(3, "R5"));
    let l = detect_disk(&img4[..], len as u64, None).unwrap();
    assert!(l.note.contains("one of 3"));
    // Only whole disks carry the anchor: a partition is not asked.
    assert_eq!(detect(&img4[..], len as u64, ""), None);
    // A wrong checksum is not an anchor.
    img[len - 1024 + 0x20] ^= 1;
    assert_eq!(detect_disk(&img[..], len as u64, None), None);
}

#[test]
fn bitlocker_apfs_and_luks_headers() {
    let mut bl = vec![0u8; 4096];
    put(&mut bl, 0, &[0xEB, 0x58, 0x90]);
    put(&mut bl, 3, b"-FVE-FS-");
    put(&mut bl, 510, &[0x55, 0xAA]);
    let l = detect(&bl[..], 4096, "").unwrap();
    assert_eq!(
        (l.role, l.fs_type.as_deref()),
        (Role::BitlockerVolume, Some("BitLocker"))
    );
    assert!(l.note.contains("recovery key"));
    assert_eq!(
        l.reason(),
        "BitLocker-encrypted: which blocks are used is not visible"
    );

    // nx_superblock_t: obj_phys (cksum, oid, xid, type 0x80000001, subtype), magic, block size,
    // block count, features, then the container UUID at 72.
    let mut nx = vec![0u8; 8192];
    put(&mut nx, 8, &1u64.to_le_bytes());
    put(&mut nx, 24, &0x8000_0001u32.to_le_bytes());
    put(&mut nx, 32, b"NXSB");
    put(&mut nx, 36, &4096u32.to_le_bytes());
    put(&mut nx, 40, &2u64.to_le_bytes());
    put(&mut nx, 72, &SET_UUID);
    let l = detect(&nx[..], 8192, "").unwrap();
    assert_eq!(l.fs_type.as_deref(), Some("apfs"));
    assert_eq!(
        l.uuid.as_deref(),
        Some("3b2a1908-f7e6-d5c4-b3a2-91807f6e5d4c")
    );
    put(&mut nx, 24, &0x8000_000du32.to_le_bytes()); // an APFS volume superblock, not a container
    assert_eq!(detect(&nx[..], 8192, ""), None);

    let mut lk = vec![0u8; 4096];
    put(&mut lk, 0, b"LUKS\xba\xbe\x00\x01");
    let l = detect(&lk[..], 4096, "").unwrap();
    assert_eq!(l.role, Role::LuksContainer);
    assert!(l.note.starts_with("LUKS1 "));
}

/// An XDR nvlist as ZFS writes into a vdev label: header, then pairs of
/// (encoded size, decoded size, name, type, count, value).
fn nvlist(pairs: &[(&str, Result<u64, &str>)]) -> Vec<u8> {
    fn xstr(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v.resize(v.len().div_ceil(4) * 4, 0);
    }
    let mut out = vec![1u8, 1, 0, 0];
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    for (name, val) in pairs {
        let mut body = Vec::new();
        xstr(&mut body, name);
        match val {
            Ok(n) => {
                body.extend_from_slice(&8u32.to_be_bytes());
                body.extend_from_slice(&1u32.to_be_bytes());
                body.extend_from_slice(&n.to_be_bytes());
            }
            Err(s) => {
                body.extend_from_slice(&9u32.to_be_bytes());
                body.extend_from_slice(&1u32.to_be_bytes());
                xstr(&mut body, s);
            }
        }
        out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        out.extend_from_slice(&((body.len() + 32) as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out.extend_from_slice(&[0; 8]);
    out
}

#[test]
fn zfs_vdev_label() {
    let len = 4usize << 20;
    let list = nvlist(&[
        ("version", Ok(5000)),
        ("name", Err("tank")),
        ("state", Ok(0)),
        ("txg", Ok(4)),
        ("pool_guid", Ok(12_345_678_901_234_567_890)),
        ("guid", Ok(42)),
    ]);
    let mut img = vec![0u8; len];
    put(&mut img, 16 << 10, &list);
    let l = detect(&img[..], len as u64, "").unwrap();
    assert_eq!(l.fs_type.as_deref(), Some("zfs_member"));
    assert_eq!(l.label.as_deref(), Some("tank"));
    assert_eq!(l.uuid.as_deref(), Some("12345678901234567890"));
    assert!(l.note.contains("pool \"tank\""));
    // Only L0 is looked at (it lies in what the filesystem probe read): a label that survives
    // only at the end (L3) is not found.
    let mut img = vec![0u8; len];
    put(&mut img, len - (256 << 10) + (16 << 10), &list);
    assert_eq!(detect(&img[..], len as u64, ""), None);
    // A list without the pool GUID (a spare or cache device label) is not claimed.
    let mut img = vec![0u8; len];
    put(&mut img, 16 << 10, &nvlist(&[("name", Err("tank"))]));
    assert_eq!(detect(&img[..], len as u64, ""), None);
    // Garbage never panics.
    let mut x: u32 = 7;
    let mut g: Vec<u8> = (0..8192)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    g[0] = 1;
    let _ = xdr_nvlist(&g);
}

/// A GPT disk image (512-byte sectors) with the given (type GUID, first LBA, last LBA)
/// partitions, written by hand: protective MBR, header, entries (CRCs are not checked by the
/// tests' reader... they are by `clone::gpt`, so they are computed).
fn gpt_image(len: usize, parts: &[(&str, u64, u64)]) -> Vec<u8> {
    let mut img = vec![0u8; len];
    img[446 + 4] = 0xEE;
    put(&mut img, 446 + 8, &1u32.to_le_bytes());
    put(&mut img, 446 + 12, &((len / 512 - 1) as u32).to_le_bytes());
    put(&mut img, 510, &[0x55, 0xAA]);
    let mut entries = vec![0u8; 128 * 128];
    for (i, (ty, first, last)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..i * 128 + 128];
        e[0..16].copy_from_slice(&type_guid_bytes(ty));
        e[16] = i as u8 + 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let last_lba = (len / 512 - 1) as u64;
    let mut h = vec![0u8; 92];
    put(&mut h, 0, b"EFI PART");
    put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
    put(&mut h, 12, &92u32.to_le_bytes());
    put(&mut h, 24, &1u64.to_le_bytes());
    put(&mut h, 32, &last_lba.to_le_bytes());
    put(&mut h, 40, &34u64.to_le_bytes());
    put(&mut h, 48, &(last_lba - 33).to_le_bytes());
    put(&mut h, 56, &SET_UUID);
    put(&mut h, 72, &2u64.to_le_bytes());
    put(&mut h, 80, &128u32.to_le_bytes());
    put(&mut h, 84, &128u32.to_le_bytes());
    put(&mut h, 88, &crc32fast::hash(&entries).to_le_bytes());
    let crc = crc32fast::hash(&h);
    put(&mut h, 16, &crc.to_le_bytes());
    put(&mut img, 512, &h);
    put(&mut img, 1024, &entries);
    img
}

#[test]
fn partitions_named_and_copied_whole() {
    let len = 16usize << 20;
    let mib = 2048u64; // sectors
    let mut img = gpt_image(
        len,
        &[
            (SPACES_GUID, mib, 3 * mib - 1),
            (LDM_METADATA_GUID, 3 * mib, 4 * mib - 1),
            ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 4 * mib, 6 * mib - 1),
            (RAID_GUID, 6 * mib, 8 * mib - 1),
            (
                "6A898CC3-1DD2-11B2-99A6-080020736631",
                8 * mib,
                12 * mib - 1,
            ),
        ],
    );
    // p3: a BitLocker boot sector; p4: md 1.2; p5: a ZFS label L0.
    put(&mut img, (4 << 20) + 3, b"-FVE-FS-");
    md1(&mut img[6 << 20..8 << 20], 4096, 1, 2, "h:1");
    put(
        &mut img,
        (8 << 20) + (16 << 10),
        &nvlist(&[("name", Err("rpool")), ("pool_guid", Ok(9))]),
    );
    let mut d = fixtures::disk(
        "sdz",
        len as u64,
        (1..=5)
            .map(|n| {
                let mib = 1u64 << 20;
                let (s, e) = [(1, 3), (3, 4), (4, 6), (6, 8), (8, 12)][n - 1];
                fixtures::part(&format!("sdz{n}"), s * mib, (e - s) * mib, "", "")
            })
            .collect(),
    );
    let src = SimDevice::new(img, 512);
    annotate_from(&mut d, &src);
    let roles: Vec<_> = d.partitions.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            Some(Role::StorageSpacesMember),
            Some(Role::DynamicDisk),
            Some(Role::BitlockerVolume),
            Some(Role::MdRaidMember),
            Some(Role::ZfsMember)
        ]
    );
    let types: Vec<_> = d.partitions.iter().map(|p| p.fs_type.as_deref()).collect();
    assert_eq!(
        types,
        [
            None,
            None,
            Some("BitLocker"),
            Some("linux_raid_member"),
            Some("zfs_member")
        ]
    );
    assert_eq!(d.partitions[4].label.as_deref(), Some("rpool"));
    // The disk as a whole: a Storage Spaces member (its first such partition decides).
    assert_eq!(d.role, Some(Role::StorageSpacesMember));
    // Clone and image: every one of them all sectors, with the same words.
    let m = crate::fs::UsageMap::analyze(&src);
    let reasons: Vec<_> = m
        .partitions
        .iter()
        .map(|p| (p.mode, p.reason.clone().unwrap_or_default()))
        .collect();
    for (i, (mode, why)) in reasons.iter().enumerate() {
        assert_eq!(*mode, crate::fs::Mode::AllSectors, "p{}", i + 1);
        assert_eq!(why, d.partitions[i].role.unwrap().reason(), "p{}", i + 1);
    }
}

#[test]
fn imsm_disk_copied_whole_with_its_volume_table() {
    // The first member of an IMSM RAID-1 shows the volume's GPT with an ordinary partition.
    let len = 8usize << 20;
    let mut img = gpt_image(len, &[("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2048, 4095)]);
    put(&mut img, len - 1024, &imsm_anchor(2, "Mirror"));
    let mut d = fixtures::disk(
        "sdy",
        len as u64,
        vec![fixtures::part("sdy1", 1 << 20, 1 << 20, "", "")],
    );
    let src = SimDevice::new(img, 512);
    annotate_from(&mut d, &src);
    assert_eq!(d.role, Some(Role::ImsmRaidMember));
    assert_eq!(d.fs_type.as_deref(), Some("isw_raid_member"));
    assert_eq!(d.partitions[0].role, None);
    let m = crate::fs::UsageMap::analyze(&src);
    assert_eq!(m.used_bytes, len as u64);
    assert_eq!(
        m.partitions[0].reason.as_deref(),
        Some(Role::ImsmRaidMember.reason())
    );
}

#[test]
fn plain_disks_have_no_layer() {
    let len = 4usize << 20;
    let img = gpt_image(len, &[("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2048, 4095)]);
    let mut d = fixtures::disk(
        "sdx",
        len as u64,
        vec![fixtures::part("sdx1", 1 << 20, 1 << 20, "", "")],
    );
    annotate_from(&mut d, &SimDevice::new(img, 512));
    assert_eq!((d.role, d.partitions[0].role), (None, None));
    assert_eq!(detect(&vec![0u8; 1 << 20][..], 1 << 20, ""), None);
}
