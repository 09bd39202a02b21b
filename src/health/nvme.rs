//! NVMe health: the decoder of the SMART / Health Information log page (Get Log Page, log
//! identifier 02h, 512 bytes) and the classifier that turns it into a [`Health`].
//!
//! Byte offsets from the NVM Express Base Specification 2.0, Figure 207 "SMART / Health
//! Information Log Page" (Figure 194 in revision 1.4; unchanged since 1.0 for these fields):
//! byte 0 Critical Warning (bit 0 available spare below threshold, 1 temperature outside a
//! threshold, 2 NVM subsystem reliability degraded, 3 media placed in read-only mode, 4 volatile
//! memory backup failed, 5 persistent memory region read-only); bytes 1-2 Composite Temperature
//! (kelvin); 3 Available Spare (%); 4 Available Spare Threshold (%); 5 Percentage Used (may
//! exceed 100); 6 Endurance Group Critical Warning Summary; then 16-byte little-endian
//! counters: 32 Data Units Read, 48 Data Units Written, 64 Host Read Commands, 80 Host Write
//! Commands, 96 Controller Busy Time, 112 Power Cycles, 128 Power On Hours, 144 Unsafe
//! Shutdowns, 160 Media and Data Integrity Errors, 176 Number of Error Information Log Entries.
use super::{Counters, Health, Status};

/// Get Log Page (admin opcode 02h) and the SMART / Health log identifier.
pub const ADMIN_GET_LOG_PAGE: u8 = 0x02;
pub const LOG_SMART_HEALTH: u8 = 0x02;
/// Percentage Used at or above this: "worn" (the drive nears its rated write endurance).
pub const PERCENT_USED_WORN: u8 = 90;

/// The decoded log page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartLog {
    pub critical_warning: u8,
    pub temperature_kelvin: u16,
    pub available_spare: u8,
    pub available_spare_threshold: u8,
    pub percentage_used: u8,
    pub endurance_group_warning: u8,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub error_log_entries: u128,
}

fn u128_at(b: &[u8], off: usize) -> u128 {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[off..off + 16]);
    u128::from_le_bytes(x)
}

/// Decodes the 512-byte page; None when too short.
pub fn decode(b: &[u8]) -> Option<SmartLog> {
    if b.len() < 512 {
        return None;
    }
    Some(SmartLog {
        critical_warning: b[0],
        temperature_kelvin: u16::from_le_bytes([b[1], b[2]]),
        available_spare: b[3],
        available_spare_threshold: b[4],
        percentage_used: b[5],
        endurance_group_warning: b[6],
        power_cycles: u128_at(b, 112),
        power_on_hours: u128_at(b, 128),
        unsafe_shutdowns: u128_at(b, 144),
        media_errors: u128_at(b, 160),
        error_log_entries: u128_at(b, 176),
    })
}

fn sat(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// The critical-warning bits that mean the drive itself is failing, in plain words.
const FAILING_BITS: [(u8, &str); 5] = [
    (0x01, "available spare is below the drive's threshold"),
    (
        0x04,
        "the drive reports its reliability is degraded (media or internal errors)",
    ),
    (0x08, "the drive has put its media into read-only mode"),
    (
        0x10,
        "the drive's power-loss backup (volatile memory backup) has failed",
    ),
    (
        0x20,
        "the drive's persistent memory region has become read-only",
    ),
];

/// Classifies an NVMe drive from its SMART / Health log page.
pub fn classify(page: &[u8]) -> Health {
    let mut h = Health::unknown("");
    h.reasons.clear();
    h.protocol = Some("nvme".into());
    let Some(l) = decode(page) else {
        h.reasons
            .push("the drive returned a short SMART / Health log".into());
        return h;
    };
    h.counters = Counters {
        critical_warning: Some(u64::from(l.critical_warning)),
        media_errors: Some(sat(l.media_errors)),
        percentage_used: Some(u64::from(l.percentage_used)),
        available_spare: Some(u64::from(l.available_spare)),
        available_spare_threshold: Some(u64::from(l.available_spare_threshold)),
        power_on_hours: Some(sat(l.power_on_hours)),
        power_cycles: Some(sat(l.power_cycles)),
        unsafe_shutdowns: Some(sat(l.unsafe_shutdowns)),
        error_log_entries: Some(sat(l.error_log_entries)),
        // 0 K means "not reported"; the field is kelvin, reported in °C.
        temperature_celsius: (l.temperature_kelvin > 0)
            .then(|| u64::from(l.temperature_kelvin.saturating_sub(273))),
        ..Counters::default()
    };
    let mut status = Status::Ok;
    let mut reasons = Vec::new();
    let cw = l.critical_warning;
    for (bit, what) in FAILING_BITS {
        if cw & bit != 0 {
            status = Status::Failing;
            reasons.push(if bit == 0x01 {
                format!(
                    "{what} ({}% left, threshold {}%; critical warning bit 0)",
                    l.available_spare, l.available_spare_threshold
                )
            } else {
                format!("{what} (critical warning bit {})", bit.trailing_zeros())
            });
        }
    }
    if cw & 0xC0 != 0 {
        status = Status::Failing;
        reasons.push(format!(
            "the drive raises critical warning bits this version of Lifeboat does not know (0x{:02x})",
            cw & 0xC0
        ));
    }
    if cw & 0x02 != 0 {
        // The temperature bit reports the surroundings now, not wear of the media.
        h.notes.push(format!(
            "the drive is outside its temperature limits right now ({} °C; critical warning bit 1): let it cool",
            i32::from(l.temperature_kelvin) - 273
        ));
    }
    if l.media_errors > 0 {
        status = Status::Failing;
        reasons.push(format!(
            "{} media and data integrity {} (data the drive could not read back)",
            l.media_errors,
            if l.media_errors == 1 {
                "error"
            } else {
                "errors"
            }
        ));
    }
    if cw & 0x01 == 0 && l.available_spare < l.available_spare_threshold {
        status = Status::Failing;
        reasons.push(format!(
            "available spare is below the drive's threshold ({}% left, threshold {}%)",
            l.available_spare, l.available_spare_threshold
        ));
    }
    let eg = l.endurance_group_warning & 0x0D & !cw;
    if eg != 0 {
        status = Status::Failing;
        reasons.push(format!(
            "an endurance group of the drive reports a critical warning (0x{eg:02x}: spare, reliability or read-only)"
        ));
    }
    if l.percentage_used >= PERCENT_USED_WORN {
        status = status.max(Status::Worn);
        reasons.push(if l.percentage_used >= 100 {
            format!(
                "{}% of its rated write endurance used: past its rated life",
                l.percentage_used
            )
        } else {
            format!("{}% of its rated write endurance used", l.percentage_used)
        });
    }
    h.status = status;
    h.reasons = reasons;
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SMART / Health page with the fields the classifier reads.
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        cw: u8,
        kelvin: u16,
        spare: u8,
        spare_th: u8,
        used: u8,
        hours: u128,
        unsafe_shutdowns: u128,
        media_errors: u128,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = cw;
        b[1..3].copy_from_slice(&kelvin.to_le_bytes());
        b[3] = spare;
        b[4] = spare_th;
        b[5] = used;
        b[32..48].copy_from_slice(&123_456u128.to_le_bytes()); // data units read
        b[112..128].copy_from_slice(&1_402u128.to_le_bytes()); // power cycles
        b[128..144].copy_from_slice(&hours.to_le_bytes());
        b[144..160].copy_from_slice(&unsafe_shutdowns.to_le_bytes());
        b[160..176].copy_from_slice(&media_errors.to_le_bytes());
        b[176..192].copy_from_slice(&(media_errors * 2).to_le_bytes());
        b
    }

    #[test]
    fn healthy_nvme() {
        // A Samsung 970 EVO Plus after two years in a laptop.
        let h = classify(&page(0, 309, 100, 10, 3, 5_312, 61, 0));
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert!(h.reasons.is_empty());
        let c = &h.counters;
        assert_eq!(c.critical_warning, Some(0));
        assert_eq!(c.media_errors, Some(0));
        assert_eq!(c.percentage_used, Some(3));
        assert_eq!(c.available_spare, Some(100));
        assert_eq!(c.available_spare_threshold, Some(10));
        assert_eq!(c.power_on_hours, Some(5_312));
        assert_eq!(c.unsafe_shutdowns, Some(61));
        assert_eq!(c.power_cycles, Some(1_402));
        assert_eq!(c.temperature_celsius, Some(36));
        assert_eq!(c.reallocated_sectors, None);
        assert_eq!(h.protocol.as_deref(), Some("nvme"));
    }

    #[test]
    fn worn_nvme() {
        let h = classify(&page(0, 320, 64, 10, 93, 41_000, 20, 0));
        assert_eq!(h.status, Status::Worn);
        assert_eq!(h.reasons, ["93% of its rated write endurance used"]);
        let h = classify(&page(0, 320, 30, 10, 140, 61_000, 20, 0));
        assert_eq!(h.status, Status::Worn);
        assert!(h.reasons[0].contains("past its rated life"));
    }

    #[test]
    fn failing_nvme() {
        // Media errors alone (critical warning still clear).
        let h = classify(&page(0, 315, 100, 10, 7, 9_000, 3, 48));
        assert_eq!(h.status, Status::Failing);
        assert_eq!(
            h.reasons,
            ["48 media and data integrity errors (data the drive could not read back)"]
        );
        assert_eq!(h.counters.media_errors, Some(48));
        // Spare exhausted, reliability degraded, read-only, and worn out too.
        let h = classify(&page(0x0D, 315, 4, 10, 100, 30_000, 3, 0));
        assert_eq!(h.status, Status::Failing);
        assert_eq!(
            h.reasons,
            [
                "available spare is below the drive's threshold (4% left, threshold 10%; critical warning bit 0)",
                "the drive reports its reliability is degraded (media or internal errors) (critical warning bit 2)",
                "the drive has put its media into read-only mode (critical warning bit 3)",
                "100% of its rated write endurance used: past its rated life",
            ]
        );
        // Spare below threshold without the warning bit (a drive that forgot to raise it).
        let h = classify(&page(0, 315, 5, 10, 20, 30_000, 3, 0));
        assert_eq!(h.status, Status::Failing);
        assert!(h.reasons[0].starts_with("available spare is below"));
        // Unknown warning bits are not ignored.
        assert_eq!(
            classify(&page(0x40, 315, 100, 10, 1, 1, 0, 0)).status,
            Status::Failing
        );
    }

    #[test]
    fn temperature_warning_is_a_note() {
        let h = classify(&page(0x02, 361, 100, 10, 1, 100, 0, 0));
        assert_eq!(h.status, Status::Ok);
        assert!(h.notes[0].contains("88 °C"), "{:?}", h.notes);
    }

    #[test]
    fn huge_counters_saturate() {
        let h = classify(&page(0, 300, 100, 10, 1, u128::MAX, 1 << 70, 0));
        assert_eq!(h.counters.power_on_hours, Some(u64::MAX));
        assert_eq!(h.counters.unsafe_shutdowns, Some(u64::MAX));
        assert_eq!(classify(&[0u8; 100]).status, Status::Unknown);
    }

    #[test]
    fn qemu_nvme_page() {
        // QEMU's emulated controller (hw/nvme/ctrl.c nvme_smart_info): 50 °C (323 K), no
        // spare figures, nothing used, power-on hours since the VM started.
        let h = classify(&page(0, 323, 0, 0, 0, 0, 0, 0));
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert_eq!(h.counters.temperature_celsius, Some(50));
    }
}
