//! Resolution: from a path to the storage it really touches. Follows symlinks, hard links and
//! `/proc/self/fd` (by `stat`: the same inode is the same file whatever its name), bind mounts
//! (same st_dev and inode), partitions (their disk and byte range, from sysfs `start`/`size`),
//! loop devices (`LOOP_GET_STATUS64`: backing st_dev + inode, offset, size limit; sysfs
//! `loop/{offset,sizelimit,backing_file}` as the fallback), device-mapper/RAID members (`slaves/`,
//! whole), files on a mounted filesystem (the block device under it, recursively: the file may
//! be anywhere in that device) and on an overlay (the filesystems of its upper, work and lower
//! directories). A path that does not exist yet (a file to be created) resolves
//! through its nearest existing parent directory's filesystem.
use super::{fmt_bytes_range, Extent, Object, Storage};
use crate::devices::usage::{fmt_dev, system_mounts, unescape, Mount};
use crate::error::{Error, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Deepest stacking followed (loop over a file on a loop over a partition …); deeper is refused.
const MAX_DEPTH: usize = 16;

/// Resolves paths against the running system (sysfs under `sysfs`, the mount table read once).
pub struct Resolver {
    sysfs: PathBuf,
    mounts: Vec<Mount>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

/// Splits a Linux dev_t (glibc encoding) into (major, minor).
pub fn dev_split(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfffu64);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xffu64);
    (major, minor)
}

/// The dev_t (glibc encoding) of "MAJ:MIN".
pub fn dev_join(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8)
        | ((major & !0xfffu64) << 32)
        | (minor & 0xff)
        | ((minor & !0xffu64) << 12)
}

fn parse_dev(s: &str) -> Option<u64> {
    let (a, b) = s.trim().split_once(':')?;
    Some(dev_join(a.parse().ok()?, b.parse().ok()?))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Resolver {
    /// The running system: `/sys` and `/proc/self/mountinfo`.
    pub fn system() -> Resolver {
        Resolver {
            sysfs: PathBuf::from("/sys"),
            mounts: system_mounts(),
        }
    }

    /// Everything `path` touches. `name` is how the user named it (for messages).
    pub fn resolve(&self, path: &Path) -> Result<Storage> {
        let mut st = Storage {
            name: path.display().to_string(),
            extents: Vec::new(),
            exists: true,
        };
        let md = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A file to be created: it will live on the filesystem of its nearest existing
                // parent directory.
                st.exists = false;
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                let mut dir = abs.parent();
                while let Some(d) = dir {
                    if let Ok(m) = fs::metadata(d) {
                        let how =
                            format!("would be created in {} on the filesystem of", d.display());
                        let at = fs::canonicalize(d).ok();
                        self.fs_extents(m.dev(), at.as_deref(), &[], &how, &mut st.extents, 0)?;
                        return Ok(st);
                    }
                    dir = d.parent();
                }
                return Ok(st);
            }
            Err(e) => return Err(Error::io("look at", path, e)),
        };
        let ft = md.file_type();
        if ft.is_block_device() {
            let how = format!("is {}", self.dev_name(md.rdev()));
            self.dev_extents(md.rdev(), 0, u64::MAX, &[], &how, &mut st.extents, 0)?;
        } else {
            let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let how = if canon == path {
                format!(
                    "is that file (inode {} of device {})",
                    md.ino(),
                    fmt_dev(md.dev())
                )
            } else {
                format!(
                    "is the file {} (inode {} of device {})",
                    canon.display(),
                    md.ino(),
                    fmt_dev(md.dev())
                )
            };
            st.extents.push(Extent::whole_file(
                &md,
                canon.display().to_string(),
                vec![],
                how.clone(),
            ));
            // Character devices, FIFOs and sockets keep no bytes on a filesystem.
            if ft.is_file() || ft.is_dir() {
                let how = format!("{how}, a file on the filesystem of");
                let at = Some(canon.as_path());
                self.fs_extents(md.dev(), at, &[], &how, &mut st.extents, 0)?;
            }
        }
        Ok(st)
    }

    /// Every mounted filesystem on a block device, as storage a raw write must not touch: the
    /// extents of its device, each marked as reached through that filesystem (so files written
    /// *into* it do not count as overlapping it). Named by mount point.
    pub fn mounted_filesystems(&self) -> Vec<Storage> {
        let mut seen: Vec<u64> = Vec::new();
        let mut out = Vec::new();
        for m in &self.mounts {
            let Ok(md) = fs::metadata(&m.source) else {
                continue;
            };
            if !md.file_type().is_block_device() || seen.contains(&md.rdev()) {
                continue;
            }
            seen.push(md.rdev());
            let mut st = Storage {
                name: m.mount_point.clone(),
                extents: Vec::new(),
                exists: true,
            };
            let how = format!("is {}", self.dev_name(md.rdev()));
            if self
                .dev_extents(
                    md.rdev(),
                    0,
                    u64::MAX,
                    &[md.rdev()],
                    &how,
                    &mut st.extents,
                    0,
                )
                .is_ok()
            {
                out.push(st);
            }
        }
        out
    }

    /// "/dev/NAME" of a block device number (from sysfs `uevent`), or "device MAJ:MIN".
    pub fn dev_name(&self, dev: u64) -> String {
        let (ma, mi) = dev_split(dev);
        let u = self.sysfs.join(format!("dev/block/{ma}:{mi}/uevent"));
        fs::read_to_string(u)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
            })
            .unwrap_or_else(|| format!("device {ma}:{mi}"))
    }

    /// The extents of a filesystem whose st_dev is `st_dev`: the block device under it, anywhere
    /// in its range. A virtual st_dev (major 0) is looked up in the mount table — by its number,
    /// or, where the number is not there, by the mount the canonical path `at` is under: btrfs
    /// gives the files of each subvolume (the top one too) a number of its own that mountinfo
    /// never shows. Its source is then a block device (with every other member device of a
    /// multi-device btrfs), a regular file (a FUSE filesystem such as `ntfs-3g` mounted straight
    /// from an image file: its files are bytes of that file), or an overlay's layers.
    fn fs_extents(
        &self,
        st_dev: u64,
        at: Option<&Path>,
        inside: &[u64],
        how: &str,
        out: &mut Vec<Extent>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::refused(format!(
                "storage is stacked more than {MAX_DEPTH} levels deep ({how}); refusing to guess where it ends"
            )));
        }
        let (ma, _) = dev_split(st_dev);
        if ma != 0 {
            let mut inside = inside.to_vec();
            if !inside.contains(&st_dev) {
                inside.push(st_dev);
            }
            let how = format!("{how} {}", self.dev_name(st_dev));
            return self.dev_extents(st_dev, 0, u64::MAX, &inside, &how, out, depth + 1);
        }
        let d = fmt_dev(st_dev);
        let mut mounts: Vec<&Mount> = self.mounts.iter().filter(|m| m.dev == d).collect();
        let under = at.and_then(|p| self.mount_of(p));
        // An overlay writes into its upper (and work) directory and reads its lower ones: files
        // on it are stored on those directories' filesystems (and shown with the number of the
        // layer's filesystem, so the overlay is found by the path).
        let overlay = |m: &&Mount| m.fs_type == "overlay";
        if mounts.iter().any(overlay) || under.as_ref().is_some_and(overlay) {
            return self.overlay_extents(st_dev, at, inside, how, out, depth);
        }
        if mounts.is_empty() {
            mounts.extend(under);
        }
        for m in mounts {
            // "tmpfs", "proc", a FUSE daemon's own name: memory or no local disk (never looked
            // up relative to the working directory).
            if !m.source.starts_with('/') {
                continue;
            }
            let Ok(md) = fs::metadata(&m.source) else {
                continue;
            };
            if md.file_type().is_block_device() {
                let b = md.rdev();
                let mut inside = inside.to_vec();
                if !inside.contains(&b) {
                    inside.push(b);
                }
                for member in self.btrfs_members(b, &m.fs_type) {
                    let how = if member == b {
                        format!("{how} {}", self.dev_name(b))
                    } else {
                        format!(
                            "{how} {} (btrfs), which also spans {}",
                            self.dev_name(b),
                            self.dev_name(member)
                        )
                    };
                    self.dev_extents(member, 0, u64::MAX, &inside, &how, out, depth + 1)?;
                }
                return Ok(());
            }
            if md.is_file() {
                // The filesystem's own number keeps its files apart from each other (as a block
                // device's does); major 0 is never a block device, so it names nothing else.
                let mut inside = inside.to_vec();
                if !inside.contains(&st_dev) {
                    inside.push(st_dev);
                }
                let canon =
                    fs::canonicalize(&m.source).unwrap_or_else(|_| PathBuf::from(&m.source));
                let how = format!(
                    "{how} {} ({}, mounted from the file {})",
                    m.mount_point,
                    m.fs_type,
                    canon.display()
                );
                out.push(Extent::whole_file(
                    &md,
                    canon.display().to_string(),
                    inside.clone(),
                    how.clone(),
                ));
                let how = format!("{how}, a file on the filesystem of");
                return self.fs_extents(md.dev(), Some(&canon), &inside, &how, out, depth + 1);
            }
        }
        Ok(())
    }

    /// The mount the canonical path `p` is under (the last of those at the deepest mount point:
    /// the one on top).
    fn mount_of(&self, p: &Path) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| p.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.len())
    }

    /// The block devices of the filesystem on `b`: every member of a multi-device btrfs (from
    /// sysfs `fs/btrfs/UUID/devices/`), else `b` alone.
    fn btrfs_members(&self, b: u64, fs_type: &str) -> Vec<u64> {
        let mut v = vec![b];
        if fs_type != "btrfs" {
            return v;
        }
        let (ma, mi) = dev_split(b);
        let Some(name) = fs::canonicalize(self.sysfs.join(format!("dev/block/{ma}:{mi}")))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        else {
            return v;
        };
        for fsd in fs::read_dir(self.sysfs.join("fs/btrfs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let devs = fsd.path().join("devices");
            if !devs.join(&name).exists() {
                continue;
            }
            for e in fs::read_dir(&devs).into_iter().flatten().flatten() {
                if let Some(d) = fs::read_to_string(e.path().join("dev"))
                    .ok()
                    .and_then(|s| parse_dev(&s))
                {
                    if !v.contains(&d) {
                        v.push(d);
                    }
                }
            }
        }
        v
    }

    /// The filesystems under the overlay mounted with st_dev `st_dev`, or holding the canonical
    /// path `at` (its upper, work and lower directories), each "somewhere inside" as for any file there. Nothing for tmpfs, proc …
    /// (memory, no disk under them).
    fn overlay_extents(
        &self,
        st_dev: u64,
        at: Option<&Path>,
        inside: &[u64],
        how: &str,
        out: &mut Vec<Extent>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::refused(format!(
                "storage is stacked more than {MAX_DEPTH} levels deep ({how}); refusing to guess where it ends"
            )));
        }
        // By st_dev, or (an overlay gives the files of each layer a device number of their
        // own) by the mount the canonical path `at` is under.
        let d = fmt_dev(st_dev);
        let under = at.and_then(|p| self.mount_of(p));
        let Some(m) = self
            .mounts
            .iter()
            .find(|m| m.dev == d && m.fs_type == "overlay")
            .or(under.filter(|m| m.fs_type == "overlay"))
        else {
            return Ok(());
        };
        // The layers (upper, then lower ones) and the work directory.
        let mut layers = Vec::new();
        let mut work = Vec::new();
        for opt in m.options.split(',') {
            let Some((k, v)) = opt.split_once('=') else {
                continue;
            };
            match k {
                "upperdir" => layers.insert(0, unescape(v)),
                "workdir" => work.push(unescape(v)),
                // Layers are ':'-separated ("\\:" is a colon inside a name).
                "lowerdir" | "lowerdir+" | "datadir+" => {
                    let v = unescape(v).replace("\\:", "\0");
                    layers.extend(v.split(':').map(|l| l.replace('\0', ":")));
                }
                _ => {}
            }
        }
        // The file itself in each layer that has it (the overlay shows it under a device number
        // of its own): the same file as that layer's name of it.
        if let Some(rel) = at
            .and_then(|p| p.strip_prefix(&m.mount_point).ok())
            .filter(|r| !r.as_os_str().is_empty())
        {
            for dir in &layers {
                let p = Path::new(dir).join(rel);
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if !md.is_file() {
                    continue; // directories and others keep no bytes of their own
                }
                out.push(Extent::whole_file(
                    &md,
                    p.display().to_string(),
                    inside.to_vec(),
                    format!(
                        "{how} {} (an overlay): the file {}",
                        m.mount_point,
                        p.display()
                    ),
                ));
            }
        }
        let dirs = layers.into_iter().chain(work);
        for dir in dirs {
            let Ok(md) = fs::metadata(&dir) else { continue };
            if md.dev() == st_dev {
                continue;
            }
            let how = format!(
                "{how} {} (an overlay), whose layer {dir} is on",
                m.mount_point
            );
            let at = fs::canonicalize(&dir).ok();
            self.fs_extents(md.dev(), at.as_deref(), inside, &how, out, depth + 1)?;
        }
        Ok(())
    }

    /// The extents of bytes `start..end` of block device `dev`: the whole device it is (or is a
    /// partition of), then whatever that device is built on.
    #[allow(clippy::too_many_arguments)]
    fn dev_extents(
        &self,
        dev: u64,
        start: u64,
        end: u64,
        inside: &[u64],
        how: &str,
        out: &mut Vec<Extent>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::refused(format!(
                "storage is stacked more than {MAX_DEPTH} levels deep ({how}); refusing to guess where it ends"
            )));
        }
        let (ma, mi) = dev_split(dev);
        let link = self.sysfs.join(format!("dev/block/{ma}:{mi}"));
        let Ok(sys) = fs::canonicalize(&link) else {
            // No sysfs (a container): the device itself is all we know.
            out.push(Extent {
                object: Object::Disk { dev },
                object_name: self.dev_name(dev),
                start,
                end,
                inside: inside.to_vec(),
                how: how.to_string(),
            });
            return Ok(());
        };
        if sys.join("partition").exists() {
            let pstart = read_u64(&sys.join("start")).unwrap_or(0) * 512;
            let psize = read_u64(&sys.join("size")).unwrap_or(u64::MAX / 512) * 512;
            let whole = sys
                .parent()
                .and_then(|p| fs::read_to_string(p.join("dev")).ok())
                .and_then(|s| parse_dev(&s));
            if let Some(w) = whole {
                let a = pstart.saturating_add(start.min(psize));
                let b = pstart.saturating_add(end.min(psize));
                let how = format!(
                    "{how}, partition {} of {} ({})",
                    read_u64(&sys.join("partition")).unwrap_or(0),
                    self.dev_name(w),
                    fmt_bytes_range(a, b)
                );
                return self.dev_extents(w, a, b, inside, &how, out, depth + 1);
            }
        }
        let size = read_u64(&sys.join("size"))
            .map(|s| s * 512)
            .unwrap_or(u64::MAX);
        let end = end.min(size);
        out.push(Extent {
            object: Object::Disk { dev },
            object_name: self.dev_name(dev),
            start,
            end,
            inside: inside.to_vec(),
            how: how.to_string(),
        });
        if sys.join("loop").is_dir() || self.dev_name(dev).starts_with("/dev/loop") {
            self.loop_extents(dev, &sys, start, end, inside, how, out, depth)?;
        }
        // Device-mapper and RAID: built on their members (conservatively, the whole of each).
        if let Ok(rd) = fs::read_dir(sys.join("slaves")) {
            for e in rd.flatten() {
                if let Some(sd) = fs::read_to_string(e.path().join("dev"))
                    .ok()
                    .and_then(|s| parse_dev(&s))
                {
                    let how = format!("{how}, built on {}", self.dev_name(sd));
                    self.dev_extents(sd, 0, u64::MAX, inside, &how, out, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// A loop device's bytes `start..end`: bytes `offset+start..` of its backing file (or device).
    #[allow(clippy::too_many_arguments)]
    fn loop_extents(
        &self,
        dev: u64,
        sys: &Path,
        start: u64,
        end: u64,
        inside: &[u64],
        how: &str,
        out: &mut Vec<Extent>,
        depth: usize,
    ) -> Result<()> {
        let node = PathBuf::from(self.dev_name(dev));
        let backing_path = fs::read_to_string(sys.join("loop/backing_file"))
            .ok()
            .map(|s| PathBuf::from(s.trim_end_matches('\n')));
        // LOOP_GET_STATUS64 on a read-only descriptor (nothing is written).
        let status = fs::File::open(&node)
            .ok()
            .and_then(|f| crate::io::sys::loop_status(&f).ok());
        // `rdev`: the backing node's device number when it is a block device — known from the
        // kernel even when that node was deleted or renamed (sysfs then names no usable path).
        let (bdev, bino, rdev, offset, limit) = match status {
            Some(s) => (
                Some(s.lo_device),
                Some(s.lo_inode),
                s.lo_rdevice,
                s.lo_offset,
                s.lo_sizelimit,
            ),
            None => {
                let Some(b) = &backing_path else {
                    return Ok(()); // a detached loop device: nothing behind it
                };
                let md = fs::metadata(b).ok();
                (
                    md.as_ref().map(|m| m.dev()),
                    md.as_ref().map(|m| m.ino()),
                    md.as_ref()
                        .filter(|m| m.file_type().is_block_device())
                        .map_or(0, |m| m.rdev()),
                    read_u64(&sys.join("loop/offset")).unwrap_or(0),
                    read_u64(&sys.join("loop/sizelimit")).unwrap_or(0),
                )
            }
        };
        let (Some(bdev), Some(bino)) = (bdev, bino) else {
            return Err(Error::refused(format!(
                "{} is a loop device whose backing file cannot be identified; detach it or pick another device",
                node.display()
            )));
        };
        let a = offset.saturating_add(start);
        let mut b = offset.saturating_add(end);
        if limit > 0 {
            b = b.min(offset.saturating_add(limit));
        }
        // The backing file's name, when sysfs still has it and it is the same inode.
        let backing = backing_path.filter(|p| {
            fs::metadata(p)
                .map(|m| m.dev() == bdev && m.ino() == bino)
                .unwrap_or(false)
        });
        let bname = backing
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("inode {bino} of device {}", fmt_dev(bdev)));
        let how = format!(
            "{how}, a loop device over {} of {bname}",
            fmt_bytes_range(a, b)
        );
        // A loop device over a block device: the bytes of that device (a loop's backing is a
        // regular file or a block device, so a device number means the latter).
        if rdev != 0 {
            let how = if backing.is_some() {
                how
            } else {
                format!("{how} (the device node {})", self.dev_name(rdev))
            };
            return self.dev_extents(rdev, a, b, inside, &how, out, depth + 1);
        }
        out.push(Extent {
            object: Object::File {
                dev: bdev,
                ino: bino,
            },
            object_name: bname,
            start: a,
            end: b,
            inside: inside.to_vec(),
            how: how.clone(),
        });
        let how = format!("{how}, a file on the filesystem of");
        let at = backing.as_ref().and_then(|p| fs::canonicalize(p).ok());
        self.fs_extents(bdev, at.as_deref(), inside, &how, out, depth + 1)
    }
}
