//! `image copy`: an image — every volume, and with `--chain` every parent it needs — copied to
//! another location byte for byte (so the copy keeps the image's UUID and a chain resolves
//! through either copy). Each volume is written under its `.partial` name and fsynced; then,
//! unless told not to, it is read back from the destination's storage — with O_DIRECT, as
//! create's verify after writing reads (the page cache dropped first where the filesystem
//! refuses O_DIRECT: [`super::dio`]) — and compared with what was read from the image (a
//! BLAKE3 of each volume, the first differing byte located when they differ), and the copy is
//! verified as an image, read from its storage the same way (every CRC and chunk hash); only a
//! copy that passed is renamed to its final name. A parent already at
//! the destination with the same UUID, media hash and volume sizes is not copied again.
//!
//! An encrypted image is copied as it is stored (ciphertext: the copy needs no key and opens
//! with the same passphrases). Verifying the copy as an image — every record's tag, CRC and
//! keyed chunk hash — needs its key; opened without one ([`Keys::locked`]), the copy is
//! compared byte for byte with the image it was read from (`verify_level` "bytes" instead of
//! "image"), which shows the destination returned what was written but not that the image
//! itself is intact.
//!
//! The command side (locations, the identity checks) is in [`super::cmd_copy`].
use super::create::{partial_name, sync_dir};
use super::crypt::Keys;
use super::dio::{Stored, VolFile};
use super::format::*;
use super::reader::{Chain, Image};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{Cancel, Progress, ProgressSink};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// Bytes read and written at a time.
const BLOCK: usize = 4 << 20;
/// Blocks in flight between the reader thread and the writer (memory: BLOCKS × 4 MiB).
const BLOCKS: usize = 4;

/// One image of a copy job.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedImage {
    /// The image copied (its first volume).
    pub image: PathBuf,
    /// The copy (its first volume).
    pub copy: PathBuf,
    pub uuid: String,
    pub media_hash: String,
    /// The copy's volumes.
    pub volumes: Vec<PathBuf>,
    /// Bytes of all its volumes.
    pub bytes: u64,
    /// Why it was not copied (a parent already there), or null.
    pub skipped: Option<String>,
    /// Read back from the destination and checked: true, false, null when not (skipped, or
    /// `--no-verify`).
    pub verified: Option<bool>,
}

/// What `image copy --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub ok: bool,
    pub image: PathBuf,
    pub destination: PathBuf,
    pub uuid: String,
    /// Parents first (with `--chain`), the image last.
    pub images: Vec<CopiedImage>,
    pub bytes_copied: u64,
    /// Every copy read back from the destination's storage matched and verified (true), did
    /// not (false: see `verify_problems`), or was not checked (null: `--no-verify`).
    pub verified: Option<bool>,
    pub verify_problems: Vec<String>,
    /// What the verify checked: "image" (every copy read back equals the image byte for byte,
    /// and verified as an image: every CRC, tag and hash), "bytes" (an encrypted image copied
    /// without its passphrase: byte for byte only), null when not verified.
    pub verify_level: Option<&'static str>,
    pub elapsed_secs: f64,
    pub verify_elapsed_secs: Option<f64>,
}

/// One image to copy: the opened image and where its first volume goes.
pub struct Planned {
    pub image: Image,
    pub dest: PathBuf,
    /// Already at `dest` (same UUID, media hash and volume sizes): not copied.
    pub present: bool,
}

/// Whether the image at `dest` is `img` already: same UUID and media hash, every volume of the
/// same size. (Its bytes are not compared: `image verify` checks a copy at any time.)
pub fn same_image(img: &Image, dest: &Path, keys: &Keys) -> bool {
    let Ok(d) = Image::open_with(dest, keys) else {
        return false;
    };
    d.header.uuid == img.header.uuid
        && d.footer.media_hash == img.footer.media_hash
        && d.volume_lens()
            .iter()
            .map(|v| v.1)
            .eq(img.volume_lens().iter().map(|v| v.1))
}

/// The images to copy for the image at `src` into `dest` (its first volume): with `chain`,
/// its parents first (each into `dest`'s directory under its own file name; those already
/// there are marked present), the image itself last. Encrypted images are opened with `keys`
/// (locked: their clear structure only).
pub fn plan(src: &Path, dest: &Path, chain: bool, keys: &Keys) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    if chain {
        let c = Chain::open_with(src, keys)?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        for img in c.images.into_iter().skip(1).rev() {
            let name = img
                .path
                .file_name()
                .ok_or_else(|| Error::invalid("a parent image has no file name"))?;
            let d = dir.join(name);
            let present = same_image(&img, &d, keys);
            out.push(Planned {
                image: img,
                dest: d,
                present,
            });
        }
    }
    out.push(Planned {
        image: Image::open_with(src, keys)?,
        dest: dest.to_path_buf(),
        present: false,
    });
    refuse_shared_names(&out)?;
    Ok(out)
}

/// Refuses (exit 4, nothing written) a plan in which two images of the chain would be written
/// to (or one written over another already there under) the same file name: with `--chain`,
/// a DEST named like one of the parents (`image copy inc.lbi /b/full.lbi --chain` with a
/// parent `full.lbi`) copied the parent and then replaced it with the incremental, leaving a
/// copy whose parent is gone; two parents of the same file name in different directories
/// would do the same to each other.
fn refuse_shared_names(planned: &[Planned]) -> Result<()> {
    let names = |p: &Planned| -> Vec<PathBuf> {
        (1..=p.image.volume_lens().len() as u32)
            .map(|n| volume_path(&p.dest, n))
            .collect()
    };
    for (i, a) in planned.iter().enumerate() {
        for b in &planned[i + 1..] {
            if a.present && b.present {
                continue;
            }
            let nb = names(b);
            if let Some(f) = names(a).into_iter().find(|f| nb.contains(f)) {
                return Err(Error::refused(format!(
                    "{} and {} would both be copied to {}: the second would replace the first, \
                     and the copy's chain would lose an image. Nothing was written; give the \
                     copy another file name",
                    a.image.path.display(),
                    b.image.path.display(),
                    f.display()
                ))
                .at_path(&f));
            }
        }
    }
    Ok(())
}

/// The files a planned copy writes: each final volume name and its `.partial` name.
pub fn written_files(p: &Planned) -> Vec<PathBuf> {
    (1..=p.image.volume_lens().len() as u32)
        .flat_map(|n| {
            let f = volume_path(&p.dest, n);
            [partial_name(&f), f]
        })
        .collect()
}

/// Copies every planned image (see the module doc); `verify` reads each copy back from the
/// destination's storage and checks it before it gets its final name. A copy that fails its
/// verify is removed and the report says why (`ok` false); nothing else is touched.
pub fn copy(
    planned: &[Planned],
    verify: bool,
    keys: &Keys,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<CopyReport> {
    let started = Instant::now();
    let top = planned.last().expect("the image itself is planned");
    let total: u64 = planned
        .iter()
        .filter(|p| !p.present)
        .map(|p| p.image.file_bytes())
        .sum();
    let mut prog = Progress::new("image-copy", "copying", total);
    let mut images = Vec::new();
    let mut problems = Vec::new();
    let mut verify_secs = 0.0;
    let mut copied = 0;
    for p in planned {
        let mut c = CopiedImage {
            image: p.image.path.clone(),
            copy: p.dest.clone(),
            uuid: uuid_str(&p.image.header.uuid),
            media_hash: hex(&p.image.footer.media_hash),
            volumes: (1..=p.image.volume_lens().len() as u32)
                .map(|n| volume_path(&p.dest, n))
                .collect(),
            bytes: p.image.file_bytes(),
            skipped: None,
            verified: None,
        };
        if p.present {
            c.skipped = Some(format!(
                "{} is this image already (same UUID, media hash and volume sizes)",
                p.dest.display()
            ));
            images.push(c);
            continue;
        }
        let written = copy_volumes(p, &mut prog, sink, cancel)?;
        copied += c.bytes;
        if verify {
            let t = Instant::now();
            let found =
                verify_copy(p, &written, keys, sink, cancel).inspect_err(|_| remove_partials(p))?;
            verify_secs += t.elapsed().as_secs_f64();
            c.verified = Some(found.is_empty());
            if !found.is_empty() {
                remove_partials(p);
                problems.extend(found);
                images.push(c);
                // The parents copied so far are good; the rest is not attempted.
                break;
            }
        }
        commit(p, &written)?;
        images.push(c);
    }
    let failed = !problems.is_empty();
    Ok(CopyReport {
        ok: !failed,
        image: top.image.path.clone(),
        destination: top.dest.clone(),
        uuid: uuid_str(&top.image.header.uuid),
        images,
        bytes_copied: copied,
        verified: verify.then_some(!failed),
        verify_problems: problems,
        verify_level: verify.then_some(if planned.iter().any(|p| p.image.is_locked()) {
            "bytes"
        } else {
            "image"
        }),
        elapsed_secs: started.elapsed().as_secs_f64(),
        verify_elapsed_secs: verify.then_some(verify_secs),
    })
}

/// One volume written: the BLAKE3 of what was read from the image, and the file written (kept
/// open: the verify reads back this file, whatever its name points to by then).
struct Written {
    hash: [u8; 32],
    file: File,
}

/// Copies each volume of `p` to its `.partial` name (created fresh: never through a link),
/// fsynced; returns each volume's hash as read from the image and the file written.
fn copy_volumes(
    p: &Planned,
    prog: &mut Progress,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<Vec<Written>> {
    let mut hashes = Vec::new();
    for (n, (src, len)) in p.image.volume_lens().into_iter().enumerate() {
        let to = partial_name(&volume_path(&p.dest, n as u32 + 1));
        let r = (|| {
            let from = crate::io::open::open_regular(&src, "an image volume")?;
            let out = crate::io::open::create_fresh(&to)?;
            let h = copy_file(&from, &src, &out, &to, len, prog, sink, cancel)?;
            out.sync_all().map_err(|e| Error::io("fsync", &to, e))?;
            Ok(Written { hash: h, file: out })
        })();
        match r {
            Ok(h) => hashes.push(h),
            Err(e) => {
                remove_partials(p);
                return Err(e);
            }
        }
    }
    sync_dir(&p.dest);
    Ok(hashes)
}

/// Copies `len` bytes of `from` into `out`: a reader thread reads ahead (a bounded number of
/// blocks) and hashes, this thread writes. Returns the BLAKE3 of the bytes read.
#[allow(clippy::too_many_arguments)]
fn copy_file(
    from: &File,
    src: &Path,
    out: &File,
    dst: &Path,
    len: u64,
    prog: &mut Progress,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<[u8; 32]> {
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(BLOCKS);
    for _ in 0..BLOCKS {
        let _ = free_tx.send(vec![0u8; BLOCK]);
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(BLOCKS);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut h = blake3::Hasher::new();
            let mut off = 0u64;
            while off < len {
                if cancel.is_cancelled() {
                    break;
                }
                let Ok(mut buf) = free_rx.recv() else { break };
                let n = (len - off).min(BLOCK as u64) as usize;
                buf.resize(n, 0);
                let r = read_full(from, src, &mut buf, off).map(|()| {
                    h.update(&buf);
                    (off, buf)
                });
                let stop = r.is_err();
                if full_tx.send(r).is_err() || stop {
                    break;
                }
                off += n as u64;
            }
            *h.finalize().as_bytes()
        });
        let mut done = 0u64;
        let mut err = None;
        while done < len {
            if cancel.is_cancelled() {
                err = Some(Error::cancelled());
                break;
            }
            match full_rx.recv() {
                Ok(Ok((off, buf))) => {
                    if let Err(e) = write_block(out, dst, &buf, off) {
                        err = Some(e);
                        break;
                    }
                    done += buf.len() as u64;
                    prog.done_bytes += buf.len() as u64;
                    sink.progress(prog);
                    let _ = free_tx.send(buf);
                }
                Ok(Err(e)) => {
                    err = Some(e);
                    break;
                }
                Err(_) => {
                    err = Some(Error::cancelled());
                    break;
                }
            }
        }
        drop(full_rx);
        drop(free_tx);
        let h = reader
            .join()
            .map_err(|_| Error::new(ErrorKind::Io, "the copy's reader thread panicked"))?;
        match err {
            Some(e) => Err(e),
            None => Ok(h),
        }
    })
}

fn read_full(f: &File, path: &Path, buf: &mut [u8], off: u64) -> Result<()> {
    f.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt("the image volume became shorter while it was copied")
                .at_path(path)
                .at_offset(off)
        } else {
            Error::io("read", path, e).at_offset(off)
        }
    })
}

/// Writes one block of a copy. Debug builds only: `LIFEBOAT_TEST_CORRUPT_WRITE=N` flips the
/// bits of byte N of every volume written, as a destination that silently corrupts would (a
/// test of the verify that follows; release builds ignore it).
fn write_block(out: &File, dst: &Path, buf: &[u8], off: u64) -> Result<()> {
    let flip = if cfg!(debug_assertions) {
        std::env::var("LIFEBOAT_TEST_CORRUPT_WRITE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n >= off && n < off + buf.len() as u64)
    } else {
        None
    };
    let r = match flip {
        Some(n) => {
            let mut b = buf.to_vec();
            b[(n - off) as usize] ^= 0xff;
            out.write_all_at(&b, off)
        }
        None => out.write_all_at(buf, off),
    };
    r.map_err(|e| Error::io("write", dst, e).at_offset(off))
}

/// Reads the copy of `p` back from the destination's storage (every volume fsynced, then read
/// with O_DIRECT, or its page cache dropped where that is refused) through the files written — not by name: a name replaced meanwhile (a link
/// to the image itself) would read back the image — and compares each volume with the hash of
/// what was read from the image (a volume read back shorter or longer than written is a
/// problem of the copy, not an error of the image), then verifies the copy as an image (an
/// encrypted one with `keys`; not when it was opened locked). Returns the problems found
/// (empty: the copy is good).
fn verify_copy(
    p: &Planned,
    written: &[Written],
    keys: &Keys,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<Vec<String>> {
    super::verify::test_pause_before_verify();
    let vols = p.image.volume_lens();
    let total: u64 = vols.iter().map(|v| v.1).sum();
    let mut prog = Progress::new("image-copy", "verifying", total);
    let mut found = Vec::new();
    for (n, ((src, len), w)) in vols.iter().zip(written).enumerate() {
        let to = partial_name(&volume_path(&p.dest, n as u32 + 1));
        let f = VolFile::from_storage(
            w.file
                .try_clone()
                .map_err(|e| Error::io("open again", &to, e))?,
            &to,
        )?;
        let now = f
            .file
            .metadata()
            .map_err(|e| Error::io("look at", &to, e))?
            .len();
        if now != *len {
            found.push(format!(
                "{} read back from the destination is {now} bytes, not the {len} written: the \
                 destination's storage did not keep what was written",
                to.display()
            ));
            continue;
        }
        let got = hash_file(&f, &to, *len, &mut prog, sink, cancel)?;
        if got != w.hash {
            let at = first_difference(src, &f, &to, *len)?;
            found.push(format!(
                "{} read back from the destination differs from {} ({}): the destination's \
                 storage did not return what was written",
                to.display(),
                src.display(),
                match at {
                    Some(o) => format!("first at byte {o}"),
                    None =>
                        "now they read the same: it returned other bytes a moment ago".to_string(),
                }
            ));
        }
    }
    if found.is_empty() && !p.image.is_locked() {
        // Byte for byte the image: now the image's own checks, on the copy.
        let name = |n: u32| partial_name(&volume_path(&p.dest, n));
        let r = super::verify::verify_files(&name(1), &name, keys, "image-copy", sink, cancel)?;
        if !r.ok {
            found.push(format!(
                "the copy is byte for byte {}, which is itself damaged: run `lifeboat image \
                 verify` on it",
                p.image.path.display()
            ));
            found.extend(r.problems);
        }
    }
    Ok(found)
}

/// The BLAKE3 of the first `len` bytes of `f`, read in blocks from its storage.
fn hash_file(
    f: &VolFile,
    path: &Path,
    len: u64,
    prog: &mut Progress,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut st = Stored::with_capacity(BLOCK);
    let mut off = 0;
    while off < len {
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let n = (len - off).min(BLOCK as u64) as usize;
        h.update(read_stored(f, path, off, n, &mut st)?);
        off += n as u64;
        prog.done_bytes += n as u64;
        sink.progress(prog);
    }
    Ok(*h.finalize().as_bytes())
}

/// `n` bytes at `off` of `f` (named `path`) as its storage returns them; a file shorter than
/// that is corrupt, as in [`read_full`].
fn read_stored<'a>(
    f: &VolFile,
    path: &Path,
    off: u64,
    n: usize,
    st: &'a mut Stored,
) -> Result<&'a [u8]> {
    f.read_stored(path, off, n, st).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt("the copy's volume became shorter while it was read back")
                .at_path(path)
                .at_offset(off)
        } else {
            Error::io("read back", path, e).at_offset(off)
        }
    })?;
    Ok(st.bytes())
}

/// The first byte offset where `a` and the file `fb` (named `b`, read from its storage) differ
/// in their first `len` bytes (None: equal).
fn first_difference(a: &Path, fb: &VolFile, b: &Path, len: u64) -> Result<Option<u64>> {
    let fa = crate::io::open::open_regular(a, "an image volume")?;
    let mut x = vec![0u8; BLOCK];
    let mut st = Stored::with_capacity(BLOCK);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(BLOCK as u64) as usize;
        read_full(&fa, a, &mut x[..n], off)?;
        let y = read_stored(fb, b, off, n, &mut st)?;
        if let Some(k) = x[..n].iter().zip(y).position(|(p, q)| p != q) {
            return Ok(Some(off + k as u64));
        }
        off += n as u64;
    }
    Ok(None)
}

/// Renames the `.partial` volumes of `p` to their final names (the last first, the first
/// volume last), removes stale volumes of an image replaced there, fsyncs the directory. Each
/// `.partial` name must still be the file written (`written`): one replaced meanwhile (by
/// another process) is refused, not renamed into the copy.
fn commit(p: &Planned, written: &[Written]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let stale = super::volumes::old_volumes(&p.dest);
    let n = p.image.volume_lens().len() as u32;
    for (k, w) in (1..=n).zip(written) {
        let part = partial_name(&volume_path(&p.dest, k));
        let a = w
            .file
            .metadata()
            .map_err(|e| Error::io("look at", &part, e))?;
        let same = std::fs::symlink_metadata(&part)
            .is_ok_and(|b| b.is_file() && a.dev() == b.dev() && a.ino() == b.ino());
        if !same {
            remove_partials(p);
            return Err(Error::corrupt(format!(
                "{} is no longer the file this copy wrote (replaced while it was copied): \
                 nothing was renamed; copy again",
                part.display()
            ))
            .at_path(&part));
        }
    }
    for k in (1..=n).rev() {
        let to = volume_path(&p.dest, k);
        std::fs::rename(partial_name(&to), &to)
            .map_err(|e| Error::io("rename the finished copy to", &to, e))?;
    }
    for s in stale.iter().skip(n.saturating_sub(1) as usize) {
        let _ = std::fs::remove_file(s);
    }
    sync_dir(&p.dest);
    Ok(())
}

/// Removes the `.partial` volumes of `p` (a copy that failed or was stopped).
fn remove_partials(p: &Planned) {
    for n in 1..=p.image.volume_lens().len() as u32 {
        let _ = std::fs::remove_file(partial_name(&volume_path(&p.dest, n)));
    }
}
