//! Failing disks: QEMU blkdebug configs that make chosen sectors return EIO to the guest,
//! permanently or once (a transient error), for the rescue tests; and writes that fail, which
//! a disk with `DiskSpec::lying_writes` reports as done (storage that loses what it was given).
use std::path::Path;

/// One unreadable 512-byte sector (blkdebug counts in 512-byte units whatever the guest's
/// logical block size; a read fails when its byte range contains `sector * 512`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSector {
    pub sector: u64,
    /// `true`: fails the first read only (a transient error); `false`: fails every read.
    pub once: bool,
    pub errno: i32,
}

/// A set of bad sectors, built region by region.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub sectors: Vec<BadSector>,
}

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }
    /// Every 512-byte sector of `[start_byte, start_byte + len_bytes)` fails every time.
    /// Both must be multiples of 512.
    pub fn bad_bytes(mut self, start_byte: u64, len_bytes: u64) -> Faults {
        assert!(
            start_byte.is_multiple_of(512) && len_bytes.is_multiple_of(512),
            "blkdebug works in 512-byte sectors"
        );
        for s in start_byte / 512..(start_byte + len_bytes) / 512 {
            self.sectors.push(BadSector {
                sector: s,
                once: false,
                errno: 5,
            });
        }
        self
    }
    /// One 512-byte sector that fails on the first read and reads fine afterwards.
    pub fn transient_sector(mut self, sector: u64) -> Faults {
        self.sectors.push(BadSector {
            sector,
            once: true,
            errno: 5,
        });
        self
    }
    /// Merged permanent bad ranges `[start_byte, len_bytes]` (what a rescue should report,
    /// given 512-byte logical sectors).
    pub fn permanent_ranges(&self) -> Vec<(u64, u64)> {
        let mut s: Vec<u64> = self
            .sectors
            .iter()
            .filter(|b| !b.once)
            .map(|b| b.sector)
            .collect();
        s.sort_unstable();
        s.dedup();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for sec in s {
            match out.last_mut() {
                Some((start, len)) if *start + *len == sec * 512 => *len += 512,
                _ => out.push((sec * 512, 512)),
            }
        }
        out
    }
    /// The blkdebug config text.
    pub fn config(&self) -> String {
        config(&self.sectors)
    }
    /// Writes the config to `path` (pass it to `DiskSpec::blkdebug`).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.config())
    }
}

/// blkdebug config: one `[inject-error]` rule per sector, keyed on the raw driver's `read_aio`.
pub fn config(sectors: &[BadSector]) -> String {
    let mut out = String::new();
    for b in sectors {
        out.push_str(&format!(
            "[inject-error]\nevent = \"read_aio\"\nerrno = \"{}\"\nsector = \"{}\"\nonce = \"{}\"\n\n",
            b.errno,
            b.sector,
            if b.once { "on" } else { "off" }
        ));
    }
    out
}

/// blkdebug config failing the first write (`write_aio`) that covers each of `sectors`
/// (512-byte sectors of the disk) with EIO; with [`crate::DiskSpec::lying_writes`] the guest is
/// told those writes succeeded.
pub fn write_fault_config(sectors: &[u64]) -> String {
    sectors
        .iter()
        .map(|s| {
            format!("[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"{s}\"\nonce = \"on\"\n\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_rule_per_sector() {
        let f = Faults::new().bad_bytes(4096, 1024).transient_sector(100);
        let c = f.config();
        assert_eq!(c.matches("[inject-error]").count(), 3);
        assert!(c.contains("sector = \"8\"\nonce = \"off\""));
        assert!(c.contains("sector = \"9\"\nonce = \"off\""));
        assert!(c.contains("sector = \"100\"\nonce = \"on\""));
        assert!(c.contains("event = \"read_aio\"\nerrno = \"5\""));
    }

    #[test]
    fn permanent_ranges_merge_and_skip_transient() {
        let f = Faults::new()
            .bad_bytes(512 * 10, 512)
            .bad_bytes(8192, 4096)
            .bad_bytes(8192 + 4096, 512)
            .transient_sector(3);
        assert_eq!(f.permanent_ranges(), vec![(5120, 512), (8192, 4608)]);
    }

    #[test]
    #[should_panic]
    fn unaligned_region_is_a_test_bug() {
        let _ = Faults::new().bad_bytes(100, 512);
    }
}
