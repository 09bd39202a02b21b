//! Reading `.lbi` images: opening every volume, checking headers and the footer, loading index
//! segments one at a time (bounded memory), reading and checking chunks, and walking a chain of
//! incremental images back to its full image.
use super::crypt::{ChunkHasher, DataKey, Keys, Sealer};
use super::dio::{Stored, VolFile};
use super::format::*;
use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest chain of incrementals followed (a guard against cycles in damaged files).
pub const MAX_CHAIN: usize = 4096;

struct Volume {
    file: VolFile,
    path: PathBuf,
    len: u64,
    /// End of the data stream (the tail starts here in the last volume).
    data_end: u64,
}

/// One opened, structurally checked image (not its parents).
pub struct Image {
    pub path: PathBuf,
    pub header: Header,
    pub footer: Footer,
    /// The used-block plan the image was made with (version 2 images; None before).
    pub usage: Option<crate::fs::UsageMap>,
    vols: Arc<Vec<Volume>>,
    segtab: Vec<SegRef>,
    cache: Option<(usize, Segment)>,
    /// The last group (kind 6) decompressed: its members are read one after the other.
    group: GroupCache,
    /// An encrypted image's data key and what opens its records.
    key: Option<DataKey>,
    seal: Option<Arc<Sealer>>,
    hasher: ChunkHasher,
    /// Encrypted and opened without its key: nothing sealed can be read.
    locked: bool,
}

/// Reads and checks the payloads of one image without borrowing it: the volumes (shared), the
/// header, and an encrypted image's record key. `Send + Sync`, so a verify's reader thread
/// fetches stored bytes while worker threads open, check and decode them
/// ([`PayloadReader::fetch`], then [`PayloadReader::decode`]); [`Image::read_payload`] does
/// both in one call.
#[derive(Clone)]
pub struct PayloadReader {
    vols: Arc<Vec<Volume>>,
    header: Header,
    path: PathBuf,
    /// What opens the records of an encrypted image (None: payloads are stored as they are).
    seal: Option<Arc<Sealer>>,
}

/// One decompressed group and where its payload is (volume, offset, length, CRC).
#[derive(Default)]
struct GroupCache {
    key: Option<(u16, u64, u32, u32)>,
    data: Vec<u8>,
}

/// The state of an image file that has no footer.
pub fn incomplete_error(path: &Path) -> Error {
    Error::incomplete(
        "this image is incomplete (no footer): its creation was interrupted or is still running; create it again",
    )
    .at_path(path)
}

fn read_exact(f: &VolFile, path: &Path, buf: &mut [u8], off: u64) -> Result<()> {
    f.read_exact_at(path, buf, off)
        .map_err(|e| read_error(e, path, off))
}

fn read_error(e: std::io::Error, path: &Path, off: u64) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt("image file is truncated")
            .at_path(path)
            .at_offset(off)
    } else {
        Error::io("read", path, e).at_offset(off)
    }
}

impl Image {
    /// Opens the image whose first volume is `path`: checks every volume header and the footer.
    /// An encrypted image is unlocked with the job's keys ([`Keys::global`]).
    pub fn open(path: &Path) -> Result<Image> {
        Image::open_with(path, &Keys::global())
    }

    /// [`Image::open`] with these keys.
    pub fn open_with(path: &Path, keys: &Keys) -> Result<Image> {
        Image::open_impl(path, keys, &|n| volume_path(path, n), false)
    }

    /// [`Image::open_from_storage`] with the file of volume `n` (2, 3, …) named by `volume`:
    /// how a copy still under its `.partial` names (`x.lbi.partial`, `x.lbi.002.partial`) is
    /// checked.
    pub fn open_named_from_storage(
        path: &Path,
        keys: &Keys,
        volume: &dyn Fn(u32) -> PathBuf,
    ) -> Result<Image> {
        Image::open_impl(path, keys, volume, true)
    }

    /// [`Image::open_with`] reading every volume from its storage, not from the page cache
    /// (O_DIRECT, or the cache dropped first: see [`super::dio`]): what the verify after
    /// writing reads.
    pub fn open_from_storage(path: &Path, keys: &Keys) -> Result<Image> {
        Image::open_impl(path, keys, &|n| volume_path(path, n), true)
    }

    /// Whether every volume is read with O_DIRECT (else through the page cache, dropped
    /// first when opened with [`Image::open_from_storage`]).
    pub fn reads_directly(&self) -> bool {
        self.vols.iter().all(|v| v.file.is_direct())
    }

    fn open_impl(
        path: &Path,
        keys: &Keys,
        volume: &dyn Fn(u32) -> PathBuf,
        from_storage: bool,
    ) -> Result<Image> {
        let wrap = |f: File, p: &Path| -> Result<VolFile> {
            if from_storage {
                VolFile::from_storage(f, p)
            } else {
                Ok(VolFile::cached(f))
            }
        };
        let file = match crate::io::open::open_regular(path, "an image file") {
            Ok(f) => f,
            Err(e) if e.kind == crate::ErrorKind::NotFound => {
                let mut partial = path.as_os_str().to_os_string();
                partial.push(".partial");
                if Path::new(&partial).exists() {
                    return Err(incomplete_error(Path::new(&partial)));
                }
                return Err(Error {
                    msg: "cannot open the image".into(),
                    ..e
                });
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let file = wrap(file, path)?;
        let len = meta.len();
        let mut hb = [0u8; HEADER_SIZE];
        if len < HEADER_SIZE as u64 {
            return Err(Error::corrupt(
                "not a Lifeboat image: the file is shorter than an image header",
            )
            .at_path(path));
        }
        read_exact(&file, path, &mut hb, 0)?;
        let mut header = Header::decode(&hb).map_err(|e| e.at_path(path))?;
        if header.volume != 1 {
            return Err(Error::invalid(format!(
                "{} is volume {} of a split image; give the first volume (the name without .NNN)",
                path.display(),
                header.volume
            )));
        }
        let overhead = if header.is_encrypted() {
            super::crypt::OVERHEAD as u64
        } else {
            0
        };
        let mut vols = vec![Volume {
            file,
            path: path.to_path_buf(),
            len,
            data_end: len,
        }];
        // Further volumes: take every consecutive one that exists; the footer says how many there must be.
        if header.incompat & FEAT_SPLIT != 0 {
            for n in 2u32..=65535 {
                let vp = volume(n);
                let f = match crate::io::open::open_regular(&vp, "an image volume") {
                    Ok(f) => f,
                    Err(e) if e.kind == crate::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                };
                let vlen = f.metadata().map_err(|e| Error::io("stat", &vp, e))?.len();
                let f = wrap(f, &vp)?;
                let mut vb = [0u8; HEADER_SIZE];
                if vlen < HEADER_SIZE as u64 {
                    return Err(Error::corrupt("image volume is truncated").at_path(&vp));
                }
                read_exact(&f, &vp, &mut vb, 0)?;
                let vh = Header::decode(&vb).map_err(|e| e.at_path(&vp))?;
                let mut same = vh.clone();
                same.volume = 1;
                // Key slots are only read from volume 1 (`image add-key` rewrites every volume,
                // the first last).
                if let (Some(a), Some(b)) = (same.crypt.as_mut(), header.crypt.as_ref()) {
                    a.slots = b.slots;
                }
                if vh.uuid != header.uuid {
                    return Err(Error::corrupt(format!(
                        "{} belongs to another image (UUID {}, expected {})",
                        vp.display(),
                        uuid_str(&vh.uuid),
                        uuid_str(&header.uuid)
                    )));
                }
                if vh.volume != n || same != header {
                    return Err(Error::corrupt(format!(
                        "{} is not volume {n} of this image",
                        vp.display()
                    )));
                }
                vols.push(Volume {
                    file: f,
                    path: vp,
                    len: vlen,
                    data_end: vlen,
                });
            }
        }
        let last = vols.len() - 1;
        let lv = &vols[last];
        if lv.len < (HEADER_SIZE + FOOTER_SIZE) as u64 {
            if header.incompat & FEAT_SPLIT != 0 {
                return Err(missing_volume_or_incomplete(path, vols.len() as u32 + 1));
            }
            return Err(incomplete_error(path));
        }
        let mut fb = [0u8; FOOTER_SIZE];
        read_exact(&lv.file, &lv.path, &mut fb, lv.len - FOOTER_SIZE as u64)?;
        let footer = match Footer::decode(&fb) {
            None if header.incompat & FEAT_SPLIT != 0 => {
                return Err(missing_volume_or_incomplete(path, vols.len() as u32 + 1))
            }
            None => return Err(incomplete_error(path)),
            Some(Err(m)) => {
                return Err(Error::corrupt(m)
                    .at_path(&lv.path)
                    .at_offset(lv.len - FOOTER_SIZE as u64))
            }
            Some(Ok(f)) => f,
        };
        if footer.uuid != header.uuid {
            return Err(
                Error::corrupt("image footer belongs to another image (UUID mismatch)")
                    .at_path(&lv.path),
            );
        }
        if footer.volumes as usize != vols.len() {
            if (footer.volumes as usize) > vols.len() {
                let want = volume_path(path, vols.len() as u32 + 1);
                return Err(Error::incomplete(format!(
                    "the image is incomplete: volume {} of {} is missing (looked for {}); put it next to {}",
                    vols.len() + 1,
                    footer.volumes,
                    want.display(),
                    path.display()
                )));
            }
            return Err(Error::corrupt(format!(
                "the footer of {} says the image has {} volumes but {} were found",
                lv.path.display(),
                footer.volumes,
                vols.len()
            )));
        }
        if footer.chunks != header.chunk_count() || footer.segments as u64 != header.segment_count()
        {
            return Err(Error::corrupt(
                "image footer does not match the header (chunk or segment count)",
            )
            .at_path(&lv.path));
        }
        let tab_len = footer.segments as u64 * SEGTAB_ENTRY as u64;
        let tail_len = tab_len + FOOTER_SIZE as u64;
        if footer.segtab_offset < HEADER_SIZE as u64
            || footer.segtab_offset.checked_add(tail_len) != Some(lv.len)
        {
            return Err(Error::corrupt(
                "image footer points outside the file (truncated or damaged)",
            )
            .at_path(&lv.path));
        }
        let segtab_offset = footer.segtab_offset;
        let mut tb = vec![0u8; tab_len as usize];
        read_exact(&lv.file, &lv.path, &mut tb, segtab_offset)?;
        if crc32fast::hash(&tb) != footer.segtab_crc {
            return Err(
                Error::corrupt("image segment table is damaged (CRC32 mismatch)")
                    .at_path(&lv.path)
                    .at_offset(segtab_offset),
            );
        }
        // Version 2: the usage record sits just before the segment table; in an encrypted image
        // it is the sealed tail record (the header's text fields, then the usage record).
        let mut usage = None;
        // Unlocked once the image is known complete (an unfinished one is reported as such
        // without its passphrase).
        let key = match &header.crypt {
            Some(_) if keys.is_locked() => None,
            Some(c) => Some(keys.unlock(path, c)?.0),
            None => None,
        };
        let locked = header.crypt.is_some() && key.is_none();
        let seal = key.as_ref().map(|k| Arc::new(Sealer::new(k, &header)));
        if locked {
            // Its tail stays sealed: the text fields (the parent path too) are unknown.
            let ul = footer.usage_len as u64;
            if ul < (super::crypt::OVERHEAD + super::crypt::TEXT_LEN) as u64
                || footer.usage_len > MAX_USAGE_LEN + 1024
                || segtab_offset < HEADER_SIZE as u64 + ul
            {
                return Err(
                    Error::corrupt("image footer has an invalid tail record length")
                        .at_path(&vols[last].path),
                );
            }
        } else if let Some(seal) = &seal {
            let ul = footer.usage_len as u64;
            if ul < (super::crypt::OVERHEAD + super::crypt::TEXT_LEN) as u64
                || footer.usage_len > MAX_USAGE_LEN + 1024
                || segtab_offset < HEADER_SIZE as u64 + ul
            {
                return Err(
                    Error::corrupt("image footer has an invalid tail record length")
                        .at_path(&vols[last].path),
                );
            }
            let mut ub = vec![0u8; ul as usize];
            read_exact(
                &vols[last].file,
                &vols[last].path,
                &mut ub,
                segtab_offset - ul,
            )?;
            let Some(pt) = seal.open(&seal.tail_ad(&tb, &fb), &mut ub) else {
                return Err(Error::corrupt(
                    "the image's tail (its description, segment table or footer) does not \
                     authenticate: it was changed after the image was written",
                )
                .at_path(&vols[last].path)
                .at_offset(segtab_offset - ul));
            };
            let (text, rec) = pt.split_at(super::crypt::TEXT_LEN);
            header.set_text_area(text);
            if !rec.is_empty() {
                let json = decode_usage(rec).map_err(|m| Error::corrupt(m).at_path(path))?;
                usage = Some(serde_json::from_slice(json).map_err(|e| {
                    Error::corrupt("image usage record is not valid")
                        .at_path(path)
                        .caused_by(e)
                })?);
            }
        } else if footer.usage_len > 0 {
            let ul = footer.usage_len as u64;
            if header.version < 2
                || footer.usage_len > MAX_USAGE_LEN
                || segtab_offset < HEADER_SIZE as u64 + ul
            {
                return Err(
                    Error::corrupt("image footer has an invalid usage record length")
                        .at_path(&vols[last].path),
                );
            }
            let mut ub = vec![0u8; ul as usize];
            read_exact(
                &vols[last].file,
                &vols[last].path,
                &mut ub,
                segtab_offset - ul,
            )?;
            let json = decode_usage(&ub).map_err(|m| {
                Error::corrupt(m)
                    .at_path(&vols[last].path)
                    .at_offset(segtab_offset - ul)
            })?;
            usage = Some(serde_json::from_slice(json).map_err(|e| {
                Error::corrupt("image usage record is not valid")
                    .at_path(&vols[last].path)
                    .caused_by(e)
            })?);
        }
        vols[last].data_end = segtab_offset - footer.usage_len as u64;
        let sc = header.segment_chunks as u64;
        let max_seg_len = Segment::encoded_len(header.segment_chunks as usize, 0) as u64
            + (sc * header.chunk_size as u64 / header.sector_size as u64 / 2 + 1)
                * BAD_RANGE_SIZE as u64;
        let mut segtab = Vec::with_capacity(footer.segments as usize);
        for k in 0..footer.segments as usize {
            let r = SegRef::decode(&tb[k * SEGTAB_ENTRY..(k + 1) * SEGTAB_ENTRY]);
            let ok = r.first_chunk == k as u64 * sc
                && r.volume >= 1
                && (r.volume as usize) <= vols.len()
                && r.offset >= HEADER_SIZE as u64
                && (r.len as u64) <= max_seg_len.min(MAX_SEGMENT_LEN)
                && r.offset
                    .checked_add(r.len as u64 + overhead)
                    .is_some_and(|e| e <= vols[r.volume as usize - 1].data_end);
            if !ok {
                return Err(
                    Error::corrupt(format!("image segment table entry {k} is invalid"))
                        .at_path(&vols[last].path),
                );
            }
            segtab.push(r);
        }
        Ok(Image {
            path: path.to_path_buf(),
            header,
            footer,
            usage,
            vols: Arc::new(vols),
            segtab,
            cache: None,
            group: GroupCache::default(),
            hasher: seal.as_ref().map_or(ChunkHasher::Plain, |s| s.hasher()),
            key,
            seal,
            locked,
        })
    }

    /// An encrypted image opened without its key ([`Keys::locked`]): its volumes, header and
    /// footer are known, its index and payloads cannot be read.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// The data key of an encrypted image (None without encryption).
    pub fn data_key(&self) -> Option<&DataKey> {
        self.key.as_ref()
    }

    /// How this image's chunk hashes are made (keyed in an encrypted image).
    pub fn hasher(&self) -> ChunkHasher {
        self.hasher
    }

    /// Bytes a record takes in the file beyond its length in the index (the seal).
    pub fn record_overhead(&self) -> u64 {
        if self.seal.is_some() {
            super::crypt::OVERHEAD as u64
        } else {
            0
        }
    }

    /// Reads the record of `len` bytes at `off` of volume `vi` (0-based) into `buf`: as
    /// stored, or opened when the image is encrypted. `false`: it does not authenticate.
    fn read_record(&self, vi: usize, off: u64, len: usize, buf: &mut Vec<u8>) -> Result<bool> {
        let v = &self.vols[vi];
        let Some(seal) = &self.seal else {
            buf.resize(len, 0);
            read_exact(&v.file, &v.path, buf, off)?;
            return Ok(true);
        };
        buf.resize(len + super::crypt::OVERHEAD, 0);
        read_exact(&v.file, &v.path, buf, off)?;
        if seal.open_record(vi as u16 + 1, off, buf).is_none() {
            return Ok(false);
        }
        let at = super::crypt::NONCE_LEN;
        buf.copy_within(at..at + len, 0);
        buf.truncate(len);
        Ok(true)
    }

    /// The paths of all volumes, first to last.
    pub fn volume_paths(&self) -> Vec<PathBuf> {
        self.vols.iter().map(|v| v.path.clone()).collect()
    }
    /// Total size of all volume files.
    pub fn file_bytes(&self) -> u64 {
        self.vols.iter().map(|v| v.len).sum()
    }
    pub fn segment_refs(&self) -> &[SegRef] {
        &self.segtab
    }
    /// (path, length) of each volume.
    pub fn volume_lens(&self) -> Vec<(PathBuf, u64)> {
        self.vols.iter().map(|v| (v.path.clone(), v.len)).collect()
    }

    /// Disk byte range of chunk `i`, for messages.
    pub fn chunk_range(&self, i: u64) -> (u64, u64) {
        let s = i * self.header.chunk_size as u64;
        (s, s + self.header.chunk_len(i) as u64)
    }

    /// Loads index segment `k` (replacing the cached one).
    pub fn segment(&mut self, k: usize) -> Result<&Segment> {
        if self.locked {
            return Err(Error::invalid(
                "this image is encrypted and was opened without its passphrase: its index \
                 cannot be read; give --passphrase-file FILE",
            )
            .at_path(&self.path));
        }
        if self.cache.as_ref().is_none_or(|(c, _)| *c != k) {
            let r = *self
                .segtab
                .get(k)
                .ok_or_else(|| Error::corrupt("index segment number out of range"))?;
            let v = &self.vols[r.volume as usize - 1];
            let mut b = Vec::new();
            let authentic =
                self.read_record(r.volume as usize - 1, r.offset, r.len as usize, &mut b)?;
            let sc = self.header.segment_chunks as u64;
            let first = k as u64 * sc;
            let n = (self.header.chunk_count() - first).min(sc) as usize;
            let seg = if authentic {
                Segment::decode(&b, &self.header, first, n)
            } else {
                Err("index segment does not authenticate (changed after it was written)".into())
            };
            let seg = seg.map_err(|m| {
                let end =
                    ((first + n as u64) * self.header.chunk_size as u64).min(self.header.disk_size);
                Error::corrupt(format!(
                    "{m}: the index of disk bytes {}..{end} is damaged",
                    first * self.header.chunk_size as u64
                ))
                .at_path(&v.path)
                .at_offset(r.offset)
            })?;
            self.cache = Some((k, seg));
        }
        Ok(&self.cache.as_ref().expect("segment cached above").1)
    }

    /// The index entry of chunk `i`.
    pub fn entry(&mut self, i: u64) -> Result<Entry> {
        if i >= self.header.chunk_count() {
            return Err(Error::corrupt("chunk number out of range"));
        }
        let sc = self.header.segment_chunks as u64;
        let seg = self.segment((i / sc) as usize)?;
        Ok(seg.entries[(i - seg.first_chunk) as usize])
    }

    /// A reader of this image's payloads that other threads can use while this image is
    /// borrowed (it shares the open volumes).
    pub fn payload_reader(&self) -> PayloadReader {
        PayloadReader {
            vols: Arc::clone(&self.vols),
            header: self.header.clone(),
            path: self.path.clone(),
            seal: self.seal.clone(),
        }
    }

    /// Reads chunk `i`'s payload into `out` (its full length) using `scratch` for compressed
    /// bytes. Returns the entry; for `Kind::Parent` `out` is untouched (the caller asks the
    /// parent). Checks the CRC, the payload bounds and the decompressed length, not the hash.
    pub fn read_payload(&mut self, i: u64, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<Entry> {
        let e = self.entry(i)?;
        let r = self.payload_reader();
        if e.kind == Kind::Group {
            let len = self.header.chunk_len(i);
            r.check_group_entry(i, &e)?;
            let key = (e.volume, e.offset, e.len, e.crc);
            if self.group.key != Some(key) {
                self.group.key = None;
                r.fetch(i, &e, scratch)?;
                r.decode_group(i, &e, scratch, &mut self.group.data)?;
                self.group.key = Some(key);
            }
            out[..len].copy_from_slice(r.group_member(i, &e, &self.group.data, len)?);
        } else {
            r.read(i, &e, out, scratch)?;
        }
        Ok(e)
    }

    /// Every unreadable range recorded in the image (loads each segment once).
    pub fn bad_ranges(&mut self, limit: usize) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for k in 0..self.segtab.len() {
            let seg = self.segment(k)?;
            for &r in &seg.bad {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(r);
            }
        }
        Ok(out)
    }
}

impl PayloadReader {
    /// A reader of the records of an image still being written (`header`, its volumes so far
    /// `vols`, opened by the caller: see [`super::ahead`]): no footer yet, so a record is only
    /// checked to start after the header; where the data ends is the caller's to know.
    pub(super) fn unfinished(
        path: &Path,
        header: Header,
        vols: Vec<(VolFile, PathBuf)>,
        seal: Option<Arc<Sealer>>,
    ) -> PayloadReader {
        let vols = vols
            .into_iter()
            .map(|(file, path)| Volume {
                file,
                path,
                len: u64::MAX,
                data_end: u64::MAX,
            })
            .collect();
        PayloadReader {
            vols: Arc::new(vols),
            header,
            path: path.to_path_buf(),
            seal,
        }
    }

    /// Whether every volume is read directly from its storage (O_DIRECT).
    pub(super) fn reads_directly(&self) -> bool {
        self.vols.iter().all(|v| v.file.is_direct())
    }

    fn damaged(&self, i: u64, what: &str, vol: usize, off: u64) -> Error {
        let s = i * self.header.chunk_size as u64;
        let e = s + self.header.chunk_len(i) as u64;
        let path = self
            .vols
            .get(vol)
            .map(|v| v.path.clone())
            .unwrap_or_else(|| self.path.clone());
        Error::corrupt(format!(
            "chunk {i} (disk bytes {s}..{e}) is damaged: {what}"
        ))
        .at_path(path)
        .at_offset(off)
    }

    /// Whether entry `e` has stored bytes to read (kinds raw, LZ4, zstd, and a group member).
    pub fn is_stored(e: &Entry) -> bool {
        matches!(e.kind, Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group)
    }

    /// Reads chunk `i` (entry `e`) into `out` (its full length) using `scratch` for stored
    /// bytes: [`fetch`](Self::fetch) then [`decode`](Self::decode) for stored kinds; zeros for
    /// zero and unallocated chunks; nothing for `Kind::Parent` (the caller asks the parent).
    /// Checks the entry, the CRC, the payload bounds and the decompressed length, not the hash.
    pub fn read(&self, i: u64, e: &Entry, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<()> {
        let len = self.header.chunk_len(i);
        let out = &mut out[..len];
        match e.kind {
            Kind::Zero => {
                if e.len != 0 {
                    return Err(self.damaged(i, "a zero chunk with a payload", 0, 0));
                }
                out.fill(0);
            }
            Kind::Unallocated => {
                if self.header.incompat & FEAT_USED_BLOCKS == 0 || e.len != 0 {
                    return Err(self.damaged(
                        i,
                        "an unallocated chunk in an image made of all sectors",
                        0,
                        0,
                    ));
                }
                out.fill(0);
            }
            Kind::Parent => {
                if !self.header.has_parent() || e.len != 0 {
                    return Err(self.damaged(
                        i,
                        "a reference to a parent that this image does not have",
                        0,
                        0,
                    ));
                }
            }
            Kind::Group => {
                // One member at a time, without the group cache `Image::read_payload` keeps.
                let mut group = Vec::new();
                self.check_group_entry(i, e)?;
                self.fetch(i, e, scratch)?;
                self.decode_group(i, e, scratch, &mut group)?;
                out.copy_from_slice(self.group_member(i, e, &group, len)?);
            }
            Kind::Raw => {
                self.fetch(i, e, scratch)?;
                // `fetch` checked the length: the record's plaintext is the chunk.
                out.copy_from_slice(self.unseal(i, e, scratch)?);
            }
            Kind::Lz4 | Kind::Zstd => {
                self.fetch(i, e, scratch)?;
                self.decode(i, e, scratch, out)?;
            }
        }
        Ok(())
    }

    /// Reads the stored bytes of chunk `i` (entry `e`, a stored kind) into `buf` (resized to
    /// the payload's length, plus the seal's [`OVERHEAD`](super::crypt::OVERHEAD) in an
    /// encrypted image), after checking the entry: its kind against the image's features, its
    /// length against the chunk's, its place inside the volume's data. The I/O half of
    /// [`read`](Self::read); nothing is checked against the tag or the CRC yet.
    pub fn fetch(&self, i: u64, e: &Entry, buf: &mut Vec<u8>) -> Result<()> {
        let (v, n) = self.record_of(i, e)?;
        buf.resize(n, 0);
        read_exact(&v.file, &v.path, buf, e.offset)
    }

    /// [`fetch`](Self::fetch) into a page-aligned buffer: the record is read without a copy
    /// when the image was opened to read [from its storage](Image::open_from_storage) with
    /// O_DIRECT (an aligned window around it).
    pub fn fetch_into(&self, i: u64, e: &Entry, st: &mut Stored) -> Result<()> {
        let (v, n) = self.record_of(i, e)?;
        v.file
            .read_stored(&v.path, e.offset, n, st)
            .map_err(|err| read_error(err, &v.path, e.offset))
    }

    /// The volume and record length of chunk `i`'s payload (entry `e`, a stored kind), after
    /// the checks [`fetch`](Self::fetch) names.
    fn record_of(&self, i: u64, e: &Entry) -> Result<(&Volume, usize)> {
        let len = self.header.chunk_len(i);
        if e.kind == Kind::Group {
            // The group's payload, shared by its members.
            self.check_group_entry(i, e)?;
            return self.record_at(i, e);
        }
        if e.kind == Kind::Zstd && self.header.incompat & FEAT_ZSTD == 0 {
            return Err(self.damaged(i, "a zstd chunk in an image without zstd", 0, 0));
        }
        let vi = e.volume as usize;
        let max = max_payload(e.kind, len);
        let ok_len = if e.kind == Kind::Raw {
            e.len as usize == len
        } else {
            e.len > 0 && e.len as usize <= max
        };
        if !Self::is_stored(e) || vi == 0 || vi > self.vols.len() || !ok_len {
            return Err(self.damaged(i, "its index entry is invalid", 0, 0));
        }
        self.record_at(i, e)
    }

    /// The volume of the record of `e.len` stored bytes at `e.offset` of volume `e.volume` (a
    /// checked entry) and its length in the file, after checking it lies inside that
    /// volume's data.
    fn record_at(&self, i: u64, e: &Entry) -> Result<(&Volume, usize)> {
        let vi = e.volume as usize;
        let v = &self.vols[vi - 1];
        let n = e.len as usize + self.overhead();
        if e.offset < HEADER_SIZE as u64
            || e.offset
                .checked_add(n as u64)
                .is_none_or(|x| x > v.data_end)
        {
            return Err(self.damaged(
                i,
                "its payload lies outside the file (truncated?)",
                vi - 1,
                e.offset,
            ));
        }
        Ok((v, n))
    }

    /// Bytes a record takes in the file beyond its length in the index (the seal).
    fn overhead(&self) -> usize {
        if self.seal.is_some() {
            super::crypt::OVERHEAD
        } else {
            0
        }
    }

    /// Turns a fetched record of chunk `i` (entry `e`) into its stored bytes: opens the seal
    /// of an encrypted image in place (the plaintext is a part of `rec`), then checks the
    /// entry's CRC32 (of the plaintext). A record that does not authenticate is damage
    /// (changed after it was written, or moved), as a CRC mismatch is.
    fn unseal<'b>(&self, i: u64, e: &Entry, rec: &'b mut [u8]) -> Result<&'b [u8]> {
        let vi = (e.volume as usize).saturating_sub(1);
        let plain: &[u8] =
            match &self.seal {
                Some(seal) => {
                    let len = e.len as usize;
                    let opened = if rec.len() == len + super::crypt::OVERHEAD {
                        seal.open_record(e.volume, e.offset, rec)
                    } else {
                        None
                    };
                    match opened {
                        Some(p) if p.len() == len => p,
                        _ => return Err(self.damaged(
                            i,
                            "its sealed data does not authenticate (changed after it was written)",
                            vi,
                            e.offset,
                        )),
                    }
                }
                None => rec,
            };
        if crc32fast::hash(plain) != e.crc {
            return Err(self.damaged(i, "CRC32 mismatch in its stored data", vi, e.offset));
        }
        Ok(plain)
    }

    /// Checks the record `stored` of chunk `i` (as [`fetch`](Self::fetch) read it; opened in
    /// place in an encrypted image) against its tag and the entry's CRC and turns it into the
    /// chunk's bytes: the stored bytes themselves (left in `stored`) for a raw chunk, else
    /// decompressed into `out`, which must hold the chunk. The CPU half of
    /// [`read`](Self::read); the chunk hash is the caller's to check (with the image's
    /// [`ChunkHasher`]).
    pub fn decode<'a>(
        &self,
        i: u64,
        e: &Entry,
        stored: &'a mut [u8],
        out: &'a mut [u8],
    ) -> Result<&'a [u8]> {
        let len = self.header.chunk_len(i);
        let vi = (e.volume as usize).saturating_sub(1);
        let stored: &'a [u8] = self.unseal(i, e, stored)?;
        let out = &mut out[..len];
        let n = match e.kind {
            Kind::Raw => return Ok(stored),
            Kind::Lz4 => lz4_flex::block::decompress_into(stored, out).ok(),
            Kind::Zstd => zstd::bulk::decompress_to_buffer(stored, out).ok(),
            _ => None,
        };
        if n != Some(len) {
            return Err(self.damaged(
                i,
                "its compressed data does not decompress to the chunk size",
                vi,
                e.offset,
            ));
        }
        Ok(out)
    }

    /// Checks the index entry of chunk `i`, a group member (kind 6): the image has groups, the
    /// member's place and the member count are possible, the payload's volume and length too.
    pub fn check_group_entry(&self, i: u64, e: &Entry) -> Result<()> {
        if self.header.incompat & FEAT_GROUPS == 0 {
            return Err(self.damaged(i, "a grouped chunk in an image without groups", 0, 0));
        }
        let cs = self.header.chunk_size as usize;
        let (p, m) = (e.member as usize, e.members as usize);
        let vi = e.volume as usize;
        if m < 2
            || p >= m
            || m * cs > MAX_GROUP_BYTES
            || vi == 0
            || vi > self.vols.len()
            || e.len == 0
            || e.len as usize > max_payload(Kind::Group, 0)
        {
            return Err(self.damaged(i, "its index entry is invalid", 0, 0));
        }
        Ok(())
    }

    /// Checks a group's record (as [`fetch`](Self::fetch) read it for member `i`; opened in
    /// place in an encrypted image) against its tag and the CRC and decompresses the whole
    /// group into `group`, after checking that its size fits its member count.
    pub fn decode_group(
        &self,
        i: u64,
        e: &Entry,
        stored: &mut [u8],
        group: &mut Vec<u8>,
    ) -> Result<()> {
        let cs = self.header.chunk_size as usize;
        let m = e.members as usize;
        let vi = e.volume as usize;
        let stored: &[u8] = self.unseal(i, e, stored)?;
        let size = zstd::zstd_safe::get_frame_content_size(stored)
            .ok()
            .flatten()
            .filter(|&n| n as usize > (m - 1) * cs && n as usize <= m * cs);
        let Some(size) = size else {
            return Err(self.damaged(
                i,
                "its group's size does not match its member count",
                vi - 1,
                e.offset,
            ));
        };
        group.resize(size as usize, 0);
        let n = zstd::bulk::decompress_to_buffer(stored, &mut group[..]).ok();
        if n != Some(size as usize) {
            return Err(self.damaged(
                i,
                "its compressed data does not decompress to the group's size",
                vi - 1,
                e.offset,
            ));
        }
        Ok(())
    }

    /// Member `e.member` (chunk `i`, `len` bytes) of a decompressed group.
    pub fn group_member<'a>(
        &self,
        i: u64,
        e: &Entry,
        group: &'a [u8],
        len: usize,
    ) -> Result<&'a [u8]> {
        let a = e.member as usize * self.header.chunk_size as usize;
        group.get(a..a + len).ok_or_else(|| {
            self.damaged(
                i,
                "its group is shorter than its members",
                (e.volume as usize).saturating_sub(1),
                e.offset,
            )
        })
    }
}

fn missing_volume_or_incomplete(path: &Path, next: u32) -> Error {
    Error::incomplete(format!(
        "the image is incomplete: its last volume found has no footer, so either volume {next} is \
         missing (looked for {}; put it next to the first volume) or the image's creation was \
         interrupted (create it again)",
        volume_path(path, next).display()
    ))
    .at_path(path)
}

/// The hash of `len` zero bytes (cached for the common full-chunk length).
pub struct ZeroHash {
    len: usize,
    hash: [u8; 32],
    hasher: ChunkHasher,
}
impl ZeroHash {
    pub fn new(chunk_size: usize, hasher: ChunkHasher) -> Self {
        let z = vec![0u8; chunk_size];
        ZeroHash {
            len: chunk_size,
            hash: hasher.hash(&z),
            hasher,
        }
    }
    pub fn get(&self, len: usize) -> [u8; 32] {
        if len == self.len {
            self.hash
        } else {
            let z = vec![0u8; len.min(self.len)];
            self.hasher.hash(&z)
        }
    }
}

/// An image with all its ancestors: `images[0]` is the one named, the last is the full image.
pub struct Chain {
    pub images: Vec<Image>,
    zero: ZeroHash,
    /// Opened without its parents ([`Chain::alone`]): an incremental's references to the
    /// parent cannot be followed.
    pub alone: bool,
}

/// Where to look for the parent of `child`: next to it by file name first, then as recorded.
pub fn parent_candidates(child: &Path, recorded: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let rec = Path::new(recorded);
    if let (Some(dir), Some(name)) = (child.parent(), rec.file_name()) {
        v.push(dir.join(name));
    }
    // A PARTITION:/path string records the path inside that filesystem.
    if let Some((_, p)) = super::store::split_store(recorded) {
        if let (Some(dir), Some(name)) = (child.parent(), Path::new(&p).file_name()) {
            v.push(dir.join(name));
        }
    } else if !recorded.is_empty() {
        v.push(rec.to_path_buf());
    }
    v.dedup();
    v
}

/// Most directory entries looked at when searching a directory for a parent by its UUID.
const MAX_SCAN: usize = 10_000;

/// The file holding the parent with UUID `want` of the image at `child`: the first of `cands`
/// ([`parent_candidates`]: by file name beside the child, then the recorded path) whose header
/// has that UUID — but before the recorded path, any image in the child's own directory with
/// that UUID (a copy under another name, `image copy`), so that a chain resolves through
/// either copy. A candidate with another UUID is passed over; when no file has the UUID, the
/// first candidate that exists is returned (and the caller reports it as the wrong image).
/// None when no candidate exists.
fn find_parent(child: &Path, cands: &[PathBuf], want: &[u8; 16]) -> Option<PathBuf> {
    let is_it =
        |p: &Path| super::ops::partial_header(p).is_some_and(|h| h.uuid == *want && h.volume == 1);
    let dir = child.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    });
    let beside = |p: &PathBuf| p.parent() == child.parent();
    let (near, far): (Vec<&PathBuf>, Vec<&PathBuf>) = cands.iter().partition(|p| beside(p));
    if let Some(p) = near.iter().find(|p| is_it(p)) {
        return Some(p.to_path_buf());
    }
    if let Some(found) = dir.and_then(|d| scan_for_uuid(d, child, &is_it)) {
        return Some(found);
    }
    if let Some(p) = far.iter().find(|p| is_it(p)) {
        return Some(p.to_path_buf());
    }
    cands.iter().find(|p| p.is_file()).cloned()
}

/// A regular file in `dir` (not `child`) for which `is_it` holds, in name order.
fn scan_for_uuid(dir: &Path, child: &Path, is_it: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .take(MAX_SCAN)
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.file_name() != child.file_name())
        .collect();
    names.sort();
    names.into_iter().find(|p| is_it(p))
}

impl Chain {
    /// Opens `path` and every parent it needs, checking each link (UUID, media hash, geometry,
    /// data key). Encrypted images are unlocked with the job's keys ([`Keys::global`]).
    pub fn open(path: &Path) -> Result<Chain> {
        Chain::open_with(path, &Keys::global())
    }

    /// [`Chain::open`] with these keys (one passphrase for the whole chain).
    pub fn open_with(path: &Path, keys: &Keys) -> Result<Chain> {
        Chain::from_top(Image::open_with(path, keys)?, keys)
    }

    /// The chain of the opened image `top`: `top` and every parent it needs, opened and
    /// checked as [`Chain::open_with`] does.
    pub fn from_top(top: Image, keys: &Keys) -> Result<Chain> {
        let mut images = vec![top];
        loop {
            let child = images.last().expect("chain is never empty");
            if !child.header.has_parent() {
                break;
            }
            if images.len() >= MAX_CHAIN {
                return Err(Error::corrupt(
                    "image chain is too long (a loop between damaged images?)",
                ));
            }
            let want = child.header.parent_uuid;
            let cands = parent_candidates(&child.path, &child.header.parent_path);
            let Some(pp) = find_parent(&child.path, &cands, &want) else {
                let mut looked: Vec<String> =
                    cands.iter().map(|p| p.display().to_string()).collect();
                if let Some(dir) = child.path.parent() {
                    looked.push(format!(
                        "any image with that UUID in {}",
                        if dir.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            dir
                        }
                        .display()
                    ));
                }
                return Err(Error::incomplete(format!(
                    "the image chain is incomplete: the parent image {:?} (UUID {}) that {} needs \
                     is missing (looked for {}); put it next to {}",
                    child.header.parent_path,
                    uuid_str(&want),
                    child.path.display(),
                    if looked.is_empty() {
                        "it nowhere: no parent path is recorded".to_string()
                    } else if child.is_locked() {
                        format!(
                            "{} (its recorded path is sealed: give the passphrase to look there too)",
                            looked.join(" and ")
                        )
                    } else {
                        looked.join(" and ")
                    },
                    child.path.display()
                )));
            };
            let parent = Image::open_with(&pp, keys).map_err(|e| {
                if e.kind != crate::ErrorKind::WrongPassphrase {
                    return e;
                }
                // The incremental opened and its parent does not: their key slots differ (a
                // key added to the incremental alone, or removed from the parent since).
                Error::new(
                    crate::ErrorKind::WrongPassphrase,
                    format!(
                        "wrong passphrase for the parent image {} (UUID {}) of {}: the key \
                         given opens {} but no key slot of its parent (their slots differ: a \
                         key was added to one or removed from the other); give a passphrase or \
                         recovery key that opens the parent (nothing was written)",
                        pp.display(),
                        uuid_str(&want),
                        child.path.display(),
                        child.path.file_name().unwrap_or_default().to_string_lossy()
                    ),
                )
                .at_path(&pp)
            })?;
            if parent.header.uuid != want {
                return Err(Error::corrupt(format!(
                    "{} is not the parent {} needs: its UUID is {}, the parent's is {}; put the right parent image at {}",
                    pp.display(),
                    child.path.display(),
                    uuid_str(&parent.header.uuid),
                    uuid_str(&want),
                    pp.display()
                )));
            }
            if parent.footer.media_hash != child.header.parent_media_hash {
                return Err(Error::corrupt(format!(
                    "{} has the parent's UUID but not its media hash: it was changed after {} was made",
                    pp.display(),
                    child.path.display()
                )));
            }
            if parent.header.disk_size != child.header.disk_size
                || parent.header.chunk_size != child.header.chunk_size
            {
                return Err(Error::corrupt(format!(
                    "{} has another disk size or chunk size than {}",
                    pp.display(),
                    child.path.display()
                )));
            }
            if parent.data_key() != child.data_key() {
                return Err(Error::corrupt(format!(
                    "{} is not encrypted with the data key of {} (an incremental shares its \
                     parent's key)",
                    pp.display(),
                    child.path.display()
                )));
            }
            if images.iter().any(|i| i.header.uuid == parent.header.uuid) {
                return Err(Error::corrupt("image chain loops back on itself"));
            }
            images.push(parent);
        }
        let zero = ZeroHash::new(images[0].header.chunk_size as usize, images[0].hasher());
        Ok(Chain {
            images,
            zero,
            alone: false,
        })
    }

    /// One image without its parents (to verify a copy of it on its own).
    pub fn alone(img: Image) -> Chain {
        Chain {
            zero: ZeroHash::new(img.header.chunk_size as usize, img.hasher()),
            images: vec![img],
            alone: true,
        }
    }

    pub fn top(&self) -> &Image {
        &self.images[0]
    }

    /// Reads chunk `i` as the disk had it, following parents; checks the BLAKE3 of the result
    /// against the named image's index. Returns the top image's entry.
    pub fn read_chunk(&mut self, i: u64, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<Entry> {
        self.read_chunk_resolved(i, out, scratch).map(|r| r.0)
    }

    /// As [`Chain::read_chunk`], also returning the kind the bytes came from after following
    /// parents (`Unallocated` tells restore the chunk held no used block).
    pub fn read_chunk_resolved(
        &mut self,
        i: u64,
        out: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(Entry, Kind)> {
        let top = self.images[0].entry(i)?;
        let len = self.images[0].header.chunk_len(i);
        let mut k = 0;
        let kind = loop {
            let e = self.images[k].read_payload(i, out, scratch)?;
            if e.kind != Kind::Parent {
                break e.kind;
            }
            if k + 1 >= self.images.len() {
                return Err(Error::corrupt(
                    "chunk refers to a parent but the chain ends",
                ));
            }
            k += 1;
        };
        let hash = if matches!(kind, Kind::Zero | Kind::Unallocated) {
            self.zero.get(len)
        } else {
            self.images[0].hasher().hash(&out[..len])
        };
        if hash != top.hash {
            let (s, e) = self.images[0].chunk_range(i);
            let whose = &self.images[k].path;
            return Err(Error::corrupt(format!(
                "chunk {i} (disk bytes {s}..{e}) does not match its BLAKE3 hash (data from {})",
                whose.display()
            ))
            .at_path(&self.images[0].path));
        }
        Ok((top, kind))
    }
}

/// An image (with its chain) read like a disk: random access through the index, one cached
/// chunk. Lets the partition-table code look at the imaged disk without restoring it.
pub struct ImageSource {
    size: u64,
    sector: u32,
    chunk: u64,
    name: String,
    inner: std::sync::Mutex<SourceState>,
}

struct SourceState {
    chain: Chain,
    cached: Option<u64>,
    buf: crate::io::AlignedBuf,
    scratch: Vec<u8>,
}

impl ImageSource {
    pub fn new(chain: Chain) -> ImageSource {
        let h = chain.top().header.clone();
        ImageSource {
            size: h.disk_size,
            sector: h.sector_size,
            chunk: h.chunk_size as u64,
            name: chain.top().path.display().to_string(),
            inner: std::sync::Mutex::new(SourceState {
                chain,
                cached: None,
                buf: crate::io::AlignedBuf::new(h.chunk_size as usize),
                scratch: Vec::new(),
            }),
        }
    }
}

impl crate::io::BlockSource for ImageSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn logical_block_size(&self) -> u32 {
        self.sector
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let i = pos / self.chunk;
            if st.cached != Some(i) {
                st.cached = None;
                st.chain
                    .read_chunk(i, &mut st.buf, &mut st.scratch)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                st.cached = Some(i);
            }
            let within = (pos - i * self.chunk) as usize;
            let take = (self.chunk as usize - within).min(n - done);
            buf[done..done + take].copy_from_slice(&st.buf[within..within + take]);
            done += take;
        }
        Ok(n)
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}
