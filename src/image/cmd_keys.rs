//! The passphrase of a job (`--passphrase-file`, or the terminal) and the key-slot commands
//! `image add-key` (a recovery key in the free slot) and `image remove-key --slot N` (never the
//! last), of one image or with `--chain` of every image of its chain (one recovery key for all,
//! everything checked before anything is written): the slots are rewritten in the header of
//! every volume, the first last; and the passphrase file's place in the identity rule.
use super::crypt::{Keys, PassSource};
use super::*;
use crate::error::{exit, Error, ErrorKind, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The passphrase file this job read (set by [`use_passphrase`]): its storage as resolved when
/// it was read (the file by inode, and the filesystem and device bytes it lies in), and for
/// `PARTITION:/path` where that is.
struct PassFile {
    storage: crate::storage::Storage,
    on_partition: Option<StoreLocation>,
}

static PASSPHRASE_FILE: std::sync::OnceLock<PassFile> = std::sync::OnceLock::new();

const ROLE: &str = "the passphrase file";

/// The passphrase file this job read, as an item its identity check keeps: a job that wrote
/// over it (`image create … --passphrase-file pw pw --force`, a copy, an export, a restore, a
/// verify state file or a key slot rewrite there; a raw write to a loop device over it or to
/// the partition holding it) destroyed the only written copy of the key to the image it made
/// or read. For a file on `PARTITION:/path` that is the file and the bytes of the partition
/// (a raw write there is refused; a file written *into* that filesystem is compared with it
/// by [`passphrase_kept_inside`]).
pub(crate) fn passphrase_kept(check: &mut crate::storage::Check) -> Result<()> {
    if let Some(p) = PASSPHRASE_FILE.get() {
        check.add(crate::storage::Item {
            role: ROLE.into(),
            storage: p.storage.clone(),
            written: false,
        });
    }
    Ok(())
}

/// [`passphrase_kept`] for the check made before `loc` is mounted read-write to write files
/// into it (the image of a create, the destination of a copy): `loc`'s partition counts as
/// written there as a whole, which a passphrase file in its filesystem would always overlap.
/// Such a file is kept there as the file alone (its inode: a map file that is a hard link to
/// it is still refused), and compared with the job's own files by the check made inside the
/// mount ([`passphrase_kept_inside`]); on other storage it is kept as usual.
pub(crate) fn passphrase_kept_beside(
    check: &mut crate::storage::Check,
    loc: &StoreLocation,
) -> Result<()> {
    if let Some(p) = PASSPHRASE_FILE.get() {
        if same_partition(p, loc) {
            let mut storage = p.storage.clone();
            // The file's own extent; those of the filesystem it lies in are reached through
            // that filesystem (marked `inside` it).
            storage.extents.retain(|e| e.inside.is_empty());
            check.add(crate::storage::Item {
                role: ROLE.into(),
                storage,
                written: false,
            });
            return Ok(());
        }
    }
    passphrase_kept(check)
}

/// The passphrase file as an item kept by the check made inside `store` (`loc` mounted): a
/// file on that same partition is found again in this mount and resolved now (a vfat or exfat
/// file may have another inode number in every mount), so an image, volume, journal or copy
/// written there that is the file, or a hard link or symlink to it, is refused.
pub(crate) fn passphrase_kept_inside(
    check: &mut crate::storage::Check,
    loc: &StoreLocation,
    store: &Store,
) -> Result<()> {
    let Some(p) = PASSPHRASE_FILE.get() else {
        return Ok(());
    };
    match &p.on_partition {
        Some(pl) if same_partition(p, loc) => {
            if let Some(here) = loc.same_partition_path(store, pl)? {
                if std::fs::symlink_metadata(&here).is_ok() {
                    let mut storage = crate::storage::resolve(&here)?;
                    storage.name = p.storage.name.clone();
                    check.add(crate::storage::Item {
                        role: ROLE.into(),
                        storage,
                        written: false,
                    });
                }
            }
            Ok(())
        }
        _ => passphrase_kept(check),
    }
}

/// Whether the passphrase file is on `loc`'s partition (`PARTITION:/path` both).
fn same_partition(p: &PassFile, loc: &StoreLocation) -> bool {
    match (&p.on_partition, &loc.partition) {
        (Some(pl), Some(part)) => pl.partition.as_ref().is_some_and(|a| a.dev == part.dev),
        _ => false,
    }
}

/// Makes the passphrase of this job available to every image it opens: read now from
/// `file` (a path, or `PARTITION:/path` mounted read-only just to read it — never a partition
/// of `source`), else asked on the terminal when an encrypted image is met. The file is
/// remembered for the job's identity checks ([`passphrase_kept`]).
pub(crate) fn use_passphrase(file: Option<&str>, source: Option<&Path>) -> Result<()> {
    let Some(file) = file else {
        Keys::set_global(Keys::new(PassSource::Terminal));
        return Ok(());
    };
    let loc = StoreLocation::resolve(file)?;
    if let (Some(part), Some(src)) = (&loc.partition, source) {
        let p = crate::storage::resolve(&part.path)?;
        if p.overlap(&crate::storage::resolve(src)?).is_some() {
            return Err(Error::refused(format!(
                "the passphrase file {file} is on {}, which is part of the source {}: a source \
                 is never mounted. Nothing was mounted or written; put the file elsewhere",
                part.path.display(),
                src.display()
            )));
        }
    }
    let store = loc.mount(Mode::ReadOnly)?;
    let secret = crypt::read_passphrase_file(&store.path)?;
    // Resolved while it is there to be resolved (a partition is unmounted below).
    let mut storage = crate::storage::resolve(&store.path)?;
    storage.name = file.to_string();
    drop(store);
    let on_partition = loc.partition.is_some().then_some(loc);
    let _ = PASSPHRASE_FILE.set(PassFile {
        storage,
        on_partition,
    });
    Keys::set_global(Keys::new(PassSource::Given(secret)));
    Ok(())
}

/// The passphrase of a helper process (`image mount --attached --secret-on-stdin`): read from
/// stdin, where the process that started it wrote it (at most 64 KiB, to its end).
pub(super) fn passphrase_from_stdin() -> Result<()> {
    use std::io::Read;
    let mut s = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(64 << 10)
        .read_to_end(&mut s)
        .map_err(|e| Error::io("read the passphrase from", "stdin", e))?;
    Keys::set_global(Keys::new(PassSource::Given(s)));
    Ok(())
}

/// The passphrase this job holds, when it was given (read from a file, or handed over by the
/// process that started it): what a helper process gets on its stdin.
pub fn given_secret() -> Option<crypt::Secret> {
    Keys::global().given()
}

/// Whether the image at `image` (a path or `PARTITION:/path`, its partition mounted read-only
/// for the look) is encrypted: its clear structure only, no passphrase needed (the console's
/// passphrase step).
pub fn probe_encrypted(image: &str) -> Result<bool> {
    let store = Store::open(image, Mode::ReadOnly)?;
    let img = Image::open_with(&store.path, &Keys::locked())?;
    Ok(img.header.is_encrypted())
}

/// Tries `secret` on the key slots of the encrypted image at `image` (one KDF run):
/// [`ErrorKind::WrongPassphrase`] when none opens. Nothing is written. The image's partition
/// is mounted only while its header is read, not during the KDF's second (the console's disk
/// list would show it mounted meanwhile).
pub fn try_passphrase(image: &str, secret: &[u8]) -> Result<()> {
    let (path, crypt) = {
        let store = Store::open(image, Mode::ReadOnly)?;
        let img = Image::open_with(&store.path, &Keys::locked())?;
        (img.path.clone(), img.header.crypt.clone())
    };
    let Some(crypt) = crypt else {
        return Ok(());
    };
    Keys::passphrase(secret).unlock(&path, &crypt).map(|_| ())
}

/// One key slot, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    /// 1 or 2.
    pub slot: usize,
    /// `passphrase` or `recovery_key`.
    pub kind: &'static str,
    /// Argon2id parameters of a passphrase slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<Argon2Info>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Argon2Info {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

/// The key slots of an encryption header, for reports.
pub fn slot_infos(c: &crypt::CryptHeader) -> Vec<SlotInfo> {
    c.slots
        .iter()
        .enumerate()
        .filter_map(|(k, s)| {
            let s = s.as_ref()?;
            Some(match s.kind {
                crypt::SlotKind::Passphrase(p) => SlotInfo {
                    slot: k + 1,
                    kind: "passphrase",
                    argon2id: Some(Argon2Info {
                        memory_kib: p.m_kib,
                        iterations: p.t,
                        lanes: p.p,
                    }),
                },
                crypt::SlotKind::Recovery => SlotInfo {
                    slot: k + 1,
                    kind: "recovery_key",
                    argon2id: None,
                },
            })
        })
        .collect()
}

/// What `image add-key` / `image remove-key` report.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub ok: bool,
    pub image: String,
    /// The slot added or removed (1 or 2) in `image`.
    pub slot: usize,
    /// The slots of `image` now in use.
    pub slots: Vec<SlotInfo>,
    /// With `--chain`: every image of the chain changed (the named one first, then its
    /// parents), each with its slot and slots.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainKeys>,
    /// The new recovery key (add-key without --output only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_key_file: Option<PathBuf>,
}

/// One image of a chain whose key slots `--chain` changed.
#[derive(Debug, Clone, Serialize)]
pub struct ChainKeys {
    pub image: PathBuf,
    pub slot: usize,
    pub slots: Vec<SlotInfo>,
}

/// Writes `header`'s key slots into every volume of `img` (last volume first, each fsynced),
/// after checking each still holds this image's header for its number.
fn rewrite_slots(img: &Image, header: &format::Header) -> Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    for (k, p) in img.volume_paths().iter().enumerate().rev() {
        let n = k as u32 + 1;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
            .map_err(|e| Error::io("open for writing", p, e))?;
        let mut b = [0u8; format::HEADER_SIZE];
        f.read_exact_at(&mut b, 0)
            .map_err(|e| Error::io("read the header of", p, e))?;
        let now = format::Header::decode(&b).map_err(|e| e.at_path(p))?;
        if now.uuid != header.uuid || now.volume != n {
            return Err(Error::corrupt(format!(
                "{} changed while its key slots were being rewritten",
                p.display()
            )));
        }
        let mut h = header.clone();
        h.volume = n;
        f.write_all_at(&h.encode(), 0)
            .map_err(|e| Error::io("write the header of", p, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", p, e))?;
    }
    Ok(())
}

/// The encrypted images whose key slots a command changes, each with its header to change:
/// the image at `store` (`spec` as given), and with `chain` every parent after it. Each is
/// unlocked (one KDF run per distinct slot: a chain's images share theirs), and they must
/// share one data key. The identity rule first: every volume of them is written, so none may
/// be the passphrase file.
fn open_encrypted(spec: &str, store: &Store, chain: bool) -> Result<Vec<(Image, format::Header)>> {
    let images = if chain {
        Chain::open(&store.path)?.images
    } else {
        vec![Image::open(&store.path)?]
    };
    let mut check = crate::storage::Check::new();
    for (k, img) in images.iter().enumerate() {
        let role = if k == 0 {
            "the image"
        } else {
            "the parent image"
        };
        for v in img.volume_paths() {
            check.writes(role, &v)?;
        }
    }
    passphrase_kept_inside(&mut check, &StoreLocation::resolve(spec)?, store)?;
    check.run()?;
    let key = images[0].data_key().cloned();
    let mut out = Vec::with_capacity(images.len());
    for img in images {
        if !img.header.is_encrypted() {
            return Err(Error::invalid(format!(
                "{} is not encrypted: it has no key slots (nothing was changed)",
                img.path.display()
            )));
        }
        if img.data_key() != key.as_ref() {
            return Err(Error::corrupt(format!(
                "{} does not share the data key of {}, so it is not of this chain's encryption \
                 (nothing was changed)",
                img.path.display(),
                store.path.display()
            )));
        }
        let h = img.header.clone();
        out.push((img, h));
    }
    Ok(out)
}

/// The images changed, for the report (`--chain` only).
fn chain_report(
    images: &[(Image, format::Header)],
    slots: &[usize],
    chain: bool,
) -> Vec<ChainKeys> {
    if !chain {
        return Vec::new();
    }
    images
        .iter()
        .zip(slots)
        .map(|((img, h), &slot)| ChainKeys {
            image: img.path.clone(),
            slot,
            slots: slot_infos(h.crypt.as_ref().expect("encrypted")),
        })
        .collect()
}

/// Rewrites the slots of every image (parents first: an incremental made meanwhile copies its
/// parent's slots), saying which were changed when one fails.
fn rewrite_all(images: &[(Image, format::Header)]) -> Result<()> {
    let mut done: Vec<String> = Vec::new();
    for (img, h) in images.iter().rev() {
        rewrite_slots(img, h).map_err(|e| {
            if done.is_empty() {
                return e;
            }
            let msg = format!(
                "{} (the key slots of {} were already changed)",
                e.msg,
                done.join(", ")
            );
            Error { msg, ..e }
        })?;
        done.push(img.path.display().to_string());
    }
    Ok(())
}

pub(super) fn run_add_key(
    image: String,
    output: Option<PathBuf>,
    chain: bool,
    passphrase_file: Option<String>,
    json: bool,
) -> Result<i32> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use_passphrase(passphrase_file.as_deref(), None)?;
    let output = output.map(|o| crate::storage::pin_dir(&o));
    if let Some(o) = &output {
        if std::fs::symlink_metadata(o).is_ok() {
            return Err(Error::refused(format!(
                "{} exists: the recovery key is only written to a new file",
                o.display()
            )));
        }
    }
    let store = Store::open(&image, Mode::ReadWrite)?;
    let mut images = open_encrypted(&image, &store, chain)?;
    let key = images[0]
        .0
        .data_key()
        .cloned()
        .ok_or_else(|| Error::invalid("the image is not encrypted"))?;
    // Every image needs a free slot, found before anything is written.
    let mut free = Vec::with_capacity(images.len());
    for (img, h) in &images {
        let c = h.crypt.as_ref().expect("checked encrypted");
        let Some(k) = c.slots.iter().position(Option::is_none) else {
            let name = img.path.display();
            return Err(Error::refused(format!(
                "both key slots of {name} are in use: remove one first with `lifeboat image \
                 remove-key {name} --slot N` (nothing was changed)"
            )));
        };
        free.push(k);
    }
    // One recovery key for the chain, wrapped with its own salt in each image.
    let (first, text) = crypt::KeySlot::wrap_recovery(&key)?;
    for (k, (_, h)) in images.iter_mut().enumerate() {
        let slot = if k == 0 {
            first
        } else {
            crypt::KeySlot::wrap_recovery_again(&key, &text)?
        };
        h.crypt.as_mut().expect("checked encrypted").slots[free[k]] = Some(slot);
    }
    // The key is saved before any image is changed, so it is never in the images only.
    if let Some(o) = &output {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(o)
            .map_err(|e| Error::io("create the recovery key file", o, e))?;
        f.write_all(format!("{}\n", text.as_str()).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write the recovery key to", o, e))?;
    }
    rewrite_all(&images)?;
    let slots: Vec<usize> = free.iter().map(|k| k + 1).collect();
    let rep = KeyReport {
        ok: true,
        image: image.clone(),
        slot: slots[0],
        slots: slot_infos(images[0].1.crypt.as_ref().expect("encrypted")),
        chain: chain_report(&images, &slots, chain),
        recovery_key: output.is_none().then(|| text.to_string()),
        recovery_key_file: output.clone(),
    };
    crate::cli::emit_report(&rep, json);
    if !json {
        let whom = if chain && images.len() > 1 {
            format!("{image} and its {} parent image(s)", images.len() - 1)
        } else {
            image.clone()
        };
        match &output {
            Some(o) => crate::errln!(
                "Recovery key added to slot {} of {whom}; it is in {} — keep it apart from the image.",
                slots[0],
                o.display()
            ),
            None => {
                crate::outln!("{}", text.as_str());
                crate::errln!(
                    "Recovery key above added to slot {} of {whom}: write it down and keep it \
                     apart from the image; it opens the image like the passphrase.",
                    slots[0]
                );
            }
        }
    }
    Ok(exit::OK)
}

pub(super) fn run_remove_key(
    image: String,
    slot: u32,
    chain: bool,
    passphrase_file: Option<String>,
    json: bool,
) -> Result<i32> {
    use_passphrase(passphrase_file.as_deref(), None)?;
    if !(1..=crypt::SLOTS as u32).contains(&slot) {
        return Err(Error::invalid(format!(
            "--slot {slot}: an image has key slots 1 and 2"
        )));
    }
    let store = Store::open(&image, Mode::ReadWrite)?;
    let mut images = open_encrypted(&image, &store, chain)?;
    let k = slot as usize - 1;
    // Every image is checked before any is changed.
    for (img, h) in &images {
        let c = h.crypt.as_ref().expect("checked encrypted");
        let name = img.path.display();
        if c.slots[k].is_none() {
            return Err(Error::invalid(format!(
                "key slot {slot} of {name} is empty (nothing was changed)"
            )));
        }
        if c.used() <= 1 {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "key slot {slot} is the last one of {name}: without it nothing could open \
                     the image (nothing was changed)"
                ),
            ));
        }
    }
    for (_, h) in images.iter_mut() {
        h.crypt.as_mut().expect("checked encrypted").slots[k] = None;
    }
    rewrite_all(&images)?;
    let rep = KeyReport {
        ok: true,
        image: image.clone(),
        slot: slot as usize,
        slots: slot_infos(images[0].1.crypt.as_ref().expect("encrypted")),
        chain: chain_report(&images, &vec![slot as usize; images.len()], chain),
        recovery_key: None,
        recovery_key_file: None,
    };
    crate::cli::emit_report(&rep, json);
    if !json {
        if chain && images.len() > 1 {
            crate::errln!(
                "Key slot {slot} of {image} and its {} parent image(s) removed.",
                images.len() - 1
            );
        } else {
            crate::errln!("Key slot {slot} of {image} removed.");
        }
    }
    Ok(exit::OK)
}
