//! The planning reads' memory of failed reads. Before a job, the partition table, the backup
//! GPT, the layer signatures at the end of a disk and the filesystems' metadata are read, some
//! places more than once (the last sectors by the backup GPT, IMSM and md probes). On a failing
//! disk a read that hits a bad sector costs seconds, so [`KnownBad`] remembers every read that
//! failed with a media error and fails at once, without asking the disk, any later read that
//! contains one of them whole: such a read holds the same bad sector, so it would fail too.
//! A read that only overlaps a failed one is still sent (its own sectors may all be good).
use crate::io::BlockSource;
use crate::rescue::engine::is_media_error;
use std::io;
use std::sync::Mutex;

/// A [`BlockSource`] that never repeats a failed read (see the module documentation).
pub struct KnownBad<'a> {
    inner: &'a dyn BlockSource,
    /// Failed reads as `[start, end)`.
    failed: Mutex<Vec<(u64, u64)>>,
}

impl<'a> KnownBad<'a> {
    pub fn new(inner: &'a dyn BlockSource) -> KnownBad<'a> {
        KnownBad {
            inner,
            failed: Mutex::new(Vec::new()),
        }
    }

    /// How many reads failed on the disk (each once).
    pub fn failed_reads(&self) -> usize {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl BlockSource for KnownBad<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64).min(self.size());
        let known = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&(a, b)| offset <= a && b <= end);
        if known {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let r = self.inner.read_at(buf, offset);
        if let Err(e) = &r {
            if is_media_error(e) && offset < end {
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((offset, end));
            }
        }
        r
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::SimDevice;

    #[test]
    fn a_read_holding_a_failed_one_is_not_sent_again() {
        let sim = SimDevice::new(SimDevice::pattern(64 << 10, 1), 512)
            .bad(63 << 10, 512)
            .bad(40 << 10, 512);
        let k = KnownBad::new(&sim);
        let mut b = vec![0u8; 512];
        assert!(k.read_at(&mut b, 63 << 10).is_err());
        assert_eq!(sim.failed_reads(), 1);
        // The same sector, and a larger read holding it: failed without a read.
        assert!(k.read_at(&mut b, 63 << 10).is_err());
        let mut big = vec![0u8; 4096];
        assert!(k.read_at(&mut big, 60 << 10).is_err());
        assert_eq!((sim.reads(), sim.failed_reads()), (1, 1));
        // Good sectors elsewhere still read.
        assert_eq!(k.read_at(&mut b, 0).unwrap(), 512);
        // A failed large read does not condemn a smaller one inside it.
        let mut r = vec![0u8; 8192];
        assert!(k.read_at(&mut r, 36 << 10).is_err());
        assert_eq!(sim.failed_reads(), 2);
        assert_eq!(k.read_at(&mut b, 36 << 10).unwrap(), 512);
        assert_eq!(k.failed_reads(), 2);
    }
}
