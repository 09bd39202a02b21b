//! A clone's `--map` file, checked before anything is written: where it may be (its directory
//! exists and is writable) and whether it is the map of *this* clone. A map Lifeboat saves records the source's and the
//! target's identity and size ([`MapOrigin`]); resuming from the map of another copy would skip
//! the parts it marks finished and leave the target wrong, so a map that does not match is
//! refused (exit 4). A map without that record (GNU ddrescue's, an older Lifeboat's) is taken
//! only when it describes exactly this copy's length, with a note. The map of a clone that
//! finished with every byte read has nothing to resume (the target may have changed since):
//! the clone starts over, with a note.
//!
//! The map also records the copy's domain: the free areas a used-blocks clone does not copy
//! are free extents in it (`# free`). A map is resumed only when its free areas are exactly
//! this run's (refused, exit 4, otherwise): a map of an `--all-sectors` copy (or GNU
//! ddrescue's, or an older Lifeboat's) by an `--all-sectors` run, a used-blocks map by a
//! used-blocks run of the same, unchanged filesystems. Free space that differs means the
//! source's filesystems changed since (what the map marks copied may be stale) or that the
//! options differ; the message says which and what to do.
use crate::devices::{usage::fmt_dev, Selected};
use crate::error::{Error, Result};
use crate::rescue::map::{MapOrigin, StorageId};
use crate::rescue::{ExtentMap, Status};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// "MAJ:MIN:INODE" of the regular file at `p`.
fn file_id(p: &Path) -> Option<String> {
    let md = std::fs::metadata(p).ok()?;
    md.is_file()
        .then(|| format!("{}:{}", fmt_dev(md.dev()), md.ino()))
}

/// The identity of what `sel` names, `size` bytes long, as a map records it.
pub fn storage_id(sel: &Selected, size: u64) -> StorageId {
    let nonempty = |s: &Option<String>| s.clone().filter(|x| !x.trim().is_empty());
    let mut id = StorageId {
        size,
        name: sel.path().display().to_string(),
        ..Default::default()
    };
    let disk = match sel {
        Selected::File(p) => {
            id.file = file_id(p);
            return id;
        }
        Selected::Disk(d) => d,
        Selected::Partition { disk, part } => {
            id.partition = Some(part.number);
            disk
        }
    };
    id.serial = nonempty(&disk.serial).or_else(|| nonempty(&disk.wwn));
    id.model = nonempty(&disk.model);
    // A loop device is its backing file (and where in it the device starts).
    if let Some(b) = &disk.backing_file {
        let offset = std::fs::read_to_string(format!("/sys/block/{}/loop/offset", disk.name))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        id.file = file_id(Path::new(b.trim())).map(|f| format!("{f}+{offset}"));
    }
    id
}

/// Where the map may be saved: its directory must exist and be writable (exit 2 otherwise),
/// checked before anything is written. (That the map shares no storage with the source or the
/// target is the identity rule's, [`crate::storage::Check`].)
pub fn check_location(map: &Path) -> Result<()> {
    let dir: PathBuf = match map.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let md = std::fs::metadata(&dir).map_err(|e| {
        Error::invalid(format!(
            "the directory of the map {} does not exist: create it first, or give a map path in an existing directory",
            map.display()
        ))
        .at_path(&dir)
        .caused_by(e)
    })?;
    if !md.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory, so the map {} cannot be saved there",
            dir.display(),
            map.display()
        )));
    }
    if let Err(e) = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK) {
        return Err(Error::invalid(format!(
            "the map {} cannot be saved: its directory is not writable; give a map path on a writable filesystem",
            map.display()
        ))
        .at_path(&dir)
        .caused_by(std::io::Error::from(e)));
    }
    // access() is not the last word (it says yes for /proc/self/fd and other directories that
    // hold no files): create and remove a probe file, as the saves will, before the copy starts.
    let probe = dir.join(format!(".lifeboat-map-probe-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&probe);
    match created {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::invalid(format!(
            "the map {} cannot be saved: no file can be created in its directory; give a map path \
             in a directory of an ordinary writable filesystem",
            map.display()
        ))
        .at_path(&dir)
        .caused_by(e)),
    }
}

/// The map to start from: a fresh one when `map` does not exist yet, else the loaded one once
/// its record matches this copy (`origin`, `copy_len` bytes) and its free areas are `free`
/// (`[start, len]`, ascending; empty for a copy of every sector). Notes for the report go to
/// `notes`.
pub fn load_or_new(
    map: Option<&Path>,
    origin: &MapOrigin,
    copy_len: u64,
    free: &[(u64, u64)],
    notes: &mut Vec<String>,
) -> Result<ExtentMap> {
    let m = load_or_new_for(map, origin, copy_len, free, notes, "clone", "copying")?;
    let unread = |s: Status| {
        matches!(
            s,
            Status::Untried | Status::NonTrimmed | Status::NonScraped | Status::Bad
        )
    };
    if m.current_phase == '+' && !m.extents().iter().any(|e| unread(e.status)) {
        // A clone that finished with every byte read: nothing to resume. Taken as one, the
        // clone wrote nothing and reported it verified while the target kept whatever was done
        // to it since. (A map with unreadable areas is kept: re-reading a failing disk in full
        // is what a map is there to avoid.)
        notes.push(format!(
            "the map {} records a clone that finished; the target may have changed since, so \
             it is copied again in full",
            map.map_or_else(String::new, |p| p.display().to_string())
        ));
        // The map a clone without one starts from.
        return load_or_new_for(None, origin, copy_len, free, notes, "clone", "copying");
    }
    Ok(m)
}

/// [`load_or_new`] for a job named `job` ("clone", "restore") that reads its source
/// `reading` ("copying", "restoring"): the words of its messages.
pub fn load_or_new_for(
    map: Option<&Path>,
    origin: &MapOrigin,
    copy_len: u64,
    free: &[(u64, u64)],
    notes: &mut Vec<String>,
    job: &str,
    reading: &str,
) -> Result<ExtentMap> {
    let mut fresh = ExtentMap::new(copy_len);
    fresh.origin = Some(origin.clone());
    let Some(path) = map else {
        return Ok(fresh);
    };
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(fresh);
    }
    // Parsed against an unbounded length first, so that a map of a larger copy is reported as
    // another clone's (exit 4), not as damaged.
    let (loaded, described) = ExtentMap::load_described(path, u64::MAX)?;
    let other = |why: String| {
        Error::refused(format!(
            "the map {} is not of this {job} ({why}), so resuming from it would leave parts of \
             the target wrong; nothing was written: give a new --map file name, or delete {} to \
             start this {job} from the beginning",
            path.display(),
            path.display()
        ))
    };
    match &loaded.origin {
        Some(rec) => {
            if let Some(why) = rec.source.differs(&origin.source) {
                return Err(other(format!(
                    "it was saved {reading} {}; this {job} reads {}: {why}",
                    rec.source.describe(),
                    origin.source.describe()
                )));
            }
            if let Some(why) = rec.target.differs(&origin.target) {
                return Err(other(format!(
                    "it was saved writing onto {}; this {job} writes onto {}: {why}",
                    rec.target.describe(),
                    origin.target.describe()
                )));
            }
            if described > copy_len {
                return Err(other(format!(
                    "it describes {described} bytes; this {job} writes {copy_len}"
                )));
            }
        }
        None => {
            if described != copy_len {
                return Err(other(format!(
                    "it records no source (a map of GNU ddrescue or an older Lifeboat) and \
                     describes {described} bytes; this {job} writes {copy_len}"
                )));
            }
            notes.push(format!(
                "the map {} records no source (GNU ddrescue's or an older Lifeboat's); its size \
                 matches this {job} ({copy_len} bytes), so the {job} resumed from it; from now \
                 on it records this {job}'s source and target",
                path.display()
            ));
        }
    }
    check_domain(path, &loaded, described, free)?;
    for e in loaded.extents().iter().filter(|e| e.pos < described) {
        fresh.set(e.pos, e.size.min(described - e.pos), e.status);
    }
    fresh.current_pos = loaded.current_pos.min(copy_len);
    fresh.current_phase = loaded.current_phase;
    Ok(fresh)
}

/// Refuses a map whose free areas (in its first `described` bytes) are not `free`.
fn check_domain(
    path: &Path,
    loaded: &ExtentMap,
    described: u64,
    free: &[(u64, u64)],
) -> Result<()> {
    let clip = |v: &[(u64, u64)]| -> Vec<(u64, u64)> {
        v.iter()
            .filter(|r| r.0 < described)
            .map(|r| (r.0, r.1.min(described - r.0)))
            .collect()
    };
    let theirs = clip(&loaded.ranges(Status::Free));
    let ours = clip(free);
    if theirs == ours {
        return Ok(());
    }
    let bytes = |v: &[(u64, u64)]| v.iter().map(|r| r.1).sum::<u64>();
    let name = path.display();
    let (why, todo) = if theirs.is_empty() {
        (
            "it is the map of a copy of every sector (made with --all-sectors, or by GNU \
             ddrescue or an older Lifeboat) and this clone copies only the used blocks"
                .to_string(),
            "add --all-sectors to resume it, or ",
        )
    } else if ours.is_empty() {
        (
            "it is the map of a clone of the used blocks only and this clone copies every \
             sector (--all-sectors)"
                .to_string(),
            "run without --all-sectors to resume it, or ",
        )
    } else {
        (
            format!(
                "its free areas ({} bytes) are not the source's free space now ({} bytes): the \
                 source's filesystems changed since the map was saved, or could not be read the \
                 same way, so what the map marks copied may be stale",
                bytes(&theirs),
                bytes(&ours)
            ),
            "",
        )
    };
    Err(Error::refused(format!(
        "the map {name} does not fit this clone ({why}); nothing was written: {todo}give a new \
         --map file name (or delete {name}) to start this clone from the beginning"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("resume-{tag}"))
    }

    fn origin(src: &Path, tgt: &Path, size: u64) -> MapOrigin {
        MapOrigin {
            source: storage_id(&Selected::File(src.into()), size),
            target: storage_id(&Selected::File(tgt.into()), size),
        }
    }

    #[test]
    fn a_map_of_another_copy_is_refused() {
        let d = dir("other");
        let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
        for f in [&a, &b, &c] {
            std::fs::write(f, vec![0u8; 8192]).unwrap();
        }
        let map = d.join("m.map");
        let o = origin(&a, &b, 8192);
        let mut notes = vec![];
        let mut m = load_or_new(Some(&map), &o, 8192, &[], &mut notes).unwrap();
        m.set(0, 4096, Status::Finished);
        m.save(&map, "test").unwrap();
        // Same copy: resumed.
        let r = load_or_new(Some(&map), &o, 8192, &[], &mut notes).unwrap();
        assert_eq!(r.status_at(0), Some(Status::Finished));
        assert!(notes.is_empty());
        // Another source (same size), another target, another size: refused.
        for other in [origin(&c, &b, 8192), origin(&a, &c, 8192)] {
            let e = load_or_new(Some(&map), &other, 8192, &[], &mut notes).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::Refused, "{e}");
        }
        let mut bigger = o.clone();
        bigger.source.size = 16384;
        assert!(load_or_new(Some(&map), &bigger, 16384, &[], &mut notes).is_err());
        // A ddrescue map without a record: only with the same length, with a note.
        std::fs::write(&map, "0 +\n0 0x1000 +\n0x1000 0x1000 -\n").unwrap();
        let r = load_or_new(Some(&map), &o, 8192, &[], &mut notes).unwrap();
        assert_eq!(r.status_at(5000), Some(Status::Bad));
        assert_eq!(notes.len(), 1);
        let e = load_or_new(Some(&map), &o, 16384, &[], &mut notes).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Refused);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_map_of_another_domain_is_refused() {
        let d = dir("domain");
        let (a, b) = (d.join("a"), d.join("b"));
        for f in [&a, &b] {
            std::fs::write(f, vec![0u8; 65536]).unwrap();
        }
        let map = d.join("m.map");
        let o = origin(&a, &b, 65536);
        let free = [(4096u64, 8192u64), (32768, 16384)];
        let mut notes = vec![];
        let mut m = load_or_new(Some(&map), &o, 65536, &free, &mut notes).unwrap();
        for &(x, l) in &free {
            m.set(x, l, Status::Free);
        }
        m.set(0, 4096, Status::Finished);
        m.save(&map, "test").unwrap();
        // The same free areas: resumed, the free areas kept.
        let r = load_or_new(Some(&map), &o, 65536, &free, &mut notes).unwrap();
        assert_eq!(r.ranges(Status::Free), free.to_vec());
        assert_eq!(r.status_at(0), Some(Status::Finished));
        // Other free space, every sector: refused, saying what to do.
        let e = load_or_new(Some(&map), &o, 65536, &free[..1], &mut notes).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Refused);
        assert!(e.to_string().contains("changed since"), "{e}");
        let e = load_or_new(Some(&map), &o, 65536, &[], &mut notes).unwrap_err();
        assert!(e.to_string().contains("run without --all-sectors"), "{e}");
        // A map of every sector resumed by a used-blocks run.
        let mut every = ExtentMap::new(65536);
        every.origin = Some(o.clone());
        every.save(&map, "test").unwrap();
        let e = load_or_new(Some(&map), &o, 65536, &free, &mut notes).unwrap_err();
        assert!(e.to_string().contains("add --all-sectors"), "{e}");
        assert!(notes.is_empty(), "{notes:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn map_location_is_checked() {
        let d = dir("loc");
        std::fs::write(d.join("f"), b"x").unwrap();
        assert!(check_location(&d.join("m.map")).is_ok());
        let e = check_location(&d.join("missing/m.map")).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_location(&d.join("f/m.map")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
