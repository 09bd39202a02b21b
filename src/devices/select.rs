//! Device selectors: turning what a user typed (`/dev/sda`, `sda`, `serial=XYZ`, `label=EFI`,
//! `uuid=...`, `model=...`, a disk-image file) into exactly one disk, partition or file, or an
//! error that lists what is there.
use super::usage::rdev_of;
use super::{Disk, Partition, Selected};
use crate::error::{Error, Result};
use crate::jobs::fmt_bytes;
use std::path::{Path, PathBuf};

/// Resolves `sel` against an inventory (see [`super::resolve`] for the syntax).
pub fn resolve_in(sel: &str, disks: &[Disk]) -> Result<Selected> {
    let sel = sel.trim();
    if sel.is_empty() {
        return Err(Error::invalid(format!(
            "empty device selector. {}",
            inventory(disks)
        )));
    }
    if let Some((key, value)) = split_key(sel) {
        return by_key(sel, key, value, disks);
    }
    if sel.contains('/') {
        return by_path(sel, Path::new(sel), disks);
    }
    // A kernel name: a disk or a partition.
    if let Some(d) = disks.iter().find(|d| d.name == sel) {
        return Ok(Selected::Disk(d.clone()));
    }
    for d in disks {
        if let Some(p) = d.partitions.iter().find(|p| p.name == sel) {
            return Ok(Selected::Partition {
                disk: d.clone(),
                part: p.clone(),
            });
        }
    }
    // A disk-image file in the current directory, named without a slash.
    let p = Path::new(sel);
    if p.is_file() {
        return Ok(Selected::File(p.to_path_buf()));
    }
    Err(Error::not_found(format!(
        "no disk, partition or file is called '{sel}'. {}",
        inventory(disks)
    )))
}

/// `key=value` selectors; None for anything else (paths may contain '=').
fn split_key(sel: &str) -> Option<(&str, &str)> {
    let (k, v) = sel.split_once('=')?;
    let k = k.to_ascii_lowercase();
    const KEYS: [&str; 7] = [
        "serial",
        "label",
        "uuid",
        "model",
        "partuuid",
        "partlabel",
        "wwn",
    ];
    KEYS.iter().find(|x| **x == k).map(|x| (*x, v))
}

fn by_key(sel: &str, key: &str, value: &str, disks: &[Disk]) -> Result<Selected> {
    if value.is_empty() {
        return Err(Error::invalid(format!(
            "'{sel}' has no value after '='. {}",
            inventory(disks)
        )));
    }
    let mut hits: Vec<Selected> = Vec::new();
    match key {
        "serial" | "model" => {
            for d in disks {
                let field = if key == "serial" { &d.serial } else { &d.model };
                if field.as_deref() == Some(value) {
                    hits.push(Selected::Disk(d.clone()));
                }
            }
        }
        "wwn" => {
            // As listed ("eui.0011…", "naa.5000…"), or the bare hex of an EUI-64 / NGUID.
            let v = value.to_ascii_lowercase();
            for d in disks {
                let ids = [d.wwn.as_deref(), d.eui64.as_deref(), d.nguid.as_deref()];
                if ids.iter().flatten().any(|w| w.to_ascii_lowercase() == v) {
                    hits.push(Selected::Disk(d.clone()));
                }
            }
        }
        _ => {
            let eq = |field: &Option<String>| match (key, field) {
                ("uuid" | "partuuid", Some(f)) => f.eq_ignore_ascii_case(value),
                (_, Some(f)) => f == value,
                _ => false,
            };
            for d in disks {
                let pick = |p: &Partition| match key {
                    "label" => eq(&p.label),
                    "uuid" => eq(&p.uuid),
                    "partlabel" => eq(&p.part_label),
                    _ => false,
                };
                for p in &d.partitions {
                    if pick(p) {
                        hits.push(Selected::Partition {
                            disk: d.clone(),
                            part: p.clone(),
                        });
                    }
                }
                // A filesystem on the whole disk (no partition table) answers label= and uuid=.
                let whole = match key {
                    "label" => eq(&d.label),
                    "uuid" => eq(&d.uuid),
                    _ => false,
                };
                if whole {
                    hits.push(Selected::Disk(d.clone()));
                }
            }
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::not_found(format!(
            "nothing matches '{sel}'. {}",
            inventory(disks)
        ))),
        _ => {
            let names: Vec<String> = hits.iter().map(candidate).collect();
            Err(Error::invalid(format!(
                "'{sel}' is ambiguous: it matches {}; name one of them by its kernel name, path \
                 or wwn= instead",
                names.join(", ")
            )))
        }
    }
}

/// A match of an ambiguous selector, told apart from the others: an NVMe namespace by its id
/// and world-wide name (namespaces of one controller share its serial and model).
fn candidate(s: &Selected) -> String {
    let Selected::Disk(d) = s else {
        return s.name();
    };
    let mut ids = vec![fmt_bytes(d.size_bytes)];
    if let Some(n) = d.nsid {
        ids.push(format!("namespace {n}"));
    }
    if let Some(w) = &d.wwn {
        ids.push(format!("wwn={w}"));
    }
    format!("{} ({})", d.name, ids.join(", "))
}

fn by_path(sel: &str, path: &Path, disks: &[Disk]) -> Result<Selected> {
    let md = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("{sel} does not exist. {}", inventory(disks)))
        } else {
            Error::io("look at", path, e)
        }
    })?;
    if md.is_file() {
        return Ok(Selected::File(path.to_path_buf()));
    }
    if let Some(dev) = rdev_of(path) {
        if let Some(s) = lookup_dev(&dev, disks) {
            return Ok(s);
        }
        return Err(Error::not_found(format!(
            "{sel} (device {dev}) is not a disk or partition Lifeboat lists (RAID, device-mapper, optical and RAM disks are not supported). {}",
            inventory(disks)
        )));
    }
    Err(Error::invalid(format!(
        "{sel} is neither a block device nor a regular file. {}",
        inventory(disks)
    )))
}

/// The disk or partition whose device number is `dev` ("MAJ:MIN").
pub fn lookup_dev(dev: &str, disks: &[Disk]) -> Option<Selected> {
    for d in disks {
        if d.dev == dev {
            return Some(Selected::Disk(d.clone()));
        }
        if let Some(p) = d.partitions.iter().find(|p| p.dev == dev) {
            return Some(Selected::Partition {
                disk: d.clone(),
                part: p.clone(),
            });
        }
    }
    None
}

/// The whole disk at `path` (any node or symlink to it, e.g. `/dev/disk/by-id/...`).
pub fn disk_from_path(path: &Path, disks: &[Disk]) -> Result<Disk> {
    let dev = rdev_of(path).ok_or_else(|| {
        Error::invalid(format!("{} is not a block device", path.display())).at_path(path)
    })?;
    match lookup_dev(&dev, disks) {
        Some(Selected::Disk(d)) => Ok(d),
        Some(Selected::Partition { disk, part }) => Err(Error::invalid(format!(
            "{} is partition {} of {}; name the whole disk ({})",
            path.display(),
            part.number,
            disk.name,
            disk.path.display()
        ))),
        _ => Err(Error::not_found(format!(
            "{} (device {dev}) is not a listed disk. {}",
            path.display(),
            inventory(disks)
        ))),
    }
}

/// One sentence listing what is there, for error messages.
pub fn inventory(disks: &[Disk]) -> String {
    if disks.is_empty() {
        return "No disks were found (run `lifeboat list`; are the drivers loaded?).".to_string();
    }
    let mut ds = Vec::new();
    let mut ps = Vec::new();
    for d in disks {
        let mut s = format!("{} ({}, {}", d.name, fmt_bytes(d.size_bytes), d.transport);
        if let Some(m) = &d.model {
            s.push_str(&format!(", model={m}"));
        }
        if let Some(x) = &d.serial {
            s.push_str(&format!(", serial={x}"));
        }
        if let Some(n) = d.nsid {
            s.push_str(&format!(", namespace {n}"));
        }
        if let Some(l) = &d.label {
            s.push_str(&format!(", label={l}"));
        }
        s.push(')');
        ds.push(s);
        for p in &d.partitions {
            let mut s = p.name.clone();
            let mut extra = Vec::new();
            if let Some(l) = &p.label {
                extra.push(format!("label={l}"));
            }
            if let Some(u) = &p.uuid {
                extra.push(format!("uuid={u}"));
            }
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            ps.push(s);
        }
    }
    let mut out = format!("Disks: {}.", ds.join("; "));
    if !ps.is_empty() {
        out.push_str(&format!(" Partitions: {}.", ps.join("; ")));
    }
    out
}

impl Selected {
    /// The kernel name (disk or partition) or the file path.
    pub fn name(&self) -> String {
        match self {
            Selected::Disk(d) => d.name.clone(),
            Selected::Partition { part, .. } => part.name.clone(),
            Selected::File(p) => p.display().to_string(),
        }
    }
    /// The path to open: the `/dev` node or the file.
    pub fn path(&self) -> PathBuf {
        match self {
            Selected::Disk(d) => d.path.clone(),
            Selected::Partition { part, .. } => part.path.clone(),
            Selected::File(p) => p.clone(),
        }
    }
    /// The whole disk this selection is, or is on (None for a file).
    pub fn disk(&self) -> Option<&Disk> {
        match self {
            Selected::Disk(d) | Selected::Partition { disk: d, .. } => Some(d),
            Selected::File(_) => None,
        }
    }
}
