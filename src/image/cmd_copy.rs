//! `lifeboat image copy IMAGE DEST [--chain] [--no-verify] [--force]`: the locations (plain
//! paths or `PARTITION:/path`, the image's read-only, the destination's read-write; a DEST that
//! is a directory or ends in `/` gets the image's file name), the identity rule (nothing
//! written may share storage with the image or any parent it reads: checked on the partitions
//! before anything is mounted, then on the files), the output rules of
//! [`crate::storage::target::check_output`], and the report. The copying is [`super::copy`].
use super::copy::{self, CopyReport};
use super::crypt::Keys;
use super::store::{Mode, StoreLocation};
use crate::error::{exit, Error, ErrorKind, Result};
use crate::jobs::{Cancel, StderrSink};
use crate::storage::Check;
use std::path::{Path, PathBuf};

/// DEST as the path of the copy's first volume: `DIR/` and an existing plain directory get the
/// image's file name.
fn dest_arg(image: &str, dest: &str) -> Result<String> {
    let inner = super::store::split_store(image).map_or(image.to_string(), |(_, p)| p);
    let name = Path::new(&inner)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("{image:?} names no image file")))?
        .to_string();
    let plain = super::store::split_store(dest).is_none();
    if dest.ends_with('/') || (plain && Path::new(dest).is_dir()) {
        let sep = if dest.ends_with('/') { "" } else { "/" };
        return Ok(format!("{dest}{sep}{name}"));
    }
    Ok(dest.to_string())
}

/// The identity items of a location before anything is mounted: its partition (mounting
/// writes to it), or the plain path (and, written, its `.partial` name).
fn location_items(check: &mut Check, role: &str, loc: &StoreLocation, written: bool) -> Result<()> {
    match (&loc.partition, loc.plain_path()) {
        (Some(p), _) if written => {
            check.writes(&format!("{role}'s partition"), &p.path)?;
        }
        (Some(p), _) => {
            check.keeps(&format!("{role}'s partition"), &p.path)?;
        }
        (None, Some(f)) if written => {
            check.writes(role, f)?;
            check.writes(role, &super::create::partial_name(f))?;
        }
        (None, Some(f)) => {
            check.keeps(role, f)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// The parents of the image at `path` as kept items, for a copy without `--chain`: it reads
/// only the image, but writing over one of its parents (`image copy inc.lbi full.lbi --force`
/// beside its parent `full.lbi`) destroys the chain the image needs. Every parent the chain
/// resolves to; where it does not resolve (a parent missing or damaged: the copy of the image
/// alone is still allowed), the files where its parent would be looked for that exist.
fn parents_kept(check: &mut Check, path: &Path, keys: &Keys) -> Result<()> {
    use super::reader::{parent_candidates, Chain, Image};
    let role = "a parent of the image";
    match Chain::open_with(path, keys) {
        Ok(c) => {
            for img in c.images.iter().skip(1) {
                for v in img.volume_paths() {
                    check.keeps(role, &v)?;
                }
            }
        }
        Err(_) => {
            let Ok(img) = Image::open_with(path, keys) else {
                return Ok(()); // the copy opens it again and reports why it cannot
            };
            if img.header.has_parent() {
                for f in parent_candidates(path, &img.header.parent_path) {
                    if f.is_file() {
                        check.keeps(role, &f)?;
                    }
                }
            }
        }
    }
    Ok(())
}

pub(super) fn run_copy(
    image: String,
    dest: String,
    chain: bool,
    (no_verify, force, ignore_free_space): (bool, bool, bool),
    passphrase_file: Option<String>,
    json: bool,
) -> Result<i32> {
    // Ctrl-C / SIGTERM: stop, remove the unfinished copy, exit 130.
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(
        &cancel,
        "the unfinished copy (.partial files) is removed; copies already finished stay",
    );
    // An encrypted image is copied as ciphertext and needs no key; with its passphrase the
    // copy is also verified as an image (every tag, CRC and keyed hash), without one it is
    // only compared byte for byte (never asked on the terminal: a copy runs unattended). Read
    // first: every image opened from here on uses these keys.
    match passphrase_file.as_deref() {
        Some(f) => super::cmd_keys::use_passphrase(Some(f), None)?,
        None => Keys::set_global(Keys::locked()),
    }
    let keys = Keys::global();
    let dest = dest_arg(&image, &dest)?;
    let src_loc = StoreLocation::resolve(&image)?;
    let dest_loc = StoreLocation::resolve(&dest)?;
    // Before anything is mounted or written: the partitions (or files) against each other.
    let mut check = Check::new();
    super::cmd_keys::passphrase_kept_beside(&mut check, &dest_loc)?;
    location_items(&mut check, "the image", &src_loc, false)?;
    if let Some(p) = src_loc.plain_path() {
        if chain {
            super::cmd::chain_items(&mut check, p, "the image")?;
        } else {
            parents_kept(&mut check, p, &keys)?;
        }
    }
    location_items(&mut check, "the copy", &dest_loc, true)?;
    check.run()?;
    let src = src_loc.mount(Mode::ReadOnly)?;
    super::ops::require_complete(&src.path)?;
    let dst = dest_loc.mount(Mode::ReadWrite)?;
    let mut dest_path = dst.path.clone();
    if dst.is_mounted_location() && dest_path.is_dir() {
        if let Some(n) = src.path.file_name() {
            dest_path = dest_path.join(n);
        }
    }
    let planned = copy::plan(&src.path, &dest_path, chain, &keys)?;
    // The files: nothing written shares storage with any volume of any image read.
    let mut inner = Check::new();
    super::cmd_keys::passphrase_kept_inside(&mut inner, &dest_loc, &dst)?;
    for p in &planned {
        for v in p.image.volume_paths() {
            inner.keeps(
                if p.image.path == src.path {
                    "the image"
                } else {
                    "the parent image"
                },
                &v,
            )?;
        }
    }
    if !chain {
        parents_kept(&mut inner, &src.path, &keys)?;
    }
    for p in planned.iter().filter(|p| !p.present) {
        for f in copy::written_files(p) {
            let fin = !f.to_string_lossy().ends_with(".partial");
            if fin {
                crate::storage::target::check_output_name(&f, force)?;
            } else {
                crate::storage::target::check_output(&f, true)?;
            }
            inner.writes("the copy", &f)?;
        }
    }
    inner.run()?;
    if !ignore_free_space {
        room_for_copy(&planned, &dest_path, &dest)?;
    }
    let sink = StderrSink::from_env();
    let rep = copy::copy(&planned, !no_verify, &keys, &sink, &cancel).map_err(|e| {
        let then = "the unfinished copy was removed (copies already finished, parents \
                        first, stay): reconnect and run the same command again";
        let e = src.network_lost(e, &image, then);
        dst.network_lost(e, &dest, then)
    });
    let mut rep: CopyReport = rep.map_err(|e| match e.kind {
        ErrorKind::Cancelled => Error::new(
            ErrorKind::Cancelled,
            "cancelled by the user: the unfinished copy was removed (copies already \
                 finished, parents first, stay)",
        ),
        _ => e,
    })?;
    super::cmd::finish_progress(&sink, "image-copy", rep.bytes_copied, 0);
    if dst.is_mounted_location() {
        rep.destination = PathBuf::from(&dest);
    }
    crate::cli::emit_report(&rep, json);
    for p in &rep.verify_problems {
        crate::errln!("problem: {p}");
    }
    if rep.verified == Some(false) {
        crate::errln!(
            "lifeboat: the copy of {image} to {dest} FAILED its verification: read back from \
             the destination's storage it is not the image ({} problem(s) above). The failed \
             copy was removed; do not trust that storage, copy to another",
            rep.verify_problems.len()
        );
        return Ok(exit::CORRUPT);
    }
    if !json {
        for c in &rep.images {
            match &c.skipped {
                Some(why) => crate::errln!("Kept {}: {why}.", c.copy.display()),
                None => crate::errln!(
                    "Copied {} to {} ({}, UUID {}){}.",
                    c.image.display(),
                    c.copy.display(),
                    crate::jobs::fmt_bytes(c.bytes),
                    c.uuid,
                    match (c.verified, rep.verify_level) {
                        (Some(true), Some("bytes")) =>
                            ", read back from the destination and compared byte for byte (encrypted: \
                             give --passphrase-file to also check every tag and hash)",
                        (Some(true), _) => ", read back from the destination and verified",
                        _ => "",
                    }
                ),
            }
        }
    }
    Ok(exit::OK)
}

/// The free-space check of a copy: every volume of the images still to copy, against the
/// free space of the destination's directory (where they all go), less the `.partial`
/// volumes of an earlier copy there, which this one replaces. A directory whose free space
/// cannot be read gets a note and no check.
fn room_for_copy(planned: &[copy::Planned], dest_path: &Path, dest: &str) -> Result<()> {
    let todo = planned.iter().filter(|p| !p.present);
    let (mut need, mut replaced) = (0u64, 0u64);
    for p in todo {
        need += p.image.volume_lens().iter().map(|v| v.1).sum::<u64>();
        replaced += copy::written_files(p)
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".partial"))
            .filter_map(|f| std::fs::symlink_metadata(f).ok().filter(|m| m.is_file()))
            .map(|m| super::space::held_bytes(&m))
            .sum::<u64>();
    }
    let dir = dest_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match super::space::free_at(dir) {
        Ok(free) => super::space::check_room(
            &format!("the filesystem holding {dest}"),
            free.saturating_add(replaced),
            need,
            "the copy",
        ),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => {
            crate::errln!("lifeboat: note: {e}; the free space was not checked");
            Ok(())
        }
    }
}
