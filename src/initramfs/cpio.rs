//! A small, reproducible writer (and reader, for checks) of the newc ("070701") cpio format the
//! kernel unpacks as an initramfs: sorted entries, parents before children, mtime 0, uid/gid 0,
//! inode numbers assigned in path order, so the same inputs always give byte-identical output.
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Data {
    /// Bytes held in memory (generated index files, small configs).
    Bytes(Vec<u8>),
    /// A host file, read only when the archive is written (keeps memory to one file at a time).
    Path(PathBuf),
}

/// One archive member.
#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Data),
    /// A character device node (major, minor).
    CharDev(u32, u32),
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// Permission bits only (the file type bits come from `node`).
    perm: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;
const TRAILER: &str = "TRAILER!!!";

/// An in-memory table of contents; written out in sorted path order by [`Archive::write`].
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Normalises an archive path: no leading or trailing '/', no empty, "." or ".." components.
fn norm(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "archive path {path:?} must not contain '..'"
                )))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid(format!(
            "archive path {path:?} names the root; give a file or directory below it"
        )));
    }
    let p = parts.join("/");
    if p == TRAILER {
        return Err(Error::invalid(format!(
            "archive path {TRAILER:?} is reserved by the cpio format"
        )));
    }
    Ok(p)
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (and any missing parent directories, mode 0755). A later add of the same path
    /// replaces the earlier one, except that a directory never replaces an existing entry.
    pub fn add(&mut self, path: &str, node: Node, perm: u32) -> Result<()> {
        let p = norm(path)?;
        let mut idx = 0;
        while let Some(off) = p[idx..].find('/') {
            let parent = &p[..idx + off];
            match self.entries.get(parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(Error::invalid(format!(
                    "cannot add {p:?} to the initramfs: its parent {parent:?} is not a directory"
                )))
                }
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry {
                            node: Node::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
            idx += off + 1;
        }
        if matches!(node, Node::Dir) && self.entries.contains_key(&p) {
            return Ok(());
        }
        if let Some(Entry {
            node: Node::Dir, ..
        }) = self.entries.get(&p)
        {
            if self
                .entries
                .range(format!("{p}/")..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&format!("{p}/")))
            {
                return Err(Error::invalid(format!(
                    "cannot replace the directory {p:?} in the initramfs by a non-directory: it has entries"
                )));
            }
        }
        self.entries.insert(
            p,
            Entry {
                node,
                perm: perm & 0o7777,
            },
        );
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.add(path, Node::Dir, 0o755)
    }

    pub fn file(&mut self, path: &str, data: Data, perm: u32) -> Result<()> {
        self.add(path, Node::File(data), perm)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every path in the archive, in the order it will be written.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Writes the archive (newc, then the trailer, padded to 512 bytes) to `out`; returns the
    /// number of bytes written (the uncompressed size).
    pub fn write<W: Write>(&self, out: &mut W) -> Result<u64> {
        let mut w = Counter { inner: out, n: 0 };
        let mut ino: u32 = 0;
        for (path, e) in &self.entries {
            ino += 1;
            let (mode, data, nlink, rmaj, rmin): (u32, Vec<u8>, u32, u32, u32) = match &e.node {
                Node::Dir => (S_IFDIR | e.perm, Vec::new(), 2, 0, 0),
                Node::File(Data::Bytes(b)) => (S_IFREG | e.perm, b.clone(), 1, 0, 0),
                Node::File(Data::Path(src)) => {
                    let b = std::fs::read(src)
                        .map_err(|err| Error::io("read (for the initramfs)", src, err))?;
                    (S_IFREG | e.perm, b, 1, 0, 0)
                }
                Node::CharDev(ma, mi) => (S_IFCHR | e.perm, Vec::new(), 1, *ma, *mi),
                Node::Symlink(t) => (S_IFLNK | 0o777, t.as_bytes().to_vec(), 1, 0, 0),
            };
            write_member(&mut w, ino, mode, nlink, rmaj, rmin, path, &data)?;
        }
        write_member(&mut w, 0, 0, 1, 0, 0, TRAILER, &[])?;
        let pad = (512 - (w.n % 512)) % 512;
        w.write_all(&vec![0u8; pad as usize]).map_err(werr)?;
        w.flush().map_err(werr)?;
        Ok(w.n)
    }
}

fn werr(e: std::io::Error) -> Error {
    Error::new(
        crate::error::ErrorKind::Io,
        "cannot write the initramfs archive (disk full?)",
    )
    .caused_by(e)
}

struct Counter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

#[allow(clippy::too_many_arguments)]
fn write_member<W: Write>(
    w: &mut Counter<'_, W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rmaj: u32,
    rmin: u32,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let size = u32::try_from(data.len()).map_err(|_| {
        Error::invalid(format!(
            "{name:?} is larger than 4 GiB, which newc cpio cannot hold"
        ))
    })?;
    let namesize = name.len() + 1;
    // magic ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let hdr = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{rmaj:08X}{rmin:08X}{namesize:08X}{:08X}",
        0, 0, 0, 0, 0, 0
    );
    w.write_all(hdr.as_bytes()).map_err(werr)?;
    w.write_all(name.as_bytes()).map_err(werr)?;
    w.write_all(&[0]).map_err(werr)?;
    let p = pad4((hdr.len() + namesize) as u64);
    w.write_all(&[0u8; 3][..p]).map_err(werr)?;
    w.write_all(data).map_err(werr)?;
    w.write_all(&[0u8; 3][..pad4(data.len() as u64)])
        .map_err(werr)?;
    Ok(())
}

/// One member as read back by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parses a newc archive (uncompressed) up to its trailer; used by tests and `--check` paths.
pub fn parse(buf: &[u8]) -> Result<Vec<Member>> {
    let mut off = 0usize;
    let mut out = Vec::new();
    loop {
        let bad =
            |what: &str| Error::corrupt(format!("cpio archive: {what}")).at_offset(off as u64);
        let hdr = buf
            .get(off..off + 110)
            .ok_or_else(|| bad("truncated header"))?;
        if &hdr[..6] != b"070701" {
            return Err(bad("bad magic (expected newc 070701)"));
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&hdr[6 + i * 8..14 + i * 8])
                .map_err(|_| bad("non-ASCII header"))?;
            u32::from_str_radix(s, 16).map_err(|_| bad("non-hex header field"))
        };
        let (ino, mode, uid, gid, nlink, mtime, size) = (
            field(0)?,
            field(1)?,
            field(2)?,
            field(3)?,
            field(4)?,
            field(5)?,
            field(6)? as usize,
        );
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_start = off + 110;
        let name_bytes = buf
            .get(name_start..name_start + namesize)
            .ok_or_else(|| bad("truncated name"))?;
        let name = std::str::from_utf8(
            name_bytes
                .strip_suffix(&[0])
                .ok_or_else(|| bad("name not NUL-terminated"))?,
        )
        .map_err(|_| bad("name is not UTF-8"))?
        .to_string();
        let data_start = name_start + namesize + pad4((110 + namesize) as u64);
        let data = buf
            .get(data_start..data_start + size)
            .ok_or_else(|| bad("truncated data"))?
            .to_vec();
        off = data_start + size + pad4(size as u64);
        if name == TRAILER {
            return Ok(out);
        }
        out.push(Member {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory removed on drop (also when an assertion fails).
    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("lifeboat-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file(
            "lib/modules/x/kernel/a.ko",
            Data::Bytes(b"abc".to_vec()),
            0o644,
        )
        .unwrap();
        a.file("init", Data::Bytes(vec![7u8; 1001]), 0o755).unwrap();
        a.add("dev/console", Node::CharDev(5, 1), 0o600).unwrap();
        a.dir("proc").unwrap();
        a.add("bin/sh", Node::Symlink("/init".into()), 0o777)
            .unwrap();
        a
    }

    #[test]
    fn parents_first_sorted_and_roundtrip() {
        let a = sample();
        let mut buf = Vec::new();
        let n = a.write(&mut buf).unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(buf.len() % 512, 0);
        let m = parse(&buf).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/kernel",
                "lib/modules/x/kernel/a.ko",
                "proc"
            ]
        );
        let init = m.iter().find(|m| m.name == "init").unwrap();
        assert_eq!(init.mode, 0o100755);
        assert_eq!(init.data, vec![7u8; 1001]);
        let con = m.iter().find(|m| m.name == "dev/console").unwrap();
        assert_eq!((con.mode, con.rdev), (0o020600, (5, 1)));
        assert!(m.iter().all(|m| m.mtime == 0 && m.uid == 0 && m.gid == 0));
        let inos: Vec<u32> = m.iter().map(|m| m.ino).collect();
        assert_eq!(inos, (1..=m.len() as u32).collect::<Vec<_>>());
        assert_eq!(
            m.iter().find(|m| m.name == "bin/sh").unwrap().data,
            b"/init"
        );
    }

    #[test]
    fn reproducible_regardless_of_insertion_order() {
        let a = sample();
        let mut b = Archive::new();
        b.dir("proc").unwrap();
        b.add("bin/sh", Node::Symlink("/init".into()), 0o777)
            .unwrap();
        b.add("dev/console", Node::CharDev(5, 1), 0o600).unwrap();
        b.file("init", Data::Bytes(vec![7u8; 1001]), 0o755).unwrap();
        b.file(
            "lib/modules/x/kernel/a.ko",
            Data::Bytes(b"abc".to_vec()),
            0o644,
        )
        .unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write(&mut x).unwrap();
        b.write(&mut y).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn rejects_bad_paths() {
        let mut a = Archive::new();
        assert!(a.dir("/").is_err());
        assert!(a.dir("a/../b").is_err());
        assert!(a.dir("TRAILER!!!").is_err());
        a.file("f", Data::Bytes(vec![]), 0o644).unwrap();
        assert!(a.file("f/g", Data::Bytes(vec![]), 0o644).is_err());
        a.file("d/e", Data::Bytes(vec![]), 0o644).unwrap();
        assert!(a.file("d", Data::Bytes(vec![]), 0o644).is_err());
        // Leading slashes and "." are normalised away.
        a.file("/./x//y", Data::Bytes(vec![1]), 0o644).unwrap();
        assert!(a.paths().any(|p| p == "x/y"));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse(b"hello").is_err());
        let mut buf = Vec::new();
        sample().write(&mut buf).unwrap();
        assert!(parse(&buf[..200]).is_err());
    }

    /// GNU cpio is the referee: it must list and extract what we wrote.
    #[test]
    fn gnu_cpio_reads_it() {
        use std::process::{Command, Stdio};
        if Command::new("cpio").arg("--version").output().is_err() {
            crate::errln!("note: GNU cpio not installed; skipping (scripts/setup installs it)");
            return;
        }
        let mut buf = Vec::new();
        sample().write(&mut buf).unwrap();
        let mut child = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let ours: Vec<String> = sample().paths().map(String::from).collect();
        assert_eq!(listed, ours);

        let guard = TempDir::new("cpio");
        let dir = guard.0.clone();
        let mut a = Archive::new();
        a.file("init", Data::Bytes(vec![7u8; 1001]), 0o755).unwrap();
        a.file("etc/x.txt", Data::Bytes(b"hello\n".to_vec()), 0o644)
            .unwrap();
        let mut buf = Vec::new();
        a.write(&mut buf).unwrap();
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.join("etc/x.txt")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(dir.join("init")).unwrap(), vec![7u8; 1001]);
    }
}
