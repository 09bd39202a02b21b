//! Reading the disk inventory out of a sysfs tree (the real `/sys` or a fixture): which block
//! devices are whole disks, their size, sector sizes, transport, identity and partitions.
use super::probe;
use super::{Disk, MmcBootPartition, Partition};
use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Whether the process lists eMMC boot partitions as disks (`--mmc-boot-partitions`).
static MMC_BOOT_AS_DISKS: AtomicBool = AtomicBool::new(false);

/// Makes every later scan of this process list eMMC hardware boot partitions
/// (`mmcblk0boot0`, `mmcblk0boot1`) as disks of their own, so they can be chosen, cloned and
/// imaged (the CLI's global `--mmc-boot-partitions`). The replay-protected block stays hidden.
pub fn set_mmc_boot_as_disks(on: bool) {
    MMC_BOOT_AS_DISKS.store(on, Ordering::Relaxed);
}

/// Whether scans of this process list eMMC boot partitions as disks (the last
/// [`set_mmc_boot_as_disks`]).
pub fn mmc_boot_as_disks() -> bool {
    MMC_BOOT_AS_DISKS.load(Ordering::Relaxed)
}

/// What a scan lists besides ordinary disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// eMMC hardware boot partitions as disks of their own (see [`set_mmc_boot_as_disks`]).
    pub mmc_boot_as_disks: bool,
}

/// How long the content probe of one disk (partition table + superblocks) may take before the
/// disk is listed without it: a dying drive must not freeze `list` or the UI.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Reads a sysfs attribute, trimmed; None when absent, unreadable or empty.
pub(crate) fn attr(dir: &Path, name: &str) -> Option<String> {
    let s = fs::read(dir.join(name)).ok()?;
    let s = String::from_utf8_lossy(&s);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn attr_u64(dir: &Path, name: &str) -> Option<u64> {
    attr(dir, name)?.parse().ok()
}

fn attr_bool(dir: &Path, name: &str) -> bool {
    attr_u64(dir, name).unwrap_or(0) != 0
}

/// An eMMC hardware boot partition: `mmcblk<N>boot<0|1>`.
fn is_mmc_boot(name: &str) -> bool {
    name.strip_prefix("mmcblk")
        .and_then(|r| r.split_once("boot"))
        .is_some_and(|(n, b)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && matches!(b, "0" | "1")
        })
}

/// Block devices that are never disks to clone or image (eMMC boot partitions are not,
/// unless asked for: see [`ScanOptions`]).
fn skipped_name(name: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "ram", "zram", "dm-", "md", "sr", "fd", "mtdblock", "ubiblock", "nbd",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) {
        // nbd devices are listed only when connected (size > 0), handled by the caller.
        return !name.starts_with("nbd");
    }
    // eMMC hardware boot partitions (listed with their disk) and the replay-protected block
    // (never read: its reads are authenticated, counted by the card).
    if name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb")) {
        return true;
    }
    is_nvme_path_device(name)
}

/// `nvme<ctrl>c<ctrl>n<ns>`: one controller's hidden path to a namespace of a multipath-capable
/// NVMe subsystem. The namespace itself is `nvme<subsys>n<ns>` (the kernel's multipath head,
/// which also works with one path); listing the paths too would show every namespace twice.
fn is_nvme_path_device(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let Some((ctrl, rest)) = rest.split_once('c') else {
        return false;
    };
    let Some((path, ns)) = rest.split_once('n') else {
        return false;
    };
    digits(ctrl) && digits(path) && digits(ns)
}

/// An NVMe namespace identifier from sysfs (`eui` "00 11 22 …", `nguid` as a UUID) as plain
/// lower-case hex; None when absent or all zeros (not reported).
fn nvme_id(dir: &Path, name: &str, digits: usize) -> Option<String> {
    let raw = attr(dir, name)?;
    let hex: String = raw
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == digits && hex.chars().any(|c| c != '0')).then_some(hex)
}

/// The `/dev` node of a kernel block name (`cciss!c0d0` lives at `/dev/cciss/c0d0`).
pub(crate) fn dev_node(dev_root: &Path, name: &str) -> PathBuf {
    dev_root.join(name.replace('!', "/"))
}

/// Scans `sysfs_root/block` for whole disks and probes their contents through `dev_root`
/// (eMMC boot partitions as disks when [`set_mmc_boot_as_disks`] asked for them).
pub fn scan(sysfs_root: &Path, dev_root: &Path) -> Result<Vec<Disk>> {
    let opts = ScanOptions {
        mmc_boot_as_disks: MMC_BOOT_AS_DISKS.load(Ordering::Relaxed),
    };
    scan_with(sysfs_root, dev_root, opts)
}

/// [`scan`] with explicit options.
pub fn scan_with(sysfs_root: &Path, dev_root: &Path, opts: ScanOptions) -> Result<Vec<Disk>> {
    let block = sysfs_root.join("block");
    let rd = fs::read_dir(&block)
        .map_err(|e| Error::io("read the block device list (is sysfs mounted?)", &block, e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    let mut disks = Vec::new();
    for name in &names {
        let boot = is_mmc_boot(name);
        if skipped_name(name) && !(boot && opts.mmc_boot_as_disks) {
            continue;
        }
        if let Some(mut d) = read_disk(sysfs_root, &block, name, dev_root) {
            if boot {
                d.note = Some(mmc_boot_note(name, &block.join(name)));
            } else if d.transport == "mmc" {
                d.mmc_boot_partitions = mmc_boot_partitions(&block, name, dev_root, &names);
            }
            disks.push(d);
        }
    }
    probe_contents(&mut disks);
    Ok(disks)
}

/// The hardware boot partitions of eMMC disk `name` (`<name>boot0`, `<name>boot1`) that the
/// kernel shows, in order; `names` are the entries of `block`.
fn mmc_boot_partitions(
    block: &Path,
    name: &str,
    dev_root: &Path,
    names: &[String],
) -> Vec<MmcBootPartition> {
    ["boot0", "boot1"]
        .iter()
        .map(|b| format!("{name}{b}"))
        .filter(|b| names.contains(b))
        .filter_map(|b| {
            let dir = block.join(&b);
            let sectors = attr_u64(&dir, "size").filter(|&s| s > 0)?;
            Some(MmcBootPartition {
                path: dev_node(dev_root, &b),
                dev: attr(&dir, "dev").unwrap_or_default(),
                size_bytes: sectors.saturating_mul(512),
                read_only: attr_bool(&dir, "ro") || attr_bool(&dir, "force_ro"),
                name: b,
            })
        })
        .collect()
}

/// The note of an eMMC boot partition listed as a disk of its own.
fn mmc_boot_note(name: &str, dir: &Path) -> String {
    let card = name.rsplit_once("boot").map_or(name, |(c, _)| c);
    let ro = if attr_bool(dir, "force_ro") || attr_bool(dir, "ro") {
        format!(
            " It is read-only until `echo 0 > /sys/block/{name}/force_ro` (needed only to write \
             it, as a target)."
        )
    } else {
        String::new()
    };
    format!(
        "eMMC hardware boot partition of {card} (firmware or a boot loader lives here on many \
         boards): a separate device, not part of {card}, so a clone or image of {card} does not \
         include it.{ro}"
    )
}

/// Orders `sda, sdb, ..., sdz, sdaa` and `nvme0n1, nvme2n1, nvme10n1` as people expect.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                if !num.is_empty() {
                    out.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                    num.clear();
                }
                text.push(c);
            }
        }
        out.push((text, num.parse().unwrap_or(0)));
        out
    }
    let (ka, kb) = (key(a), key(b));
    // Within one family ("sd..."), shorter names first ("sdz" < "sdaa"); then lexically, then
    // numerically.
    for (x, y) in ka.iter().zip(kb.iter()) {
        let same_family = x.0.get(..2).is_some() && x.0.get(..2) == y.0.get(..2);
        let by_len = if same_family {
            x.0.len().cmp(&y.0.len())
        } else {
            std::cmp::Ordering::Equal
        };
        let o = by_len
            .then_with(|| x.0.cmp(&y.0))
            .then_with(|| x.1.cmp(&y.1));
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ka.len().cmp(&kb.len())
}

fn read_disk(sysfs_root: &Path, block: &Path, name: &str, dev_root: &Path) -> Option<Disk> {
    let dir = block.join(name);
    // Hidden block devices (NVMe multipath paths) have no /dev node and are not disks to pick.
    if attr_bool(&dir, "hidden") {
        return None;
    }
    let sectors = attr_u64(&dir, "size")?;
    let removable = attr_bool(&dir, "removable");
    if sectors == 0
        && (name.starts_with("loop")
            || name.starts_with("nbd")
            || removable
            || name.starts_with("mmcblk"))
    {
        return None;
    }
    // The device path inside sysfs ("devices/pci0000:00/.../block/sda"), used for the transport
    // and to walk up to the USB device.
    let real = fs::canonicalize(&dir).ok();
    let root = fs::canonicalize(sysfs_root).unwrap_or_else(|_| sysfs_root.to_path_buf());
    let rel = real
        .as_ref()
        .and_then(|r| r.strip_prefix(&root).ok())
        .map(|p| format!("/{}", p.display()))
        .unwrap_or_default();
    let device = dir.join("device");
    let queue = dir.join("queue");
    let transport = transport(&root, &rel, name, &device);
    let lbs = attr_u64(&queue, "logical_block_size").unwrap_or(512) as u32;
    let pbs = attr_u64(&queue, "physical_block_size").unwrap_or(u64::from(lbs)) as u32;
    let (model, vendor, serial) = identity(&root, &rel, &dir, &device, transport);
    let wwn = attr(&device, "wwid")
        .or_else(|| attr(&dir, "wwid"))
        .filter(|w| is_world_wide_name(w));
    let (nsid, eui64, nguid) = if transport == "nvme" {
        (
            attr(&dir, "nsid").and_then(|n| n.parse().ok()),
            nvme_id(&dir, "eui", 16),
            nvme_id(&dir, "nguid", 32),
        )
    } else {
        (None, None, None)
    };
    let partitions = read_partitions(&dir, name, dev_root);
    let backing_file = if name.starts_with("loop") {
        attr(&dir.join("loop"), "backing_file")
    } else {
        None
    };
    let holders = list_dir(&dir.join("holders"));
    Some(Disk {
        name: name.to_string(),
        path: dev_node(dev_root, name),
        dev: attr(&dir, "dev").unwrap_or_default(),
        size_bytes: sectors.saturating_mul(512),
        logical_block_size: lbs,
        physical_block_size: pbs,
        model,
        vendor,
        serial,
        wwn,
        nsid,
        eui64,
        nguid,
        transport: transport.to_string(),
        removable,
        rotational: attr_bool(&queue, "rotational"),
        read_only: attr_bool(&dir, "ro"),
        partition_table: "none".to_string(),
        partition_table_uuid: None,
        boot_media: false,
        fs_type: None,
        label: None,
        uuid: None,
        role: None,
        note: None,
        holders,
        mounted: Vec::new(),
        backing_file,
        sysfs_path: rel,
        partitions,
        mmc_boot_partitions: Vec::new(),
        health: None,
    })
}

/// WWIDs that really are world-wide names (NAA, EUI-64, NVMe NGUID/UUID); the kernel's
/// fallbacks ("t10.ATA  QEMU HARDDISK  QM00001", "nvme.1b36-...") are vendor+model+serial strings.
fn is_world_wide_name(w: &str) -> bool {
    !(w.starts_with("t10.") || w.starts_with("nvme."))
}

/// Entry names of a directory, sorted; empty when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| natural_cmp(a, b));
    v
}

/// Where the disk hangs: decided from its sysfs device path, like udev's ID_BUS/ID_PATH.
fn transport(root: &Path, rel: &str, name: &str, device: &Path) -> &'static str {
    if name.starts_with("loop") {
        return "loop";
    }
    if name.starts_with("xvd") {
        return "xen";
    }
    if name.starts_with("mmcblk") || rel.contains("/mmc_host/") {
        return "mmc";
    }
    if name.starts_with("nvme") || rel.contains("/nvme/") || rel.contains("/nvme-subsystem/") {
        return "nvme";
    }
    if rel.contains("/usb") {
        return "usb";
    }
    if name.starts_with("vd") || driver_name(device).as_deref() == Some("virtio_blk") {
        return "virtio";
    }
    if let Some(ata) = ata_port_dir(rel) {
        if rel.contains("/host") {
            return if ata_link_is_pata(&root.join(ata.trim_start_matches('/'))) {
                "ata"
            } else {
                "sata"
            };
        }
    }
    if rel.contains("/host") && rel.contains("/target") {
        // SCSI proper: SAS/FC HBAs, virtio-scsi, iSCSI...
        return "scsi";
    }
    "unknown"
}

fn driver_name(device: &Path) -> Option<String> {
    let l = fs::read_link(device.join("driver")).ok()?;
    Some(l.file_name()?.to_string_lossy().into_owned())
}

/// The "/.../ataN" prefix of a sysfs path below a libata port, if any.
fn ata_port_dir(rel: &str) -> Option<String> {
    let mut acc = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        acc.push('/');
        acc.push_str(comp);
        if comp.len() > 3
            && comp.starts_with("ata")
            && comp[3..].chars().all(|c| c.is_ascii_digit())
        {
            return Some(acc);
        }
    }
    None
}

/// Whether the libata port's link reports no SATA speed (a parallel ATA controller). A port
/// whose link attributes cannot be found is taken to be SATA (by far the common case).
fn ata_link_is_pata(port: &Path) -> bool {
    for link in list_dir(port).into_iter().filter(|l| l.starts_with("link")) {
        if let Some(s) = attr(&port.join(&link).join("ata_link").join(&link), "sata_spd") {
            return !s.contains("Gbps");
        }
    }
    false
}

/// (model, vendor, serial) from wherever this transport exposes them.
fn identity(
    root: &Path,
    rel: &str,
    dir: &Path,
    device: &Path,
    transport: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    match transport {
        "nvme" => (attr(device, "model"), None, attr(device, "serial")),
        "virtio" => (None, None, attr(dir, "serial")),
        "mmc" => (attr(device, "name"), None, attr(device, "serial")),
        "loop" => (None, None, None),
        _ => {
            let model = attr(device, "model");
            let vendor = attr(device, "vendor");
            let vpd = fs::read(device.join("vpd_pg80"))
                .ok()
                .and_then(|b| vpd_serial(&b));
            let serial = if transport == "usb" {
                usb_serial(root, rel)
                    .or(vpd)
                    .or_else(|| attr(device, "serial"))
            } else {
                vpd.or_else(|| attr(device, "serial"))
                    .or_else(|| attr(dir, "serial"))
            };
            (model, vendor, serial)
        }
    }
}

/// The unit serial number from a raw VPD page 0x80 (4-byte header, then the serial).
pub(crate) fn vpd_serial(b: &[u8]) -> Option<String> {
    if b.len() < 4 || b[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b.get(4..4 + len.min(b.len() - 4))?;
    let s = String::from_utf8_lossy(body);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// The `serial` attribute of the nearest USB device above the disk in sysfs.
fn usb_serial(root: &Path, rel: &str) -> Option<String> {
    let mut p = root.join(rel.trim_start_matches('/'));
    while p.starts_with(root) && p != root {
        if p.join("idVendor").exists() {
            return attr(&p, "serial");
        }
        if !p.pop() {
            break;
        }
    }
    None
}

fn read_partitions(dir: &Path, disk: &str, dev_root: &Path) -> Vec<Partition> {
    let mut parts = Vec::new();
    for entry in list_dir(dir) {
        if !entry.starts_with(disk) {
            continue;
        }
        let p = dir.join(&entry);
        let Some(number) = attr_u64(&p, "partition") else {
            continue;
        };
        let start = attr_u64(&p, "start").unwrap_or(0);
        let size = attr_u64(&p, "size").unwrap_or(0);
        let uevent = fs::read_to_string(p.join("uevent")).unwrap_or_default();
        let part_label = uevent
            .lines()
            .find_map(|l| l.strip_prefix("PARTNAME="))
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        parts.push(Partition {
            name: entry.clone(),
            number: number as u32,
            path: dev_node(dev_root, &entry),
            dev: attr(&p, "dev").unwrap_or_default(),
            start_bytes: start.saturating_mul(512),
            size_bytes: size.saturating_mul(512),
            fs_type: None,
            label: None,
            uuid: None,
            role: None,
            note: None,
            part_label,
            read_only: attr_bool(&p, "ro"),
            holders: list_dir(&p.join("holders")),
            mounted: Vec::new(),
        });
    }
    parts.sort_by_key(|p| p.number);
    parts
}

/// Reads the partition table and superblocks of every disk, each disk in its own thread with a
/// deadline: a disk that does not answer is listed without its contents.
fn probe_contents(disks: &mut [Disk]) {
    let mut pending = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        let disk = d.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{}", d.name))
            .spawn(move || {
                let _ = tx.send(probe_disk(disk));
            });
        if spawned.is_ok() {
            pending.push((i, rx));
        }
    }
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    for (i, rx) in pending {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Ok(d) = rx.recv_timeout(left) {
            disks[i] = d;
        }
    }
}

/// Probes one disk through one open device: the table, the filesystem of the whole disk or of
/// each partition, and the layers (`layers`), each partition through one `fs::Region` so the
/// layer checks reuse what the filesystem probe read.
fn probe_disk(mut d: Disk) -> Disk {
    use crate::fs::Region;
    use crate::io::{Access, BlockSource, Device};
    if d.size_bytes == 0 {
        return d;
    }
    let Ok(dev) = Device::open(&d.path, Access::Read) else {
        return d;
    };
    let whole = Region::new(&dev, 0, dev.size());
    if let Some(t) = probe::probe_table_reader(&whole, d.logical_block_size) {
        d.partition_table = t.kind.to_string();
        d.partition_table_uuid = t.uuid;
    }
    if d.partitions.is_empty() {
        // A filesystem on the whole disk (a "superfloppy" stick, an ISO image).
        if let Some(fs) = probe::probe_reader(&whole) {
            d.fs_type = Some(fs.fs_type);
            d.label = fs.label;
            d.uuid = fs.uuid;
        }
    }
    let regions: Vec<Region> = d
        .partitions
        .iter()
        .map(|p| Region::new(&dev, p.start_bytes, p.size_bytes))
        .collect();
    for (p, r) in d.partitions.iter_mut().zip(&regions) {
        if let Some(fs) = probe::probe_reader(r) {
            p.fs_type = Some(fs.fs_type);
            p.label = fs.label;
            p.uuid = fs.uuid;
        }
    }
    // LVM, RAID, encrypted and pooled storage: named, with what Lifeboat does with it.
    super::layers::annotate_regions(&mut d, &whole, &regions);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["sdaa", "sdb", "nvme10n1", "sda", "nvme2n1", "sdz", "vda"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["nvme2n1", "nvme10n1", "sda", "sdb", "sdz", "sdaa", "vda"]
        );
    }

    #[test]
    fn vpd_page() {
        let mut b = vec![0u8, 0x80, 0, 24];
        b.extend_from_slice(b"     QM00001         \0\0\0");
        assert_eq!(vpd_serial(&b).as_deref(), Some("QM00001"));
        assert_eq!(vpd_serial(&[0, 0x83, 0, 1, b'x']), None);
        assert_eq!(
            vpd_serial(&[0, 0x80, 0, 200, b'x', b'y']).as_deref(),
            Some("xy")
        );
        assert_eq!(vpd_serial(&[0, 0x80]), None);
    }

    #[test]
    fn nvme_paths_are_not_disks() {
        for n in ["nvme0c0n1", "nvme1c12n3"] {
            assert!(skipped_name(n), "{n}");
        }
        for n in ["nvme0n1", "nvme0n1p1", "nvme10n2", "nvmec0n1", "sdc"] {
            assert!(!skipped_name(n), "{n}");
        }
    }

    #[test]
    fn ata_port_component() {
        assert_eq!(
            ata_port_dir("/devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0").as_deref(),
            Some("/devices/pci0000:00/0000:00:1f.2/ata3")
        );
        assert_eq!(ata_port_dir("/devices/virtual/block/loop0"), None);
        assert_eq!(ata_port_dir("/devices/pci/data1/host0"), None);
    }
}
