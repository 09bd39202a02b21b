//! The `lifeboat image …` subcommands: argument handling, the identity checks of every image,
//! volume and location a job touches (through `crate::storage`), the confirmation, and the
//! JSON and text reports. The work itself is in `create`, `ops` and `reader`.
use super::*;
use crate::devices::Selected;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::io::{Access, Device};
use crate::jobs::{Cancel, Progress, StderrSink};
use crate::storage::{Check, ReadOnlyGuard};
use std::path::{Path, PathBuf};

fn location_items(check: &mut Check, role: &str, loc: &StoreLocation, written: bool) -> Result<()> {
    match (&loc.partition, loc.plain_path()) {
        (Some(p), _) => {
            let part = p.path.clone();
            let role = format!("{role}'s partition");
            if written {
                check.writes(&role, &part)?;
            } else {
                check.keeps(&role, &part)?;
            }
        }
        (None, Some(image)) if written => {
            check.writes(role, image)?;
            check.writes(role, &create::partial_name(image))?;
            check.writes(role, &journal::journal_name(image))?;
            check.writes(role, &journal::journal_tmp_name(image))?;
        }
        (None, Some(image)) => {
            check.keeps(role, image)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Every volume of every image of the chain at `path` as kept items ("the image", then "the
/// parent image" for each parent).
pub(crate) fn chain_items(check: &mut Check, path: &Path, top_role: &str) -> Result<Chain> {
    let chain = Chain::open(path)?;
    for (k, img) in chain.images.iter().enumerate() {
        let role = if k == 0 { top_role } else { "the parent image" };
        for v in img.volume_paths() {
            check.keeps(role, &v)?;
        }
    }
    Ok(chain)
}

// One argument per `image create` flag, as clap parsed them.
#[allow(clippy::too_many_arguments)]
fn run_create(
    source: String,
    image: String,
    parent: Option<String>,
    split: Option<String>,
    force: bool,
    all_sectors: bool,
    compress: Option<String>,
    map: Option<PathBuf>,
    crypt: (bool, bool, Option<String>),
    (no_verify, ignore_free_space): (bool, bool),
    json: bool,
) -> Result<i32> {
    let (encrypt, identity_clear, passphrase_file) = crypt;
    // Ctrl-C / SIGTERM: stop, keep the unfinished `.partial` (marked incomplete), exit 130.
    // Set up before anything starts a thread (the device scan does).
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(
        &cancel,
        "the unfinished image stays as a .partial file, marked incomplete",
    );
    // After the signal set-up: the sampler thread inherits it.
    let cpu = crate::jobs::threadcpu::Sampler::from_env("image create");
    let split = split.as_deref().map(parse_size).transpose()?;
    // A plain image path is checked and written (volumes opened all along, renamed at the end)
    // under one name: its directory resolved now, whatever a symlink on the way does later.
    let image = match store::split_store(&image) {
        None => crate::storage::pin_dir(Path::new(&image))
            .to_str()
            .map_or(image.clone(), String::from),
        Some(_) => image,
    };
    let compress = match compress.as_deref() {
        Some(c) => format::Compression::parse(c)?,
        None => create::DEFAULT_COMPRESSION,
    };
    let sel = crate::devices::resolve(&source)?;
    crate::jobs::threadcpu::mark("source resolved");
    if let Some(note) = failing_source_note(&sel) {
        crate::errln!("lifeboat: note: {note}");
    }
    if let Some(note) = match &sel {
        Selected::Disk(d) => d.mmc_boot_note(),
        _ => None,
    } {
        crate::errln!("lifeboat: note: {note}");
    }
    let (src_path, id) = match &sel {
        Selected::Disk(d) => (
            d.path.clone(),
            SourceIdentity {
                model: d.model.clone().unwrap_or_default(),
                serial: d.serial.clone().unwrap_or_default(),
                name: d.path.display().to_string(),
            },
        ),
        Selected::Partition { disk: d, part } => (
            part.path.clone(),
            SourceIdentity {
                model: d.model.clone().unwrap_or_default(),
                serial: d.serial.clone().unwrap_or_default(),
                name: part.path.display().to_string(),
            },
        ),
        Selected::File(p) => (
            p.clone(),
            SourceIdentity {
                name: p.display().to_string(),
                ..Default::default()
            },
        ),
    };
    // No file this job reads (credentials, a CA file, a passphrase file, the parent) is read
    // by mounting a partition of the source.
    store::never_mount(&src_path);
    // The passphrase (an encrypted image, or the parent's) is read before anything else.
    super::cmd_keys::use_passphrase(passphrase_file.as_deref(), Some(&src_path))?;
    if crate::s3::store::is_s3(&image) {
        return crate::s3::cmd::run_create(
            src_path,
            id,
            &image,
            (parent.is_some(), split.is_some(), map.is_some()),
            compress,
            (force, all_sectors, encrypt, identity_clear),
            json,
            &cancel,
        );
    }
    // The identity rule, before anything is mounted or opened for writing: the image (or the
    // partition it goes on) is written; the source and every volume of the parent chain are kept.
    let loc = StoreLocation::resolve(&image)?;
    let parent_loc = parent.as_deref().map(StoreLocation::resolve).transpose()?;
    let mut check = Check::new();
    check.keeps("the source", &src_path)?;
    super::cmd_keys::passphrase_kept_beside(&mut check, &loc)?;
    // The map is written (and its temporary file): they may share storage with neither the
    // source nor the image. Its directory must exist and be writable (exit 2 otherwise).
    let map = map.as_deref().map(crate::storage::pin_dir);
    if let Some(m) = &map {
        crate::clone::resume::check_location(m)?;
        check.writes("the map file", m)?;
        check.writes("the map file", &m.with_extension("lifeboat-tmp"))?;
    }
    if let Some(p) = loc.plain_path() {
        crate::storage::target::check_output_name(p, force)?;
        crate::storage::target::check_output(&create::partial_name(p), true)?;
        crate::storage::target::check_output(&journal::journal_name(p), true)?;
        crate::storage::target::check_output(&journal::journal_tmp_name(p), true)?;
        // Replacing an image replaces or removes its volumes too.
        if force {
            for v in volumes::old_volumes(p) {
                check.writes("the image being replaced", &v)?;
            }
        }
    }
    location_items(&mut check, "the image", &loc, true)?;
    if let Some(pl) = &parent_loc {
        match pl.plain_path() {
            Some(p) => {
                chain_items(&mut check, p, "the parent image")?;
            }
            None => location_items(&mut check, "the parent image", pl, false)?,
        }
    }
    check.run()?;
    crate::jobs::threadcpu::mark("identity checks");
    // The source is never mounted, not even read-only to read a parent image stored on it.
    if let Some(pp) = parent_loc.as_ref().and_then(|l| l.partition.as_ref()) {
        let part = crate::storage::resolve(&pp.path)?;
        let src = crate::storage::resolve(&src_path)?;
        if let Some((a, _)) = part.overlap(&src) {
            return Err(Error::refused(format!(
                "the parent image {} is on {}, which {}: that is part of the source {}, and a \
                 source is never mounted. Nothing was mounted or written; copy the parent image \
                 to other storage and give that path",
                parent.as_deref().unwrap_or_default(),
                pp.path.display(),
                a.how
                    .strip_prefix(&format!("is {}, ", pp.path.display()))
                    .map_or(a.how.clone(), |r| format!("is {r}")),
                src_path.display()
            ))
            .at_path(&pp.path));
        }
    }
    // A new encrypted image's passphrase is asked (twice) before anything is mounted or written.
    if encrypt && parent.is_none() && !create::partial_name(Path::new(&image)).exists() {
        crypt::Keys::global().new_secret(Path::new(&image))?;
    }
    let store = loc.mount(Mode::ReadWrite)?;
    crate::jobs::threadcpu::mark("store mounted");
    // The parent: a path; or PARTITION:/path, inside the image's mount when on the same
    // partition, else mounted read-only on its own.
    let mut _parent_store = None;
    let (parent_path, hint) = match (&parent, &parent_loc) {
        (Some(p), Some(pl)) => {
            let path = match pl.plain_path() {
                Some(pp) => pp.to_path_buf(),
                None => match loc.same_partition_path(&store, pl)? {
                    Some(pp) => pp,
                    None => {
                        let ps = pl.mount(Mode::ReadOnly)?;
                        let pp = ps.path.clone();
                        _parent_store = Some(ps);
                        pp
                    }
                },
            };
            (Some(path), p.clone())
        }
        _ => (None, String::new()),
    };
    if store.is_mounted_location() {
        // Inside the mounted store: the file itself against the source and the parent chain.
        let mut inner = Check::new();
        inner.keeps("the source", &src_path)?;
        super::cmd_keys::passphrase_kept_inside(&mut inner, &loc, &store)?;
        crate::storage::target::check_output_name(&store.path, force)?;
        inner.writes("the image", &store.path)?;
        inner.writes("the image", &create::partial_name(&store.path))?;
        inner.writes("the image", &journal::journal_name(&store.path))?;
        inner.writes("the image", &journal::journal_tmp_name(&store.path))?;
        for v in volumes::old_volumes(&store.path) {
            inner.writes("the image being replaced", &v)?;
        }
        if let Some(pp) = &parent_path {
            chain_items(&mut inner, pp, "the parent image")?;
        }
        inner.run()?;
    }
    let dev = Device::open(&src_path, Access::Read)?;
    let _ro = ReadOnlyGuard::new(std::slice::from_ref(&src_path))?;
    // The used-block plan, read once: for the free-space check (a full image; an incremental
    // stores what changed, unknown before it runs), then by the job.
    crate::jobs::threadcpu::mark("source opened");
    let mut plan = crate::fs::UsageMap::analyze(&dev);
    if all_sectors {
        plan.force_all_sectors("--all-sectors was given");
    }
    crate::jobs::threadcpu::mark("used blocks read");
    if parent.is_none() && !ignore_free_space {
        space::check_image_room(&store.path, &image, &plan)?;
    }
    crate::jobs::threadcpu::mark("free space checked");
    let checkpoint_every = std::env::var("LIFEBOAT_CHECKPOINT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(create::CreateOptions::default().checkpoint_every, |v| {
            std::time::Duration::from_secs_f64(v.min(86_400.0))
        });
    let opts = CreateOptions {
        parent: parent_path,
        parent_hint: hint,
        split,
        force,
        all_sectors,
        compress,
        checkpoint_every,
        map,
        source_id: {
            let id = crate::clone::resume::storage_id(&sel, crate::io::BlockSource::size(&dev));
            format!("{} [{id:?}]", id.describe())
        },
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        encrypt,
        identity_clear,
        plan: Some(plan),
        verify_after_write: !no_verify,
        ..Default::default()
    };
    let sink = StderrSink::from_env();
    let dev: std::sync::Arc<dyn crate::io::BlockSource> = std::sync::Arc::new(dev);
    let mut rep = create(dev, &id, &store.path, &opts, &sink, &cancel).map_err(|e| {
        let e = store.network_lost(
            e,
            &image,
            &format!(
                "the unfinished part is kept there as {} with its journal (`image info` says \
                INCOMPLETE): reconnect and run the same command again to resume",
                create::partial_name(Path::new(&image)).display()
            ),
        );
        if e.kind == ErrorKind::NetworkLost {
            return e;
        }
        if is_target_full(&e) {
            return Error::new(
                ErrorKind::Io,
                format!(
                    "target full: the filesystem holding {image} has no space left for the image \
                     ({e}); the unfinished part is kept as {} with its journal: free space there \
                     and run the same command again to resume it, or delete both and write the \
                     image to a partition with more free space",
                    create::partial_name(Path::new(&image)).display()
                ),
            )
            .with_report("target_full", true);
        }
        if e.kind != ErrorKind::Cancelled {
            return e;
        }
        Error::new(
            ErrorKind::Cancelled,
            format!(
                "cancelled by the user: no image was completed; the unfinished part is kept as {} \
                 (no footer: `image info` reports it incomplete) with its journal; run the same \
                 command again to resume it, or delete both to start over",
                create::partial_name(Path::new(&image)).display()
            ),
        )
    })?;
    if !no_verify {
        verify_after_write(
            &mut rep,
            &store.path,
            opts.parent.as_deref(),
            &image,
            &sink,
            &cancel,
        )
        .map_err(|e| {
            store.network_lost(
                e,
                &image,
                &format!(
                    "the image is complete but its check was not finished: reconnect and run \
                    `lifeboat image verify {image}`"
                ),
            )
        })?;
    }
    finish_progress(&sink, "image-create", rep.disk_size_bytes, rep.bad_bytes);
    crate::jobs::threadcpu::mark("verified");
    if let Some(c) = cpu {
        c.stop();
    }
    if store.is_mounted_location() {
        rep.image = PathBuf::from(&image);
    }
    crate::cli::emit_report(&rep, json);
    if rep.verified == Some(false) {
        for p in &rep.verify_problems {
            crate::errln!("problem: {p}");
        }
        crate::errln!(
            "lifeboat: the image {image} was written but FAILED its verification: read back from its storage, it is not what was written ({} problem(s) above). Do not rely on it: the storage (or its connection) is faulty; write the image to other storage",
            rep.verify_problems.len()
        );
        return Ok(exit::CORRUPT);
    }
    if !json {
        crate::errln!(
            "Image {} written: {} of disk in {} ({} stored, {} zero, {} unchanged chunks), UUID {}.",
            image,
            crate::jobs::fmt_bytes(rep.disk_size_bytes),
            crate::jobs::fmt_bytes(rep.image_bytes),
            rep.stored_chunks,
            rep.zero_chunks,
            rep.unchanged_chunks,
            rep.uuid
        );
        print_partitions(&rep.partitions, "  ");
        if let Some(t) = rep.verify_elapsed_secs {
            crate::errln!(
                "Verified: read back from its storage (not from memory), every CRC and hash checked in {t:.1} s."
            );
        }
        if rep.bad_bytes > 0 {
            crate::errln!(
                "{} could not be read (saved as zeros; see `lifeboat image info`).",
                crate::jobs::fmt_bytes(rep.bad_bytes)
            );
        }
    }
    Ok(rep.exit_code)
}

/// Whether `e` is the image's filesystem running out of room (ENOSPC, or a quota: EDQUOT).
fn is_target_full(e: &Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The verify after writing of a finished image at `path` (`image` as the user named it): the
/// result goes into the report (`verified`, `verify_problems`, `ok` false when it failed). A
/// verify that cannot run to its end because what was read back is unusable (a damaged footer
/// or index, a read error) is a failed verify too, reported as the error it is.
fn verify_after_write(
    rep: &mut CreateReport,
    path: &Path,
    parent: Option<&Path>,
    image: &str,
    sink: &StderrSink,
    cancel: &Cancel,
) -> Result<()> {
    // An encrypted image (or the parent's chain) opens with the job's keys, already unlocked.
    let keys = crypt::Keys::global();
    let written = rep.written.as_ref();
    let vr = verify::verify_written(path, parent, &keys, written, "image-create", sink, cancel).map_err(|e| {
        let msg = match e.kind {
            ErrorKind::Cancelled => format!(
                "cancelled during the verify after writing: the image {image} is complete but was not checked; run `lifeboat image verify {image}`"
            ),
            _ => format!(
                "the image {image} was written but FAILED its verification: read back from its storage, {}. Do not rely on it: the storage (or its connection) is faulty; write the image to other storage",
                e.msg
            ),
        };
        let kind = match e.kind {
            ErrorKind::Cancelled | ErrorKind::Io => e.kind,
            _ => ErrorKind::Corrupt,
        };
        let e = Error { kind, msg, ..e };
        if kind == ErrorKind::Cancelled {
            e
        } else {
            e.with_report("verified", false)
        }
    })?;
    rep.verified = Some(vr.ok);
    if !vr.ok {
        // `ok` follows the exit code: a failed verify is exit 5.
        rep.exit_code = exit::CORRUPT;
        rep.ok = false;
    }
    rep.verify_problems = vr.problems;
    rep.verify_elapsed_secs = Some(vr.elapsed_secs);
    Ok(())
}

/// One line per partition: number, filesystem, used bytes of size, mode and why.
fn print_partitions(parts: &[crate::fs::PartitionUsage], indent: &str) {
    for p in parts {
        crate::errln!("{indent}{}", p.describe());
    }
}

fn run_verify(
    image: String,
    state: Option<PathBuf>,
    passphrase_file: Option<String>,
    json: bool,
) -> Result<i32> {
    super::cmd_keys::use_passphrase(passphrase_file.as_deref(), None)?;
    if crate::s3::store::is_s3(&image) && state.is_none() {
        return crate::s3::cmd::run_verify(&image, json);
    }
    // Ctrl-C / SIGTERM: stop checking, exit 130 (verify changes nothing).
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "nothing is changed by a verify");
    let mut state_store = state.as_deref().map(store::SideFile::resolve).transpose()?;
    let store = Store::open(&image, Mode::ReadOnly)?;
    ops::require_complete(&store.path)?;
    let state = match state_store.as_mut() {
        Some(st) => {
            // The state file is written: never over the image or a volume of its chain.
            let mut check = Check::new();
            chain_items(&mut check, &store.path, "the image")?;
            super::cmd_keys::passphrase_kept(&mut check)?;
            if let Some(p) = &store.partition {
                check.keeps("the image's partition", &p.path)?;
            }
            st.check_items(&mut check, "the verify state file")?;
            check.run()?;
            Some(st.open()?)
        }
        None => None,
    };
    let sink = StderrSink::from_env();
    let rep =
        ops::verify_resumable(&store.path, &sink, &cancel, state.as_deref()).map_err(|e| {
            let e = store.network_lost(
                e,
                &image,
                "a verify changes nothing: reconnect and run the same command again",
            );
            if e.kind != ErrorKind::Cancelled {
                return e;
            }
            let how = match &state {
                Some(st) => format!(
                    "; the state {} keeps what is checked: the same command resumes the verify",
                    st.display()
                ),
                None => "; give --state FILE to be able to resume a long verify".to_string(),
            };
            Error {
                msg: format!("{}{how}", e.msg),
                ..e
            }
        })?;
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!();
        for n in &rep.notes {
            crate::errln!("note: {n}");
        }
        if rep.resumed_chunks > 0 {
            crate::errln!(
                "resumed: the payloads of {} chunks were checked by the earlier run (its \
                 problems are included); the index, the media hash and the rest were checked now",
                rep.resumed_chunks
            );
        }
        for p in &rep.problems {
            crate::errln!("problem: {p}");
        }
        if rep.ok {
            crate::errln!(
                "{image}: OK ({} chunks, {} images in the chain, media hash {})",
                rep.chunks_checked,
                rep.chain.len(),
                rep.media_hash
            );
        } else {
            crate::errln!("{image}: DAMAGED ({} problems)", rep.problem_count);
        }
    }
    Ok(if rep.ok { exit::OK } else { exit::CORRUPT })
}

fn run_info(image: String, passphrase_file: Option<String>, json: bool) -> Result<i32> {
    super::cmd_keys::use_passphrase(passphrase_file.as_deref(), None)?;
    if crate::s3::store::is_s3(&image) {
        return crate::s3::cmd::run_info(&image, json);
    }
    let store = Store::open(&image, Mode::ReadOnly)?;
    let path = if !store.path.exists() && create::partial_name(&store.path).exists() {
        create::partial_name(&store.path)
    } else {
        store.path.clone()
    };
    let rep = match info(&path) {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::Incomplete => {
            let h = ops::partial_header(&path);
            let v = serde_json::json!({
                "image": image,
                "complete": false,
                "uuid": h.as_ref().map(|h| format::uuid_str(&h.uuid)),
                "message": e.to_string(),
            });
            crate::cli::emit_report(&v, json);
            if !json {
                crate::errln!("{image}: INCOMPLETE image: {e}");
            }
            return Ok(exit::CORRUPT);
        }
        Err(e) => return Err(e),
    };
    crate::cli::emit_report(&rep, json);
    if !json {
        // The source's name, model and serial and the parents' paths are read from the image
        // (a crafted image chooses them): each on its line, its controls escaped, so none can
        // add a line ("Unreadable   0 B") of its own.
        use crate::out::Shown;
        let s = &rep.source;
        crate::outln!("Image        {}", Shown(image));
        crate::outln!("UUID         {}", rep.uuid);
        crate::outln!("Created      {}", rep.created);
        crate::outln!(
            "Source \
            {} {} serial={} ({})",
            Shown(&s.name),
            Shown(&s.model),
            Shown(&s.serial),
            crate::jobs::fmt_bytes(s.size_bytes)
        );
        crate::outln!(
            "Chunks \
            {} of {}: {} stored, {} zero, {} unchanged",
            rep.chunks,
            crate::jobs::fmt_bytes(rep.chunk_size as u64),
            rep.stored_chunks,
            rep.zero_chunks,
            rep.unchanged_chunks
        );
        if rep.unallocated_chunks > 0 || rep.used_blocks {
            crate::outln!(
                "Used blocks  {} chunks held no used block (not stored)",
                rep.unallocated_chunks
            );
        }
        for p in rep.partitions.iter().flatten() {
            crate::outln!(
                "Partition {:<2} {}, {} used of {}, {}",
                p.number,
                Shown(p.filesystem.as_deref().unwrap_or("unknown")),
                crate::jobs::fmt_bytes(p.used_bytes),
                crate::jobs::fmt_bytes(p.size_bytes),
                p.mode_text()
            );
        }
        crate::outln!(
            "Size \
            {} in {} volume(s), ratio {:.2}",
            crate::jobs::fmt_bytes(rep.image_bytes),
            rep.volumes.len(),
            rep.compression_ratio
        );
        crate::outln!("Media hash   {}", rep.media_hash);
        if let Some(e) = &rep.encryption {
            let slots: Vec<String> = e
                .key_slots
                .iter()
                .map(|k| format!("slot {} {}", k.slot, k.kind.replace('_', " ")))
                .collect();
            crate::outln!("Encrypted    {}, {}", e.cipher, slots.join(", "));
        }
        crate::outln!(
            "Unreadable   {} in {} ranges",
            crate::jobs::fmt_bytes(rep.bad_bytes),
            rep.bad_range_count
        );
        for (a, l) in rep.bad_ranges.iter().take(20) {
            crate::outln!("             bytes {a}..{}", a + l);
        }
        if let Some(p) = &rep.parent {
            crate::outln!("Parent       {} (UUID {})", Shown(&p.path), p.uuid);
        }
        for (k, l) in rep.chain.iter().enumerate() {
            crate::outln!("Chain {k:<6} {} {}", Shown(l.path.display()), l.uuid);
        }
        if let Some(e) = &rep.chain_error {
            crate::outln!("Chain        BROKEN: {e}");
        }
    }
    Ok(if rep.chain_error.is_some() {
        exit::CORRUPT
    } else {
        exit::OK
    })
}

/// For a source whose own health log says it is FAILING: the advice to clone it first (clone
/// reads all good data first and can resume; imaging reads in disk order). None otherwise.
fn failing_source_note(sel: &Selected) -> Option<String> {
    let mut one = [sel.disk()?.clone()];
    crate::health::fill(&mut one, crate::health::LIST_TIMEOUT);
    let [d] = one;
    crate::health::clone_first_advice(&d.name, d.health.as_ref()?)
}

/// The last progress line of a finished job: everything done, `bad_bytes` of it unreadable.
pub(super) fn finish_progress(sink: &StderrSink, job: &str, total: u64, bad_bytes: u64) {
    let mut p = Progress::new(job, "done", total);
    p.done_bytes = total;
    p.bad_bytes = bad_bytes;
    sink.finish(&p);
}

fn run_export(
    image: String,
    raw: String,
    format: Option<String>,
    force: bool,
    passphrase_file: Option<String>,
    json: bool,
) -> Result<i32> {
    super::cmd_keys::use_passphrase(passphrase_file.as_deref(), None)?;
    let format = match format.as_deref() {
        Some(f) => vmdisk::Format::parse(f)?,
        None => vmdisk::Format::Raw,
    };
    // Ctrl-C / SIGTERM: stop, remove the temporary file, exit 130.
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "the unfinished file is removed");
    let store = Store::open(&image, Mode::ReadOnly)?;
    ops::require_complete(&store.path)?;
    // The output replaces regular files only, and never the image or one of its parents.
    let rawp = Path::new(&raw);
    crate::storage::target::check_output_name(rawp, force)?;
    crate::storage::target::check_output(&create::partial_name(rawp), true)?;
    let mut check = Check::new();
    chain_items(&mut check, &store.path, "the image")?;
    super::cmd_keys::passphrase_kept(&mut check)?;
    check.writes("the exported file", rawp)?;
    check.writes("the exported file", &create::partial_name(rawp))?;
    check.run()?;
    let sink = StderrSink::from_env();
    let rep = vmdisk::export(&store.path, Path::new(&raw), format, force, &sink, &cancel).map_err(
        |e| {
            if e.kind != ErrorKind::Cancelled {
                return e;
            }
            Error::new(
                ErrorKind::Cancelled,
                format!(
                "cancelled by the user: {raw} was not written (the unfinished file was removed)"
            ),
            )
        },
    )?;
    finish_progress(&sink, "image-export", rep.disk_size_bytes, 0);
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!(
            "Exported {} to {} ({}, sparse, media hash verified).",
            crate::jobs::fmt_bytes(rep.disk_size_bytes),
            raw,
            format.qemu_name()
        );
    }
    Ok(exit::OK)
}

pub fn run(a: ImageCmd) -> Result<i32> {
    match a {
        ImageCmd::Create {
            source,
            image,
            parent,
            split,
            force,
            all_sectors,
            compress,
            map,
            encrypt,
            clear_identity,
            passphrase_file,
            no_verify,
            ignore_free_space,
            json,
        } => run_create(
            source,
            image,
            parent,
            split,
            force,
            all_sectors,
            compress,
            map,
            (encrypt, clear_identity, passphrase_file),
            (no_verify, ignore_free_space),
            json,
        ),
        ImageCmd::Restore {
            image,
            target,
            yes,
            zero_free,
            discard,
            map,
            passphrase_file,
            json,
        } => {
            super::cmd_keys::use_passphrase(passphrase_file.as_deref(), None)?;
            if crate::s3::store::is_s3(&image) {
                if discard || map.is_some() {
                    return Err(Error::invalid(
                        "--discard and --map are not available when restoring from an S3 store",
                    ));
                }
                return crate::s3::cmd::run_restore(&image, &target, yes, zero_free, json);
            }
            super::cmd_restore::run_restore(image, target, yes, zero_free, discard, map, json)
        }
        ImageCmd::Verify {
            image,
            state,
            passphrase_file,
            json,
        } => run_verify(image, state, passphrase_file, json),
        ImageCmd::Info {
            image,
            passphrase_file,
            json,
        } => run_info(image, passphrase_file, json),
        ImageCmd::Serve(a) => {
            // An encrypted image's passphrase: from --passphrase-file, else asked on the
            // terminal before serving.
            super::cmd_keys::use_passphrase(a.passphrase_file.as_deref(), None)?;
            crate::serve::run(a)
        }
        ImageCmd::Mount(a) if a.secret_on_stdin => {
            // The helper of a mount: the passphrase the mounting process holds.
            super::cmd_keys::passphrase_from_stdin()?;
            crate::serve::attach::run_mount(a)
        }
        ImageCmd::Mount(a) => {
            super::cmd_keys::use_passphrase(a.passphrase_file.as_deref(), None)?;
            crate::serve::attach::run_mount(a)
        }
        ImageCmd::Umount(a) => crate::serve::attach::run_umount(a),
        ImageCmd::Copy {
            image,
            dest,
            chain,
            verify: _,
            no_verify,
            force,
            ignore_free_space,
            passphrase_file,
            json,
        } => super::cmd_copy::run_copy(
            image,
            dest,
            chain,
            (no_verify, force, ignore_free_space),
            passphrase_file,
            json,
        ),
        ImageCmd::Ls(a) => {
            super::cmd_keys::use_passphrase(a.passphrase_file.as_deref(), None)?;
            crate::serve::extract::run_ls(a)
        }
        ImageCmd::Extract(a) => {
            super::cmd_keys::use_passphrase(a.passphrase_file.as_deref(), None)?;
            crate::serve::extract::run_extract(a)
        }
        ImageCmd::Export {
            image,
            raw,
            format,
            force,
            passphrase_file,
            json,
        } => run_export(image, raw, format, force, passphrase_file, json),
        ImageCmd::AddKey {
            image,
            output,
            chain,
            passphrase_file,
            json,
        } => super::cmd_keys::run_add_key(image, output, chain, passphrase_file, json),
        ImageCmd::RemoveKey {
            image,
            slot,
            chain,
            passphrase_file,
            json,
        } => super::cmd_keys::run_remove_key(image, slot, chain, passphrase_file, json),
    }
}
