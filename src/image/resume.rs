//! Resuming interrupted image jobs.
//!
//! **Restore**: its `--map` is a GNU ddrescue-style mapfile of the
//! target's *written* ranges ('+' written and synced, '?' not yet, or deliberately not written:
//! unallocated chunks left alone), recording what it is of (the image's UUID and size, the
//! target's identity) so that the map of another restore is refused before anything is written
//! (the checks are clone's, [`crate::clone::resume`]). A range becomes '+' only after the target
//! was fsynced with it written, so whatever a power cut leaves, every '+' byte is on the target.
//! A resumed restore still reads the '+' chunks back and checks them against their index
//! hashes (`ops::stream_resumable`): a target written to since, or a map that says more than
//! was written, must not give a restore that reports success with other bytes on the target.
//! A restore that finished saves its map with the phase '+' ([`RestoreMap::finish`]); such a map
//! is not resumed — the target may have changed since — and the restore starts over, with a note.
//!
//! **Verify**: its `--state` file ([`VerifyState`]) records how far the expensive part got —
//! reading every stored chunk's payload, its CRC, decompression and BLAKE3 against the index —
//! and the problems found so far. A resumed verify skips only those payload reads; everything
//! derived from the index (every segment's CRC, the footer's counts, that every byte of every
//! volume is accounted for, the parent references and the media hash, which is a hash over all
//! chunk hashes *in the index*) is recomputed in full on every run: it reads only the index
//! (about 64 bytes per 1 MiB chunk), so the final verdict still covers the whole image without
//! the hasher's state having to be saved. The state names the chain it is of (each image's
//! UUID, media hash, and each volume's size, inode and modification time): the state of another
//! image is refused (exit 4); another copy of the same image, or files changed since, start
//! again from the beginning, with a note.
use crate::clone::resume::{check_location, load_or_new_for};
use crate::error::{Error, Result};
use crate::rescue::map::{MapOrigin, StorageId};
use crate::rescue::{ExtentMap, Status};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the map is saved while restoring (after a sync of the target), unless
/// `LIFEBOAT_MAP_INTERVAL` says otherwise.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The map save interval: `LIFEBOAT_MAP_INTERVAL` seconds (like GNU ddrescue's
/// `--mapfile-interval`; fractions allowed, 0 saves after every chunk: slow, for tests), else
/// `default`.
pub fn save_interval(default: Duration) -> Duration {
    std::env::var("LIFEBOAT_MAP_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map_or(default, Duration::from_secs_f64)
}

/// What a restore map is of: the image (its UUID, the imaged disk's size) onto `target`.
pub fn restore_origin(
    image_uuid: &str,
    disk_size: u64,
    image: &str,
    target: StorageId,
) -> MapOrigin {
    MapOrigin {
        source: StorageId {
            size: disk_size,
            image: Some(image_uuid.to_string()),
            name: image.to_string(),
            ..Default::default()
        },
        target,
    }
}

/// A restore's `--map`: loaded (or new), marked as chunks reach the target, saved atomically.
pub struct RestoreMap {
    map: ExtentMap,
    path: PathBuf,
    command_line: String,
    last_save: Instant,
    every: Duration,
    /// Bytes the loaded map already had written (not written again by this run).
    pub resumed_bytes: u64,
    /// The restore finished (saved with the phase '+').
    finished: bool,
}

impl RestoreMap {
    /// Checks where the map goes and, when it exists, that it is this restore's (refused with
    /// exit 4 otherwise); `len` is the part of the image the target holds.
    pub fn open(
        path: &Path,
        origin: &MapOrigin,
        len: u64,
        command_line: &str,
        notes: &mut Vec<String>,
    ) -> Result<RestoreMap> {
        check_location(path)?;
        let mut map = load_or_new_for(Some(path), origin, len, &[], notes, "restore", "restoring")?;
        if map.current_phase == '+' {
            // Nothing to resume: a finished restore. Taken as one, it would write nothing and
            // report success while the target keeps whatever was done to it since.
            notes.push(format!(
                "the map {} records a restore that finished; the target may have changed since, \
                 so it is restored again in full",
                path.display()
            ));
            map = ExtentMap::new(len);
            map.origin = Some(origin.clone());
        }
        let resumed_bytes = map.totals().finished;
        Ok(RestoreMap {
            map,
            path: path.to_path_buf(),
            command_line: command_line.to_string(),
            last_save: Instant::now(),
            every: save_interval(SAVE_EVERY),
            resumed_bytes,
            finished: false,
        })
    }

    /// Saves every `every` from now on (see [`save_interval`]).
    pub fn set_save_every(&mut self, every: Duration) {
        self.every = every;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The map as loaded or marked so far (a copy for the image reader thread).
    pub fn snapshot(&self) -> ExtentMap {
        self.map.clone()
    }

    /// Records `[off, off+len)` as written (durable only once the caller syncs and saves).
    pub fn mark(&mut self, off: u64, len: u64) {
        self.map.set(off, len, Status::Finished);
    }

    /// Whether a save is due (the caller syncs the target first, then calls [`save`]).
    ///
    /// [`save`]: RestoreMap::save
    pub fn due(&self) -> bool {
        self.last_save.elapsed() >= self.every
    }

    /// Saves the map atomically. Call only after the target was synced.
    pub fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        self.map.current_pos = self
            .map
            .next_with(Status::Untried, 0)
            .map_or(self.map.size(), |(p, _)| p);
        self.map.current_phase = if self.finished { '+' } else { '?' };
        self.map.save(&self.path, &self.command_line)
    }

    /// Saves the map of a restore that finished (every chunk placed, the target synced and its
    /// table fixed): phase '+', so that a later restore with it starts over.
    pub fn finish(&mut self) -> Result<()> {
        self.finished = true;
        self.save()
    }
}

/// One image of a verified chain, as a verify state records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainId {
    pub uuid: String,
    pub media_hash: String,
    /// Byte length of each volume file.
    pub volume_bytes: Vec<u64>,
    /// Each volume file's inode number and modification time ("INODE:MTIME_NS"): a copy of
    /// the image (same UUID) or a file rewritten since is not the file whose payloads the
    /// state says were read.
    #[serde(default)]
    pub volume_files: Vec<String>,
    /// The image's chunk count: how far a state of it can point (an older state without it
    /// is of files not compared on it, so verifying starts again).
    #[serde(default)]
    pub chunks: u64,
}

/// The chain at hand, as [`ChainId`]s (top image first).
pub fn chain_ids(chain: &super::Chain) -> Vec<ChainId> {
    chain
        .images
        .iter()
        .map(|i| ChainId {
            uuid: super::format::uuid_str(&i.header.uuid),
            media_hash: super::format::hex(&i.footer.media_hash),
            volume_bytes: i.volume_lens().iter().map(|v| v.1).collect(),
            volume_files: i
                .volume_paths()
                .iter()
                .map(|p| {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::metadata(p).map_or(String::new(), |m| {
                        format!(
                            "{}:{}",
                            m.ino(),
                            m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
                        )
                    })
                })
                .collect(),
            chunks: i.header.chunk_count(),
        })
        .collect()
}

/// What `image verify --state FILE` keeps: the payloads of chunks before (`image`,
/// `next_chunk`) of the chain are checked, with `problems` found. Saved as one JSON object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VerifyState {
    /// Always "lifeboat-verify-state-1".
    pub format: String,
    pub chain: Vec<ChainId>,
    /// The chain image being checked (0: the top image; parents follow).
    pub image: usize,
    /// Payloads of that image's chunks before this one are checked.
    pub next_chunk: u64,
    pub problem_count: u64,
    pub problems: Vec<String>,
    /// The verify finished (a new run with this state starts again from the beginning).
    pub complete: bool,
}

const STATE_FORMAT: &str = "lifeboat-verify-state-1";
/// The largest state file read (the problem list is bounded).
const MAX_STATE: u64 = 4 << 20;

impl VerifyState {
    pub fn new(chain: Vec<ChainId>) -> VerifyState {
        VerifyState {
            format: STATE_FORMAT.into(),
            chain,
            image: 0,
            next_chunk: 0,
            problem_count: 0,
            problems: Vec::new(),
            complete: false,
        }
    }

    /// Whether the payload of chunk `i` of chain image `k` was checked by an earlier run.
    pub fn checked(&self, k: usize, i: u64) -> bool {
        k < self.image || (k == self.image && i < self.next_chunk)
    }

    /// The state to start from for `chain`: the file's when it exists, is unfinished and is of
    /// this chain; a fresh one when there is none, it is finished, or the image changed size
    /// since (with a note). The state of another image is refused (exit 4).
    pub fn load_or_new(
        path: &Path,
        chain: Vec<ChainId>,
        notes: &mut Vec<String>,
    ) -> Result<VerifyState> {
        check_location(path)?;
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(VerifyState::new(chain));
        }
        use std::io::Read;
        let mut text = String::new();
        crate::io::open::open_regular(path, "a verify state file")?
            .take(MAX_STATE)
            .read_to_string(&mut text)
            .map_err(|e| Error::io("read the verify state", path, e))?;
        let st: VerifyState = serde_json::from_str(&text)
            .ok()
            .filter(|s: &VerifyState| s.format == STATE_FORMAT)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{} is not a Lifeboat verify state file: give a new --state file name, or \
                     delete it to verify from the beginning",
                    path.display()
                ))
                .at_path(path)
            })?;
        let same_images = st.chain.len() == chain.len()
            && st
                .chain
                .iter()
                .zip(&chain)
                .all(|(a, b)| a.uuid == b.uuid && a.media_hash == b.media_hash);
        if !same_images {
            return Err(Error::refused(format!(
                "the verify state {} is of another image (UUID {}; this is {}): give a new \
                 --state file name, or delete it to verify this image from the beginning",
                path.display(),
                st.chain.first().map_or("?", |c| c.uuid.as_str()),
                chain.first().map_or("?", |c| c.uuid.as_str()),
            )));
        }
        if st.chain != chain {
            notes.push(format!(
                "the image's files are not the ones the verify state {} was saved for (another \
                 copy of the image, or files changed since): verifying from the beginning",
                path.display()
            ));
            return Ok(VerifyState::new(chain));
        }
        // A position past the chain's end is no verify's: taken as one, it would skip every
        // payload check and report the image sound.
        let inside = match chain.get(st.image) {
            Some(c) => st.next_chunk <= c.chunks,
            None => st.image == chain.len() && st.next_chunk == 0,
        };
        if !inside || st.problems.len() as u64 > st.problem_count {
            return Err(Error::corrupt(format!(
                "the verify state {} is damaged (it points past the end of the image, chain \
                 image {} chunk {}): delete it to verify from the beginning",
                path.display(),
                st.image,
                st.next_chunk
            ))
            .at_path(path));
        }
        if st.complete {
            notes.push(format!(
                "the verify state {} is of a finished verify: verifying again from the beginning",
                path.display()
            ));
            return Ok(VerifyState::new(chain));
        }
        Ok(st)
    }

    /// Saves the state atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("lifeboat-tmp");
        let mut f = crate::io::open::create_fresh(&tmp)?;
        let text = serde_json::to_string(self).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                "cannot encode the verify state",
            )
            .caused_by(e)
        })?;
        let written = f
            .write_all(text.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .map_err(|e| Error::io("write the verify state", &tmp, e))
            .and_then(|_| {
                f.sync_all()
                    .map_err(|e| Error::io("fsync the verify state", &tmp, e))
            })
            .and_then(|_| {
                std::fs::rename(&tmp, path)
                    .map_err(|e| Error::io("rename the verify state into place", path, e))
            });
        if written.is_err() {
            // A full filesystem: no half-written temporary file left beside the state.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        super::create::sync_dir(path);
        Ok(())
    }
}

/// Whether all of `[a, b)` is finished in `m` (bytes past the map's end count as finished:
/// a smaller target does not hold them).
pub fn all_written(m: &ExtentMap, a: u64, b: u64) -> bool {
    let b = b.min(m.size());
    if a >= b {
        return true;
    }
    matches!(m.next_with(Status::Finished, a), Some((p, l)) if p == a && p + l >= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("restore-map-{tag}"))
    }

    fn target(size: u64) -> StorageId {
        StorageId {
            size,
            serial: Some("T1".into()),
            name: "/dev/sdb".into(),
            ..Default::default()
        }
    }

    #[test]
    fn written_ranges() {
        let mut m = ExtentMap::new(10 << 20);
        m.set(0, 3 << 20, Status::Finished);
        assert!(all_written(&m, 0, 1 << 20));
        assert!(all_written(&m, 2 << 20, 3 << 20));
        assert!(!all_written(&m, 2 << 20, 4 << 20));
        assert!(!all_written(&m, 5 << 20, 6 << 20));
        // Past a smaller target's end: nothing to write there.
        assert!(all_written(&m, 10 << 20, 11 << 20));
        assert!(!all_written(&m, 9 << 20, 11 << 20));
    }

    #[test]
    fn a_map_of_another_image_or_target_is_refused() {
        let d = dir("other");
        let path = d.join("r.map");
        let o = restore_origin("uuid-a", 8 << 20, "a.lbi", target(16 << 20));
        let mut notes = vec![];
        let mut m =
            RestoreMap::open(&path, &o, 8 << 20, "lifeboat image restore", &mut notes).unwrap();
        assert_eq!(m.resumed_bytes, 0);
        m.mark(0, 2 << 20);
        m.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("uuid-a"), "{text}");
        // The same restore resumes from it.
        let m = RestoreMap::open(&path, &o, 8 << 20, "x", &mut notes).unwrap();
        assert_eq!(m.resumed_bytes, 2 << 20);
        assert!(all_written(&m.snapshot(), 0, 2 << 20));
        // Another image (same size), another target, a clone's map: refused, exit 4.
        let others = [
            restore_origin("uuid-b", 8 << 20, "b.lbi", target(16 << 20)),
            restore_origin(
                "uuid-a",
                8 << 20,
                "a.lbi",
                StorageId {
                    serial: Some("T2".into()),
                    ..target(16 << 20)
                },
            ),
        ];
        for other in others {
            let e = RestoreMap::open(&path, &other, 8 << 20, "x", &mut notes)
                .err()
                .unwrap();
            assert_eq!(e.kind, crate::ErrorKind::Refused, "{e}");
            assert!(e.to_string().contains("not of this restore"), "{e}");
        }
        let clone_map = MapOrigin {
            source: StorageId {
                size: 8 << 20,
                serial: Some("S".into()),
                name: "/dev/sda".into(),
                ..Default::default()
            },
            target: target(16 << 20),
        };
        let mut cm = ExtentMap::new(8 << 20);
        cm.origin = Some(clone_map);
        cm.save(&path, "lifeboat clone").unwrap();
        let e = RestoreMap::open(&path, &o, 8 << 20, "x", &mut notes)
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::ErrorKind::Refused, "{e}");
        assert!(e.to_string().contains("a disk then, an image now"), "{e}");
        assert!(notes.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
