//! Image locations: a plain path, or `PARTITION:/path` where PARTITION is a selector (`sdb1`,
//! `label=BACKUPS`, `uuid=...`). Lifeboat mounts that filesystem itself (ext4, vfat, exfat) under
//! /run/lifeboat/mnt/, and syncs and unmounts it when the [`Store`] is dropped, on every path.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where Lifeboat mounts image filesystems.
pub const MOUNT_ROOT: &str = "/run/lifeboat/mnt";

/// Splits `label=BACKUPS:/pc/full.lbi` into ("label=BACKUPS", "/pc/full.lbi"). Plain paths
/// (starting with `/` or `.`, or without `:/`) give `None`.
pub fn split_store(s: &str) -> Option<(String, String)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let at = s.find(":/")?;
    let (sel, path) = (&s[..at], &s[at + 1..]);
    if sel.is_empty() || sel.contains('/') {
        return None;
    }
    Some((sel.to_string(), path.to_string()))
}

/// An image location made usable: `path` is where to read or write. Unmounts on drop when
/// Lifeboat mounted it.
pub struct Store {
    pub path: PathBuf,
    /// The partition the image lives on (None for a plain path).
    pub partition: Option<crate::devices::Partition>,
    /// The disk holding that partition.
    pub disk: Option<crate::devices::Disk>,
    mounted_here: Option<PathBuf>,
}

impl Store {
    /// A plain path as is.
    pub fn plain(p: &str) -> Store {
        Store {
            path: PathBuf::from(p),
            partition: None,
            disk: None,
            mounted_here: None,
        }
    }

    /// Opens the location `s` for reading (`create_dirs` false) or writing (`create_dirs` true:
    /// the directories of the path are created inside the filesystem).
    pub fn open(s: &str, create_dirs: bool) -> Result<Store> {
        let Some((sel, inner)) = split_store(s) else {
            return Ok(Store::plain(s));
        };
        let (disk, part) = match crate::devices::resolve(&sel)? {
            crate::devices::Selected::Partition { disk, part } => (disk, part),
            crate::devices::Selected::Disk(d) if d.fs_type.is_some() => {
                // A filesystem on the whole disk (a USB stick without a partition table).
                let p = crate::devices::Partition {
                    name: d.name.clone(),
                    number: 0,
                    path: d.path.clone(),
                    dev: d.dev.clone(),
                    start_bytes: 0,
                    size_bytes: d.size_bytes,
                    fs_type: d.fs_type.clone(),
                    label: d.label.clone(),
                    uuid: d.uuid.clone(),
                    part_label: None,
                    read_only: d.read_only,
                    holders: d.holders.clone(),
                    mounted: d.mounted.clone(),
                };
                (d, p)
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{sel} is not a partition with a filesystem: give the partition that should hold the image (sdb1, label=..., uuid=...)"
                )))
            }
        };
        let (root, mounted_here) = if let Some(mp) = part.mounted.first() {
            (PathBuf::from(mp), None)
        } else {
            let fs = part.fs_type.clone().ok_or_else(|| {
                Error::invalid(format!(
                    "{} has no filesystem Lifeboat recognises (ext4, vfat, exfat)",
                    part.name
                ))
            })?;
            let mp = Path::new(MOUNT_ROOT).join(&part.name);
            std::fs::create_dir_all(&mp)
                .map_err(|e| Error::io("create the mount point", &mp, e))?;
            mount(&part.path, &mp, &fs)?;
            (mp.clone(), Some(mp))
        };
        let mut st = Store {
            path: root.join(inner.trim_start_matches('/')),
            partition: Some(part),
            disk: Some(disk),
            mounted_here,
        };
        if create_dirs {
            if let Some(dir) = st.path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    let err = Error::io("create the directory", dir, e);
                    st.close();
                    return Err(err);
                }
            }
        }
        Ok(st)
    }

    fn close(&mut self) {
        if let Some(mp) = self.mounted_here.take() {
            nix::unistd::sync();
            let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::empty())
                .or_else(|_| nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH));
            let _ = std::fs::remove_dir(&mp);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Filesystem type names as the kernel knows them.
fn kernel_fs(fs: &str) -> &str {
    match fs {
        "vfat" | "fat" | "fat32" | "fat16" | "fat12" => "vfat",
        other => other,
    }
}

/// Mounts `dev` (ext4, vfat, exfat) at `mp`, loading the filesystem's module first if needed.
fn mount(dev: &Path, mp: &Path, fs: &str) -> Result<()> {
    let kfs = kernel_fs(fs);
    if !matches!(kfs, "ext4" | "ext3" | "ext2" | "vfat" | "exfat") {
        return Err(Error::unsupported(format!(
            "images can be stored on ext4, vfat or exfat; {} holds {fs}",
            dev.display()
        )));
    }
    load_fs_module(kfs);
    let fstype = if kfs.starts_with("ext") { "ext4" } else { kfs };
    nix::mount::mount(
        Some(dev),
        mp,
        Some(fstype),
        nix::mount::MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_dir(mp);
        Error::io(
            &format!("mount ({fstype}) on {} the filesystem of", mp.display()),
            dev,
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

/// Loads the kernel module of filesystem `fs` if the kernel does not know it yet (through the
/// environment's module loader; on a host the module is usually loaded or built in already).
fn load_fs_module(fs: &str) {
    let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if known
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
    {
        return;
    }
    if let Err(e) = crate::init::modules::load_by_name(fs) {
        eprintln!("lifeboat: could not load the {fs} module: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_selectors_not_paths() {
        assert_eq!(
            split_store("label=BACKUPS:/pc/full.lbi"),
            Some(("label=BACKUPS".into(), "/pc/full.lbi".into()))
        );
        assert_eq!(
            split_store("sdb1:/x.lbi"),
            Some(("sdb1".into(), "/x.lbi".into()))
        );
        assert_eq!(split_store("/tmp/a:/b"), None);
        assert_eq!(split_store("./a:/b"), None);
        assert_eq!(split_store("full.lbi"), None);
        assert_eq!(split_store(":/x"), None);
    }
}
