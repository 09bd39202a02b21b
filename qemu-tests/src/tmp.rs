//! Scratch directories for disk images and sockets, removed on drop (kept when
//! LIFEBOAT_KEEP_TMP=1, for looking at a failure afterwards).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory under the system temp dir, deleted with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/lifeboat-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("lifeboat-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("LIFEBOAT_KEEP_TMP").is_ok_and(|v| v == "1") {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop() {
        let t = TempDir::new("tmptest").unwrap();
        std::fs::write(t.join("f"), b"x").unwrap();
        let p = t.path().to_path_buf();
        assert!(p.join("f").exists());
        drop(t);
        assert!(!p.exists());
    }
}
