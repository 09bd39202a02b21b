//! Resuming an interrupted `image restore`: its `--map` is a GNU ddrescue-style mapfile of the
//! target's *written* ranges ('+' written and synced, '?' not yet, or deliberately not written:
//! unallocated chunks left alone), recording what it is of (the image's UUID and size, the
//! target's identity) so that the map of another restore is refused before anything is written
//! (the checks are clone's, [`crate::clone::resume`]). A range becomes '+' only after the target
//! was fsynced with it written, so whatever a power cut leaves, every '+' byte is on the target.
use crate::clone::resume::{check_location, load_or_new_for};
use crate::error::Result;
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
        let map = load_or_new_for(Some(path), origin, len, &[], notes, "restore", "restoring")?;
        let resumed_bytes = map.totals().finished;
        Ok(RestoreMap {
            map,
            path: path.to_path_buf(),
            command_line: command_line.to_string(),
            last_save: Instant::now(),
            every: save_interval(SAVE_EVERY),
            resumed_bytes,
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
        self.map.current_phase = if self.map.is_complete() { '+' } else { '?' };
        self.map.save(&self.path, &self.command_line)
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
        let d =
            std::env::temp_dir().join(format!("lifeboat-restore-map-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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
