//! A simulated failing disk for tests: in-memory contents, a logical sector size, permanently
//! bad sectors and regions, transient errors that heal after N failed reads, and slow regions.
//! A read touching any failing sector fails as a whole with EIO, as an O_DIRECT read does.
use crate::io::BlockSource;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// See the module documentation.
pub struct SimDevice {
    data: Vec<u8>,
    lbs: u32,
    /// Permanently unreadable byte ranges `[start, end)` (sector aligned).
    bad: Vec<(u64, u64)>,
    /// Ranges that fail the next `n` reads touching them, then read fine.
    transient: Mutex<Vec<(u64, u64, u32)>>,
    /// Ranges where every read takes this long.
    slow: Vec<(u64, u64, Duration)>,
    reads: AtomicU64,
}

impl SimDevice {
    /// A device holding `data` (its length is the size) with `lbs`-byte sectors.
    pub fn new(data: Vec<u8>, lbs: u32) -> SimDevice {
        SimDevice {
            data,
            lbs,
            bad: vec![],
            transient: Mutex::new(vec![]),
            slow: vec![],
            reads: AtomicU64::new(0),
        }
    }
    /// Deterministic non-zero-ish contents of `size` bytes (each sector different).
    pub fn pattern(size: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; size];
        let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
        for c in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
        v
    }
    /// Marks `[start, start+len)` permanently unreadable.
    pub fn bad(mut self, start: u64, len: u64) -> Self {
        self.bad.push((start, start + len));
        self
    }
    /// Makes `[start, start+len)` fail the next `times` reads touching it.
    pub fn transient(self, start: u64, len: u64, times: u32) -> Self {
        self.transient
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((start, start + len, times));
        self
    }
    /// Makes every read touching `[start, start+len)` take `delay`.
    pub fn slow(mut self, start: u64, len: u64, delay: Duration) -> Self {
        self.slow.push((start, start + len, delay));
        self
    }
    /// The true contents.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// How many reads were issued.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    /// Whether the byte at `pos` is permanently bad.
    pub fn is_bad(&self, pos: u64) -> bool {
        self.bad.iter().any(|&(a, b)| pos >= a && pos < b)
    }
}

fn overlaps(a: u64, b: u64, s: u64, e: u64) -> bool {
    a < e && s < b
}

impl BlockSource for SimDevice {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let size = self.data.len() as u64;
        if offset >= size {
            return Ok(0);
        }
        if !offset.is_multiple_of(self.lbs as u64)
            || (!buf.len().is_multiple_of(self.lbs as usize) && offset + buf.len() as u64 <= size)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let end = (offset + buf.len() as u64).min(size);
        for &(a, b, d) in &self.slow {
            if overlaps(a, b, offset, end) {
                std::thread::sleep(d);
            }
        }
        if self.bad.iter().any(|&(a, b)| overlaps(a, b, offset, end)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        {
            let mut t = self.transient.lock().unwrap_or_else(|e| e.into_inner());
            let mut failed = false;
            for r in t.iter_mut() {
                if r.2 > 0 && overlaps(r.0, r.1, offset, end) {
                    r.2 -= 1;
                    failed = true;
                }
            }
            if failed {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        let n = (end - offset) as usize;
        buf[..n].copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(n)
    }
    fn name(&self) -> String {
        "simulated disk".into()
    }
}
