//! Reading an image's volumes back from their storage rather than from the page cache (the
//! verify after writing, [`super::verify::verify_written`], and `image copy`'s read-back of
//! its copy, [`super::copy`]), as clone's verify reads its
//! target: O_DIRECT on the open volume, each read done in a window aligned to
//! [`IO_ALIGN`] around the bytes asked for (records lie at any byte offset), straight into a
//! page-aligned buffer ([`Stored`]) for payloads — no copy, no page cache to fill and drop
//! again. Where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6, FUSE filesystems
//! such as ntfs-3g, some network shares) — when the flag is set, or at a read — the volume's
//! pages are dropped from the page cache instead (fsync, then `POSIX_FADV_DONTNEED`:
//! [`crate::io::drop_file_cache`]) and it is read through the cache, which then holds only
//! what the storage returns — except pages another process has mapped, which the kernel does
//! not drop: the fallback, never the first choice.
use crate::error::Result;
use crate::io::{AlignedBuf, IO_ALIGN};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A record as read from a volume: its bytes at `start..start + len` of a page-aligned
/// buffer, where an O_DIRECT read of the aligned window around it put them.
pub struct Stored {
    buf: AlignedBuf,
    start: usize,
    len: usize,
}

impl Stored {
    /// Room for a record of `n` bytes at any offset without growing.
    pub fn with_capacity(n: usize) -> Stored {
        let buf = AlignedBuf::new(window_room(n));
        Stored {
            buf,
            start: 0,
            len: 0,
        }
    }
    /// The record's bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
    /// A buffer of at least `n` bytes (the record's place is set by the caller).
    fn room(&mut self, n: usize) -> &mut AlignedBuf {
        if self.buf.capacity() < n {
            self.buf = AlignedBuf::new(n);
        }
        let cap = self.buf.capacity();
        self.buf.set_len(cap);
        &mut self.buf
    }
}

/// The largest aligned window around `n` bytes at any offset.
fn window_room(n: usize) -> usize {
    n.div_ceil(IO_ALIGN) * IO_ALIGN + IO_ALIGN
}

thread_local! {
    /// The window of the small reads (headers, footers, index segments) of this thread.
    static WINDOW: RefCell<Stored> = RefCell::new(Stored::with_capacity(0));
}

/// An open image volume and how it is read: directly from its storage, or through the page
/// cache (everything else, or direct reads refused).
pub struct VolFile {
    pub file: File,
    direct: AtomicBool,
    /// Held while a volume falls back from direct reads to the page cache.
    switch: Mutex<()>,
}

impl VolFile {
    /// Reads through the page cache, as any file (images read by `verify`, restore, export).
    pub fn cached(file: File) -> VolFile {
        VolFile {
            file,
            direct: AtomicBool::new(false),
            switch: Mutex::new(()),
        }
    }

    /// Reads from the storage: O_DIRECT when the filesystem does it, else (and should a read
    /// be refused later) the page cache of the file dropped first (see the module text).
    pub fn from_storage(file: File, path: &Path) -> Result<VolFile> {
        if crate::io::set_direct(&file, true).is_ok() {
            return Ok(VolFile {
                file,
                direct: AtomicBool::new(true),
                switch: Mutex::new(()),
            });
        }
        crate::io::drop_file_cache(&file, path)?;
        Ok(VolFile::cached(file))
    }

    /// Whether reads go around the page cache (O_DIRECT).
    pub fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Acquire)
    }

    /// Stops reading directly: the file's cached pages are dropped before O_DIRECT is turned
    /// off, so that every read after this one comes from the storage too.
    fn fall_back(&self, path: &Path) -> io::Result<()> {
        let _g = self.switch.lock().unwrap_or_else(|e| e.into_inner());
        if !self.direct.load(Ordering::Acquire) {
            return Ok(());
        }
        crate::io::drop_file_cache(&self.file, path)
            .map_err(|e| io::Error::other(e.to_string()))?;
        crate::io::set_direct(&self.file, false)?;
        self.direct.store(false, Ordering::Release);
        Ok(())
    }

    /// Reads `n` bytes at `off` into `st` (the bytes at [`Stored::bytes`]).
    pub fn read_stored(&self, path: &Path, off: u64, n: usize, st: &mut Stored) -> io::Result<()> {
        if self.is_direct() {
            let ws = off / IO_ALIGN as u64 * IO_ALIGN as u64;
            let we = (off + n as u64).div_ceil(IO_ALIGN as u64) * IO_ALIGN as u64;
            let wlen = (we - ws) as usize;
            let buf = st.room(wlen);
            let r = if refused_for_tests(path) {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                read_window(&self.file, &mut buf[..wlen], ws, (off - ws) as usize + n)
            };
            match r {
                Ok(()) => {
                    st.start = (off - ws) as usize;
                    st.len = n;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.fall_back(path)?,
                Err(e) => return Err(e),
            }
        }
        let buf = st.room(n);
        self.file.read_exact_at(&mut buf[..n], off)?;
        st.start = 0;
        st.len = n;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off` (through this thread's aligned window when direct).
    pub fn read_exact_at(&self, path: &Path, buf: &mut [u8], off: u64) -> io::Result<()> {
        if !self.is_direct() {
            return self.file.read_exact_at(buf, off);
        }
        WINDOW.with(|w| {
            let mut w = w.borrow_mut();
            self.read_stored(path, off, buf.len(), &mut w)?;
            buf.copy_from_slice(w.bytes());
            Ok(())
        })
    }
}

/// Tests only: a volume whose path holds `no-odirect` has its direct reads refused (EINVAL),
/// as a filesystem without direct I/O refuses them, so the fallback runs on any test machine.
fn refused_for_tests(path: &Path) -> bool {
    cfg!(test) && path.to_string_lossy().contains("no-odirect")
}

/// Reads the aligned window `buf` at `ws` (aligned) until at least `need` bytes are in, or
/// the file ends (a direct read at the end of a file returns what there is, unaligned).
fn read_window(f: &File, buf: &mut [u8], ws: u64, need: usize) -> io::Result<()> {
    let mut got = 0;
    while got < need {
        match f.read_at(&mut buf[got..], ws + got as u64) {
            Ok(0) => break,
            Ok(k) => {
                got += k;
                if k % IO_ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got < need {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        crate::io::scratch_dir(&format!("dio-{tag}"))
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// Every offset and length class (inside one block, across blocks, to the unaligned end
    /// of the file), direct and cached, reads the file's bytes; past the end is an EOF error.
    #[test]
    fn reads_any_range_directly_or_through_the_cache() {
        let d = dir("ranges");
        let p = d.join("v");
        let data = pattern(3 * IO_ALIGN + 1234);
        std::fs::write(&p, &data).unwrap();
        let direct = VolFile::from_storage(File::open(&p).unwrap(), &p).unwrap();
        let cached = VolFile::cached(File::open(&p).unwrap());
        let len = data.len() as u64;
        let mut st = Stored::with_capacity(16);
        for f in [&direct, &cached] {
            for (off, n) in [
                (0u64, 1usize),
                (0, IO_ALIGN),
                (1, IO_ALIGN),
                (4095, 2),
                (100, 2 * IO_ALIGN + 7),
                (len - 10, 10),
                (len - 1234, 1234),
                (0, data.len()),
            ] {
                f.read_stored(&p, off, n, &mut st).unwrap();
                assert_eq!(
                    st.bytes(),
                    &data[off as usize..off as usize + n],
                    "{off} {n}"
                );
                let mut b = vec![0u8; n];
                f.read_exact_at(&p, &mut b, off).unwrap();
                assert_eq!(b, &data[off as usize..off as usize + n]);
            }
            let e = f.read_stored(&p, len - 5, 6, &mut st).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The fallback: a read refused with EINVAL (as a filesystem without direct I/O answers)
    /// drops the file's pages and goes on through the cache; later reads stay there.
    #[test]
    fn a_refused_direct_read_falls_back_to_the_dropped_cache() {
        let d = dir("fallback");
        let p = d.join("v");
        let data = pattern(2 * IO_ALIGN + 10);
        std::fs::write(&p, &data).unwrap();
        let f = VolFile::from_storage(File::open(&p).unwrap(), &p).unwrap();
        if !f.is_direct() {
            crate::errln!("skipped: {} does not do O_DIRECT here", d.display());
            return;
        }
        // What the kernel answers a direct read it cannot do (an unaligned buffer here).
        let mut st = Stored::with_capacity(8192);
        let buf = st.room(8192);
        let e = f.file.read_at(&mut buf[1..4097], 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // The same answer to `read_stored` (the test hook): it falls back and reads.
        let refused = d.join("no-odirect");
        std::fs::write(&refused, &data).unwrap();
        let g = VolFile::from_storage(File::open(&refused).unwrap(), &refused).unwrap();
        assert!(g.is_direct());
        g.read_stored(&refused, 3, 5000, &mut st).unwrap();
        assert!(!g.is_direct());
        assert_eq!(st.bytes(), &data[3..5003]);
        let mut b = vec![0u8; 9];
        g.read_exact_at(&refused, &mut b, 4090).unwrap();
        assert_eq!(b, &data[4090..4099]);
        // Turned off by hand, the same.
        f.fall_back(&p).unwrap();
        assert!(!f.is_direct());
        f.read_stored(&p, 3, 5000, &mut st).unwrap();
        assert_eq!(st.bytes(), &data[3..5003]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
