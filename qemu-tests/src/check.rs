//! What the QEMU tests check on the host around a boot, written once: that a disk the guest only
//! read is unchanged ([`Unchanged`], by sha256), a partition (a byte range) taken out of a disk
//! image into a file of its own for the real tools ([`extract`]), every partition of a built
//! disk equal on another disk ([`same_partitions`], by `cmp`), an image checked by the static
//! `lifeboat` binary on the host ([`host_lifeboat`], [`host_verify`]), and the test data
//! ([`noise`], [`text`]).
use crate::disks::{run, sha256, BuiltDisk};
use std::path::{Path, PathBuf};

/// A disk image's sha256 recorded before a boot that must not write to it.
pub struct Unchanged {
    path: PathBuf,
    sha: String,
}

impl Unchanged {
    /// Records the sha256 of `path` now.
    #[track_caller]
    pub fn record(path: &Path) -> Unchanged {
        Unchanged {
            path: path.to_path_buf(),
            sha: sha256(path).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// Asserts the file still has the recorded sha256; `what` names it ("the source disk").
    #[track_caller]
    pub fn check(&self, what: &str) {
        let now = sha256(&self.path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(now, self.sha, "{what} changed ({})", self.path.display());
    }
}

/// Copies `len` bytes at `start` of the disk image `disk` into the file `out` (one partition,
/// for `fsck`, `ntfsfix`, `ntfscat` …).
pub fn extract(disk: &Path, out: &Path, start: u64, len: u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f =
        std::fs::File::open(disk).unwrap_or_else(|e| panic!("open {}: {e}", disk.display()));
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut o =
        std::fs::File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let n = std::io::copy(&mut f.take(len), &mut o).unwrap();
    assert_eq!(
        n,
        len,
        "{} ends before byte {}",
        disk.display(),
        start + len
    );
}

/// Whether `len` bytes at `start` are the same in `a` and `b` (`cmp`'s answer as the error).
pub fn cmp_range(a: &Path, b: &Path, start: u64, len: u64) -> Result<(), String> {
    run(
        "cmp",
        &[
            "-i".into(),
            start.to_string(),
            "-n".into(),
            len.to_string(),
            a.display().to_string(),
            b.display().to_string(),
        ],
        None,
    )
    .map(|_| ())
}

/// Asserts every partition of `built` (the source disk `src`) holds the same bytes on `copy`
/// (a restore or clone of it), at the same place.
#[track_caller]
pub fn same_partitions(built: &BuiltDisk, src: &Path, copy: &Path) {
    for p in &built.partitions {
        if let Err(e) = cmp_range(src, copy, p.start_bytes, p.size_bytes) {
            panic!("partition {} differs on {}: {e}", p.number, copy.display());
        }
    }
}

/// The static binary `scripts/build` made (it runs on the host too).
#[track_caller]
pub fn host_lifeboat() -> PathBuf {
    let p = crate::repo_root().join("target/x86_64-unknown-linux-musl/release/lifeboat");
    assert!(p.is_file(), "{} is missing: run scripts/build", p.display());
    p
}

/// Runs the host's binary (`host_lifeboat`) with `args`, asserting it succeeded.
#[track_caller]
pub fn host_lifeboat_ok(args: &[&str]) {
    let o = std::process::Command::new(host_lifeboat())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run lifeboat {args:?}: {e}"));
    assert!(
        o.status.success(),
        "lifeboat {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `lifeboat image verify IMAGE --json` by the host's binary: asserts it passed and returns its
/// report.
#[track_caller]
pub fn host_verify(image: &Path) -> serde_json::Value {
    let out = std::process::Command::new(host_lifeboat())
        .args(["image", "verify"])
        .arg(image)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("run lifeboat image verify: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "image verify {} printed no report ({e}): {text}{}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && v["ok"] == serde_json::Value::Bool(true),
        "image verify {} on the host: {v}",
        image.display()
    );
    v
}

/// `n` bytes of incompressible data, unique in every sector (xorshift64 from `seed`, each
/// state's eight bytes in turn).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x = seed | 1;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

/// `n` bytes of numbered text lines (compressible), the lines ending in `tag`.
pub fn text(n: usize, tag: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        v.extend_from_slice(format!("line {} of {tag}\n", v.len()).as_bytes());
    }
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tmp::TempDir;

    #[test]
    fn unchanged_extract_and_cmp_on_real_files() {
        let t = TempDir::new("check").unwrap();
        let a = t.join("a.img");
        std::fs::write(&a, noise(1 << 20, 7)).unwrap();
        let u = Unchanged::record(&a);
        u.check("a");
        let part = t.join("part");
        extract(&a, &part, 4096, 8192);
        assert_eq!(
            std::fs::read(&part).unwrap(),
            &std::fs::read(&a).unwrap()[4096..12288]
        );
        let mut b = std::fs::read(&a).unwrap();
        b[100_000] ^= 1;
        let bp = t.join("b.img");
        std::fs::write(&bp, &b).unwrap();
        assert!(cmp_range(&a, &bp, 0, 100_000).is_ok());
        assert!(cmp_range(&a, &bp, 0, 100_001).is_err());
        std::fs::write(&a, &b).unwrap();
        let r = std::panic::catch_unwind(|| u.check("a"));
        assert!(r.is_err(), "a changed file passed");
        assert_eq!(text(30, "x").len(), 30);
        assert_ne!(noise(64, 1), noise(64, 2));
        assert_eq!(noise(13, 1).len(), 13);
    }
}
