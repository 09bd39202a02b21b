//! The command side of the S3 image store: `image create|restore|verify|info` when the image
//! is `s3://…` (the safety rules of their file counterparts: the source kept read-only and
//! never written, the target by `crate::storage`'s rules and confirmed), and `lifeboat store
//! list|delete|gc`. Keys never reach a report or a message: they live in `store::client`.
use super::image::{self as s3img, CreateOptions};
use super::store::{self, Location};
use crate::error::{Error, ErrorKind, Result};
use crate::image::crypt::Keys;
use crate::io::{Access, Device};
use crate::jobs::Cancel;
use crate::storage::{Check, ReadOnlyGuard};
use std::path::PathBuf;

/// `lifeboat store …`: images kept in an S3-compatible store.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreCmd {
    /// List the images (and unfinished uploads) of a store: s3://BUCKET[/DIR].
    List {
        store: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one image (its manifest) from a store; `store gc` then frees the chunks no other
    /// image uses.
    Delete {
        image: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the chunk objects no image of the store refers to (refuses, deleting nothing,
    /// while an upload into the store is in progress).
    Gc {
        store: String,
        #[arg(long)]
        json: bool,
    },
}

/// Parallel requests of a job (`LIFEBOAT_S3_WORKERS`, else [`s3img::DEFAULT_WORKERS`]).
fn workers() -> usize {
    std::env::var("LIFEBOAT_S3_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(s3img::DEFAULT_WORKERS)
}

pub fn run_store(cmd: StoreCmd) -> Result<i32> {
    let (v, json) = match cmd {
        StoreCmd::List { store, json } => (s3img::list(&store_loc(&store)?)?, json),
        StoreCmd::Delete { image, json } => (s3img::delete(&image_loc(&image)?)?, json),
        StoreCmd::Gc { store, json } => {
            let r = s3img::gc(&store_loc(&store)?)?;
            if !json {
                crate::errln!(
                    "{}: {} images; {} chunk objects, {} in use, {} deleted ({}).",
                    r.store,
                    r.images,
                    r.chunk_objects,
                    r.referenced,
                    r.deleted,
                    crate::jobs::fmt_bytes(r.deleted_bytes)
                );
            }
            (serde_json::to_value(&r).unwrap_or_default(), json)
        }
    };
    crate::cli::emit_report(&v, json);
    if !json {
        if let Some(imgs) = v.get("images").and_then(|i| i.as_array()) {
            for i in imgs {
                // Image names are S3 keys: anyone with write access to the bucket picks them.
                crate::outln!(
                    "{}",
                    crate::out::Shown(i["name"].as_str().unwrap_or_default())
                );
            }
        }
    }
    Ok(0)
}

fn store_loc(s: &str) -> Result<Location> {
    if !store::is_s3(s) {
        return Err(Error::invalid(format!(
            "{s:?} is not a store location: write s3://BUCKET[/DIR]"
        )));
    }
    Location::store(s)
}

fn image_loc(s: &str) -> Result<Location> {
    if !store::is_s3(s) {
        return Err(Error::invalid(format!(
            "{s:?} is not a store image: write s3://BUCKET[/DIR]/NAME"
        )));
    }
    Location::image(s)
}

/// `image create SOURCE s3://…` (called by `image create` once the source is resolved and
/// its passphrase source set). Flags of file images that have no meaning in a store are
/// usage errors.
#[allow(clippy::too_many_arguments)]
pub fn run_create(
    src_path: PathBuf,
    id: crate::image::SourceIdentity,
    image: &str,
    unsupported: (bool, bool, bool),
    compress: crate::image::format::Compression,
    flags: (bool, bool, bool, bool),
    json: bool,
    cancel: &Cancel,
) -> Result<i32> {
    let (force, all_sectors, encrypt, identity_clear) = flags;
    let loc = Location::image(image)?;
    let (parent, split, map) = unsupported;
    if parent {
        return Err(Error::invalid(
            "--parent has no use with an S3 store: every chunk is stored once per store, so a \
             full image of a machine already stores only the chunks that changed",
        ));
    }
    if split || map {
        return Err(Error::invalid(
            "--split and --map are for image files; an S3 store image takes neither",
        ));
    }
    let level = match compress {
        crate::image::format::Compression::Zstd(l) => l,
        crate::image::format::Compression::Lz4 => {
            return Err(Error::invalid(
                "an S3 store image is compressed with zstd (--compress zstd:LEVEL)",
            ))
        }
    };
    let mut check = Check::new();
    check.keeps("the source", &src_path)?;
    check.run()?;
    let dev = Device::open(&src_path, Access::Read)?;
    let _ro = ReadOnlyGuard::new(std::slice::from_ref(&src_path))?;
    let opts = CreateOptions {
        encrypt,
        identity_clear,
        all_sectors,
        force,
        level,
        workers: workers(),
        keys: Keys::global(),
    };
    let dev: std::sync::Arc<dyn crate::io::BlockSource> = std::sync::Arc::new(dev);
    let rep = s3img::create(dev, &id, &loc, &opts, cancel)?;
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!(
            "Image {} written: {} of disk, {} chunks stored ({} new objects, {}; {} already in \
             the store), {} zero, {} unallocated, UUID {}.",
            rep.image,
            crate::jobs::fmt_bytes(rep.disk_size_bytes),
            rep.stored_chunks,
            rep.uploaded_chunks,
            crate::jobs::fmt_bytes(rep.uploaded_bytes),
            rep.existing_chunks,
            rep.zero_chunks,
            rep.unallocated_chunks,
            rep.uuid
        );
    }
    Ok(rep.exit_code)
}

/// `image verify s3://…`: every chunk fetched, opened and checked against its name, and the
/// media hash.
pub fn run_verify(image: &str, json: bool) -> Result<i32> {
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "the verify stops; nothing was changed");
    let img = s3img::open(&Location::image(image)?, &Keys::global())?;
    let rep = img.read_all(None, false, workers(), &cancel)?;
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!(
            "{} is intact: {} chunks ({} stored, {} zero, {} unallocated), media hash {}.",
            rep.image,
            rep.chunks,
            rep.stored_chunks,
            rep.zero_chunks,
            rep.unallocated_chunks,
            rep.media_hash
        );
    }
    Ok(0)
}

/// `image info s3://…`.
pub fn run_info(image: &str, json: bool) -> Result<i32> {
    let img = s3img::open(&Location::image(image)?, &Keys::global())?;
    let v = img.info();
    crate::cli::emit_report(&v, json);
    if !json {
        crate::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(0)
}

/// `image restore s3://… TARGET`: the target rules of a restore (not in use, not the boot
/// medium, big enough, not read-only; the image's own source disk only with `--yes`), then
/// every chunk written and checked, and the GPT's backup moved to the target's end.
pub fn run_restore(
    image: &str,
    target: &str,
    yes: bool,
    zero_free: bool,
    json: bool,
) -> Result<i32> {
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "the target is synced but left INCOMPLETE");
    let img = s3img::open(&Location::image(image)?, &Keys::global())?;
    let mut check = Check::new();
    let t = crate::storage::open_target(target, &mut check, img.disk_size())?;
    crate::image::cmd_restore::target_rules(&t, img.serial(), yes)?;
    crate::image::cmd_restore::confirm_overwrite(&t, yes)?;
    let serial = t
        .selected
        .disk()
        .and_then(|d| d.serial.clone())
        .unwrap_or_default();
    // The result goes into the store too (`results/NAME/TIME.json`, NAME the serial or, for
    // an encrypted image, a keyed name: `s3image::result_name`), failed or not.
    let record = |v: &serde_json::Value| match img.put_result(&serial, v) {
        Ok(k) => crate::errln!("lifeboat: result stored as s3://{}/{k}", img.bucket()),
        Err(e) => crate::errln!("lifeboat: warning: the result could not be stored: {e}"),
    };
    let mut rep = img
        .read_all(Some(&t.device), zero_free, workers(), &cancel)
        .inspect_err(|e| {
            let _ = t.device.sync();
            let mut v = crate::cli::error_report(e);
            v["image"] = image.into();
            v["target"] = t.selected.path().display().to_string().into();
            v["target_state"] = "incomplete".into();
            record(&v);
        })
        .map_err(|e| {
            let _ = t.device.sync();
            let state = "the target is INCOMPLETE: restore it again";
            match e.kind {
                ErrorKind::Cancelled => Error::new(
                    ErrorKind::Cancelled,
                    format!("cancelled by the user: {state}"),
                ),
                _ => Error {
                    msg: format!("{}; {state}", e.msg),
                    ..e
                },
            }
            .with_report("target_state", "incomplete")
        })?;
    t.device.sync()?;
    if let Err(e) = crate::clone::gpt::fix_after_copy(&t.device) {
        crate::errln!("lifeboat: note: the partition table was not adjusted to the target: {e}");
    }
    t.device.sync()?;
    let _ = t.device.reread_partitions();
    rep.target = Some(t.selected.path().display().to_string());
    record(&serde_json::to_value(&rep).unwrap_or_default());
    crate::cli::emit_report(&rep, json);
    if !json {
        crate::errln!(
            "Restored {} onto {} (every chunk and the media hash verified).",
            crate::jobs::fmt_bytes(rep.disk_size_bytes),
            t.selected.path().display()
        );
    }
    Ok(0)
}
