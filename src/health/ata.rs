//! ATA SMART: the commands Lifeboat sends through SCSI/ATA Translation (SAT, the ATA
//! PASS-THROUGH CDBs that libata and SAT-capable USB bridges understand), and pure decoders of
//! the 512-byte pages they return (IDENTIFY DEVICE, SMART READ DATA, SMART READ THRESHOLDS, the
//! SMART self-test log) plus the classifier that turns them into a [`Health`].
//!
//! Where the byte offsets come from:
//! - IDENTIFY DEVICE words 82-87 (command sets supported/enabled): ATA/ATAPI-8 ACS (T13/1699-D)
//!   §7.16.7, Table 22 "IDENTIFY DEVICE data".
//! - SMART READ DATA: ACS-3 (T13/2161-D) Table 131 "Device SMART data structure": bytes 0-1
//!   revision, 2-361 vendor specific, 362 off-line data collection status, 363 self-test
//!   execution status, 367 off-line data collection capability (bit 4: self-test supported),
//!   511 checksum (all 512 bytes sum to 0 mod 256). Bytes 2-361 are "vendor specific" in ACS,
//!   but every drive uses the layout of SFF-8035i rev 2 (S.M.A.R.T. specification) there: 30
//!   entries of 12 bytes: id, flags (2 bytes LE, bit 0 = pre-failure), normalized value,
//!   worst value, raw value (6 bytes LE), reserved.
//! - SMART READ THRESHOLDS: the same SFF-8035i layout: 30 entries of 12 bytes from byte 2:
//!   id, threshold, 10 reserved bytes.
//! - SMART self-test log (log address 06h): ACS-3 §9.21 / Table A.16 "SMART self-test log data
//!   structure": bytes 0-1 revision, 21 descriptors of 24 bytes from byte 2 (byte 0 the test:
//!   LBA low of the command that ran it; byte 1 execution status, high nibble the result; bytes
//!   2-3 power-on hours (life timestamp); byte 4 checkpoint; bytes 5-8 LBA of the first
//!   failure), byte 508 the index (1-21) of the most recent descriptor, byte 511 checksum.
//! - ATA PASS-THROUGH (16) / (12) CDBs: SAT-3 (T10/BSR INCITS 517) §12.2.2 / §12.2.3.
use super::{Counters, Health, SelfTest, Status};
use serde::{Deserialize, Serialize};

/// The SMART command (B0h) and its feature codes (ACS-3 §7.48).
pub const ATA_SMART: u8 = 0xB0;
pub const SMART_READ_DATA: u8 = 0xD0;
pub const SMART_READ_THRESHOLDS: u8 = 0xD1;
pub const SMART_READ_LOG: u8 = 0xD5;
/// IDENTIFY DEVICE.
pub const ATA_IDENTIFY: u8 = 0xEC;
/// SMART log address of the self-test log.
pub const LOG_SELF_TEST: u8 = 0x06;

/// More reallocated sectors than this and the drive is "failing", not just "worn": the
/// defect list keeps growing, so the surface is degrading (Backblaze's drive statistics show
/// failure rates climbing steeply with the reallocated count; 100 is a conservative line).
pub const REALLOCATED_FAILING: u64 = 100;

/// One ATA command to send: the task-file registers that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtaCmd {
    pub command: u8,
    pub features: u8,
    /// Sector count (the number of 512-byte blocks read).
    pub count: u8,
    pub lba_low: u8,
    pub lba_mid: u8,
    pub lba_high: u8,
}

impl AtaCmd {
    pub fn identify() -> AtaCmd {
        AtaCmd {
            command: ATA_IDENTIFY,
            features: 0,
            count: 1,
            lba_low: 0,
            lba_mid: 0,
            lba_high: 0,
        }
    }
    /// A SMART sub-command: LBA mid/high carry the 4Fh/C2h signature the drive checks.
    pub fn smart(feature: u8, lba_low: u8) -> AtaCmd {
        AtaCmd {
            command: ATA_SMART,
            features: feature,
            count: 1,
            lba_low,
            lba_mid: 0x4F,
            lba_high: 0xC2,
        }
    }

    /// ATA PASS-THROUGH (16), opcode 85h, PIO Data-In of `count` 512-byte blocks (SAT-3 §12.2.3).
    pub fn cdb16(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = 0x85;
        // MULTIPLE_COUNT 0, PROTOCOL 4 (PIO Data-In) in bits 4:1, EXTEND 0.
        c[1] = 4 << 1;
        // T_DIR=1 (from the device), BYT_BLOK=1 (length in blocks), T_LENGTH=2 (in the count field).
        c[2] = 0x08 | 0x04 | 0x02;
        c[4] = self.features;
        c[6] = self.count;
        c[8] = self.lba_low;
        c[10] = self.lba_mid;
        c[12] = self.lba_high;
        c[13] = 0; // device
        c[14] = self.command;
        c
    }

    /// ATA PASS-THROUGH (12), opcode A1h, the same command for bridges that only know the
    /// short form (SAT-3 §12.2.2).
    pub fn cdb12(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0] = 0xA1;
        c[1] = 4 << 1;
        c[2] = 0x08 | 0x04 | 0x02;
        c[3] = self.features;
        c[4] = self.count;
        c[5] = self.lba_low;
        c[6] = self.lba_mid;
        c[7] = self.lba_high;
        c[8] = 0;
        c[9] = self.command;
        c
    }
}

/// What IDENTIFY DEVICE says about SMART (words 82-87).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmartSupport {
    pub supported: bool,
    pub enabled: bool,
    pub self_test: bool,
}

fn word(b: &[u8], w: usize) -> u16 {
    u16::from_le_bytes([b[2 * w], b[2 * w + 1]])
}

/// Decodes the SMART bits of IDENTIFY DEVICE data. Words 82-84 and 85-87 count only when their
/// bits 15:14 read 01b ("valid"), per ACS; None when the page does not look like IDENTIFY data.
pub fn decode_identify(b: &[u8]) -> Option<SmartSupport> {
    if b.len() < 512 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let valid = |w: u16| w & 0xC000 == 0x4000;
    let (w82, w84, w85, w87) = (word(b, 82), word(b, 84), word(b, 85), word(b, 87));
    let supported = valid(word(b, 83)) && w82 & 1 != 0;
    let enabled = valid(w87) && w85 & 1 != 0;
    let self_test = (valid(w84) && w84 & 2 != 0) || (valid(w87) && w87 & 2 != 0);
    Some(SmartSupport {
        supported,
        enabled,
        self_test,
    })
}

/// One entry of the SMART attribute table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaAttribute {
    pub id: u8,
    pub name: String,
    /// Pre-failure (flag bit 0): crossing its threshold predicts failure; else "old age".
    pub prefailure: bool,
    /// Normalized current value (1-253, higher is better).
    pub value: u8,
    pub worst: u8,
    /// The maker's threshold from SMART READ THRESHOLDS (None when not read).
    pub threshold: Option<u8>,
    /// The 48-bit raw value as stored (vendors may pack several fields into it).
    pub raw: u64,
}

/// The decoded SMART READ DATA page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartData {
    pub revision: u16,
    pub attributes: Vec<AtaAttribute>,
    /// Byte 363: high nibble the self-test execution status, low nibble the percent left in tens.
    pub self_test_exec: u8,
    /// Byte 367 bit 4: the drive implements self-tests (and so the self-test log).
    pub self_test_supported: bool,
    pub checksum_ok: bool,
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().take(512).fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// A short name for the attributes Lifeboat talks about (smartmontools' names for the rest
/// would need its vendor database; unknown ids are "attribute N").
pub fn attribute_name(id: u8) -> &'static str {
    match id {
        1 => "raw read error rate",
        3 => "spin-up time",
        4 => "start/stop count",
        5 => "reallocated sectors",
        7 => "seek error rate",
        9 => "power-on hours",
        10 => "spin retry count",
        12 => "power cycles",
        177 => "wear leveling count",
        184 => "end-to-end errors",
        187 => "reported uncorrectable",
        188 => "command timeouts",
        190 => "airflow temperature",
        194 => "temperature",
        196 => "reallocation events",
        197 => "pending sectors",
        198 => "offline uncorrectable",
        199 => "UDMA CRC errors",
        231 => "SSD life left",
        233 => "media wearout indicator",
        241 => "total LBAs written",
        242 => "total LBAs read",
        _ => "",
    }
}

/// Decodes SMART READ DATA (512 bytes); None when too short.
pub fn decode_smart_data(b: &[u8]) -> Option<SmartData> {
    if b.len() < 512 {
        return None;
    }
    let mut attributes = Vec::new();
    for i in 0..30 {
        let e = &b[2 + i * 12..2 + (i + 1) * 12];
        if e[0] == 0 {
            continue;
        }
        let mut raw = [0u8; 8];
        raw[..6].copy_from_slice(&e[5..11]);
        let name = attribute_name(e[0]);
        attributes.push(AtaAttribute {
            id: e[0],
            name: if name.is_empty() {
                format!("attribute {}", e[0])
            } else {
                name.to_string()
            },
            prefailure: e[1] & 1 != 0,
            value: e[3],
            worst: e[4],
            threshold: None,
            raw: u64::from_le_bytes(raw),
        });
    }
    Some(SmartData {
        revision: u16::from_le_bytes([b[0], b[1]]),
        attributes,
        self_test_exec: b[363],
        self_test_supported: b[367] & 0x10 != 0,
        checksum_ok: checksum_ok(b),
    })
}

/// Decodes SMART READ THRESHOLDS into (id, threshold) pairs; None when too short or the
/// checksum is wrong (a threshold we cannot trust is better not used).
pub fn decode_thresholds(b: &[u8]) -> Option<Vec<(u8, u8)>> {
    if b.len() < 512 || !checksum_ok(b) {
        return None;
    }
    Some(
        (0..30)
            .map(|i| (b[2 + i * 12], b[3 + i * 12]))
            .filter(|(id, _)| *id != 0)
            .collect(),
    )
}

/// What kind of self-test a log descriptor's byte 0 (the LBA low of the command) ran.
fn test_kind(b: u8) -> String {
    match b {
        0x00 => "offline scan".into(),
        0x01 | 0x81 => "short".into(),
        0x02 | 0x82 => "extended".into(),
        0x03 | 0x83 => "conveyance".into(),
        0x04 | 0x84 => "selective".into(),
        x => format!("vendor test 0x{x:02x}"),
    }
}

/// The self-test execution status (high nibble), ACS-3 Table 132. `Some(true)` passed,
/// `Some(false)` failed, None neither (aborted, interrupted, running).
fn test_result(nibble: u8) -> (String, Option<bool>) {
    let (s, p) = match nibble {
        0x0 => ("completed without error", Some(true)),
        0x1 => ("aborted by the host", None),
        0x2 => ("interrupted by a reset", None),
        0x3 => ("fatal error", Some(false)),
        0x4 => ("failed (unknown element)", Some(false)),
        0x5 => ("failed (electrical element)", Some(false)),
        0x6 => ("failed (servo/seek element)", Some(false)),
        0x7 => ("failed (read element)", Some(false)),
        0x8 => ("failed (handling damage)", Some(false)),
        0xF => ("in progress", None),
        _ => ("reserved status", None),
    };
    (s.to_string(), p)
}

/// Decodes the SMART self-test log (log 06h), newest first, skipping empty descriptors.
/// None when too short or the revision/checksum make it unusable.
pub fn decode_self_test_log(b: &[u8]) -> Option<Vec<SelfTest>> {
    if b.len() < 512 || !checksum_ok(b) {
        return None;
    }
    let index = usize::from(b[508]);
    if index == 0 || index > 21 {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for k in 0..21 {
        // Walk backwards from the newest descriptor (index is 1-based; the log is circular).
        let i = (index - 1 + 21 - k) % 21;
        let d = &b[2 + i * 24..2 + (i + 1) * 24];
        if d.iter().all(|&x| x == 0) {
            continue;
        }
        let (result, passed) = test_result(d[1] >> 4);
        let lba = u32::from_le_bytes([d[5], d[6], d[7], d[8]]);
        let failing_lba = (passed == Some(false) && lba != 0xFFFF_FFFF && lba != 0x0FFF_FFFF)
            .then_some(u64::from(lba));
        out.push(SelfTest {
            kind: test_kind(d[0]),
            result,
            passed,
            power_on_hours: u64::from(u16::from_le_bytes([d[2], d[3]])),
            failing_lba,
        });
    }
    Some(out)
}

/// What the drive returned, page by page (None: that command failed or was not sent).
#[derive(Debug, Clone, Default)]
pub struct AtaPages {
    pub smart: Option<Vec<u8>>,
    pub thresholds: Option<Vec<u8>>,
    pub self_test_log: Option<Vec<u8>>,
}

fn raw_of(d: &SmartData, id: u8) -> Option<u64> {
    d.attributes.iter().find(|a| a.id == id).map(|a| a.raw)
}

/// The counters from the attribute table. Raw values are 48 bits, but vendors pack other data
/// into the upper bytes of some of them, so each counter takes the part that holds the count
/// (as smartmontools' defaults do): 5 the low 16 bits; 9 (hours) the low 24; 188 the low 16
/// (Seagate packs three counters there); 187, 197, 198, 199, 12 the low 32; 194/190 the low byte.
pub fn counters(d: &SmartData) -> Counters {
    let low = |id: u8, bits: u32| raw_of(d, id).map(|r| r & ((1u64 << bits) - 1));
    Counters {
        reallocated_sectors: low(5, 16),
        reported_uncorrectable: low(187, 32),
        command_timeouts: low(188, 16),
        pending_sectors: low(197, 32),
        offline_uncorrectable: low(198, 32),
        udma_crc_errors: low(199, 32),
        power_on_hours: low(9, 24),
        power_cycles: low(12, 32),
        temperature_celsius: low(194, 8).or_else(|| low(190, 8)),
        ..Counters::default()
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Classifies an ATA drive from its pages. Never trusts the drive's overall verdict: the status
/// comes from the bad-sector counters, the maker's thresholds and the latest self-test.
pub fn classify(pages: &AtaPages) -> Health {
    let mut h = Health::unknown("");
    h.reasons.clear();
    h.protocol = Some("ata".into());
    let Some(data) = pages.smart.as_deref().and_then(decode_smart_data) else {
        h.reasons
            .push("the drive answered but returned no SMART data".into());
        return h;
    };
    let mut data = data;
    if data.attributes.is_empty() {
        h.reasons
            .push("the drive's SMART data holds no attributes (nothing to judge it by)".into());
        return h;
    }
    if !data.checksum_ok {
        h.notes
            .push("the SMART data's checksum is wrong (values read as they are)".into());
    }
    if let Some(th) = pages.thresholds.as_deref().and_then(decode_thresholds) {
        for a in data.attributes.iter_mut() {
            a.threshold = th.iter().find(|(id, _)| *id == a.id).map(|(_, t)| *t);
        }
    }
    let c = counters(&data);
    let mut status = Status::Ok;
    let mut reasons = Vec::new();
    let mut raise = |s: Status, why: String| {
        status = status.max(s);
        reasons.push(why);
    };
    if let Some(n) = c.pending_sectors.filter(|&n| n > 0) {
        raise(
            Status::Failing,
            format!(
                "{} pending reallocation (attribute 197)",
                plural(n, "sector", "sectors")
            ),
        );
    }
    if let Some(n) = c.offline_uncorrectable.filter(|&n| n > 0) {
        raise(
            Status::Failing,
            format!(
                "{} found unreadable by the drive's own scan (attribute 198)",
                plural(n, "sector", "sectors")
            ),
        );
    }
    if let Some(n) = c.reported_uncorrectable.filter(|&n| n > 0) {
        raise(
            Status::Failing,
            format!(
                "{} the drive could not correct (attribute 187)",
                plural(n, "read error", "read errors")
            ),
        );
    }
    match c.reallocated_sectors {
        Some(n) if n > REALLOCATED_FAILING => raise(
            Status::Failing,
            format!(
                "{n} sectors reallocated (attribute 5): more than {REALLOCATED_FAILING}, the surface keeps failing"
            ),
        ),
        Some(n) if n > 0 => raise(
            Status::Worn,
            format!(
                "{} reallocated (attribute 5)",
                plural(n, "sector", "sectors")
            ),
        ),
        _ => {}
    }
    for a in &data.attributes {
        // Threshold 0 means "never fails"; a value of 0 or above 253 is not a valid reading.
        let Some(t) = a.threshold.filter(|&t| t != 0) else {
            continue;
        };
        if a.value == 0 || a.value > 253 || a.value > t {
            if a.worst != 0 && a.worst <= t && a.worst <= 253 {
                h.notes.push(format!(
                    "attribute {} ({}) was at its failure threshold in the past (worst {}, threshold {t})",
                    a.id, a.name, a.worst
                ));
            }
            continue;
        }
        let (s, what) = if a.prefailure {
            (Status::Failing, "failure")
        } else {
            (Status::Worn, "old-age")
        };
        raise(
            s,
            format!(
                "attribute {} ({}) is at the maker's {what} threshold (value {}, threshold {t})",
                a.id, a.name, a.value
            ),
        );
    }
    let log = pages
        .self_test_log
        .as_deref()
        .and_then(decode_self_test_log);
    let latest = log.as_ref().and_then(|l| l.first().cloned());
    if let Some(t) = &latest {
        if t.passed == Some(false) {
            raise(
                Status::Failing,
                format!(
                    "the latest self-test ({}, at {} hours) {}{}",
                    t.kind,
                    t.power_on_hours,
                    t.result,
                    t.failing_lba
                        .map(|l| format!(" at LBA {l}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    // Counters that do not decide the status but a technician wants to see.
    if let Some(n) = c.udma_crc_errors.filter(|&n| n > 0) {
        h.notes.push(format!(
            "{} between disk and controller (attribute 199): usually a bad cable or connector, not the disk surface",
            plural(n, "transfer error", "transfer errors")
        ));
    }
    if let Some(n) = c.command_timeouts.filter(|&n| n > 0) {
        h.notes.push(format!(
            "{} (attribute 188)",
            plural(n, "command timed out", "commands timed out")
        ));
    }
    if data.self_test_exec >> 4 == 0xF {
        h.notes.push(format!(
            "a self-test is running now ({}% left)",
            u32::from(data.self_test_exec & 0xF) * 10
        ));
    }
    match (&latest, &log) {
        (Some(t), _) if t.passed != Some(false) => h.notes.push(format!(
            "latest self-test: {}, {} at {} hours",
            t.kind, t.result, t.power_on_hours
        )),
        (None, Some(_)) => h.notes.push("no self-test on record".into()),
        _ => {}
    }
    let sector_counters = [
        (5u8, c.reallocated_sectors),
        (187, c.reported_uncorrectable),
        (197, c.pending_sectors),
        (198, c.offline_uncorrectable),
    ];
    let missing: Vec<String> = sector_counters
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(id, _)| id.to_string())
        .collect();
    if status == Status::Ok && missing.len() == sector_counters.len() {
        // Nothing reported about bad sectors and nothing failed: no evidence either way.
        status = Status::Unknown;
        reasons.push(
            "the drive reports none of the bad-sector counters (attributes 5, 187, 197, 198)"
                .into(),
        );
    } else if !missing.is_empty() {
        h.notes.push(format!(
            "the drive does not report attribute{} {}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    h.status = status;
    h.reasons = reasons;
    h.counters = c;
    h.self_test = latest;
    h.attributes = data.attributes;
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SMART READ DATA page as a drive would return it: `attrs` are (id, flags, value,
    /// worst, raw), the self-test capability bit set, the checksum fixed up.
    pub fn smart_page(attrs: &[(u8, u16, u8, u8, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0x10; // revision 16, as most current drives
        for (i, (id, flags, value, worst, raw)) in attrs.iter().enumerate() {
            let e = &mut b[2 + i * 12..2 + (i + 1) * 12];
            e[0] = *id;
            e[1..3].copy_from_slice(&flags.to_le_bytes());
            e[3] = *value;
            e[4] = *worst;
            e[5..11].copy_from_slice(&raw.to_le_bytes()[..6]);
        }
        b[362] = 0x82; // off-line data collection completed, auto-save on
        b[367] = 0x7B; // off-line, self-test, conveyance, selective supported
        fix_checksum(&mut b);
        b
    }

    pub fn threshold_page(th: &[(u8, u8)]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0x10;
        for (i, (id, t)) in th.iter().enumerate() {
            b[2 + i * 12] = *id;
            b[3 + i * 12] = *t;
        }
        fix_checksum(&mut b);
        b
    }

    /// A self-test log: `tests` oldest first as (test byte, status byte, hours, lba).
    pub fn self_test_page(tests: &[(u8, u8, u16, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 1;
        for (i, (t, st, h, lba)) in tests.iter().enumerate() {
            let d = &mut b[2 + i * 24..2 + (i + 1) * 24];
            d[0] = *t;
            d[1] = *st;
            d[2..4].copy_from_slice(&h.to_le_bytes());
            d[5..9].copy_from_slice(&lba.to_le_bytes());
        }
        b[508] = tests.len() as u8;
        fix_checksum(&mut b);
        b
    }

    pub fn fix_checksum(b: &mut [u8]) {
        b[511] = 0;
        let s = b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
        b[511] = s.wrapping_neg();
    }

    /// A healthy 4-year-old desktop disk (values after a WD Blue WD10EZEX): no bad sectors.
    pub fn healthy() -> AtaPages {
        AtaPages {
            smart: Some(smart_page(&[
                (1, 0x2f, 200, 200, 0),
                (3, 0x27, 175, 172, 4225),
                (4, 0x32, 100, 100, 1215),
                (5, 0x33, 200, 200, 0),
                (9, 0x32, 57, 57, 31_842),
                (12, 0x32, 100, 100, 1190),
                (194, 0x22, 112, 95, 31),
                (196, 0x32, 200, 200, 0),
                (197, 0x32, 200, 200, 0),
                (198, 0x30, 200, 200, 0),
                (199, 0x32, 200, 200, 0),
            ])),
            thresholds: Some(threshold_page(&[
                (1, 51),
                (3, 21),
                (4, 0),
                (5, 140),
                (9, 0),
                (12, 0),
                (194, 0),
                (196, 0),
                (197, 0),
                (198, 0),
                (199, 0),
            ])),
            self_test_log: Some(self_test_page(&[(0x01, 0x00, 30_100, 0xFFFF_FFFF)])),
        }
    }

    #[test]
    fn healthy_drive_is_ok_with_its_counters() {
        let h = classify(&healthy());
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert!(h.reasons.is_empty(), "{:?}", h.reasons);
        assert_eq!(h.counters.reallocated_sectors, Some(0));
        assert_eq!(h.counters.pending_sectors, Some(0));
        assert_eq!(h.counters.offline_uncorrectable, Some(0));
        assert_eq!(h.counters.udma_crc_errors, Some(0));
        assert_eq!(h.counters.reported_uncorrectable, None);
        assert_eq!(h.counters.power_on_hours, Some(31_842));
        assert_eq!(h.counters.temperature_celsius, Some(31));
        let t = h.self_test.as_ref().unwrap();
        assert_eq!((t.kind.as_str(), t.passed), ("short", Some(true)));
        assert_eq!(t.power_on_hours, 30_100);
        assert!(
            h.notes.iter().any(|n| n.contains("attribute 187")),
            "{:?}",
            h.notes
        );
        let a5 = h.attributes.iter().find(|a| a.id == 5).unwrap();
        assert_eq!(
            (a5.value, a5.threshold, a5.prefailure),
            (200, Some(140), true)
        );
    }

    #[test]
    fn reallocated_sectors_make_it_worn_then_failing() {
        let mut p = healthy();
        p.smart = Some(smart_page(&[
            (5, 0x33, 199, 199, 8),
            (9, 0x32, 57, 57, 31_842),
            (197, 0x32, 200, 200, 0),
        ]));
        let h = classify(&p);
        assert_eq!(h.status, Status::Worn);
        assert_eq!(h.reasons, ["8 sectors reallocated (attribute 5)"]);
        p.smart = Some(smart_page(&[(5, 0x33, 180, 180, 412)]));
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert!(
            h.reasons[0].contains("412 sectors reallocated"),
            "{:?}",
            h.reasons
        );
        assert!(h.reasons[0].contains("more than 100"), "{:?}", h.reasons);
    }

    #[test]
    fn vendor_bits_above_the_count_are_ignored() {
        // Seagate-style: reallocated count 3 in the low word, other data above it.
        let p = AtaPages {
            smart: Some(smart_page(&[
                (5, 0x33, 100, 100, 0x0000_0007_0000_0003),
                (9, 0x32, 90, 90, 0x0000_0a00_0000_2710), // 10000 hours + vendor byte
                (188, 0x32, 100, 99, 0x0000_0001_0001_0002),
            ])),
            ..AtaPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.counters.reallocated_sectors, Some(3));
        assert_eq!(h.counters.power_on_hours, Some(10_000));
        assert_eq!(h.counters.command_timeouts, Some(2));
        assert_eq!(h.status, Status::Worn);
        assert!(h.notes.iter().any(|n| n.contains("2 commands timed out")));
    }

    /// A failing laptop disk whose overall SMART verdict still says PASSED (every normalized
    /// value above its threshold), but with pending and uncorrectable sectors.
    pub fn failing() -> AtaPages {
        AtaPages {
            smart: Some(smart_page(&[
                (1, 0x0f, 100, 62, 0x0aa0_0000),
                (5, 0x33, 100, 100, 0),
                (9, 0x32, 79, 79, 18_771),
                (187, 0x32, 88, 88, 12),
                (188, 0x32, 100, 97, 0),
                (197, 0x12, 100, 100, 12),
                (198, 0x10, 100, 100, 4),
                (199, 0x3e, 200, 200, 0),
            ])),
            thresholds: Some(threshold_page(&[
                (1, 6),
                (5, 36),
                (9, 0),
                (187, 0),
                (188, 0),
                (197, 0),
                (198, 0),
                (199, 0),
            ])),
            self_test_log: Some(self_test_page(&[
                (0x01, 0x00, 17_002, 0xFFFF_FFFF),
                (0x02, 0x73, 18_760, 0x0123_4567),
            ])),
        }
    }

    #[test]
    fn pending_and_uncorrectable_sectors_are_failing_whatever_the_verdict() {
        let h = classify(&failing());
        assert_eq!(h.status, Status::Failing);
        assert_eq!(
            h.reasons,
            [
                "12 sectors pending reallocation (attribute 197)",
                "4 sectors found unreadable by the drive's own scan (attribute 198)",
                "12 read errors the drive could not correct (attribute 187)",
                "the latest self-test (extended, at 18760 hours) failed (read element) at LBA 19088743",
            ]
        );
        assert_eq!(h.counters.pending_sectors, Some(12));
        assert_eq!(h.counters.offline_uncorrectable, Some(4));
        assert_eq!(h.counters.reported_uncorrectable, Some(12));
        assert_eq!(h.self_test.as_ref().unwrap().failing_lba, Some(0x0123_4567));
    }

    #[test]
    fn one_pending_sector_alone_is_failing() {
        let p = AtaPages {
            smart: Some(smart_page(&[
                (5, 0x33, 100, 100, 0),
                (197, 0x12, 100, 100, 1),
            ])),
            ..AtaPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert_eq!(h.reasons, ["1 sector pending reallocation (attribute 197)"]);
    }

    #[test]
    fn threshold_crossings() {
        // A pre-failure attribute at its threshold: failing; an old-age one: worn.
        let mut p = AtaPages {
            smart: Some(smart_page(&[
                (5, 0x33, 100, 100, 0),
                (3, 0x27, 20, 20, 9000),
            ])),
            thresholds: Some(threshold_page(&[(5, 36), (3, 21)])),
            ..AtaPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert_eq!(
            h.reasons,
            ["attribute 3 (spin-up time) is at the maker's failure threshold (value 20, threshold 21)"]
        );
        p.smart = Some(smart_page(&[
            (5, 0x33, 100, 100, 0),
            (3, 0x26, 20, 20, 9000),
        ]));
        assert_eq!(classify(&p).status, Status::Worn);
        // Worst value once at the threshold, now recovered: a note only.
        p.smart = Some(smart_page(&[
            (5, 0x33, 100, 100, 0),
            (3, 0x27, 90, 21, 9000),
        ]));
        let h = classify(&p);
        assert_eq!(h.status, Status::Ok);
        assert!(
            h.notes.iter().any(|n| n.contains("in the past")),
            "{:?}",
            h.notes
        );
        // A thresholds page with a bad checksum is not used.
        let mut bad = threshold_page(&[(5, 36), (3, 95)]);
        bad[511] ^= 1;
        p.thresholds = Some(bad);
        assert_eq!(classify(&p).status, Status::Ok);
    }

    #[test]
    fn crc_errors_are_a_note_not_a_failure() {
        let p = AtaPages {
            smart: Some(smart_page(&[
                (5, 0x33, 200, 200, 0),
                (197, 0x32, 200, 200, 0),
                (199, 0x32, 200, 200, 37),
            ])),
            ..AtaPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Ok);
        assert!(
            h.notes.iter().any(|n| n.starts_with("37 transfer errors")),
            "{:?}",
            h.notes
        );
    }

    #[test]
    fn nothing_to_judge_by_is_unknown_never_ok() {
        // An SSD reporting only vendor attributes.
        let p = AtaPages {
            smart: Some(smart_page(&[
                (9, 0x32, 100, 100, 12),
                (241, 0x32, 100, 100, 5),
            ])),
            ..AtaPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Unknown);
        assert!(h.reasons[0].contains("none of the bad-sector counters"));
        assert_eq!(h.counters.power_on_hours, Some(12));
        // An empty page (a bridge that ignored the command).
        let p = AtaPages {
            smart: Some(vec![0u8; 512]),
            ..AtaPages::default()
        };
        assert_eq!(classify(&p).status, Status::Unknown);
        // Nothing returned.
        let h = classify(&AtaPages::default());
        assert_eq!(h.status, Status::Unknown);
        assert!(!h.reasons.is_empty());
    }

    #[test]
    fn qemu_ide_smart_page() {
        // What QEMU's ide-hd returns (hw/ide/core.c smart_attributes): 5 with raw 0, 9 with 1.
        let p = AtaPages {
            smart: Some(smart_page(&[
                (1, 0x03, 0x64, 0x64, 0),
                (3, 0x03, 0x64, 0x64, 0x10),
                (4, 0x02, 0x64, 0x64, 0x64),
                (5, 0x03, 0x64, 0x64, 0),
                (9, 0x03, 0x64, 0x64, 1),
                (12, 0x03, 0x64, 0x64, 0),
                (190, 0x03, 0x45, 0x45, 0x1f1f_001f),
            ])),
            thresholds: Some(threshold_page(&[(1, 6), (4, 0x14), (5, 0x24), (190, 0x32)])),
            self_test_log: Some(self_test_page(&[])),
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert_eq!(h.counters.power_on_hours, Some(1));
        assert_eq!(h.counters.temperature_celsius, Some(31));
        assert!(h.notes.iter().any(|n| n == "no self-test on record"));
    }

    #[test]
    fn self_test_log_is_circular_newest_first() {
        let mut tests: Vec<(u8, u8, u16, u32)> =
            (0..21).map(|i| (0x01, 0x00, 100 + i as u16, 0)).collect();
        // Wrapped around: the newest (index 3) is the third descriptor.
        tests[2] = (0x82, 0x00, 999, 0);
        let mut b = self_test_page(&tests);
        b[508] = 3;
        fix_checksum(&mut b);
        let log = decode_self_test_log(&b).unwrap();
        assert_eq!(log.len(), 21);
        assert_eq!(
            (log[0].kind.as_str(), log[0].power_on_hours),
            ("extended", 999)
        );
        assert_eq!(log[1].power_on_hours, 101);
        assert_eq!(log[2].power_on_hours, 100);
        assert_eq!(log[3].power_on_hours, 120);
        // A bad checksum: not decoded.
        b[511] ^= 0x55;
        assert!(decode_self_test_log(&b).is_none());
    }

    #[test]
    fn identify_smart_bits() {
        let mut b = vec![0u8; 512];
        let put = |b: &mut Vec<u8>, w: usize, v: u16| {
            b[2 * w..2 * w + 2].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut b, 82, 0x4021);
        put(&mut b, 83, 0x7400);
        put(&mut b, 84, 0x4000);
        put(&mut b, 85, 0x4021);
        put(&mut b, 87, 0x4000);
        let s = decode_identify(&b).unwrap();
        assert!(s.supported && s.enabled && !s.self_test);
        put(&mut b, 85, 0x4020);
        put(&mut b, 84, 0x4003);
        let s = decode_identify(&b).unwrap();
        assert!(s.supported && !s.enabled && s.self_test);
        // Word 83 not marked valid: SMART support cannot be claimed.
        put(&mut b, 83, 0x0000);
        assert!(!decode_identify(&b).unwrap().supported);
        assert!(decode_identify(&[0u8; 512]).is_none());
    }

    #[test]
    fn pass_through_cdbs() {
        let c = AtaCmd::smart(SMART_READ_LOG, LOG_SELF_TEST).cdb16();
        assert_eq!(
            c,
            [0x85, 0x08, 0x0E, 0, 0xD5, 0, 1, 0, 0x06, 0, 0x4F, 0, 0xC2, 0, 0xB0, 0]
        );
        let c = AtaCmd::smart(SMART_READ_DATA, 0).cdb12();
        assert_eq!(c, [0xA1, 0x08, 0x0E, 0xD0, 1, 0, 0x4F, 0xC2, 0, 0xB0, 0, 0]);
        let c = AtaCmd::identify().cdb16();
        assert_eq!((c[14], c[6], c[10], c[12]), (0xEC, 1, 0, 0));
    }
}
