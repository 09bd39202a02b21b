//! Image locations: a plain path, or `PARTITION:/path` where PARTITION is a selector (`sdb1`,
//! `label=BACKUPS`, `uuid=...`). Two steps, so that the safety checks run in between:
//! [`StoreLocation::resolve`] parses the argument and finds the partition (nothing mounted, nothing
//! opened); [`StoreLocation::mount`] then mounts its filesystem (ext4, vfat, exfat; NTFS through
//! ntfs-3g: [`super::store_ntfs`]) under /run/lifeboat/mnt/ — read-only (`MS_RDONLY`, and
//! `noload` for ext4 so no journal is replayed; ntfs-3g's `ro`) for everything that only reads —
//! and checks the path stays inside it (no `..`, no symlink
//! out: [`crate::io::open::check_beneath`]). The [`Store`] syncs and unmounts on drop, on every
//! path.
//!
//! A network location (`smb://…`, `nfs://…`) is a third kind: parsed by
//! [`crate::net::share::ShareUrl`], mounted by [`crate::net::share::mount`] (network brought up
//! first if needed), and unmounted with the [`Store`] like a partition.
//!
//! The syntax: an argument starting with `/` or `.` is a plain path. Otherwise `WORD:REST` where
//! WORD has no `/` is a partition location, and REST must be an absolute path inside it
//! (`label=BACKUPS:/pc/full.lbi`); a plain file whose name contains `:` is written `./name`.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where Lifeboat mounts image filesystems.
pub const MOUNT_ROOT: &str = "/run/lifeboat/mnt";

/// The sources of this process's job (see [`never_mount`]).
static SOURCES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Marks `source` (the disk, partition or file a job reads as its source) as never mounted by
/// this process, not even read-only: any location later named on a partition of it — a
/// credentials file, an S3 store's `s3_ca_file`, a passphrase file, a parent image — is refused
/// (exit 4) by [`StoreLocation::mount`] instead of being mounted to be read. One rule for every
/// file a job reads, whenever it reads it (a share's credentials are read only when the share
/// is mounted).
pub fn never_mount(source: &Path) {
    SOURCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(source.to_path_buf());
}

/// Refuses to mount `part` when it shares storage with a source of this job ([`never_mount`]).
fn refuse_source_mount(part: &crate::devices::Partition) -> Result<()> {
    let sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if sources.is_empty() {
        return Ok(());
    }
    let p = crate::storage::resolve(&part.path)?;
    for s in sources {
        if p.overlap(&crate::storage::resolve(&s)?).is_some() {
            return Err(Error::refused(format!(
                "{} is part of the source {}, and a source is never mounted, not even to read a \
                 file from it. Nothing was mounted or written; put the file elsewhere (another \
                 partition, a USB stick) and name it there",
                part.path.display(),
                s.display()
            ))
            .at_path(&part.path));
        }
    }
    Ok(())
}

/// Splits `label=BACKUPS:/pc/full.lbi` into ("label=BACKUPS", "/pc/full.lbi"): any argument that
/// does not start with `/` or `.` and has a `:` after a first word without `/`. The inner part
/// is not checked here ([`StoreLocation::resolve`] does); plain paths give `None`.
pub fn split_store(s: &str) -> Option<(String, String)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let at = s.find(':')?;
    let (sel, path) = (&s[..at], &s[at + 1..]);
    if sel.is_empty() || sel.contains('/') {
        return None;
    }
    Some((sel.to_string(), path.to_string()))
}

/// How a store is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For reading images (info, verify, restore's and export's image, a parent): `MS_RDONLY`,
    /// plus `noload` on ext4; nothing on the partition changes.
    ReadOnly,
    /// For writing an image (create): read-write (`noinit_itable` on ext4), and the image's
    /// directories are created.
    ReadWrite,
}

/// An image location, resolved but not mounted: the partition (and its disk) for
/// `PARTITION:/path`, nothing for a plain path.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    /// The argument as given (for messages and reports).
    pub spec: String,
    /// The partition the image lives on (None for a plain path). A filesystem on a whole disk
    /// (a USB stick without a partition table) appears as partition number 0 of that disk.
    pub partition: Option<crate::devices::Partition>,
    /// The disk holding that partition.
    pub disk: Option<crate::devices::Disk>,
    /// The path inside the partition's filesystem (relative, checked: no `..`), or the plain path.
    inner: Vec<PathBuf>,
    plain: Option<PathBuf>,
    /// A network location (`smb://`, `nfs://`).
    pub net: Option<crate::net::share::ShareUrl>,
}

impl StoreLocation {
    /// Parses `s` and finds its partition; mounts and opens nothing. A partition location with
    /// a relative, empty or `..` inner path is a usage error (exit 2) showing the right form.
    pub fn resolve(s: &str) -> Result<StoreLocation> {
        if crate::s3::store::is_s3(s) {
            return Err(Error::unsupported(format!(
                "{s}: an S3 store image can be created, restored, verified and described \
                 (image create|restore|verify|info) but not used here; restore it to a disk or \
                 a file first"
            )));
        }
        if let Some(url) = crate::net::share::ShareUrl::parse(s)? {
            return Ok(StoreLocation {
                spec: s.to_string(),
                partition: None,
                disk: None,
                inner: Vec::new(),
                plain: None,
                net: Some(url),
            });
        }
        let Some((sel, inner)) = split_store(s) else {
            return Ok(StoreLocation {
                spec: s.to_string(),
                partition: None,
                disk: None,
                inner: Vec::new(),
                plain: Some(PathBuf::from(s)),
                net: None,
            });
        };
        let example = |p: &str| format!("{sel}:/{}", p.trim_start_matches('/'));
        if inner.is_empty() {
            return Err(Error::invalid(format!(
                "{s:?} names a partition but no file on it: write {}",
                example("path/to/image.lbi")
            )));
        }
        if !inner.starts_with('/') {
            return Err(Error::invalid(format!(
                "{s:?}: a path on a partition starts with '/' (the partition's top directory): \
                 write {}; for a file in the current directory whose name contains ':', write ./{s}",
                example(&inner)
            )));
        }
        let inner = crate::io::open::inner_components(&inner).map_err(|m| {
            Error::invalid(format!("{s:?}: {m}; write e.g. {}", example("image.lbi")))
        })?;
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
                    role: d.role,
                    note: d.note.clone(),
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
        Ok(StoreLocation {
            spec: s.to_string(),
            partition: Some(part),
            disk: Some(disk),
            inner,
            plain: None,
            net: None,
        })
    }

    /// The plain path, for a location that is not on a partition.
    pub fn plain_path(&self) -> Option<&Path> {
        self.plain.as_deref()
    }

    /// The path inside the partition's filesystem ("/pc/full.lbi"), for a partition location.
    pub fn inner_path(&self) -> Option<PathBuf> {
        self.partition
            .as_ref()
            .map(|_| Path::new("/").join(self.inner.iter().collect::<PathBuf>()))
    }

    /// Makes the location usable: a plain path as is; a partition's filesystem mounted in
    /// `mode` (or where it is already mounted), the path checked to stay inside it, and with
    /// [`Mode::ReadWrite`] its directories created (each inside the last).
    pub fn mount(&self, mode: Mode) -> Result<Store> {
        if let Some(url) = &self.net {
            let m = crate::net::share::mount(url, mode == Mode::ReadOnly)?;
            let (root, inner) = (m.mountpoint.clone(), m.inner.clone());
            let st = Store {
                path: root.join(inner.iter().collect::<PathBuf>()),
                partition: None,
                disk: None,
                mounted_here: None,
                ntfs: None,
                net: Some(m),
            };
            // On error `st` is dropped here, which unmounts.
            crate::io::open::check_beneath(&root, &inner, mode == Mode::ReadWrite)?;
            return Ok(st);
        }
        let Some(part) = &self.partition else {
            return Ok(Store {
                path: self.plain.clone().unwrap_or_default(),
                partition: None,
                disk: None,
                mounted_here: None,
                ntfs: None,
                net: None,
            });
        };
        let mut ntfs = None;
        let (root, mounted_here) = if let Some(mp) = part.mounted.first() {
            (PathBuf::from(mp), None)
        } else {
            refuse_source_mount(part)?;
            let fs = part.fs_type.clone().ok_or_else(|| {
                Error::invalid(format!(
                    "{} has no filesystem Lifeboat recognises (ext4, vfat, exfat, ntfs)",
                    part.name
                ))
            })?;
            let mp = Path::new(MOUNT_ROOT).join(&part.name);
            std::fs::create_dir_all(&mp)
                .map_err(|e| Error::io("create the mount point", &mp, e))?;
            if fs == "ntfs" {
                ntfs = Some(
                    super::store_ntfs::mount(&part.path, &mp, mode).inspect_err(|_| {
                        let _ = std::fs::remove_dir(&mp);
                    })?,
                );
            } else {
                mount(&part.path, &mp, &fs, mode)?;
            }
            (mp.clone(), Some(mp))
        };
        let st = Store {
            path: root.join(self.inner.iter().collect::<PathBuf>()),
            partition: Some(part.clone()),
            disk: self.disk.clone(),
            mounted_here,
            ntfs,
            net: None,
        };
        // On error `st` is dropped here, which unmounts.
        crate::io::open::check_beneath(&root, &self.inner, mode == Mode::ReadWrite)?;
        Ok(st)
    }

    /// The path of `other` (a partition location on the same partition as `self`) inside
    /// `store`, which is `self` mounted, checked to stay inside; `None` when `other` is
    /// elsewhere.
    pub fn same_partition_path(
        &self,
        store: &Store,
        other: &StoreLocation,
    ) -> Result<Option<PathBuf>> {
        let (Some(a), Some(b)) = (self.partition.as_ref(), other.partition.as_ref()) else {
            return Ok(None);
        };
        if a.dev != b.dev {
            return Ok(None);
        }
        let Some(root) = store.path.ancestors().nth(self.inner.len()) else {
            return Ok(None);
        };
        crate::io::open::check_beneath(root, &other.inner, false)?;
        Ok(Some(root.join(other.inner.iter().collect::<PathBuf>())))
    }
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
    /// The ntfs-3g serving an NTFS store (unmounted with the store).
    ntfs: Option<super::store_ntfs::NtfsMount>,
    /// The network share mounted for it (unmounted when this is dropped).
    pub net: Option<crate::net::share::Mounted>,
}

impl Store {
    /// Whether `path` is inside a filesystem Lifeboat mounted (a partition or a share), where
    /// the argument as given names the image in reports.
    pub fn is_mounted_location(&self) -> bool {
        self.partition.is_some() || self.net.is_some()
    }

    /// `e` as the plain "the network share stopped answering" error ([`crate::net::lost`]) when
    /// this store is a share and `e` is it having stopped; `e` unchanged otherwise. `location`
    /// is the store as the user named it; `then` says what was kept and what to do now.
    pub fn network_lost(&self, e: Error, location: &str, then: &str) -> Error {
        let Some(m) = &self.net else { return e };
        match crate::net::lost::stopped(&e, &m.mountpoint, m.addr, crate::net::lost::answers) {
            Some(errno) => crate::net::lost::lost(e, location, errno, then),
            None => e,
        }
    }

    /// Resolves and mounts `s` in one step, for callers with no check to make in between.
    pub fn open(s: &str, mode: Mode) -> Result<Store> {
        StoreLocation::resolve(s)?.mount(mode)
    }

    fn close(&mut self) {
        if let Some(mut n) = self.ntfs.take() {
            if let Err(e) = n.unmount() {
                crate::errln!("lifeboat: {e}");
            }
        }
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

/// A file a job keeps beside its work (a `--map`, a verify `--state`): a plain path, or
/// `PARTITION:/path` on a filesystem Lifeboat mounts read-write itself (how the environment
/// keeps a map on a store disk across a reboot: `--map label=MAPS:/pc.map`).
pub struct SideFile {
    loc: StoreLocation,
    store: Option<Store>,
}

impl SideFile {
    /// Parses `arg` and finds its partition; mounts nothing. A plain path's directory is
    /// resolved now ([`crate::storage::pin_dir`]).
    pub fn resolve(arg: &Path) -> Result<SideFile> {
        let text = arg.to_string_lossy();
        let loc = match split_store(&text) {
            Some(_) => StoreLocation::resolve(&text)?,
            None => StoreLocation::resolve(&crate::storage::pin_dir(arg).to_string_lossy())?,
        };
        Ok(SideFile { loc, store: None })
    }

    /// Adds what the file writes to the identity check, as `role`: the file itself and its
    /// temporary name, or for `PARTITION:/path` the partition (mounting it read-write writes
    /// to it).
    pub fn check_items(&self, check: &mut crate::storage::Check, role: &str) -> Result<()> {
        match (&self.loc.partition, self.loc.plain_path()) {
            (Some(p), _) => check.writes(&format!("{role}'s partition"), &p.path)?,
            (None, Some(f)) => {
                // And the temporary name it is saved through (a map's and a verify state's
                // `NAME.lifeboat-tmp`, unlinked and renamed over at every save): an image or a
                // passphrase file there was deleted.
                check.writes(role, &f.with_extension("lifeboat-tmp"))?;
                check.writes(role, f)?
            }
            (None, None) => return Ok(()),
        };
        Ok(())
    }

    /// The path to use: a plain path as is; a partition mounted read-write (until this is
    /// dropped) and the path inside it.
    pub fn open(&mut self) -> Result<PathBuf> {
        if self.store.is_none() {
            self.store = Some(self.loc.mount(Mode::ReadWrite)?);
        }
        Ok(self
            .store
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_default())
    }
}

/// Filesystem type names as the kernel knows them.
fn kernel_fs(fs: &str) -> &str {
    match fs {
        "vfat" | "fat" | "fat32" | "fat16" | "fat12" => "vfat",
        other => other,
    }
}

/// Mounts `dev` (ext4, vfat, exfat) at `mp` in `mode`, loading the filesystem's module first if
/// needed. Read-only is `MS_RDONLY`, and for ext4 also `noload`: a read-only ext4 mount would
/// otherwise replay (write) a journal left by an unclean shutdown.
fn mount(dev: &Path, mp: &Path, fs: &str, mode: Mode) -> Result<()> {
    let kfs = kernel_fs(fs);
    if !matches!(kfs, "ext4" | "ext3" | "ext2" | "vfat" | "exfat") {
        return Err(Error::unsupported(format!(
            "images can be stored on ext4, vfat, exfat or ntfs; {} holds {fs}",
            dev.display()
        )));
    }
    crate::init::modules::load_fs_module(kfs);
    crate::jobs::threadcpu::mark("filesystem module loaded");
    let fstype = if kfs.starts_with("ext") { "ext4" } else { kfs };
    let flags = match mode {
        Mode::ReadOnly => nix::mount::MsFlags::MS_NOATIME | nix::mount::MsFlags::MS_RDONLY,
        Mode::ReadWrite => nix::mount::MsFlags::MS_NOATIME,
    };
    let data = ext4_options(fstype, mode);
    nix::mount::mount(Some(dev), mp, Some(fstype), flags, data).map_err(|e| {
        let _ = std::fs::remove_dir(mp);
        Error::io(
            &format!("mount ({fstype}) on {} the filesystem of", mp.display()),
            dev,
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

/// The ext4 mount options of a store: read-only, `noload` (no journal replay: nothing is
/// written); read-write, `noinit_itable`: a freshly made filesystem's inode tables are not
/// zeroed in the background while the job writes its image (the kernel's `ext4lazyinit`
/// thread, whose writes compete with the image's for the storage and, under QEMU, for the
/// CPU; the kernel zeroes them on a later mount, as it does for an installer). Other
/// filesystems: none.
fn ext4_options(fstype: &str, mode: Mode) -> Option<&'static str> {
    match (fstype, mode) {
        ("ext4", Mode::ReadOnly) => Some("noload"),
        ("ext4", Mode::ReadWrite) => Some("noinit_itable"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_stores_skip_the_journal_read_only_and_the_lazy_inode_table_init_read_write() {
        assert_eq!(ext4_options("ext4", Mode::ReadOnly), Some("noload"));
        assert_eq!(ext4_options("ext4", Mode::ReadWrite), Some("noinit_itable"));
        assert_eq!(ext4_options("vfat", Mode::ReadWrite), None);
        assert_eq!(ext4_options("exfat", Mode::ReadOnly), None);
    }

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
        // A word and a colon is a partition location whatever follows (resolve checks it).
        assert_eq!(
            split_store("label=B:rel.lbi"),
            Some(("label=B".into(), "rel.lbi".into()))
        );
        assert_eq!(split_store("label=B:"), Some(("label=B".into(), "".into())));
        assert_eq!(split_store("dir/a:b.lbi"), None);
    }

    #[test]
    fn relative_empty_and_dotdot_inner_paths_are_usage_errors() {
        for (arg, want) in [
            ("label=ADVROOT:rel.lbi", "label=ADVROOT:/rel.lbi"),
            ("label=ADVROOT:", "label=ADVROOT:/path/to/image.lbi"),
            ("label=ADVROOT:/../../x.lbi", "contains '..'"),
            ("label=ADVROOT:/", "label=ADVROOT:/image.lbi"),
        ] {
            let e = StoreLocation::resolve(arg).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{arg}: {e}");
            assert!(e.to_string().contains(want), "{arg}: {e}");
        }
        let plain = StoreLocation::resolve("./label=X:rel.lbi").unwrap();
        assert_eq!(plain.plain_path(), Some(Path::new("./label=X:rel.lbi")));
        assert!(plain.partition.is_none());
    }
}
