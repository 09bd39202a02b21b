//! `lifeboat image restore`: the target rules, the confirmation, the `--map` to resume and
//! what becomes of free space (`--zero-free`, `--discard`), the restore itself (through
//! [`super::ops`]) and the partition-table fix-up, and the errors of a restore that stopped
//! part way.
use super::cmd::{chain_items, finish_progress};
use super::*;
use crate::devices::Selected;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::io::Device;
use crate::jobs::{Cancel, StderrSink};
use crate::storage::Check;
use std::path::{Path, PathBuf};

/// Restore's target rules: those of clone (`crate::storage`: no storage shared with any volume
/// of the image chain or the partition holding it, not in use, not read-only, not the boot
/// medium, big enough for the imaged disk's partitions) plus one of its own: the disk the image was made from (same serial) is
/// only overwritten with `--yes` (a deliberate roll-back); without `--yes` a person must confirm;
/// and a disk with another sector size than the image's partition table is refused.
pub(super) fn run_restore(
    image: String,
    target: String,
    yes: bool,
    zero_free: bool,
    discard: bool,
    map: Option<PathBuf>,
    json: bool,
) -> Result<i32> {
    // Ctrl-C / SIGTERM: stop writing, sync the target, exit 130 saying it is incomplete.
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "the target is synced but left INCOMPLETE");
    // Before the image's partition is mounted (even read-only): the target may not be it or
    // hold it (by identity: a loop device over it, its whole disk …).
    let loc = StoreLocation::resolve(&image)?;
    if let Some(p) = &loc.partition {
        let mut pre = Check::new();
        pre.keeps("the image's partition", &p.path)?;
        let env = crate::storage::Env::system()?;
        let tpath = crate::storage::target::select(&target, &env)?.path();
        pre.writes("the target", &tpath)?;
        pre.run()?;
    }
    drop(loc);
    let store = Store::open(&image, Mode::ReadOnly)?;
    ops::require_complete(&store.path)?;
    // The identity rule: the target is written; every volume of the chain and the partition
    // holding the image are kept.
    let mut check = Check::new();
    let chain = chain_items(&mut check, &store.path, "the image")?;
    super::cmd_keys::passphrase_kept(&mut check)?;
    if let Some(p) = &store.partition {
        check.keeps("the image's partition", &p.path)?;
    }
    // The map is written: it may share storage with neither the target nor the image (on a
    // partition: the partition, which cannot be the image's, mounted read-only).
    let mut map_store = map.as_deref().map(store::SideFile::resolve).transpose()?;
    if let Some(m) = &map_store {
        m.check_items(&mut check, "the map file")?;
    }
    let h = chain.top().header.clone();
    // The smallest target that holds the imaged disk's partitions (the whole disk without a table).
    let table = crate::clone::gpt::read(&reader::ImageSource::new(chain)).ok();
    let min_size = table
        .as_ref()
        .and_then(|t| t.min_disk_bytes())
        .unwrap_or(h.disk_size);
    let t = crate::storage::open_target(&target, &mut check, min_size)?;
    target_rules(&t, &h.serial, yes)?;
    if let Some(note) = crate::storage::target::check_sector_size(
        &image,
        table.as_ref(),
        &t,
        &format!(
            "write a raw file with `lifeboat image export {image} FILE` and take the files from it"
        ),
    )? {
        crate::errln!("note: {note}");
    }
    // The map: where it goes and that it is this restore's, before anything is written.
    let mut notes = Vec::new();
    let free = free_space(zero_free, discard, &t.device, &mut notes);
    let map = match map_store.as_mut() {
        Some(m) => Some(m.open()?),
        None => None,
    };
    let mut rmap = match &map {
        Some(m) => {
            let origin = resume::restore_origin(
                &format::uuid_str(&h.uuid),
                h.disk_size,
                &image,
                crate::clone::resume::storage_id(&t.selected, t.size),
            );
            let cl = format!(
                "lifeboat image restore {image} {target} --map {}",
                m.display()
            );
            let len = h.disk_size.min(t.size);
            Some(resume::RestoreMap::open(m, &origin, len, &cl, &mut notes)?)
        }
        None => None,
    };
    for n in &notes {
        crate::errln!("lifeboat: note: {n}");
    }
    if let Some(r) = rmap.as_ref().filter(|r| r.resumed_bytes > 0) {
        crate::errln!(
            "Resuming: the map {} says {} are already written; the rest is restored now.",
            r.path().display(),
            crate::jobs::fmt_bytes(r.resumed_bytes)
        );
    }
    confirm_overwrite(&t, yes)?;
    if cancel.is_cancelled() {
        return Err(Error::new(
            ErrorKind::Cancelled,
            "cancelled by the user before anything was written",
        ));
    }
    let sink = StderrSink::from_env();
    let tpath = t.selected.path();
    let mut out = ops::DeviceSink::new(&t.device, free);
    let mut rep = match ops::stream_resumable(
        &store.path,
        &mut out,
        "image-restore",
        &tpath,
        &sink,
        &cancel,
        rmap.as_mut(),
        Some(&t.device),
    ) {
        Ok(r) => r,
        Err(e) => {
            let e = store.network_lost(e, &image, "");
            let e = restore_failed(e, &image, &tpath, t.device.sync());
            return Err(match &map {
                Some(m) if e.kind != ErrorKind::Refused => resumable(e, m),
                _ => e,
            });
        }
    };
    t.device.sync()?;
    if table.is_some() {
        rep.partition_table = Some(crate::clone::gpt::fix_after_copy(&t.device)?);
    }
    for n in &rep.notes {
        crate::errln!("lifeboat: note: {n}");
    }
    notes.append(&mut rep.notes);
    rep.notes = notes;
    if store.is_mounted_location() {
        // The location as the user gave it (a URL, `label=…:/…`), not where it was mounted.
        rep.image = PathBuf::from(&image);
    }
    t.device.sync()?;
    if let Some(m) = rmap.as_mut() {
        m.finish()?;
    }
    // Best effort: a partition in use keeps the old table until the next boot.
    let _ = t.device.reread_partitions();
    finish_progress(&sink, "image-restore", rep.disk_size_bytes, 0);
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!(
            "Restored {} onto {} (media hash verified).",
            crate::jobs::fmt_bytes(rep.disk_size_bytes),
            rep.target.display()
        );
        if rep.discarded_bytes > 0 {
            crate::errln!(
                "{} held no used block and were discarded (TRIM) on the target.",
                crate::jobs::fmt_bytes(rep.discarded_bytes)
            );
        }
        if rep.unallocated_bytes > rep.discarded_bytes {
            crate::errln!(
                "{} held no used block and were left as they were on the target (--zero-free writes zeros there).",
                crate::jobs::fmt_bytes(rep.unallocated_bytes - rep.discarded_bytes)
            );
        }
        if rep.bad_bytes > 0 {
            crate::errln!(
                "{} were unreadable when the image was made and were written as zeros.",
                crate::jobs::fmt_bytes(rep.bad_bytes)
            );
        }
    }
    Ok(exit::OK)
}

/// The target rules of every restore (from an image file or an S3 store) beyond
/// `storage::open_target`'s: a whole disk, not a partition; a FAILING disk only with `--yes`
/// (its health note printed); the disk the image was made from (`serial`, empty when unknown)
/// only with `--yes`, a deliberate roll-back.
pub(crate) fn target_rules(t: &crate::storage::Target, serial: &str, yes: bool) -> Result<()> {
    if let Selected::Partition { part, .. } = &t.selected {
        return Err(Error::refused(format!(
            "{} is a partition: restore a disk image onto a whole disk",
            part.name
        )));
    }
    // The health rule: a FAILING target only with --yes.
    if let Some(note) = crate::storage::target::check_health(&t.selected, yes)? {
        crate::errln!("lifeboat: note: {note}");
    }
    if let Some(d) = t.selected.disk() {
        let same_serial = !serial.is_empty() && d.serial.as_deref() == Some(serial);
        if same_serial && !yes {
            return Err(Error::refused(format!(
                "{} is the disk this image was made from (serial {serial}): rolling it back \
                 needs --yes",
                d.name
            )));
        }
    }
    Ok(())
}

/// Without `--yes`, a person confirms that all of the target is overwritten.
pub(crate) fn confirm_overwrite(t: &crate::storage::Target, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    crate::storage::prompt::confirm(
        &t.selected.path().display().to_string(),
        &format!(
            "This overwrites ALL of {} ({}).",
            t.selected.path().display(),
            crate::jobs::fmt_bytes(t.size)
        ),
    )
}

/// The error of a restore that stopped part way (cancelled, a damaged chunk, a write error):
/// says plainly that the target is now INCOMPLETE and what to do, in the message and in the
/// JSON report (`target_state: "incomplete"`). Damage found (or a cancel) before the first
/// write leaves the target untouched, and then the error says that instead.
fn restore_failed(e: Error, image: &str, target: &Path, synced: Result<()>) -> Error {
    let written = e
        .report
        .as_ref()
        .and_then(|r| r.get("written_bytes"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    // The reader reports damage (and the writer checks for a cancel) before a chunk is
    // written, so with nothing written these left the target as it was; a write error did not.
    let before_writing = matches!(
        e.kind,
        ErrorKind::Corrupt | ErrorKind::Incomplete | ErrorKind::Cancelled
    );
    if written == 0 && before_writing {
        let msg = format!(
            "{}; nothing was written to {} (it is unchanged)",
            if e.kind == ErrorKind::Cancelled {
                "cancelled by the user"
            } else {
                e.msg.as_str()
            },
            target.display()
        );
        return Error { msg, ..e }
            .with_report("target", target.display().to_string())
            .with_report("target_state", "unchanged");
    }
    let sync = match synced {
        Ok(()) => "what was written is synced".to_string(),
        Err(se) => format!("the sync failed too: {se}"),
    };
    let what_now = match e.kind {
        ErrorKind::Cancelled => "run the same `image restore` again to finish".to_string(),
        ErrorKind::Corrupt | ErrorKind::Incomplete => format!(
            "the image is damaged: `lifeboat image verify {image}` lists what; restore from \
             another copy of the image, or onto this disk again once the image is repaired"
        ),
        ErrorKind::NetworkLost => {
            "reconnect to the network and run the same `image restore` again".to_string()
        }
        _ => "fix the cause above and run the same `image restore` again".to_string(),
    };
    let msg = format!(
        "{}{}: {} is now INCOMPLETE ({} of the disk written, {sync}): do not use it; {what_now}",
        if e.kind == ErrorKind::Cancelled {
            "cancelled by the user".to_string()
        } else {
            e.msg.clone()
        },
        if e.kind == ErrorKind::Cancelled {
            String::new()
        } else {
            // The target is written through the descriptor it was checked by
            // (/proc/self/fd/N): name it as the user did.
            let named = |p: &Path| {
                if p.starts_with("/proc/self/fd") {
                    target.to_path_buf()
                } else {
                    p.to_path_buf()
                }
            };
            match (&e.path, e.offset) {
                (Some(p), Some(o)) => format!(" ({} at byte {o})", named(p).display()),
                (Some(p), None) => format!(" ({})", named(p).display()),
                _ => String::new(),
            }
        },
        target.display(),
        crate::jobs::fmt_bytes(written),
    );
    Error {
        msg,
        path: None,
        offset: None,
        ..e
    }
    .with_report("image", image)
    .with_report("target", target.display().to_string())
    .with_report("target_state", "incomplete")
}

/// What restore does where the image holds no used block: `--zero-free` zeros, `--discard`
/// TRIM when the target reports discard support (else a note, and the old bytes stay), by
/// default nothing.
fn free_space(
    zero_free: bool,
    discard: bool,
    target: &Device,
    notes: &mut Vec<String>,
) -> ops::FreeSpace {
    if zero_free {
        return ops::FreeSpace::Zero;
    }
    if !discard {
        return ops::FreeSpace::Keep;
    }
    if target.supports_discard() {
        return ops::FreeSpace::Discard;
    }
    notes.push(format!(
        "{} {}: --discard does nothing, and its free space keeps its old bytes",
        target.path().display(),
        if target.is_block_device() {
            "does not support discard (TRIM): its queue/discard_max_bytes is 0"
        } else {
            "is not a block device"
        }
    ));
    ops::FreeSpace::Keep
}

/// A failed restore's error when a `--map` was kept: the same command continues it — from
/// where this one stopped when its last save worked (`map_saved` in the report), else from what
/// the map recorded before (nothing when there was no map), never claiming more.
fn resumable(mut e: Error, map: &Path) -> Error {
    let report = |k: &str| e.report.as_ref().and_then(|r| r.get(k)).cloned();
    if report("target_state").as_ref().and_then(|v| v.as_str()) != Some("incomplete") {
        return e;
    }
    let saved = report("map_saved").and_then(|v| v.as_bool()) != Some(false);
    let more = if saved {
        format!(
            " (the map {} records what is written: the same command with --map continues \
             where this one stopped)",
            map.display()
        )
    } else if map.exists() {
        format!(
            " (the map {} could not be saved again, so it records less than was written: the \
             same command with --map writes the rest again)",
            map.display()
        )
    } else {
        format!(
            " (the map {} could not be saved: the same command starts from the beginning)",
            map.display()
        )
    };
    e.msg.push_str(&more);
    e
}
