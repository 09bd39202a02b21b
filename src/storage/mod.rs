//! Storage identity: the one home of "never the wrong disk". Every path a job touches (source,
//! target, image and each parent and split volume, `--map`, the partition an image lives on, the
//! boot medium) is resolved to the storage it really touches — a set of extents (backing object,
//! byte range), where a backing object is a whole block device (by its dev_t) or a regular file
//! (by st_dev and inode) — following symlinks, hard links, bind mounts, partitions, loop devices
//! and files on mounted filesystems ([`resolve`]). A job is refused (exit 4, before anything is
//! opened for writing or mounted) when anything it writes overlaps anything it reads or must keep
//! ([`Check`]). Also here: the remaining target rules (in use, `O_EXCL`, read-only, too small,
//! boot medium, sector size: [`target`]), the one [`guard::ReadOnlyGuard`] that holds sources
//! read-only in the kernel, and the one confirmation prompt ([`prompt::confirm`]).
pub mod guard;
pub mod prompt;
pub mod resolve;
pub mod target;

pub use guard::ReadOnlyGuard;
pub use resolve::Resolver;
pub use target::{open_target, open_target_in, Env, Target};

use crate::error::{Error, Result};
use crate::jobs::fmt_bytes;
use std::path::Path;

/// What holds bytes: a whole block device (disk or loop device), or a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// A whole block device by its dev_t (a partition is a range of its disk).
    Disk { dev: u64 },
    /// A file by (st_dev, st_ino): every name of it (hard link, symlink, bind mount) is the same.
    File { dev: u64, ino: u64 },
}

/// A byte range of one backing object that a path touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub object: Object,
    /// A name of the object for messages ("/dev/sda", "/tmp/x/disk.img").
    pub object_name: String,
    pub start: u64,
    /// Exclusive; `u64::MAX` for "to the end, however long it grows".
    pub end: u64,
    /// The filesystems (block device dev_t) this extent was reached through as "a file somewhere
    /// inside": two extents that share one are different files of that filesystem, which keeps
    /// them apart (the same file is caught at its inode), so they do not overlap there.
    pub inside: Vec<u64>,
    /// How the named path reaches this object, completing "the target /dev/loop3 …":
    /// "is /dev/loop3, a loop device over bytes 1.0 MiB..97.0 MiB of /tmp/x/S".
    pub how: String,
}

impl Extent {
    /// All the bytes, however many, of the regular file `md` (named `name` in messages),
    /// reached through the filesystems `inside`.
    pub fn whole_file(
        md: &std::fs::Metadata,
        name: String,
        inside: Vec<u64>,
        how: String,
    ) -> Extent {
        use std::os::unix::fs::MetadataExt;
        Extent {
            object: Object::File {
                dev: md.dev(),
                ino: md.ino(),
            },
            object_name: name,
            start: 0,
            end: u64::MAX,
            inside,
            how,
        }
    }
}

/// Everything one path touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The path as given.
    pub name: String,
    pub extents: Vec<Extent>,
    /// False for a file that does not exist yet (resolved through its parent directory).
    pub exists: bool,
}

impl Storage {
    /// The first pair of extents through which `self` and `other` share bytes.
    pub fn overlap<'a>(&'a self, other: &'a Storage) -> Option<(&'a Extent, &'a Extent)> {
        for a in &self.extents {
            for b in &other.extents {
                if extents_overlap(a, b) {
                    return Some((a, b));
                }
            }
        }
        None
    }
}

/// Whether two extents share bytes of one object and are not merely two files of one filesystem.
pub fn extents_overlap(a: &Extent, b: &Extent) -> bool {
    a.object == b.object
        && a.start < b.end
        && b.start < a.end
        && !a.inside.iter().any(|x| b.inside.contains(x))
}

/// "bytes 1.0 MiB..97.0 MiB", "bytes 1.0 MiB..the end", "all".
pub fn fmt_bytes_range(a: u64, b: u64) -> String {
    match (a, b) {
        (0, u64::MAX) => "all bytes".to_string(),
        (a, u64::MAX) => format!("bytes {}..the end", fmt_bytes(a)),
        (0, b) => format!("bytes 0..{}", fmt_bytes(b)),
        (a, b) => format!("bytes {}..{}", fmt_bytes(a), fmt_bytes(b)),
    }
}

/// `path` with its directory resolved now (symlinks followed, made absolute), for a file a job
/// writes many times or late (a map saved all along, split volumes, a final rename): it is
/// written under the name that was checked even if a symlink on the way is switched meanwhile
/// (to a directory inside the source, say). Unchanged when the directory does not exist (the
/// caller refuses that).
pub fn pin_dir(path: &Path) -> std::path::PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => path.to_path_buf(),
    }
}

/// Resolves `path` on the running system.
pub fn resolve(path: &Path) -> Result<Storage> {
    Resolver::system().resolve(path)
}

/// Why writing `target` would touch the storage of `keep` (`role`: "the source"), for the
/// console, which greys such targets out before asking; None when they share nothing or cannot
/// be resolved.
pub fn shared_storage(target: &Path, keep: &Path, role: &str) -> Option<String> {
    let r = Resolver::system();
    let t = r.resolve(target).ok()?;
    let k = r.resolve(keep).ok()?;
    let (a, b) = t.overlap(&k)?;
    Some(format!(
        "it shares {} of {} with {role}",
        fmt_bytes_range(a.start.max(b.start), a.end.min(b.end)),
        b.object_name
    ))
}

/// One thing a job touches: its role ("the source", "the target", "the parent image", "the
/// map file", "the boot medium"), the storage and whether the job writes it.
#[derive(Debug, Clone)]
pub struct Item {
    pub role: String,
    pub storage: Storage,
    pub written: bool,
}

/// The identity rule over a job's items: refused when anything written overlaps anything else
/// (read, kept, or also written).
#[derive(Debug, Default)]
pub struct Check {
    pub items: Vec<Item>,
    resolver: Option<Resolver>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Check {
    pub fn new() -> Check {
        Check {
            items: Vec::new(),
            resolver: Some(Resolver::system()),
        }
    }
    fn res(&mut self) -> &Resolver {
        self.resolver.get_or_insert_with(Resolver::system)
    }
    /// Something the job reads or must keep intact.
    pub fn keeps(&mut self, role: &str, path: &Path) -> Result<&mut Check> {
        let storage = self.res().resolve(path)?;
        self.items.push(Item {
            role: role.into(),
            storage,
            written: false,
        });
        Ok(self)
    }
    /// Something the job writes (or replaces, or creates).
    pub fn writes(&mut self, role: &str, path: &Path) -> Result<&mut Check> {
        let storage = self.res().resolve(path)?;
        self.items.push(Item {
            role: role.into(),
            storage,
            written: true,
        });
        Ok(self)
    }
    /// Adds an already resolved item.
    pub fn add(&mut self, item: Item) -> &mut Check {
        self.items.push(item);
        self
    }
    /// Refuses (exit 4) at the first written item that overlaps another item.
    pub fn run(&self) -> Result<()> {
        for (i, w) in self.items.iter().enumerate() {
            if !w.written {
                continue;
            }
            for (j, o) in self.items.iter().enumerate() {
                if i == j || (o.written && j < i) {
                    continue;
                }
                if let Some((a, b)) = w.storage.overlap(&o.storage) {
                    return Err(refusal(w, a, o, b));
                }
            }
        }
        Ok(())
    }
}

/// "is /dev/loop1, a loop device over …" named /dev/loop1 reads "is a loop device over …".
fn tidy_how(name: &str, how: &str) -> String {
    if how == format!("is {name}") {
        return "is that device itself".into();
    }
    match how.strip_prefix(&format!("is {name}, ")) {
        Some(rest) => format!("is {rest}"),
        None => how.to_string(),
    }
}

/// The message: both names, how each reaches the shared storage, and what is shared.
fn refusal(w: &Item, a: &Extent, o: &Item, b: &Extent) -> Error {
    let shared = fmt_bytes_range(a.start.max(b.start), a.end.min(b.end));
    let consequence = if o.written {
        format!("{} and {} would overwrite each other", w.role, o.role)
    } else {
        format!("writing {} would overwrite {}", w.role, o.role)
    };
    // The same file or device under two names: say just that.
    let direct = |e: &Extent| !e.how.contains(", ");
    if a.object == b.object && a.start == b.start && a.end == b.end && direct(a) && direct(b) {
        return Error::refused(format!(
            "{} {} is {} {} ({}); {consequence}. Nothing was written; put {} on other storage",
            w.role,
            w.storage.name,
            o.role,
            o.storage.name,
            match a.object {
                Object::File { dev, ino } => format!(
                    "the same file: inode {ino} of device {}",
                    crate::devices::usage::fmt_dev(dev)
                ),
                Object::Disk { .. } => format!("the same device, {}", a.object_name),
            },
            w.role
        ))
        .at_path(&w.storage.name);
    }
    Error::refused(format!(
        "{} {} {}; {} {} {}: they share {shared} of {}, so {consequence}. Nothing was written; \
         put {} on other storage",
        w.role,
        w.storage.name,
        tidy_how(&w.storage.name, &a.how),
        o.role,
        o.storage.name,
        tidy_how(&o.storage.name, &b.how),
        b.object_name,
        w.role,
    ))
    .at_path(&w.storage.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(object: Object, start: u64, end: u64, inside: &[u64]) -> Extent {
        Extent {
            object,
            object_name: "obj".into(),
            start,
            end,
            inside: inside.to_vec(),
            how: "is obj".into(),
        }
    }
    fn item(role: &str, written: bool, ex: Vec<Extent>) -> Item {
        Item {
            role: role.into(),
            storage: Storage {
                name: role.replace(' ', "-"),
                extents: ex,
                exists: true,
            },
            written,
        }
    }

    #[test]
    fn ranges_and_filesystems_decide_overlap() {
        let f = Object::File { dev: 1, ino: 2 };
        let d = Object::Disk { dev: 0x800 };
        assert!(extents_overlap(&ext(f, 0, 10, &[]), &ext(f, 9, 20, &[])));
        assert!(!extents_overlap(&ext(f, 0, 10, &[]), &ext(f, 10, 20, &[])));
        assert!(!extents_overlap(
            &ext(f, 0, 10, &[]),
            &ext(Object::File { dev: 1, ino: 3 }, 0, 10, &[])
        ));
        // Two files of one filesystem: both "somewhere in sda", kept apart by the filesystem.
        assert!(!extents_overlap(
            &ext(d, 0, u64::MAX, &[0x801]),
            &ext(d, 0, u64::MAX, &[0x801])
        ));
        // A file on sda1 and sda read raw: the same bytes.
        assert!(extents_overlap(
            &ext(d, 1 << 20, 2 << 20, &[0x801]),
            &ext(d, 0, u64::MAX, &[])
        ));
    }

    #[test]
    fn hard_links_and_symlinks_are_the_same_storage() {
        let dir = std::env::temp_dir().join(format!("lifeboat-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, h, l, b) = (dir.join("a"), dir.join("h"), dir.join("l"), dir.join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        std::fs::hard_link(&a, &h).unwrap();
        std::os::unix::fs::symlink(&h, &l).unwrap();
        let fd = std::fs::File::open(&a).unwrap();
        let proc_fd = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        for other in [&h, &l, &proc_fd] {
            let why = shared_storage(other, &a, "the source").expect("same file");
            assert!(why.contains("with the source"), "{why}");
        }
        // Another file of the same filesystem shares nothing.
        assert_eq!(shared_storage(&b, &a, "the source"), None);
        // A file to be created is not the source either.
        assert_eq!(shared_storage(&dir.join("new"), &a, "the source"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_written_item_overlapping_anything_is_refused() {
        let f = Object::File { dev: 1, ino: 2 };
        let mut c = Check::default();
        c.add(item("the source", false, vec![ext(f, 0, u64::MAX, &[])]));
        c.add(item(
            "the target",
            true,
            vec![ext(Object::File { dev: 1, ino: 3 }, 0, u64::MAX, &[])],
        ));
        c.run().unwrap();
        c.add(item("the map file", true, vec![ext(f, 100, 200, &[])]));
        let e = c.run().unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Refused);
        assert!(
            e.msg.contains("the map file") && e.msg.contains("the source"),
            "{e}"
        );
        // Two read items may share storage.
        let mut c = Check::default();
        c.add(item("the source", false, vec![ext(f, 0, 10, &[])]));
        c.add(item("the parent image", false, vec![ext(f, 0, 10, &[])]));
        c.run().unwrap();
    }
}
