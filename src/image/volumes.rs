//! Writing an image's data stream into volumes (`--split`): each volume under a `.partial`
//! name until the image is complete, records never spanning volumes, and the commit that fsyncs,
//! renames (last volume first) and removes stale volumes of the image being replaced, never
//! anything else that merely has a volume's name. In an encrypted image every record is sealed
//! here, where it is placed (see `crypt`).
//!
//! The volume being written goes to its storage with O_DIRECT where the filesystem does it:
//! records (at any byte offset) are appended to an aligned staging buffer ([`Stage`]) and its
//! whole aligned blocks written from there, the unaligned tail kept for the next record. The
//! page cache is neither filled nor written back: under QEMU's TCG the buffered writes of a
//! 400 MB image cost the writer thread as much CPU as hashing costs a compressor thread, and
//! the clean pages were evicted again at the store's unmount (see README's figures). Whenever
//! the volume must be whole on its storage (a checkpoint's fsync, a read back, the next volume,
//! the commit), the tail is written too — through the page cache, O_DIRECT turned off for that
//! one write. A filesystem that refuses O_DIRECT (FUSE's ntfs-3g, tmpfs before Linux 6.6, some
//! network shares), at `fcntl` or at a write, gets buffered writes as before.
use super::create::{partial_name, sync_dir, MIN_SPLIT};
use super::format::*;
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, IO_ALIGN};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Tests only: a volume whose path holds `what` has its O_DIRECT writes refused (`no-odirect`:
/// from the start, as a filesystem without direct I/O; `odirect-refused-later`: from the
/// second write of whole blocks on, as after a short write), so both fallbacks run anywhere.
fn test_hook(p: &Path, what: &str) -> bool {
    cfg!(test) && p.to_string_lossy().contains(what)
}

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
    /// The current volume's bytes not yet written in whole blocks, when it is written with
    /// O_DIRECT (`None`: buffered writes).
    stage: Option<Stage>,
    /// Per volume, the bytes from its start that are on the storage and that this run never
    /// writes again (see [`settled`](Self::settled)).
    settled: Vec<u64>,
}

/// The staging buffer of a volume written with O_DIRECT: `buf[..]` holds the volume's bytes
/// from `at` (a multiple of [`IO_ALIGN`]) to its end; everything before `at` is on the storage.
struct Stage {
    buf: AlignedBuf,
    at: u64,
}

/// Aligned bytes gathered before they are written (one write per this much).
const STAGE_BYTES: usize = 4 << 20;

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
            stage: None,
            settled: Vec::new(),
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
            stage: None,
            settled: Vec::new(),
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
        // The unaligned end of the last volume goes into the stage (read before O_DIRECT).
        let at = w.len / IO_ALIGN as u64 * IO_ALIGN as u64;
        let mut tail = vec![0u8; (w.len - at) as usize];
        f.read_exact_at(&mut tail, at)
            .map_err(|e| Error::io("read", &*p, e).at_offset(at))?;
        w.start_stage(at, &tail);
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
        for k in 0..self.files.len() {
            let mut h = self.header.clone();
            h.volume = k as u32 + 1;
            self.patch(k, 0, &h.encode(), "write the key slot into")?;
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
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.write_tail()?;
        for (f, p) in &self.files {
            f.sync_data().map_err(|e| Error::io("fsync", p, e))?;
        }
        // Fsynced: a volume before the current one is final; the current one's whole blocks
        // are too when it is written through the page cache (its last, partial block is
        // written again as it fills). Written with O_DIRECT, the stage says (see
        // `write_stage_blocks`).
        let n = self.files.len();
        for k in 0..n {
            let len = if k + 1 == n {
                if self.stage.is_some() {
                    continue;
                }
                self.len / IO_ALIGN as u64 * IO_ALIGN as u64
            } else {
                match self.files[k].0.metadata() {
                    Ok(m) => m.len(),
                    Err(_) => continue,
                }
            };
            self.settle(k, len);
        }
        Ok(())
    }

    /// Per volume (from the first), how many bytes from its start are on the storage (written
    /// with O_DIRECT, or fsynced) and are never written again by this run — except the header,
    /// whose block a key slot may be written into (`settle_slots`). A record that ends there
    /// can be read back from the storage as it will stay: see `ahead`.
    pub(crate) fn settled(&self) -> &[u64] {
        &self.settled
    }

    /// Whether the volumes' headers are final: no key slot still to be written into them
    /// ([`settle_slots`](Self::settle_slots)), so the first block of a volume (the header and
    /// the start of the first record) is never written again either.
    pub(crate) fn headers_final(&self) -> bool {
        self.pending_slot.is_none()
    }

    /// The volumes opened so far (first to last) and their `.partial` paths.
    pub(crate) fn files(&self) -> &[(File, PathBuf)] {
        &self.files
    }

    fn settle(&mut self, k: usize, at: u64) {
        if self.settled.len() <= k {
            self.settled.resize(k + 1, 0);
        }
        self.settled[k] = self.settled[k].max(at);
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
        // The volume before is whole on its storage first (and read as any file from then on).
        self.write_tail()?;
        if self.stage.take().is_some() {
            if let Some((f, p)) = self.files.last() {
                crate::io::set_direct(f, false)
                    .map_err(|e| Error::io("turn off O_DIRECT on", p, e))?;
            }
        }
        // And durable: it is never written again (but for a key slot in its header), so its
        // records can be read back from the storage from now on (see `settled`).
        if let Some((f, p)) = self.files.last() {
            f.sync_data().map_err(|e| Error::io("fsync", p, e))?;
            let k = self.files.len() - 1;
            let len = self.len;
            self.settle(k, len);
        }
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
        self.start_stage(0, &h.encode());
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
    /// Starts writing the current volume with O_DIRECT from `at` (aligned; everything before
    /// it is on the storage), `tail` being its bytes from there to the end; stays buffered when
    /// the filesystem refuses O_DIRECT.
    fn start_stage(&mut self, at: u64, tail: &[u8]) {
        let Some((f, p)) = self.files.last() else {
            return;
        };
        if test_hook(p, "no-odirect") || crate::io::set_direct(f, true).is_err() {
            return;
        }
        let mut buf = AlignedBuf::new(STAGE_BYTES + IO_ALIGN);
        buf.set_len(tail.len());
        buf.copy_from_slice(tail);
        self.stage = Some(Stage { buf, at });
    }

    /// Appends `part` to the stage (the stream grows by its length), writing whole blocks out
    /// as the stage fills.
    fn stage_append(&mut self, mut part: &[u8]) -> Result<()> {
        while !part.is_empty() {
            let Some(st) = self.stage.as_mut() else {
                // O_DIRECT was given up on: the rest goes through the page cache.
                let (f, p) = self.files.last_mut().expect("a volume is open");
                f.write_all_at(part, self.len)
                    .map_err(|e| Error::io("write", &*p, e).at_offset(self.len))?;
                self.len += part.len() as u64;
                return Ok(());
            };
            let have = st.buf.len();
            let n = part.len().min(st.buf.capacity() - have);
            st.buf.set_len(have + n);
            st.buf[have..].copy_from_slice(&part[..n]);
            part = &part[n..];
            self.len += n as u64;
            if st.buf.len() >= STAGE_BYTES {
                self.write_stage_blocks()?;
            }
        }
        Ok(())
    }

    /// Writes the whole blocks gathered so far (with O_DIRECT: see [`settled`](Self::settled)).
    pub(crate) fn write_whole_blocks(&mut self) -> Result<()> {
        self.write_stage_blocks()
    }

    /// Writes the stage's whole blocks with O_DIRECT and keeps its unaligned tail.
    fn write_stage_blocks(&mut self) -> Result<()> {
        let Some(st) = self.stage.as_mut() else {
            return Ok(());
        };
        let whole = st.buf.len() / IO_ALIGN * IO_ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let (f, p) = self.files.last().expect("a volume is open");
        let r = if test_hook(p, "odirect-refused-later") && st.at > 0 {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            f.write_all_at(&st.buf[..whole], st.at)
        };
        match r {
            Ok(()) => {}
            // Refused after all (or a short write left an unaligned rest): through the page
            // cache from here on, the stage's bytes included.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.give_up_direct(),
            Err(e) => return Err(Error::io("write", p, e).at_offset(st.at)),
        }
        let rest = st.buf.len() - whole;
        st.buf.copy_within(whole.., 0);
        st.buf.set_len(rest);
        st.at += whole as u64;
        // Whole blocks written with O_DIRECT: nothing before `at` is written again.
        let at = st.at;
        self.settle(self.files.len() - 1, at);
        Ok(())
    }

    /// Stops writing the current volume with O_DIRECT: the staged bytes go through the page
    /// cache and so does everything after them.
    fn give_up_direct(&mut self) -> Result<()> {
        let Some(st) = self.stage.take() else {
            return Ok(());
        };
        let (f, p) = self.files.last().expect("a volume is open");
        crate::io::set_direct(f, false).map_err(|e| Error::io("turn off O_DIRECT on", p, e))?;
        f.write_all_at(&st.buf, st.at)
            .map_err(|e| Error::io("write", p, e).at_offset(st.at))
    }

    /// Makes the current volume whole on its storage: the stage's whole blocks with O_DIRECT,
    /// its unaligned tail through the page cache (the tail stays in the stage, so the block is
    /// written again, whole, once more bytes follow).
    fn write_tail(&mut self) -> Result<()> {
        self.write_stage_blocks()?;
        let Some(st) = self.stage.as_ref() else {
            return Ok(());
        };
        if st.buf.is_empty() {
            return Ok(());
        }
        let (f, p) = self.files.last().expect("a volume is open");
        crate::io::set_direct(f, false)
            .and_then(|()| f.write_all_at(&st.buf, st.at))
            .and_then(|()| crate::io::set_direct(f, true))
            .map_err(|e| Error::io("write", p, e).at_offset(st.at))
    }

    /// Writes `bytes` at `off` of volume `k` (0-based) over what is there (a header), in the
    /// stage too when it holds those bytes.
    fn patch(&mut self, k: usize, off: u64, bytes: &[u8], what: &str) -> Result<()> {
        let current = k + 1 == self.files.len();
        let (f, p) = &self.files[k];
        if let Some(st) = self.stage.as_mut().filter(|_| current) {
            let end = off + bytes.len() as u64;
            let (s, e) = (off.max(st.at), end.min(st.at + st.buf.len() as u64));
            if s < e {
                st.buf[(s - st.at) as usize..(e - st.at) as usize]
                    .copy_from_slice(&bytes[(s - off) as usize..(e - off) as usize]);
            }
            if end <= st.at {
                // On the storage only: a buffered write, O_DIRECT off for it.
                return crate::io::set_direct(f, false)
                    .and_then(|()| f.write_all_at(bytes, off))
                    .and_then(|()| crate::io::set_direct(f, true))
                    .map_err(|e| Error::io(what, p, e));
            }
            if off >= st.at {
                return Ok(());
            }
            // Across the stage's start: the part before it on the storage.
            let n = (st.at - off) as usize;
            return crate::io::set_direct(f, false)
                .and_then(|()| f.write_all_at(&bytes[..n], off))
                .and_then(|()| crate::io::set_direct(f, true))
                .map_err(|e| Error::io(what, p, e));
        }
        f.write_all_at(bytes, off)
            .map_err(|e| Error::io(what, p, e))
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
    pub(crate) fn read_record(&mut self, volume: u16, off: u64, len: usize) -> Result<Vec<u8>> {
        let Some(s) = self.sealer.clone() else {
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
        if self.stage.is_some() {
            for part in parts {
                self.stage_append(part)?;
            }
            return Ok((self.cur(), off));
        }
        let (f, p) = self.files.last_mut().expect("a volume is open");
        let mut at = off;
        for part in parts {
            f.write_all_at(part, at)
                .map_err(|e| Error::io("write", &*p, e).at_offset(at))?;
            at += part.len() as u64;
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
    pub(crate) fn read_at(&mut self, volume: u16, off: u64, buf: &mut [u8]) -> Result<()> {
        if volume as usize == self.files.len() {
            if let Some(st) = &self.stage {
                // Bytes still in the stage come from there; the rest from the storage.
                let end = off + buf.len() as u64;
                if off >= st.at && end <= st.at + st.buf.len() as u64 {
                    let s = (off - st.at) as usize;
                    buf.copy_from_slice(&st.buf[s..s + buf.len()]);
                    return Ok(());
                }
                self.write_tail()?;
            }
        }
        let direct = self.stage.is_some() && volume as usize == self.files.len();
        let (f, p) = self
            .files
            .get((volume as usize).wrapping_sub(1))
            .ok_or_else(|| Error::invalid(format!("volume {volume} was not written")))?;
        // A buffered read of the O_DIRECT volume: O_DIRECT off for it.
        let r = if direct {
            crate::io::set_direct(f, false)
                .and_then(|()| f.read_exact_at(buf, off))
                .and_then(|()| crate::io::set_direct(f, true))
        } else {
            f.read_exact_at(buf, off)
        };
        r.map_err(|e| Error::io("read back", p, e).at_offset(off))
    }
    /// fsyncs every volume, calls `before_rename` (create removes its journal there: killed
    /// after the renames, a finished image would keep a stale journal beside it; killed
    /// before them, the next run starts the image afresh), renames the volumes (last first)
    /// and fsyncs the directory.
    pub(crate) fn commit(mut self, before_rename: impl FnOnce()) -> Result<Vec<PathBuf>> {
        self.write_tail()?;
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
    pub(crate) fn abandon(mut self) {
        let _ = self.write_tail();
        // The partial files stay (no footer: clearly incomplete); make sure they are on disk.
        for (f, _) in &self.files {
            let _ = f.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            compat: 0,
            incompat: FEAT_SPLIT,
            volume: 1,
            uuid: [9; 16],
            parent_uuid: [0; 16],
            parent_media_hash: [0; 32],
            created: 1_700_000_000,
            disk_size: 64 << 20,
            sector_size: 512,
            chunk_size: 1 << 20,
            segment_chunks: 1024,
            split_size: 7 << 20,
            model: "M".into(),
            serial: "S".into(),
            source_name: "/dev/x".into(),
            parent_path: String::new(),
            crypt: None,
        }
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as u8)
            .collect()
    }

    /// Records of every size class (tiny, unaligned, larger than the stage) written through
    /// the O_DIRECT stage, through the page cache from the start (`no-odirect`) and with
    /// O_DIRECT given up midway (`odirect-refused-later`), with syncs, read-backs and a header
    /// patch between them and volumes split: every volume ends up holding exactly the stream
    /// written, each read back returns what was written, and `lens` is right after each sync.
    #[test]
    fn volumes_hold_the_stream_whatever_the_write_path() {
        for mode in ["direct", "no-odirect", "odirect-refused-later"] {
            let d = std::env::temp_dir().join(format!("lifeboat-vw-{mode}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            let base = d.join("img.lbi");
            let mut h = header();
            let mut vw = VolumeWriter::new(&base, h.clone(), Some(7 << 20)).unwrap();
            let probe = d.join("probe");
            std::fs::write(&probe, b"").unwrap();
            let direct_here = crate::io::set_direct(&File::open(&probe).unwrap(), true).is_ok();
            if !direct_here {
                crate::errln!(
                    "{} does not do O_DIRECT: the buffered path only",
                    d.display()
                );
            }
            assert_eq!(
                vw.stage.is_some(),
                direct_here && mode != "no-odirect",
                "{mode}"
            );
            // The expected content of each volume.
            let mut want: Vec<Vec<u8>> = vec![h.encode().to_vec()];
            let mut written: Vec<(u16, u64, Vec<u8>)> = Vec::new();
            let sizes = [
                1usize,
                4095,
                4096,
                4097,
                100,
                1 << 20,
                3 << 20,
                5 << 20,
                777,
                12_345,
                2 << 20,
                1,
                6 << 20,
                513,
            ];
            for (k, &n) in sizes.iter().enumerate() {
                let b = bytes(n, k as u32);
                // Two parts, as a group payload is written.
                let (x, y) = b.split_at(n / 3);
                let (v, off) = vw.record(&[x, y]).unwrap();
                while want.len() < v as usize {
                    let mut hv = h.clone();
                    hv.volume = want.len() as u32 + 1;
                    want.push(hv.encode().to_vec());
                }
                assert_eq!(off, want[v as usize - 1].len() as u64, "{mode} record {k}");
                want[v as usize - 1].extend_from_slice(&b);
                written.push((v, off, b));
                if k % 4 == 3 {
                    vw.sync().unwrap();
                    let lens = vw.lens().unwrap();
                    let exp: Vec<u64> = want.iter().map(|w| w.len() as u64).collect();
                    assert_eq!(lens, exp, "{mode} lens after sync {k}");
                }
                if k % 3 == 2 {
                    // A record read back: the latest and an early one.
                    for (v, off, b) in [written.last().unwrap(), &written[0]] {
                        let got = vw.read_record(*v, *off, b.len()).unwrap();
                        assert!(got == *b, "{mode} read back of record at {v}:{off}");
                    }
                }
                if k == 5 {
                    // A header rewritten in place (a key slot) in every volume so far.
                    let mut hh = h.clone();
                    hh.created += 1;
                    for (j, w) in want.iter_mut().enumerate() {
                        hh.volume = j as u32 + 1;
                        vw.patch(j, 0, &hh.encode(), "patch").unwrap();
                        w[..HEADER_SIZE].copy_from_slice(&hh.encode());
                    }
                    vw.header.created += 1;
                    h.created += 1;
                }
            }
            if mode != "odirect-refused-later" {
                assert_eq!(
                    vw.stage.is_some(),
                    direct_here && mode == "direct",
                    "{mode}"
                );
            }
            let finals = vw.commit(|| {}).unwrap();
            assert_eq!(finals.len(), want.len(), "{mode}");
            for (k, f) in finals.iter().enumerate() {
                let got = std::fs::read(f).unwrap();
                assert!(got == want[k], "{mode}: volume {} differs", k + 1);
            }
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    /// A resumed writer goes on at the unaligned end of a volume cut back to its checkpoint:
    /// the bytes before stay, the new ones follow.
    #[test]
    fn a_resumed_volume_goes_on_at_its_unaligned_end() {
        let d = std::env::temp_dir().join(format!("lifeboat-vw-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let base = d.join("img.lbi");
        let h = header();
        let mut vw = VolumeWriter::new(&base, h.clone(), None).unwrap();
        let a = bytes(10_000, 1);
        vw.record(&[&a]).unwrap();
        vw.sync().unwrap();
        let lens = vw.lens().unwrap();
        vw.record(&[&bytes(50_000, 2)]).unwrap();
        vw.abandon();
        let mut vw = VolumeWriter::resume(&base, h.clone(), None, &lens).unwrap();
        let b = bytes(3 << 20, 3);
        assert_eq!(vw.record(&[&b]).unwrap(), (1, lens[0]));
        let finals = vw.commit(|| {}).unwrap();
        let mut want = h.encode().to_vec();
        want.extend_from_slice(&a);
        want.extend_from_slice(&b);
        assert!(std::fs::read(&finals[0]).unwrap() == want);
        let _ = std::fs::remove_dir_all(&d);
    }
}
