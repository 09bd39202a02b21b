//! How the used-block plan is told to people: the one help text of `--all-sectors` (clone and
//! image create share the flag's meaning) and the per-partition lines of the reports.
use super::{Mode, PartitionUsage};

/// The help of `--all-sectors`, one text for every command that has the flag (clone, image
/// create): one meaning of it on the whole command line.
pub const ALL_SECTORS_HELP: &str = "Read and copy every sector, free space included (forensics, \
unknown layouts). By default only the blocks filesystems use are read (ext2/3/4, FAT, exFAT, \
NTFS, XFS, btrfs) besides everything outside partitions; partitions without a trustworthy map \
are copied whole anyway.";

impl PartitionUsage {
    /// How the partition is copied, in words: "used blocks" or "all sectors (why)".
    pub fn mode_text(&self) -> String {
        match self.mode {
            Mode::UsedBlocks => "used blocks".to_string(),
            Mode::AllSectors => format!(
                "all sectors ({})",
                self.reason.as_deref().unwrap_or("no used-block map")
            ),
        }
    }

    /// One line for a report: "partition N: FILESYSTEM, USED used of SIZE, MODE".
    pub fn describe(&self) -> String {
        format!(
            "partition {}: {}, {} used of {}, {}",
            self.number,
            self.filesystem.as_deref().unwrap_or("unknown"),
            crate::jobs::fmt_bytes(self.used_bytes),
            crate::jobs::fmt_bytes(self.size_bytes),
            self.mode_text()
        )
    }
}
