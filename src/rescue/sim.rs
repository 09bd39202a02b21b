//! A simulated failing disk for tests: in-memory contents, a logical sector size, permanently
//! bad sectors and regions, transient errors that heal after N failed reads, and slow regions.
//! A read touching any failing sector fails as a whole with EIO, as an O_DIRECT read does.
//! For benchmarks it counts reads and failed reads and keeps a *simulated* clock: each read
//! adds a modelled cost (command overhead, transfer time, a seek when it does not start where
//! the previous read ended, seconds for a failed read) without sleeping.
//!
//! Tests that must act at a point of a job's progress rather than at a moment of wall time
//! (cancel after the n-th read, hold a read until the progress has shown something) set a
//! hook ([`SimDevice::on_read`]) that runs before every read, on the reading thread.
use crate::io::BlockSource;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// See the module documentation.
pub struct SimDevice {
    data: Vec<u8>,
    /// The size (`data.len()`, or the size of a contents-less device from `zeros`).
    size: u64,
    lbs: u32,
    /// Permanently unreadable byte ranges `[start, end)` (sector aligned).
    bad: Vec<(u64, u64)>,
    /// Ranges that fail the next `n` reads touching them, then read fine.
    transient: Mutex<Vec<(u64, u64, u32)>>,
    /// Ranges where every read takes this long.
    slow: Vec<(u64, u64, Duration)>,
    reads: AtomicU64,
    failed: AtomicU64,
    cost: Cost,
    /// Simulated nanoseconds, and where the previous read ended (for the seek cost).
    sim_ns: AtomicU64,
    head: AtomicU64,
    /// Runs before every read (see [`SimDevice::on_read`]).
    hook: Option<ReadHook>,
}

/// What a read hook is told: the read's number (0 for the first read of the device), its
/// offset and its length in bytes.
pub type ReadHook = Box<dyn Fn(u64, u64, usize) + Send + Sync>;

/// The modelled cost of reads (see [`SimDevice::costs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// Per read command.
    pub per_read: Duration,
    /// Transfer time per MiB read.
    pub per_mib: Duration,
    /// Extra when a read does not start where the previous one ended.
    pub seek: Duration,
    /// A read that fails (the drive retries internally, then gives up).
    pub failed: Duration,
}

impl SimDevice {
    /// A device holding `data` (its length is the size) with `lbs`-byte sectors.
    pub fn new(data: Vec<u8>, lbs: u32) -> SimDevice {
        SimDevice {
            size: data.len() as u64,
            data,
            lbs,
            bad: vec![],
            transient: Mutex::new(vec![]),
            slow: vec![],
            reads: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cost: Cost::default(),
            sim_ns: AtomicU64::new(0),
            head: AtomicU64::new(0),
            hook: None,
        }
    }
    /// A device of `size` bytes that reads as zeros and holds no contents in memory (for
    /// benchmarks of large layouts; `data()` is empty).
    pub fn zeros(size: u64, lbs: u32) -> SimDevice {
        let mut d = SimDevice::new(vec![], lbs);
        d.size = size;
        d
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
    /// Runs `hook(n, offset, len)` before every read, on the thread that reads (`n` counts
    /// from 0). A test cancels a job after the n-th read with it, or holds a read back until
    /// it has seen what it waits for: points of the job's progress, not of wall time.
    pub fn on_read(mut self, hook: impl Fn(u64, u64, usize) + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }
    /// Charges every read its modelled cost on the simulated clock ([`SimDevice::sim_time`]).
    pub fn costs(mut self, cost: Cost) -> Self {
        self.cost = cost;
        self
    }
    /// The simulated time of all reads so far.
    pub fn sim_time(&self) -> Duration {
        Duration::from_nanos(self.sim_ns.load(Ordering::Relaxed))
    }
    /// How many reads failed.
    pub fn failed_reads(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
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
        self.size
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.hook {
            h(n, offset, buf.len());
        }
        let size = self.size;
        if offset >= size {
            return Ok(0);
        }
        if !offset.is_multiple_of(self.lbs as u64)
            || (!buf.len().is_multiple_of(self.lbs as usize) && offset + buf.len() as u64 <= size)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let end = (offset + buf.len() as u64).min(size);
        let res = self.read_inner(buf, offset, end);
        let c = &self.cost;
        let mut t = c.per_read;
        if self.head.swap(end, Ordering::Relaxed) != offset {
            t += c.seek;
        }
        match &res {
            Ok(n) => t += c.per_mib.mul_f64(*n as f64 / (1u64 << 20) as f64),
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                t += c.failed;
            }
        }
        self.sim_ns
            .fetch_add(t.as_nanos() as u64, Ordering::Relaxed);
        res
    }
    fn name(&self) -> String {
        "simulated disk".into()
    }
}

impl SimDevice {
    fn read_inner(&self, buf: &mut [u8], offset: u64, end: u64) -> io::Result<usize> {
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
        if self.data.is_empty() {
            buf[..n].fill(0);
        } else {
            buf[..n].copy_from_slice(&self.data[offset as usize..end as usize]);
        }
        Ok(n)
    }
}
