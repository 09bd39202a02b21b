//! Asking a real drive: which protocol a disk's transport allows, the command sequence
//! (IDENTIFY, SMART READ DATA, READ THRESHOLDS, the self-test log; or the NVMe SMART / Health
//! log; or a SCSI drive's LOG SENSE pages and grown defect list; or an eMMC's wear estimates
//! in sysfs), each with a timeout, and the interpretation of what SG_IO returned (SCSI status,
//! sense data, the ATA status return descriptor). Nothing here writes to a disk: the disk is
//! opened read-only and only read-type commands are sent.
use super::ata::{self, AtaCmd, AtaPages};
use super::{nvme, Health};
use crate::devices::Disk;
use crate::io::{sys, AlignedBuf};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Per-command timeout in the kernel (SG_IO and the NVMe admin ioctl).
pub const COMMAND_TIMEOUT_MS: u32 = 3000;

/// Reads one disk's health, choosing the protocol from its transport. Never panics, never
/// returns `ok` without having read the drive.
pub fn read(disk: &Disk) -> Health {
    match disk.transport.as_str() {
        "nvme" => read_nvme(&disk.path),
        "usb" => {
            let h = read_ata(&disk.path, "usb");
            if h.status != super::Status::Unknown || h.protocol.is_some() {
                return h;
            }
            let s = read_scsi(&disk.path);
            if s.protocol.is_some() && s.status != super::Status::Unknown {
                s
            } else {
                h
            }
        }
        "sata" | "ata" => read_ata(&disk.path, &disk.transport),
        // A SATA disk behind a SAS HBA answers INQUIRY with vendor "ATA" (the SATL's convention).
        "scsi" if disk.vendor.as_deref() == Some("ATA") => read_ata(&disk.path, "scsi"),
        "scsi" => read_scsi(&disk.path),
        "virtio" => Health::unknown("a virtual disk (virtio) has no drive health to read"),
        "loop" => Health::unknown("a loop device is a file, not a drive: no health to read"),
        // eMMC 5.0+: the wear estimates the kernel shows in sysfs; SD cards have none.
        "mmc" => super::emmc::read(Path::new("/sys"), &disk.sysfs_path),
        t => Health::unknown(format!(
            "Lifeboat cannot tell how to ask this disk for its health (transport {t})"
        )),
    }
}

fn open(path: &Path) -> io::Result<File> {
    // Read-only; O_NONBLOCK so a removable drive without a medium does not wait.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

fn open_failed(path: &Path, e: &io::Error) -> Health {
    Health::unknown(format!(
        "cannot open {} to ask for its health: {e}",
        path.display()
    ))
}

fn needs_root(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

// ---------------------------------------------------------------- NVMe

fn read_nvme(path: &Path) -> Health {
    let f = match open(path) {
        Ok(f) => f,
        Err(e) => return open_failed(path, &e),
    };
    let mut buf = AlignedBuf::new(512);
    // NUMDL (bits 31:16) = dwords - 1; log id in bits 7:0; NSID FFFFFFFFh = the whole controller.
    let cdw10 = u32::from(nvme::LOG_SMART_HEALTH) | ((512 / 4 - 1) << 16);
    match sys::nvme_admin_read(
        &f,
        nvme::ADMIN_GET_LOG_PAGE,
        0xFFFF_FFFF,
        cdw10,
        0,
        &mut buf,
        COMMAND_TIMEOUT_MS,
    ) {
        Ok(0) => nvme::classify(&buf),
        Ok(st) => Health::unknown(format!(
            "the drive refused the SMART / Health log (NVMe status 0x{st:x})"
        )),
        Err(e) if needs_root(&e) => {
            Health::unknown("reading NVMe health needs root (CAP_SYS_ADMIN)")
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            Health::unknown("the device does not take NVMe admin commands")
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.kind() == io::ErrorKind::TimedOut => {
            Health::unknown("the drive did not answer the SMART / Health log request in time")
        }
        Err(e) => Health::unknown(format!("the SMART / Health log request failed: {e}")),
    }
}

// ---------------------------------------------------------------- ATA through SAT

/// How one ATA PASS-THROUGH command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtaOutcome {
    Done,
    /// The SCSI layer does not know the CDB (ILLEGAL REQUEST): no SAT on this path.
    NoPassThrough,
    /// The drive aborted the command (ATA ABRT): not supported, or SMART disabled.
    Aborted,
    /// No answer in time.
    TimedOut,
    Failed(String),
}

/// Sense key, ASC, ASCQ from fixed (70h/71h) or descriptor (72h/73h) sense data.
fn sense_key(s: &[u8]) -> Option<(u8, u8, u8)> {
    match s.first()? & 0x7F {
        0x70 | 0x71 if s.len() >= 14 => Some((s[2] & 0x0F, s[12], s[13])),
        0x72 | 0x73 if s.len() >= 4 => Some((s[1] & 0x0F, s[2], s[3])),
        _ => None,
    }
}

/// The ATA status and error registers from the ATA Status Return sense descriptor (code 09h,
/// SAT-3 §12.2.5), when the sense data carries one.
fn ata_return(s: &[u8]) -> Option<(u8, u8)> {
    if s.len() < 8 || s[0] & 0x7F != 0x72 {
        return None;
    }
    let end = (8 + usize::from(s[7])).min(s.len());
    let mut i = 8;
    while i + 2 <= end {
        let (code, len) = (s[i], usize::from(s[i + 1]));
        if code == 0x09 && i + 14 <= end {
            return Some((s[i + 13], s[i + 3]));
        }
        i += 2 + len;
    }
    None
}

/// Interprets what SG_IO returned for an ATA PASS-THROUGH command.
pub fn interpret(o: &sys::ScsiOutcome) -> AtaOutcome {
    const DID_TIME_OUT: u16 = 0x03;
    const DRIVER_TIMEOUT: u16 = 0x06;
    if o.host_status == DID_TIME_OUT || o.driver_status & 0x0F == DRIVER_TIMEOUT {
        return AtaOutcome::TimedOut;
    }
    if o.host_status != 0 {
        return AtaOutcome::Failed(format!(
            "the controller reported host status 0x{:x}",
            o.host_status
        ));
    }
    if let Some((status, error)) = ata_return(&o.sense) {
        // ERR (bit 0) with ABRT (error bit 2): the drive refused the command.
        if status & 0x01 != 0 {
            return if error & 0x04 != 0 {
                AtaOutcome::Aborted
            } else {
                AtaOutcome::Failed(format!(
                    "the drive reported an error (status 0x{status:02x}, error 0x{error:02x})"
                ))
            };
        }
    }
    match (o.status, sense_key(&o.sense)) {
        (0, _) => AtaOutcome::Done,
        // RECOVERED ERROR, "ATA pass through information available": success with registers.
        (_, Some((0x01, 0x00, 0x1D))) => AtaOutcome::Done,
        (_, Some((0x05, _, _))) => AtaOutcome::NoPassThrough,
        (_, Some((0x0B, _, _))) => AtaOutcome::Aborted,
        (s, Some((k, asc, ascq))) => AtaOutcome::Failed(format!(
            "SCSI status 0x{s:02x}, sense key 0x{k:x}, ASC/ASCQ 0x{asc:02x}/0x{ascq:02x}"
        )),
        (s, None) => AtaOutcome::Failed(format!("SCSI status 0x{s:02x} without sense data")),
    }
}

/// Sends `cmd` with the 16-byte CDB, or the 12-byte one when `short` (some USB bridges know
/// only that); returns the 512-byte page on success.
fn ata_read(f: &File, cmd: AtaCmd, short: bool) -> (AtaOutcome, Vec<u8>) {
    let mut buf = AlignedBuf::new(512);
    let r = if short {
        sys::scsi_read(f, &cmd.cdb12(), &mut buf, COMMAND_TIMEOUT_MS)
    } else {
        sys::scsi_read(f, &cmd.cdb16(), &mut buf, COMMAND_TIMEOUT_MS)
    };
    match r {
        Ok(o) => {
            let out = interpret(&o);
            if out == AtaOutcome::Done && o.resid > 0 {
                return (
                    AtaOutcome::Failed(format!("the drive returned {} bytes too few", o.resid)),
                    Vec::new(),
                );
            }
            (out, buf.to_vec())
        }
        Err(e) => (sg_io_refused(&e, "SMART"), Vec::new()),
    }
}

/// What an SG_IO that the kernel refused means: root needed (reading `what`), no
/// pass-through on this device, or another failure.
fn sg_io_refused(e: &io::Error, what: &str) -> AtaOutcome {
    if needs_root(e) {
        AtaOutcome::Failed(format!("reading {what} needs root (CAP_SYS_RAWIO)"))
    } else if matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    ) {
        AtaOutcome::NoPassThrough
    } else {
        AtaOutcome::Failed(format!("SG_IO failed: {e}"))
    }
}

/// The reason text for a command that did not complete.
fn why(what: &str, o: &AtaOutcome, transport: &str) -> String {
    match o {
        AtaOutcome::NoPassThrough if transport == "usb" => {
            "the USB bridge does not pass ATA commands through (no SAT), so SMART cannot be read"
                .into()
        }
        AtaOutcome::NoPassThrough => {
            "the disk's controller does not pass ATA commands through, so SMART cannot be read"
                .into()
        }
        AtaOutcome::Aborted => format!("the drive refused {what}"),
        AtaOutcome::TimedOut => format!(
            "the drive did not answer {what} within {} s",
            COMMAND_TIMEOUT_MS / 1000
        ),
        AtaOutcome::Failed(m) => format!("{what} failed: {m}"),
        AtaOutcome::Done => String::new(),
    }
}

fn read_ata(path: &Path, transport: &str) -> Health {
    let f = match open(path) {
        Ok(f) => f,
        Err(e) => return open_failed(path, &e),
    };
    // IDENTIFY DEVICE first: it proves the pass-through works and says whether SMART is on.
    let mut short = false;
    let (mut o, mut id) = ata_read(&f, AtaCmd::identify(), false);
    if o == AtaOutcome::NoPassThrough {
        short = true;
        (o, id) = ata_read(&f, AtaCmd::identify(), true);
    }
    if o != AtaOutcome::Done {
        return Health::unknown(why("IDENTIFY DEVICE", &o, transport));
    }
    let Some(support) = ata::decode_identify(&id) else {
        return Health::unknown(if transport == "usb" {
            "the USB bridge answered IDENTIFY DEVICE with nothing (no SAT), so SMART cannot be read"
        } else {
            "the drive answered IDENTIFY DEVICE with nothing"
        });
    };
    if !support.supported {
        return Health::unknown("the drive does not implement SMART");
    }
    if !support.enabled {
        return Health::unknown(
            "SMART is switched off on this drive (`smartctl -s on` switches it on)",
        );
    }
    let mut pages = AtaPages::default();
    let (o, data) = ata_read(&f, AtaCmd::smart(ata::SMART_READ_DATA, 0), short);
    if o != AtaOutcome::Done {
        return Health::unknown(why("SMART READ DATA", &o, transport));
    }
    let self_test =
        support.self_test || ata::decode_smart_data(&data).is_some_and(|d| d.self_test_supported);
    pages.smart = Some(data);
    let mut notes = Vec::new();
    let (o, th) = ata_read(&f, AtaCmd::smart(ata::SMART_READ_THRESHOLDS, 0), short);
    match o {
        AtaOutcome::Done => pages.thresholds = Some(th),
        _ => notes.push(why("SMART READ THRESHOLDS", &o, transport)),
    }
    // A drive that stopped answering is not asked again.
    if self_test && o != AtaOutcome::TimedOut {
        let (o, log) = ata_read(
            &f,
            AtaCmd::smart(ata::SMART_READ_LOG, ata::LOG_SELF_TEST),
            short,
        );
        match o {
            AtaOutcome::Done => pages.self_test_log = Some(log),
            _ => notes.push(why("reading the self-test log", &o, transport)),
        }
    }
    let mut h = ata::classify(&pages);
    h.notes.extend(notes);
    h
}

// ---------------------------------------------------------------- SCSI log pages

/// Sends one SCSI read-type command; the bytes it returned on success.
fn scsi_cmd(f: &File, cdb: &[u8], len: usize) -> (AtaOutcome, Vec<u8>) {
    let mut buf = AlignedBuf::new(len);
    match sys::scsi_read(f, cdb, &mut buf, COMMAND_TIMEOUT_MS) {
        Ok(o) => {
            let out = interpret(&o);
            let got = len.saturating_sub(usize::try_from(o.resid.max(0)).unwrap_or(0));
            let data = buf[..got].to_vec();
            (out, data)
        }
        Err(e) => (sg_io_refused(&e, "SCSI log pages"), Vec::new()),
    }
}

/// A SCSI/SAS drive's health: the supported-pages list first (it proves LOG SENSE works and
/// says which pages to ask for), the error counter, temperature, self-test, background scan and
/// informational exceptions pages it has, then the grown defect list's header.
fn read_scsi(path: &Path) -> Health {
    use super::scsi::{self, ScsiPages};
    let f = match open(path) {
        Ok(f) => f,
        Err(e) => return open_failed(path, &e),
    };
    const LEN: usize = 1024;
    let (o, sup) = scsi_cmd(
        &f,
        &scsi::log_sense_cdb(scsi::PAGE_SUPPORTED, LEN as u16),
        LEN,
    );
    let supported = match (&o, scsi::supported_pages(&sup)) {
        (AtaOutcome::Done, Some(s)) => s,
        (AtaOutcome::Done, None) | (AtaOutcome::NoPassThrough, _) => return Health::unknown(
            "the SCSI disk does not answer LOG SENSE (no log pages), so its health cannot be read",
        ),
        (o, _) => return Health::unknown(why("LOG SENSE", o, "scsi")),
    };
    let mut p = ScsiPages {
        supported: Some(sup),
        ..ScsiPages::default()
    };
    let mut notes = Vec::new();
    for page in [
        scsi::PAGE_READ_ERRORS,
        scsi::PAGE_WRITE_ERRORS,
        scsi::PAGE_VERIFY_ERRORS,
        scsi::PAGE_NON_MEDIUM,
        scsi::PAGE_TEMPERATURE,
        scsi::PAGE_SELF_TEST,
        scsi::PAGE_BACKGROUND_SCAN,
        scsi::PAGE_INFO_EXCEPTIONS,
    ] {
        if !supported.contains(&page) {
            continue;
        }
        let (o, b) = scsi_cmd(&f, &scsi::log_sense_cdb(page, LEN as u16), LEN);
        if o == AtaOutcome::TimedOut {
            notes.push(why(&format!("log page {page:02X}h"), &o, "scsi"));
            break;
        }
        if o != AtaOutcome::Done {
            continue;
        }
        let slot = match page {
            scsi::PAGE_READ_ERRORS => &mut p.read_errors,
            scsi::PAGE_WRITE_ERRORS => &mut p.write_errors,
            scsi::PAGE_VERIFY_ERRORS => &mut p.verify_errors,
            scsi::PAGE_NON_MEDIUM => &mut p.non_medium,
            scsi::PAGE_TEMPERATURE => &mut p.temperature,
            scsi::PAGE_SELF_TEST => &mut p.self_test,
            scsi::PAGE_BACKGROUND_SCAN => &mut p.background_scan,
            _ => &mut p.info_exceptions,
        };
        *slot = Some(b);
    }
    if notes.is_empty() {
        let (o, b) = scsi_cmd(&f, &scsi::read_defects_cdb(), 4);
        if o == AtaOutcome::Done {
            p.defects = Some(b);
        }
    }
    let mut h = scsi::classify(&p);
    h.notes.extend(notes);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixtures::disk;

    #[test]
    fn a_refused_sg_io_says_why() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            sg_io_refused(&e(libc::EACCES), "SMART"),
            AtaOutcome::Failed("reading SMART needs root (CAP_SYS_RAWIO)".into())
        );
        for n in [libc::ENOTTY, libc::EINVAL, libc::EOPNOTSUPP] {
            assert_eq!(sg_io_refused(&e(n), "x"), AtaOutcome::NoPassThrough);
        }
        assert!(matches!(
            sg_io_refused(&e(libc::EIO), "x"),
            AtaOutcome::Failed(m) if m.starts_with("SG_IO failed")
        ));
    }

    fn outcome(status: u8, sense: &[u8]) -> sys::ScsiOutcome {
        sys::ScsiOutcome {
            status,
            sense: sense.to_vec(),
            ..Default::default()
        }
    }

    /// Descriptor sense with an ATA Status Return descriptor (as libata builds it).
    fn ata_sense(key: u8, error: u8, status: u8) -> Vec<u8> {
        let mut s = vec![0x72, key, 0, 0, 0, 0, 0, 14];
        let mut d = vec![0u8; 14];
        d[0] = 0x09;
        d[1] = 12;
        d[3] = error;
        d[13] = status;
        s.extend(d);
        s
    }

    #[test]
    fn sg_io_outcomes() {
        assert_eq!(interpret(&outcome(0, &[])), AtaOutcome::Done);
        // Recovered error "ATA pass through information available" is a success.
        assert_eq!(
            interpret(&outcome(2, &[0x72, 0x01, 0x00, 0x1D, 0, 0, 0, 0])),
            AtaOutcome::Done
        );
        // A USB bridge without SAT: ILLEGAL REQUEST, invalid command operation code (fixed sense).
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x20;
        assert_eq!(interpret(&outcome(2, &fixed)), AtaOutcome::NoPassThrough);
        // The drive aborted (SMART disabled): libata's ABORTED COMMAND with ERR+ABRT.
        assert_eq!(
            interpret(&outcome(2, &ata_sense(0x0B, 0x04, 0x51))),
            AtaOutcome::Aborted
        );
        assert!(matches!(
            interpret(&outcome(2, &ata_sense(0x03, 0x40, 0x51))),
            AtaOutcome::Failed(_)
        ));
        let t = sys::ScsiOutcome {
            host_status: 3,
            ..Default::default()
        };
        assert_eq!(interpret(&t), AtaOutcome::TimedOut);
        assert!(matches!(interpret(&outcome(2, &[])), AtaOutcome::Failed(_)));
    }

    #[test]
    fn transports_that_cannot_report_are_unknown() {
        for (t, word) in [
            ("virtio", "virtual disk"),
            ("loop", "loop device"),
            ("mmc", "SD card"),
            ("unknown", "cannot tell"),
        ] {
            let mut d = disk("vda", 1 << 30, vec![]);
            d.transport = t.into();
            let h = read(&d);
            assert_eq!(h.status, super::super::Status::Unknown, "{t}");
            assert!(h.reasons[0].contains(word), "{t}: {:?}", h.reasons);
        }
    }

    #[test]
    fn a_regular_file_is_not_a_drive() {
        // A disk-image file named as an ATA disk: SG_IO on a file fails, health stays unknown.
        let p = std::env::temp_dir().join(format!("lifeboat-health-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let mut d = disk("sdz", 4096, vec![]);
        d.path = p.clone();
        let h = read(&d);
        assert_eq!(h.status, super::super::Status::Unknown, "{h:?}");
        d.transport = "nvme".into();
        let h = read(&d);
        assert_eq!(h.status, super::super::Status::Unknown, "{h:?}");
        // A SCSI disk that takes no LOG SENSE (here: no SCSI commands at all).
        d.transport = "scsi".into();
        let h = read(&d);
        assert_eq!(h.status, super::super::Status::Unknown, "{h:?}");
        assert!(h.reasons[0].contains("LOG SENSE"), "{h:?}");
        std::fs::remove_file(&p).unwrap();
        d.path = "/nonexistent/lifeboat-disk".into();
        assert!(read(&d).reasons[0].contains("cannot open"));
    }
}
