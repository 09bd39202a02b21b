//! Drive health, read by Lifeboat itself before a job: ATA SMART through SCSI/ATA Translation
//! (SATA disks behind libata, SAT-capable USB bridges), the NVMe SMART / Health log, a SCSI/SAS
//! drive's LOG SENSE pages and grown defect list, and an eMMC's wear estimates (sysfs
//! `life_time` / `pre_eol_info`). Each
//! disk gets a [`Health`]: `status` (`ok`, `worn`, `failing`, `unknown`), the `reasons` in plain
//! words, `notes`, and the raw `counters`. The status comes from the bad-sector counters, the
//! maker's thresholds, the latest self-test and the NVMe warnings, never from the drive's
//! overall "PASSED" verdict; a disk that cannot report (virtio, a USB bridge without SAT, a
//! refused ioctl, no answer in time) is `unknown` with the reason, never `ok`.
//!
//! `ata`, `nvme` and `scsi` are pure decoders and classifiers (unit-tested on recorded pages);
//! `device` sends the commands (through the ioctl wrappers in `crate::io::sys`) with a
//! per-command timeout, and [`fill`] reads every disk in parallel under one deadline, so a
//! dying drive never holds up `list` or the console for long.
pub mod ata;
pub mod device;
pub mod emmc;
pub mod nvme;
pub mod scsi;

pub use ata::AtaAttribute;

use crate::devices::{self, Disk, Selected};
use crate::error::{exit, Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The verdict. Ordered so that `max` gives the worse of two known states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The drive could not be asked, or gave nothing to judge it by.
    Unknown,
    Ok,
    /// Usable, but wearing: reallocated sectors, an old-age threshold, NVMe endurance ≥ 90 %.
    Worn,
    /// Losing data now: pending/uncorrectable sectors, a failed self-test, NVMe media errors or
    /// critical warnings. Clone it first; never use it as a target.
    Failing,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Ok => "ok",
            Status::Worn => "worn",
            Status::Failing => "failing",
        }
    }
}

/// The raw counters the drive reported (absent from the JSON when the drive does not report
/// them). ATA attribute numbers and NVMe log fields are named where they come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// ATA 5: sectors the drive replaced with spares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reallocated_sectors: Option<u64>,
    /// ATA 187: uncorrectable errors reported to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_uncorrectable: Option<u64>,
    /// ATA 188: commands that timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeouts: Option<u64>,
    /// ATA 197: sectors waiting to be reallocated (unreadable now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_sectors: Option<u64>,
    /// ATA 198: sectors the drive's off-line scan found uncorrectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_uncorrectable: Option<u64>,
    /// ATA 199: interface (UDMA) CRC errors, usually the cable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udma_crc_errors: Option<u64>,
    /// ATA 9 or the NVMe log's Power On Hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_on_hours: Option<u64>,
    /// ATA 12 or the NVMe log's Power Cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_cycles: Option<u64>,
    /// ATA 194 (or 190), or the NVMe Composite Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u64>,
    /// NVMe Critical Warning bits (byte 0 of the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_warning: Option<u64>,
    /// NVMe Media and Data Integrity Errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_errors: Option<u64>,
    /// NVMe Percentage Used (of the rated endurance; may exceed 100); for eMMC the upper end of
    /// the reported life-time band (10 = 0-10 % ... 100 = 90-100 %, 110 = exceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage_used: Option<u64>,
    /// NVMe Available Spare (%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_spare: Option<u64>,
    /// NVMe Available Spare Threshold (%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_spare_threshold: Option<u64>,
    /// NVMe Unsafe Shutdowns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsafe_shutdowns: Option<u64>,
    /// NVMe Number of Error Information Log Entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log_entries: Option<u64>,
    /// SCSI: entries of the grown defect list (sectors replaced since the factory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grown_defects: Option<u64>,
    /// SCSI: total uncorrected read errors (log page 03h, parameter 0006h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_uncorrected: Option<u64>,
    /// SCSI: total uncorrected write errors (log page 02h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_uncorrected: Option<u64>,
    /// SCSI: total uncorrected verify errors (log page 05h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_uncorrected: Option<u64>,
    /// SCSI: non-medium errors (log page 06h: link, cabling, controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_medium_errors: Option<u64>,
}

/// One entry of an ATA drive's self-test log (the latest is reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTest {
    /// "short", "extended", "conveyance", "selective", "offline scan", or a vendor test.
    pub kind: String,
    /// In words: "completed without error", "failed (read element)", "aborted by the host"...
    pub result: String,
    /// true passed, false failed, null neither (aborted, interrupted, running).
    pub passed: Option<bool>,
    /// The drive's power-on hours when the test ran.
    pub power_on_hours: u64,
    /// The first LBA that failed, for a failed test that records one.
    pub failing_lba: Option<u64>,
}

/// A disk's health, as `lifeboat health --json` and `list --json` (`health`) report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    /// Why the status is what it is (empty for `ok`), in plain words.
    pub reasons: Vec<String>,
    /// Other observations that do not change the status (cable errors, self-test history...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// How it was read: "ata" (SMART through SAT), "nvme", "scsi" (LOG SENSE) or "emmc"; null
    /// when nothing could be read.
    pub protocol: Option<String>,
    pub counters: Counters,
    /// The latest entry of the ATA self-test log, if any.
    #[serde(default)]
    pub self_test: Option<SelfTest>,
    /// The whole ATA attribute table (`lifeboat health` only; `list --json` leaves it out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AtaAttribute>,
}

impl Health {
    /// Health that could not be read, with the reason.
    pub fn unknown(reason: impl Into<String>) -> Health {
        Health {
            status: Status::Unknown,
            reasons: vec![reason.into()],
            notes: Vec::new(),
            protocol: None,
            counters: Counters::default(),
            self_test: None,
            attributes: Vec::new(),
        }
    }

    pub fn is_failing(&self) -> bool {
        self.status == Status::Failing
    }

    /// One line: "FAILING: 12 sectors pending reallocation (attribute 197)" / "ok" / "health
    /// unknown: a virtual disk ...".
    pub fn summary(&self) -> String {
        let first = self.reasons.first();
        match (self.status, first) {
            (Status::Ok, _) => "ok".to_string(),
            (Status::Unknown, Some(r)) => format!("health unknown: {r}"),
            (Status::Unknown, None) => "health unknown".to_string(),
            (s, Some(r)) => format!("{}: {r}", s.as_str().to_uppercase()),
            (s, None) => s.as_str().to_uppercase(),
        }
    }
}

/// How long `list` (and the console) wait for all disks' health together.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `lifeboat health` waits for one disk.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(12);

/// Reads the health of every disk in parallel (one thread each) and stores it in `disk.health`.
/// A disk that has not answered when `timeout` is up gets `unknown` ("did not answer"); its
/// thread is left to finish on its own (each command also has its own timeout).
pub fn fill(disks: &mut [Disk], timeout: Duration) {
    let mut pending = Vec::new();
    for (i, d) in disks.iter_mut().enumerate() {
        let (tx, rx) = mpsc::channel();
        let disk = d.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("health-{}", d.name))
            .spawn(move || {
                let _ = tx.send(device::read(&disk));
            });
        match spawned {
            Ok(_) => pending.push((i, rx)),
            Err(e) => {
                d.health = Some(Health::unknown(format!(
                    "could not start reading the drive's health: {e}"
                )))
            }
        }
    }
    let deadline = Instant::now() + timeout;
    for (i, rx) in pending {
        let left = deadline.saturating_duration_since(Instant::now());
        disks[i].health = Some(rx.recv_timeout(left).unwrap_or_else(|_| {
            Health::unknown(format!(
                "the drive did not answer the health query within {} s",
                timeout.as_secs()
            ))
        }));
    }
}

#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthArgs {
    /// The disk (`/dev/sda`, `sda`, `serial=X`, `model=M`; a partition means its disk).
    pub disk: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `lifeboat health SEL [--json]`. The exit code is 0 whatever the verdict (the verdict is the
/// output); 2 for a selector that names nothing.
pub fn run(a: HealthArgs) -> Result<i32> {
    let disk = match devices::resolve(&a.disk)? {
        Selected::Disk(d) => d,
        Selected::Partition { disk, part } => {
            crate::errln!(
                "lifeboat: {} is a partition; showing the health of its disk {}",
                part.name, disk.name
            );
            disk
        }
        Selected::File(p) => {
            return Err(Error::invalid(format!(
                "{} is a disk-image file: a file has no drive health. Name a disk (lifeboat list shows them)",
                p.display()
            )))
        }
    };
    let mut one = [disk];
    fill(&mut one, COMMAND_TIMEOUT);
    let [disk] = one;
    let health = disk
        .health
        .clone()
        .unwrap_or_else(|| Health::unknown("not read"));
    if a.json {
        let v = serde_json::json!({
            "name": disk.name,
            "path": disk.path,
            "model": disk.model,
            "serial": disk.serial,
            "transport": disk.transport,
            "health": health,
        });
        crate::out::json_line(&v);
    } else {
        crate::out!("{}", describe(&disk, &health));
    }
    Ok(exit::OK)
}

/// For a backup *source* whose health is FAILING: the advice to clone it first (clone reads all
/// good data first and can resume with `--map`; imaging reads in disk order), then image the
/// copy. None for any other status.
pub fn clone_first_advice(disk: &str, h: &Health) -> Option<String> {
    h.is_failing().then(|| {
        format!(
            "{disk} is FAILING ({}). Clone it first (`lifeboat clone {disk} NEW-DISK`: good data first, resumable with --map), then image the copy.",
            h.reasons.join("; ")
        )
    })
}

/// The text `lifeboat health` prints.
pub fn describe(disk: &Disk, h: &Health) -> String {
    use crate::out::Shown;
    let mut s = format!(
        "{}  {}  serial={}  ({})\n",
        Shown(disk.path.display()),
        Shown(disk.model.as_deref().unwrap_or("-")),
        Shown(disk.serial.as_deref().unwrap_or("-")),
        Shown(&disk.transport)
    );
    s.push_str(&format!("health: {}\n", h.status.as_str().to_uppercase()));
    for r in &h.reasons {
        s.push_str(&format!("  - {}\n", Shown(r)));
    }
    for n in &h.notes {
        s.push_str(&format!("  note: {}\n", Shown(n)));
    }
    let c = serde_json::to_value(&h.counters).unwrap_or_default();
    if let Some(m) = c.as_object().filter(|m| !m.is_empty()) {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!("counters: {}\n", parts.join(" ")));
    }
    if !h.attributes.is_empty() {
        s.push_str("  ID  attribute                  value worst thresh  raw\n");
        for a in &h.attributes {
            s.push_str(&format!(
                "  {:>3} {:<26} {:>5} {:>5} {:>6}  {}{}\n",
                a.id,
                Shown(&a.name),
                a.value,
                a.worst,
                a.threshold
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.raw,
                if a.prefailure { "" } else { " (old age)" }
            ));
        }
    }
    match h.status {
        Status::Failing => s.push_str(
            "advice: this drive is failing. Copy it now with `lifeboat clone` (it reads the good data first), then image the copy; never use it as a target.\n",
        ),
        Status::Worn => s.push_str(
            "advice: this drive is wearing out: back it up, and plan to replace it.\n",
        ),
        Status::Unknown => s.push_str(
            "advice: health unknown is not a clean bill of health; if the drive clicks, stalls or reads slowly, treat it as failing.\n",
        ),
        Status::Ok => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let h = ata::classify(&ata::tests::failing());
        let mut v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["status"], "failing");
        assert_eq!(v["protocol"], "ata");
        assert_eq!(v["counters"]["pending_sectors"], 12);
        assert_eq!(v["counters"]["power_on_hours"], 18_771);
        // Counters the drive does not report are left out, not zero.
        assert!(v["counters"].get("media_errors").is_none());
        assert_eq!(v["self_test"]["passed"], false);
        assert!(v["attributes"].as_array().unwrap().len() >= 8);
        // The list form leaves the attribute table out, and round-trips.
        let mut short = h.clone();
        short.attributes.clear();
        v = serde_json::to_value(&short).unwrap();
        assert!(v.get("attributes").is_none());
        let back: Health = serde_json::from_value(v).unwrap();
        assert_eq!(back, short);
        let u = serde_json::to_value(Health::unknown("a virtual disk")).unwrap();
        assert_eq!(u["status"], "unknown");
        assert_eq!(u["reasons"][0], "a virtual disk");
        assert_eq!(u["protocol"], serde_json::Value::Null);
        assert_eq!(u["counters"], serde_json::json!({}));
    }

    #[test]
    fn summaries_and_ordering() {
        assert!(Status::Failing > Status::Worn && Status::Worn > Status::Ok);
        let h = ata::classify(&ata::tests::failing());
        assert!(
            h.summary().starts_with("FAILING: 12 sectors pending"),
            "{}",
            h.summary()
        );
        assert_eq!(Health::unknown("x").summary(), "health unknown: x");
        let ok = ata::classify(&ata::tests::healthy());
        assert_eq!(ok.summary(), "ok");
        let advice = clone_first_advice("sda", &h).unwrap();
        assert!(
            advice.starts_with("sda is FAILING (12 sectors pending"),
            "{advice}"
        );
        assert!(advice.contains("lifeboat clone sda"), "{advice}");
        assert_eq!(clone_first_advice("sda", &ok), None);
        assert_eq!(clone_first_advice("sda", &Health::unknown("x")), None);
        let d = crate::devices::fixtures::disk("sda", 1 << 30, vec![]);
        let text = describe(&d, &h);
        assert!(text.contains("health: FAILING"), "{text}");
        assert!(text.contains("lifeboat clone"), "{text}");
        assert!(text.contains("197 pending sectors"), "{text}");
    }
}
