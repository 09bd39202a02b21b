//! Resuming an interrupted `image create`: the journal `IMAGE.partial.journal` beside the
//! unfinished volumes. It is rewritten atomically (temporary file, fsync, rename) at every
//! checkpoint of the rescue engine, after the volumes are fsynced, and describes one consistent
//! moment: the length of every volume, the index written so far (segments written, the entries
//! of the segments still open, the footer's counters), the engine's map and its resume point,
//! and the next sequence number of the data stream. Removed once the image is complete.
//!
//! What makes a resumed create byte-identical to an uninterrupted one:
//! - The header (image UUID, creation time) is the first run's, taken from the journal.
//! - The volumes are cut back to the journal's lengths; nothing written after the checkpoint
//!   is kept, and everything up to it is exactly what the uninterrupted run wrote.
//! - The engine resumes at its checkpoint with the map of that moment and reads exactly what
//!   the uninterrupted run read from there (`rescue::engine::ResumePoint`), so the chunks
//!   complete in the same order; which chunks the feed still has in its cache does not matter
//!   (bytes not cached are read again from good sectors).
//! - Compression is deterministic for the same level and library; the index is built in the
//!   same order. Compressor batches (zstd groups, see `pack`) are cut at fixed sequence numbers;
//!   a checkpoint inside a batch journals the moment before that batch (the writer writes a
//!   group as one payload) plus the chunks of the batch already emitted (`open_batch`): a
//!   resumed create emits those again first, reading their good sectors from the source again
//!   (`feed::Feed::replay`), so the batch holds the same chunks as in an uninterrupted run.
//!
//! Not covered: a source whose content changed, or a drive whose sectors read differently the
//! second time (a transient error that healed, or a sector that read well and now fails). The
//! image is still correct and complete then; only its bytes can differ from a run that was not
//! interrupted.
//!
//! A resume is refused (exit 4, nothing written) when the source, the image's settings or the
//! used-block plan differ from the first run's; a journal that cannot be read is reported as
//! damaged (exit 5) with what to do.
use super::feed::{clip, Domain};
use super::format::*;
use super::writer::{IndexState, OpenSegment};
use crate::error::{Error, Result};
use crate::rescue::engine::ResumePoint;
use crate::rescue::{ExtentMap, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const JOURNAL_VERSION: u32 = 1;

/// The journal's path for the image at `image`.
pub fn journal_name(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".partial.journal");
    PathBuf::from(s)
}

/// Its temporary name while being rewritten.
pub fn journal_tmp_name(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".partial.journal.tmp");
    PathBuf::from(s)
}

/// What must be the same for a resume (checked against a new run's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The header without its UUID and creation time (hex of the 512 bytes with those zeroed).
    pub header: String,
    pub compress: String,
    pub retries: u32,
    /// The source's identity as the caller knows it (device/inode, serial, size).
    pub source: String,
    /// BLAKE3 of the usage record and the rescue domain.
    pub plan: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenSeg {
    seg: u64,
    filled: usize,
    /// (index in the segment, hex of the 56-byte entry)
    entries: Vec<(usize, String)>,
    bad: Vec<(u64, u64)>,
}

/// See the module documentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub settings: Settings,
    /// The first run's header, hex (volume 1).
    pub header: String,
    pub volume_lens: Vec<u64>,
    /// The engine's map at the checkpoint, as what differs from a new image's map (see
    /// [`map_delta`]).
    pub map: String,
    /// Where the engine goes on (`None`: from the beginning).
    pub resume: Option<ResumePoint>,
    pub next_seq: u64,
    pub written: u64,
    /// The chunks emitted after `next_seq` (in sequence order) before the checkpoint: the part
    /// of a compressor batch the writer could not write yet. A resume emits them again first.
    #[serde(default)]
    pub open_batch: Vec<u64>,
    /// How many times the create was started before the run that wrote this journal (0: the
    /// first run). A resume counts one more and saves it before it writes anything: an
    /// AES-256-GCM image's nonces start with it, so records rewritten at the same places after
    /// a resume never reuse a nonce (`crypt::Sealer::with_run`).
    #[serde(default)]
    pub run: u32,
    segtab: Vec<String>,
    open: Vec<OpenSeg>,
    stored_chunks: u64,
    zero_chunks: u64,
    parent_chunks: u64,
    unallocated_chunks: u64,
    payload_bytes: u64,
    bad_bytes: u64,
    bad_ranges: u64,
}

fn damaged(path: &Path, why: &str) -> Error {
    Error::corrupt(format!(
        "the journal {} of the unfinished image cannot be used ({why}); delete it and the \
         .partial volumes to start the image again",
        path.display()
    ))
    .at_path(path)
}

/// The settings' header text: the header with the UUID and creation time zeroed (and an
/// encrypted image's key slots, which each run makes anew; its text fields, sealed in the
/// image, are compared by hash).
pub fn settings_header(h: &Header) -> String {
    let mut h = h.clone();
    h.uuid = [0; 16];
    h.created = 0;
    h.volume = 1;
    match h.crypt.as_mut() {
        None => hex(&h.encode()),
        Some(c) => {
            c.slots = Default::default();
            let text = blake3::hash(&h.text_area());
            format!("{}+{}", hex(&h.encode()), text.to_hex())
        }
    }
}

impl Journal {
    pub(super) fn new(
        settings: &Settings,
        header: &Header,
        volume_lens: Vec<u64>,
        map: String,
        resume: Option<ResumePoint>,
        idx: &IndexState,
        open_batch: Vec<u64>,
    ) -> Journal {
        let f = &idx.footer;
        let mut h = header.clone();
        h.volume = 1;
        Journal {
            version: JOURNAL_VERSION,
            settings: settings.clone(),
            header: hex(&h.encode()),
            volume_lens,
            map,
            resume,
            next_seq: idx.next_seq,
            written: idx.written,
            open_batch,
            run: 0,
            segtab: idx
                .segtab
                .iter()
                .map(|r| {
                    let mut b = [0u8; SEGTAB_ENTRY];
                    r.encode_into(&mut b);
                    hex(&b)
                })
                .collect(),
            open: idx
                .open
                .iter()
                .map(|(&seg, o)| OpenSeg {
                    seg,
                    filled: o.filled,
                    entries: o
                        .entries
                        .iter()
                        .enumerate()
                        .filter_map(|(k, e)| {
                            e.map(|e| {
                                let mut b = [0u8; ENTRY_SIZE];
                                e.encode_into(&mut b);
                                (k, hex(&b))
                            })
                        })
                        .collect(),
                    bad: o.bad.clone(),
                })
                .collect(),
            stored_chunks: f.stored_chunks,
            zero_chunks: f.zero_chunks,
            parent_chunks: f.parent_chunks,
            unallocated_chunks: f.unallocated_chunks,
            payload_bytes: f.payload_bytes,
            bad_bytes: f.bad_bytes,
            bad_ranges: f.bad_ranges,
        }
    }

    /// The same journal, written by run `run`.
    pub(super) fn in_run(mut self, run: u32) -> Journal {
        self.run = run;
        self
    }

    /// Writes the journal for `image` atomically (temporary file, fsync, rename, directory).
    pub fn save(&self, image: &Path) -> Result<()> {
        let path = journal_name(image);
        let tmp = journal_tmp_name(image);
        let text = serde_json::to_vec(self)
            .map_err(|e| Error::invalid("cannot encode the journal").caused_by(e))?;
        let mut f = crate::io::open::create_fresh(&tmp)?;
        f.write_all(&text)
            .map_err(|e| Error::io("write the journal", &tmp, e))?;
        f.sync_all()
            .map_err(|e| Error::io("fsync the journal", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io("rename the journal into place", &path, e))?;
        super::create::sync_dir(&path);
        Ok(())
    }

    /// Reads the journal of `image` (None when there is none).
    pub fn load(image: &Path) -> Result<Option<Journal>> {
        let path = journal_name(image);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("look at", &path, e)),
        };
        if !md.is_file() || md.len() > 1 << 30 {
            return Err(damaged(&path, "not a regular file of a sane size"));
        }
        let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let j: Journal =
            serde_json::from_slice(&text).map_err(|e| damaged(&path, &e.to_string()))?;
        if j.version != JOURNAL_VERSION {
            return Err(damaged(&path, "written by another version of Lifeboat"));
        }
        Ok(Some(j))
    }

    /// Removes the journal of a finished image.
    pub fn remove(image: &Path) {
        let path = journal_name(image);
        if std::fs::remove_file(&path).is_ok() {
            super::create::sync_dir(&path);
        }
    }

    /// The first run's header.
    pub fn header(&self, image: &Path) -> Result<Header> {
        let path = journal_name(image);
        let b = unhex(&self.header).ok_or_else(|| damaged(&path, "bad header"))?;
        Header::decode(&b).map_err(|e| damaged(&path, &e.to_string()))
    }

    /// The index state at the checkpoint.
    pub(super) fn index(&self, image: &Path, header: &Header) -> Result<IndexState> {
        let path = journal_name(image);
        let bad = |w: &str| damaged(&path, w);
        let sc = header.segment_chunks as u64;
        let chunks = header.chunk_count();
        let mut segtab = Vec::with_capacity(self.segtab.len());
        for s in &self.segtab {
            let b = unhex(s).filter(|b| b.len() == SEGTAB_ENTRY);
            segtab.push(SegRef::decode(&b.ok_or_else(|| bad("bad segment record"))?));
        }
        let mut open = BTreeMap::new();
        for o in &self.open {
            let first = o.seg.checked_mul(sc).filter(|&f| f < chunks);
            let first = first.ok_or_else(|| bad("bad segment number"))?;
            let n = (chunks - first).min(sc) as usize;
            let mut entries = vec![None; n];
            for (k, e) in &o.entries {
                let b = unhex(e).filter(|b| b.len() == ENTRY_SIZE);
                let e = b.and_then(|b| Entry::decode(&b));
                let slot = entries.get_mut(*k).ok_or_else(|| bad("bad entry index"))?;
                *slot = Some(e.ok_or_else(|| bad("bad entry"))?);
            }
            open.insert(
                o.seg,
                OpenSegment {
                    entries,
                    filled: o.filled,
                    bad: o.bad.clone(),
                },
            );
        }
        Ok(IndexState {
            segtab,
            open,
            footer: Footer {
                uuid: header.uuid,
                chunks,
                stored_chunks: self.stored_chunks,
                zero_chunks: self.zero_chunks,
                parent_chunks: self.parent_chunks,
                unallocated_chunks: self.unallocated_chunks,
                payload_bytes: self.payload_bytes,
                bad_bytes: self.bad_bytes,
                bad_ranges: self.bad_ranges,
                ..Default::default()
            },
            written: self.written,
            next_seq: self.next_seq,
            // Written by an earlier run: verified in full after writing.
            digest: Default::default(),
        })
    }
}

/// Why a journal's settings do not fit this job (None: they do).
pub fn resume_mismatch(was: &Settings, now: &Settings) -> Option<String> {
    if was.source != now.source {
        let short = |s: &str| s.split(" [").next().unwrap_or_default().to_string();
        return Some(format!(
            "it was started from another source: {}; this job reads {}",
            short(&was.source),
            short(&now.source)
        ));
    }
    if was.header != now.header {
        return Some(
            "its source size, sector or chunk size, split size, source name or parent differ \
             from this job's"
                .into(),
        );
    }
    if was.compress != now.compress || was.retries != now.retries {
        return Some(format!(
            "it was started with compression {} and {} retries, this job asks for {} and {}",
            was.compress, was.retries, now.compress, now.retries
        ));
    }
    if was.plan != now.plan {
        return Some(
            "the source's partitions or used blocks are not what they were when it was started \
             (or --all-sectors differs)"
                .into(),
        );
    }
    None
}

/// The map as text, as far as it differs from the map a new image starts from (the domain
/// untried, the rest free): the first line is `phase pass current_pos`, then one line
/// `pos size status` per extent, leaving out untried and free extents. (In a map of a large, fragmented disk most extents are the domain's own: they
/// are not repeated at every checkpoint.)
pub fn map_delta(map: &ExtentMap, domain: &Domain) -> String {
    let mut s = format!(
        "{} {} {}\n",
        map.current_phase, map.current_pass, map.current_pos
    );
    for e in map.extents() {
        let skip = match e.status {
            Status::Untried | Status::Free => true,
            Status::Finished => clip(&domain.read, e.pos, e.end()).is_empty(),
            _ => false,
        };
        if !skip {
            s.push_str(&format!("{} {} {}\n", e.pos, e.size, e.status.to_char()));
        }
    }
    s
}

/// The map [`map_delta`] described.
pub fn map_from_delta(text: &str, domain: &Domain, size: u64) -> Option<ExtentMap> {
    let mut m = domain.fresh_map(size);
    let mut lines = text.lines();
    let mut head = lines.next()?.split(' ');
    m.current_phase = head.next()?.chars().next()?;
    m.current_pass = head.next()?.parse().ok()?;
    m.current_pos = head.next()?.parse::<u64>().ok()?.min(size);
    for l in lines {
        let mut w = l.split(' ');
        let pos: u64 = w.next()?.parse().ok()?;
        let len: u64 = w.next()?.parse().ok()?;
        let st = Status::from_char(w.next()?.chars().next()?)?;
        if pos.checked_add(len)? > size {
            return None;
        }
        m.set(pos, len, st);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_delta_round_trip() {
        let d = Domain::new(
            Some(vec![(0, 4096), (8192, 9216), (20480, 40960)]),
            65536,
            512,
        );
        let mut m = d.fresh_map(65536);
        m.set(0, 4096, Status::Finished);
        m.set(8192, 512, Status::Bad);
        m.set(20480, 1024, Status::NonTrimmed);
        m.current_phase = '*';
        m.current_pass = 1;
        m.current_pos = 20480;
        let t = map_delta(&m, &d);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert_eq!(map_from_delta(&t, &d, 65536).unwrap(), m);
        assert!(map_from_delta("? 1 0\n0 99999999 +\n", &d, 65536).is_none());
        assert!(map_from_delta("", &d, 65536).is_none());
    }
}
