//! The served disk's chunks: read from the image chain on demand (only the chunks asked for are
//! read and decompressed, each checked against its BLAKE3 like a restore does) and kept in a
//! bounded least-recently-used cache shared by every connection. A small pool of opened chains
//! lets two clients decompress at once; zero and unallocated chunks share one zero buffer and
//! take no cache space. Memory: the cache's capacity plus one chunk per reader in the pool.
use crate::error::{Error, ErrorKind, Result};
use crate::image::format::Kind;
use crate::image::reader::Chain;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One opened chain with its scratch buffer for compressed bytes.
struct Reader {
    chain: Chain,
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Lru {
    map: HashMap<u64, (Arc<[u8]>, u64)>,
    /// Use tick → chunk, oldest first.
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, i: u64) -> Option<Arc<[u8]>> {
        let (data, t) = self.map.get_mut(&i)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, i);
        Some(data.clone())
    }
    fn put(&mut self, i: u64, data: Arc<[u8]>, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if let Some((_, t)) = self.map.remove(&i) {
            self.order.remove(&t);
        }
        while self.map.len() >= capacity {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&old);
        }
        self.tick += 1;
        self.map.insert(i, (data, self.tick));
        self.order.insert(self.tick, i);
    }
}

/// Counters, for the server's summary and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Chunks read and decompressed from the image.
    pub loads: u64,
    /// Zero or unallocated chunks answered without a read.
    pub zero: u64,
}

/// The chunks of a resolved chain, cached.
pub struct ChunkCache {
    pub disk_size: u64,
    pub chunk_size: u64,
    pub sector_size: u32,
    capacity: usize,
    readers: Mutex<Vec<Reader>>,
    free: Condvar,
    lru: Mutex<Lru>,
    zero: Arc<[u8]>,
    hits: AtomicU64,
    loads: AtomicU64,
    zeros: AtomicU64,
}

impl ChunkCache {
    /// Opens the chain at `path` `readers` times (at least once) and caches up to
    /// `cache_bytes` of decompressed chunks (at least one chunk).
    pub fn open(path: &Path, readers: usize, cache_bytes: u64) -> Result<ChunkCache> {
        let first = Chain::open(path)?;
        let h = first.top().header.clone();
        let mut pool = vec![Reader {
            chain: first,
            scratch: Vec::new(),
        }];
        for _ in 1..readers.max(1) {
            pool.push(Reader {
                chain: Chain::open(path)?,
                scratch: Vec::new(),
            });
        }
        let cs = h.chunk_size as u64;
        Ok(ChunkCache {
            disk_size: h.disk_size,
            chunk_size: cs,
            sector_size: h.sector_size,
            capacity: (cache_bytes / cs).max(1) as usize,
            readers: Mutex::new(pool),
            free: Condvar::new(),
            lru: Mutex::new(Lru::default()),
            zero: vec![0u8; cs as usize].into(),
            hits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            zeros: AtomicU64::new(0),
        })
    }

    /// How many chunks the cache holds at most.
    pub fn capacity_chunks(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            zero: self.zeros.load(Ordering::Relaxed),
        }
    }

    /// Bytes of chunk `i` (its full length; the last chunk may be shorter than a chunk).
    pub fn chunk_len(&self, i: u64) -> usize {
        let s = i * self.chunk_size;
        (self.disk_size - s).min(self.chunk_size) as usize
    }

    /// Chunk `i` as the disk had it (at least `chunk_len(i)` bytes; zero chunks are a shared
    /// buffer of a full chunk).
    pub fn get(&self, i: u64) -> Result<Arc<[u8]>> {
        if i * self.chunk_size >= self.disk_size {
            return Err(Error::invalid(format!(
                "chunk {i} is past the end of the disk"
            )));
        }
        if let Some(d) = self.lock_lru().get(i) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        let mut r = self.take_reader();
        let len = self.chunk_len(i);
        let mut buf = vec![0u8; self.chunk_size as usize];
        let res = {
            let Reader { chain, scratch } = &mut r;
            chain.read_chunk_resolved(i, &mut buf, scratch)
        };
        self.give_reader(r);
        let (_, kind) = res?;
        if matches!(kind, Kind::Zero | Kind::Unallocated) {
            self.zeros.fetch_add(1, Ordering::Relaxed);
            return Ok(self.zero.clone());
        }
        buf.truncate(len);
        let data: Arc<[u8]> = buf.into();
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.lock_lru().put(i, data.clone(), self.capacity);
        Ok(data)
    }

    fn lock_lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_reader(&self) -> Reader {
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = pool.pop() {
                return r;
            }
            pool = self.free.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_reader(&self, r: Reader) {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
        self.free.notify_one();
    }
}

/// A read of the cache failed: the NBD error value for it.
pub fn nbd_error(e: &Error) -> u32 {
    match e.kind {
        ErrorKind::InvalidInput => super::proto::EINVAL,
        _ => super::proto::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut l = Lru::default();
        let d = |b: u8| -> Arc<[u8]> { vec![b].into() };
        l.put(1, d(1), 2);
        l.put(2, d(2), 2);
        assert!(l.get(1).is_some()); // 1 is now newer than 2
        l.put(3, d(3), 2);
        assert!(l.get(2).is_none());
        assert_eq!(&*l.get(1).unwrap(), &[1]);
        assert_eq!(&*l.get(3).unwrap(), &[3]);
        assert_eq!(l.map.len(), 2);
        assert_eq!(l.order.len(), 2);
        // Replacing an entry keeps one copy.
        l.put(3, d(4), 2);
        assert_eq!(l.map.len(), 2);
        assert_eq!(l.order.len(), 2);
        assert_eq!(&*l.get(3).unwrap(), &[4]);
        let mut none = Lru::default();
        none.put(1, d(1), 0);
        assert!(none.get(1).is_none());
    }
}
