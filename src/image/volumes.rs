//! Writing an image's data stream into volumes (`--split`): each volume under a `.partial`
//! name until the image is complete, records never spanning volumes, and the commit that fsyncs,
//! renames (last volume first) and removes stale volumes of the image being replaced, never
//! anything else that merely has a volume's name. In an encrypted image every record is sealed
//! here, where it is placed (see `crypt`).
use super::create::{partial_name, sync_dir, MIN_SPLIT};
use super::format::*;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether `p` is volume `n` of the image with `uuid`: a regular file (not a link to one) whose
/// header says so.
fn is_volume_of(p: &Path, uuid: &[u8; 16], n: u32) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
        && super::ops::partial_header(p).is_some_and(|h| h.uuid == *uuid && h.volume == n)
}

/// Volumes 2, 3 … of the image at `base` that replacing it (`--force`) renames over or removes
/// as stale: the job writes them, so they must not be its source or a parent.
pub(crate) fn old_volumes(base: &Path) -> Vec<PathBuf> {
    let Some(u) = super::ops::partial_header(base).map(|h| h.uuid) else {
        return vec![];
    };
    (2..=65535)
        .map(|k| (k, volume_path(base, k)))
        .take_while(|(k, p)| is_volume_of(p, &u, *k))
        .map(|(_, p)| p)
        .collect()
}

/// Writes the data stream into volumes of at most `split` bytes, each under a `.partial` name.
pub(crate) struct VolumeWriter {
    base: PathBuf,
    header: Header,
    split: Option<u64>,
    files: Vec<(File, PathBuf)>,
    len: u64,
    /// The UUID of the image this one replaces (`--force`), read before anything is renamed:
    /// only its volumes may be replaced or removed as stale.
    old_uuid: Option<[u8; 16]>,
    /// Seals every record of an encrypted image (`record`; the tail is `record_clear`).
    sealer: Option<std::sync::Arc<super::crypt::Sealer>>,
    /// The sealed bytes of the record being written (reused).
    sealed: Vec<u8>,
    /// Where writeback of the current volume was last started (see [`WRITEBACK_STEP`]).
    kicked: u64,
    /// A new encrypted image's first key slot while its KDF still runs beside the data path
    /// (see [`settle_slots`](Self::settle_slots)).
    pending_slot: Option<PendingSlot>,
}

/// The thread deriving a new image's key slot.
pub(crate) type PendingSlot = std::thread::JoinHandle<Result<super::crypt::KeySlot>>;

/// Every this many bytes appended to a volume, writeback of them is started (without waiting):
/// the image then reaches the disk while it is made, and the fsyncs of checkpoints and of the
/// commit find little left to write, instead of stalling the whole pipeline on all of it.
const WRITEBACK_STEP: u64 = 8 << 20;

impl VolumeWriter {
    pub(crate) fn new(base: &Path, header: Header, split: Option<u64>) -> Result<Self> {
        let mut w = VolumeWriter {
            base: base.to_path_buf(),
            header,
            split,
            files: Vec::new(),
            len: 0,
            old_uuid: super::ops::partial_header(base).map(|h| h.uuid),
            sealer: None,
            sealed: Vec::new(),
            kicked: 0,
            pending_slot: None,
        };
        w.open_next()?;
        Ok(w)
    }
    /// Reopens the unfinished volumes of an interrupted create (see `journal`): each must be
    /// a regular file (not a link) holding this image's header for its number; each is cut
    /// back to its length at the checkpoint, and writing goes on at the end of the last.
    pub(crate) fn resume(
        base: &Path,
        header: Header,
        split: Option<u64>,
        lens: &[u64],
    ) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut w = VolumeWriter {
            base: base.to_path_buf(),
            header,
            split,
            files: Vec::new(),
            len: 0,
            old_uuid: super::ops::partial_header(base).map(|h| h.uuid),
            sealer: None,
            sealed: Vec::new(),
            kicked: 0,
            pending_slot: None,
        };
        if lens.is_empty() || lens.len() > 65535 {
            return Err(Error::corrupt("the journal lists no volumes"));
        }
        for (k, &len) in lens.iter().enumerate() {
            let n = k as u32 + 1;
            let p = partial_name(&volume_path(base, n));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&p)
                .map_err(|e| Error::io("reopen the unfinished volume", &p, e))?;
            let md = f.metadata().map_err(|e| Error::io("look at", &p, e))?;
            let mut h = w.header.clone();
            h.volume = n;
            let mut got = vec![0u8; HEADER_SIZE];
            use std::os::unix::fs::FileExt;
            let same = md.is_file()
                && md.len() >= len
                && len >= HEADER_SIZE as u64
                && f.read_exact_at(&mut got, 0).is_ok()
                && got[..] == h.encode()[..];
            if !same {
                return Err(Error::corrupt(format!(
                    "{} is not the volume {n} the journal describes (shorter, or another \
                     image's); delete the .partial volumes and the journal to start again",
                    p.display()
                ))
                .at_path(&p));
            }
            f.set_len(len)
                .map_err(|e| Error::io("cut back to the checkpoint", &p, e))?;
            w.files.push((f, p));
            w.len = len;
        }
        let (f, p) = w.files.last_mut().expect("one volume at least");
        std::io::Seek::seek(f, std::io::SeekFrom::End(0)).map_err(|e| Error::io("seek", &*p, e))?;
        Ok(w)
    }
    /// Seals every record written from now on with `s` (an encrypted image).
    pub(crate) fn set_sealer(&mut self, s: std::sync::Arc<super::crypt::Sealer>) {
        self.sealer = Some(s);
    }

    /// The header every volume gets (its key slots once [`settle_slots`](Self::settle_slots)
    /// has run).
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Key slot 1 of a new encrypted image is being derived by `t` (the volumes written until
    /// it is settled have no slot).
    pub(crate) fn set_pending_slot(&mut self, t: PendingSlot) {
        self.pending_slot = Some(t);
    }

    /// Waits for a pending key slot (see [`set_pending_slot`](Self::set_pending_slot)) and
    /// writes it into the header of every volume opened so far (later ones are opened with
    /// it). Run before anything that must be opened with the passphrase exists: a journal to
    /// resume from, the finished image. The slots are outside the header digest every record
    /// is bound to, so nothing written before changes.
    pub(crate) fn settle_slots(&mut self) -> Result<()> {
        let Some(t) = self.pending_slot.take() else {
            return Ok(());
        };
        let slot = t.join().map_err(|_| {
            Error::new(
                crate::error::ErrorKind::Io,
                "the key derivation thread panicked",
            )
        })??;
        if let Some(c) = self.header.crypt.as_mut() {
            c.slots[0] = Some(slot);
        }
        use std::os::unix::fs::FileExt;
        for (k, (f, p)) in self.files.iter().enumerate() {
            let mut h = self.header.clone();
            h.volume = k as u32 + 1;
            f.write_all_at(&h.encode(), 0)
                .map_err(|e| Error::io("write the key slot into", &*p, e))?;
        }
        Ok(())
    }

    /// The sealer of an encrypted image.
    pub(crate) fn sealer(&self) -> Option<std::sync::Arc<super::crypt::Sealer>> {
        self.sealer.clone()
    }

    /// The length of every volume written so far.
    pub(crate) fn lens(&self) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = Vec::with_capacity(self.files.len());
        for (f, p) in &self.files {
            v.push(f.metadata().map_err(|e| Error::io("look at", p, e))?.len());
        }
        Ok(v)
    }
    /// Makes everything written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        for (f, p) in &self.files {
            f.sync_data().map_err(|e| Error::io("fsync", p, e))?;
        }
        Ok(())
    }
    fn open_next(&mut self) -> Result<()> {
        let n = self.files.len() as u32 + 1;
        if n > 65535 {
            return Err(Error::invalid(
                "too many volumes: use a larger --split size",
            ));
        }
        // The finished volume will be renamed over this name: only a volume of the image
        // being replaced may be there.
        self.check_replaceable(n)?;
        let p = partial_name(&volume_path(&self.base, n));
        // Never through what had the `.partial` name (a link to the source or an image).
        let mut f = crate::io::open::create_fresh(&p)?;
        let mut h = self.header.clone();
        h.volume = n;
        f.write_all(&h.encode())
            .map_err(|e| Error::io("write", &p, e))?;
        self.files.push((f, p));
        self.len = HEADER_SIZE as u64;
        self.kicked = 0;
        Ok(())
    }
    /// Whether `p` is volume `n` of the image being replaced: a regular file (not a link to
    /// one) whose header says so.
    fn is_old_volume(&self, p: &Path, n: u32) -> bool {
        self.old_uuid.is_some_and(|u| is_volume_of(p, &u, n))
    }
    /// Volume `n` (from 2) is renamed over `volume_path(base, n)` when the image is complete;
    /// whatever else has that name (another image, a parent, the source, a device node) is
    /// refused (exit 4) rather than replaced.
    fn check_replaceable(&self, n: u32) -> Result<()> {
        let p = volume_path(&self.base, n);
        if n <= 1 || std::fs::symlink_metadata(&p).is_err() || self.is_old_volume(&p, n) {
            return Ok(());
        }
        Err(Error::refused(format!(
            "{} exists and is not a volume of the image being replaced; volume {n} of the new \
             image would replace it. Move it away or name the image differently (nothing was \
             replaced; the unfinished volumes stay as .partial files)",
            p.display()
        ))
        .at_path(&p))
    }
    pub(crate) fn cur(&self) -> u16 {
        self.files.len() as u16
    }
    /// Makes room for a record of `total` bytes that must not span volumes (opening the next
    /// volume when it would not fit in this one); returns the number of volumes and the offset
    /// the record will start at.
    pub(crate) fn reserve(&mut self, total: u64) -> Result<(u32, u64)> {
        if let Some(limit) = self.split {
            if self.len + total > limit && self.len > HEADER_SIZE as u64 {
                self.open_next()?;
            }
        }
        Ok((self.files.len() as u32, self.len))
    }
    /// Writes one record of the data stream that must not span volumes (sealed in an
    /// encrypted image: it then takes `crypt::OVERHEAD` more bytes); returns (volume, offset).
    pub(crate) fn record(&mut self, parts: &[&[u8]]) -> Result<(u16, u64)> {
        let Some(sealer) = self.sealer.clone() else {
            return self.record_clear(parts);
        };
        let total: u64 =
            parts.iter().map(|p| p.len() as u64).sum::<u64>() + super::crypt::OVERHEAD as u64;
        let (_, off) = self.reserve(total)?;
        let mut sealed = std::mem::take(&mut self.sealed);
        let r = sealer
            .seal_record(self.cur(), off, parts, &mut sealed)
            .and_then(|()| self.record_clear(&[&sealed]));
        self.sealed = sealed;
        let at = r?;
        debug_assert_eq!(at, (self.cur(), off));
        Ok(at)
    }

    /// Reads back the record of `len` bytes written at `off` of volume `volume` (opened when
    /// sealed).
    pub(crate) fn read_record(&self, volume: u16, off: u64, len: usize) -> Result<Vec<u8>> {
        let Some(s) = &self.sealer else {
            let mut b = vec![0u8; len];
            self.read_at(volume, off, &mut b)?;
            return Ok(b);
        };
        let mut b = vec![0u8; len + super::crypt::OVERHEAD];
        self.read_at(volume, off, &mut b)?;
        match s.open_record(volume, off, &mut b) {
            Some(pt) => Ok(pt.to_vec()),
            None => Err(Error::corrupt(
                "a record just written reads back different (it does not authenticate)",
            )),
        }
    }

    /// Writes one record as given, never sealed (the tail); returns (volume, offset).
    pub(crate) fn record_clear(&mut self, parts: &[&[u8]]) -> Result<(u16, u64)> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Some(limit) = self.split {
            if self.len + total > limit {
                if self.len == HEADER_SIZE as u64 || HEADER_SIZE as u64 + total > limit {
                    return Err(Error::invalid(format!(
                        "--split {limit} is too small for a record of {total} bytes; use at least {MIN_SPLIT}"
                    )));
                }
                self.open_next()?;
            }
        }
        let off = self.len;
        let (f, p) = self.files.last_mut().expect("a volume is open");
        for part in parts {
            f.write_all(part)
                .map_err(|e| Error::io("write", &*p, e).at_offset(off))?;
        }
        self.len += total;
        if self.len - self.kicked >= WRITEBACK_STEP {
            // Advisory: a store that cannot (FUSE, network) is flushed by the fsyncs as before.
            let _ = crate::io::sys::start_writeback(f, self.kicked, self.len - self.kicked);
            self.kicked = self.len;
        }
        Ok((self.cur(), off))
    }
    /// Reads back `buf.len()` bytes written at `off` of volume `volume` (1-based).
    pub(crate) fn read_at(&self, volume: u16, off: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let (f, p) = self
            .files
            .get((volume as usize).wrapping_sub(1))
            .ok_or_else(|| Error::invalid(format!("volume {volume} was not written")))?;
        f.read_exact_at(buf, off)
            .map_err(|e| Error::io("read back", p, e).at_offset(off))
    }
    /// fsyncs every volume, calls `before_rename` (create removes its journal there: killed
    /// after the renames, a finished image would keep a stale journal beside it; killed
    /// before them, the next run starts the image afresh), renames the volumes (last first)
    /// and fsyncs the directory.
    pub(crate) fn commit(self, before_rename: impl FnOnce()) -> Result<Vec<PathBuf>> {
        let mut finals = Vec::new();
        for (f, p) in &self.files {
            f.sync_all().map_err(|e| Error::io("fsync", p, e))?;
        }
        let n = self.files.len();
        for k in 1..n {
            self.check_replaceable(k as u32 + 1)?;
        }
        before_rename();
        for k in (0..n).rev() {
            let to = volume_path(&self.base, k as u32 + 1);
            std::fs::rename(&self.files[k].1, &to)
                .map_err(|e| Error::io("rename the finished image to", &to, e))?;
            finals.push(to);
        }
        finals.reverse();
        // Volumes left from the image just replaced would confuse a reader; only its own
        // volumes go (a file merely named like one — another image, a parent, the source — stays).
        for k in n as u32 + 1..=65535 {
            let stale = volume_path(&self.base, k);
            if !self.is_old_volume(&stale, k) || std::fs::remove_file(&stale).is_err() {
                break;
            }
        }
        sync_dir(&self.base);
        Ok(finals)
    }
    pub(crate) fn abandon(self) {
        // The partial files stay (no footer: clearly incomplete); make sure they are on disk.
        for (f, _) in &self.files {
            let _ = f.sync_all();
        }
    }
}
