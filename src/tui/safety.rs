//! Which disks the console offers as a job's target, and why the others are refused: the
//! inventory's flags (boot disk, read-only, mounted, held, size), a FAILING drive (by the health
//! the disk scanner read) and, for disks that exist on this system, the storage identity rule
//! of [`crate::storage`] (a loop device over the source, a partition of it …), so the pickers
//! grey out what the job itself would refuse.
use crate::devices::Disk;
use crate::jobs::fmt_bytes;

/// Why `target` cannot receive a copy of something needing `needed_bytes` (None: allowed).
/// `source` is the disk being copied (clone) or holding the image (restore), if any.
/// `in_use` are the reasons [`crate::devices::in_use`] gave for the target (swap, holders...).
pub fn target_refusal(
    target: &Disk,
    source: Option<&Disk>,
    needed_bytes: u64,
    in_use: &[String],
) -> Option<String> {
    if let Some(s) = source {
        if s.name == target.name {
            return Some("it is the source".into());
        }
        if let Some(why) = crate::storage::shared_storage(&target.path, &s.path, "the source") {
            return Some(why);
        }
    }
    if target.boot_media {
        return Some("Lifeboat's boot disk".into());
    }
    if target.read_only {
        return Some("the disk is read-only".into());
    }
    if let Some(m) = target.mounted.first() {
        return Some(format!("mounted on {m}"));
    }
    for p in &target.partitions {
        if let Some(m) = p.mounted.first() {
            return Some(format!("{} is mounted on {m}", p.name));
        }
        if let Some(h) = p.holders.first() {
            return Some(format!("{} is in use by {h}", p.name));
        }
    }
    if let Some(h) = target.holders.first() {
        return Some(format!("in use by {h}"));
    }
    if let Some(r) = in_use.first() {
        return Some(r.clone());
    }
    if target.size_bytes < needed_bytes {
        return Some(format!("too small: needs {}", fmt_bytes(needed_bytes)));
    }
    // The health rule (the CLI's `--yes` override has no place in the console).
    if let Some(h) = target.health.as_ref().filter(|h| h.is_failing()) {
        return Some(format!(
            "FAILING drive: {}",
            h.reasons
                .first()
                .map(String::as_str)
                .unwrap_or("its health log says so")
        ));
    }
    None
}

/// The bytes a clone of `source` needs on its target: the end of its last partition, or the
/// whole disk when it has no partition table (the engine fixes GPT for a smaller target).
pub fn clone_needs(source: &Disk) -> u64 {
    match source.partitions_end() {
        0 => source.size_bytes,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixtures::{disk, part};

    #[test]
    fn refusals_name_the_reason() {
        let src = disk(
            "sda",
            64 << 20,
            vec![part("sda1", 1 << 20, 40 << 20, "ext4", "DATA")],
        );
        let mut t = disk("sdb", 128 << 20, vec![]);
        assert_eq!(target_refusal(&t, Some(&src), clone_needs(&src), &[]), None);
        assert_eq!(
            target_refusal(&src, Some(&src), 0, &[]).as_deref(),
            Some("it is the source")
        );
        t.size_bytes = 16 << 20;
        assert_eq!(
            target_refusal(&t, Some(&src), clone_needs(&src), &[]).as_deref(),
            Some("too small: needs 41.0 MiB")
        );
        t.size_bytes = 128 << 20;
        t.boot_media = true;
        assert!(target_refusal(&t, Some(&src), 0, &[])
            .unwrap()
            .contains("boot disk"));
        t.boot_media = false;
        t.partitions = vec![part("sdb1", 1 << 20, 8 << 20, "vfat", "USB")];
        t.partitions[0].mounted = vec!["/mnt".into()];
        assert_eq!(
            target_refusal(&t, None, 0, &[]).as_deref(),
            Some("sdb1 is mounted on /mnt")
        );
        t.partitions.clear();
        let swap = vec!["sdb is used as swap".to_string()];
        assert_eq!(
            target_refusal(&t, None, 0, &swap).as_deref(),
            Some("sdb is used as swap")
        );
        t.read_only = true;
        assert!(target_refusal(&t, None, 0, &[])
            .unwrap()
            .contains("read-only"));
        t.read_only = false;
        t.health = Some(crate::health::ata::classify(
            &crate::health::ata::tests::failing(),
        ));
        assert_eq!(
            target_refusal(&t, None, 0, &[]).as_deref(),
            Some("FAILING drive: 12 sectors pending reallocation (attribute 197)")
        );
        t.health = Some(crate::health::Health::unknown("a virtual disk"));
        assert_eq!(target_refusal(&t, None, 0, &[]), None);
    }

    #[test]
    fn clone_needs_partition_end_or_whole_disk() {
        let d = disk("sda", 64 << 20, vec![]);
        assert_eq!(clone_needs(&d), 64 << 20);
        let d = disk(
            "sda",
            64 << 20,
            vec![part("sda1", 1 << 20, 10 << 20, "ext4", "")],
        );
        assert_eq!(clone_needs(&d), 11 << 20);
    }
}
