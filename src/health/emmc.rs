//! eMMC health: the wear estimates an eMMC 5.0+ device keeps in its EXT_CSD, which the kernel's
//! mmc driver shows in sysfs (`device/life_time`: "0xAA 0xBB", `device/pre_eol_info`: "0xCC").
//! SD cards have no such registers (the attributes are absent there: health unknown).
//!
//! Values from JEDEC JESD84-B51 (eMMC 5.1) §7.4.22-24: DEVICE_LIFE_TIME_EST_TYP_A / _B
//! (EXT_CSD bytes 268 / 269; 0x01 = 0-10 % of the rated life used ... 0x0A = 90-100 %,
//! 0x0B = exceeded, 0x00 = not defined) and PRE_EOL_INFO (byte 267: 0x01 normal, 0x02 warning =
//! 80 % of the reserved blocks consumed, 0x03 urgent).
use super::{Counters, Health, Status};
use std::path::Path;

/// Parses a sysfs value such as "0x01" (hex with prefix) or "1".
fn num(s: &str) -> Option<u8> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Classifies from the two sysfs strings (None when the attribute is absent).
pub fn classify(life_time: Option<&str>, pre_eol: Option<&str>) -> Health {
    let (a, b) = match life_time.map(|l| l.split_whitespace().filter_map(num).collect::<Vec<_>>()) {
        Some(v) if v.len() == 2 => (v[0], v[1]),
        _ => (0, 0),
    };
    let eol = pre_eol.and_then(num).unwrap_or(0);
    if a == 0 && b == 0 && eol == 0 {
        return Health::unknown(
            "the card reports no wear estimate (an SD card, or an eMMC older than version 5.0)",
        );
    }
    let mut h = Health::unknown("");
    h.reasons.clear();
    h.protocol = Some("emmc".into());
    h.counters = Counters {
        // The upper end of the band the device reports (0x01 = up to 10 % ... 0x0B = over 100 %).
        percentage_used: (a.max(b) > 0).then(|| u64::from(a.max(b).min(0x0B)) * 10),
        ..Counters::default()
    };
    let mut status = Status::Ok;
    match eol {
        0x03 => {
            status = Status::Failing;
            h.reasons
                .push("the eMMC's reserved blocks are nearly used up (PRE_EOL_INFO urgent)".into());
        }
        0x02 => {
            status = Status::Worn;
            h.reasons
                .push("80% of the eMMC's reserved blocks are used (PRE_EOL_INFO warning)".into());
        }
        _ => {}
    }
    let worst = a.max(b);
    if worst >= 0x0B {
        status = status.max(Status::Worn);
        h.reasons
            .push("the eMMC has exceeded its rated life (DEVICE_LIFE_TIME_EST)".into());
    } else if worst >= 0x0A {
        // 90-100 %: the same line as NVMe's Percentage Used >= 90.
        status = status.max(Status::Worn);
        h.reasons.push(format!(
            "{}-{}% of the eMMC's rated life used (DEVICE_LIFE_TIME_EST)",
            (worst - 1) * 10,
            worst * 10
        ));
    }
    h.status = status;
    h
}

/// Reads the sysfs attributes of the disk at `sysfs_path` (below /sys).
pub fn read(sysfs_root: &Path, sysfs_path: &str) -> Health {
    let dev = sysfs_root
        .join(sysfs_path.trim_start_matches('/'))
        .join("device");
    let get = |n: &str| std::fs::read_to_string(dev.join(n)).ok();
    classify(get("life_time").as_deref(), get("pre_eol_info").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wear_bands() {
        let h = classify(Some("0x01 0x02\n"), Some("0x01\n"));
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert_eq!(h.counters.percentage_used, Some(20));
        assert_eq!(h.protocol.as_deref(), Some("emmc"));
        assert_eq!(classify(Some("0x09 0x03"), Some("0x01")).status, Status::Ok);
        let h = classify(Some("0x0A 0x03"), Some("0x01"));
        assert_eq!(h.status, Status::Worn);
        assert_eq!(
            h.reasons,
            ["90-100% of the eMMC's rated life used (DEVICE_LIFE_TIME_EST)"]
        );
        let h = classify(Some("0x0b 0x0b"), Some("0x02"));
        assert_eq!(h.status, Status::Worn);
        assert_eq!(h.reasons.len(), 2);
        assert_eq!(h.counters.percentage_used, Some(110));
        let h = classify(Some("0x02 0x02"), Some("0x03"));
        assert_eq!(h.status, Status::Failing);
        assert!(h.reasons[0].contains("urgent"));
    }

    #[test]
    fn no_estimate_is_unknown() {
        assert_eq!(classify(None, None).status, Status::Unknown);
        assert_eq!(
            classify(Some("0x00 0x00"), Some("0x00")).status,
            Status::Unknown
        );
        assert_eq!(classify(Some("garbage"), None).status, Status::Unknown);
    }

    #[test]
    fn reads_a_sysfs_tree() {
        let t = std::env::temp_dir().join(format!("lifeboat-emmc-{}", std::process::id()));
        let dev = t.join("devices/platform/mmc0/mmc0:0001/block/mmcblk0/device");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("life_time"), "0x0a 0x01\n").unwrap();
        std::fs::write(dev.join("pre_eol_info"), "0x01\n").unwrap();
        let h = read(&t, "/devices/platform/mmc0/mmc0:0001/block/mmcblk0");
        assert_eq!(h.status, Status::Worn, "{h:?}");
        assert_eq!(h.counters.percentage_used, Some(100));
        std::fs::remove_dir_all(&t).unwrap();
        assert_eq!(read(&t, "/nowhere").status, Status::Unknown);
    }
}
