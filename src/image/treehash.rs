//! A chunk's BLAKE3 hash and CRC32 put together from parts hashed at different times: the
//! chunks image create holds back around unreadable sectors (see `feed`) have most of their
//! bytes final long before they are stored, so their aligned [`SUBTREE`]-byte subtrees are
//! hashed while the rescue engine trims, scrapes and retries (CPU otherwise idle), and only the
//! subtrees with unreadable or late sectors are hashed when the chunk is stored.
//!
//! BLAKE3 is a tree: the chaining value of an aligned power-of-two subtree depends only on its
//! bytes and offset, and merging the subtrees' values gives the same root hash as hashing the
//! whole chunk at once (`blake3::hazmat`; the tests check it against `blake3::hash` and
//! `keyed_hash`). CRC32s of consecutive parts combine the same way (`crc32fast::Hasher::combine`).
//! So the hash and CRC a [`Partial`] finishes with are exactly those of the whole chunk's bytes.
use super::crypt::ChunkHasher;
use blake3::hazmat::Mode;
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt};

/// Bytes per subtree (a power of two, 16 BLAKE3 chunks: enough for its SIMD lanes).
pub const SUBTREE: usize = 16 << 10;

/// A subtree's chaining value and the CRC32 of its bytes.
pub type Part = (ChainingValue, u32);

/// Hashes the `k`-th subtree of a chunk (its `SUBTREE` bytes `bytes`).
pub fn subtree(hasher: &ChunkHasher, k: usize, bytes: &[u8]) -> Part {
    debug_assert_eq!(bytes.len(), SUBTREE);
    let mut h = match hasher {
        ChunkHasher::Plain => blake3::Hasher::new(),
        ChunkHasher::Keyed(key) => blake3::Hasher::new_keyed(key),
    };
    h.set_input_offset((k * SUBTREE) as u64);
    h.update(bytes);
    (h.finalize_non_root(), crc32fast::hash(bytes))
}

/// The subtrees of one chunk hashed so far.
#[derive(Debug, Clone)]
pub struct Partial {
    parts: Vec<Option<Part>>,
}

impl Partial {
    /// For a chunk of `len` bytes: `None` when it is not made of at least two whole subtrees of
    /// a power-of-two count (the disk's short last chunk; it is hashed whole).
    pub fn new(len: usize) -> Option<Partial> {
        let n = len / SUBTREE;
        (len.is_multiple_of(SUBTREE) && n >= 2 && n.is_power_of_two()).then(|| Partial {
            parts: vec![None; n],
        })
    }

    /// Subtrees in the chunk.
    pub fn subtrees(&self) -> usize {
        self.parts.len()
    }

    pub fn has(&self, k: usize) -> bool {
        self.parts.get(k).is_some_and(|p| p.is_some())
    }

    /// Subtrees hashed already.
    pub fn known(&self) -> usize {
        self.parts.iter().filter(|p| p.is_some()).count()
    }

    pub fn set(&mut self, k: usize, part: Part) {
        if let Some(p) = self.parts.get_mut(k) {
            *p = Some(part);
        }
    }

    /// The chunk's hash and CRC32, `data` being all of its bytes (the subtrees not hashed yet
    /// are hashed from it; those hashed before must hold these same bytes).
    pub fn finish(mut self, hasher: &ChunkHasher, data: &[u8]) -> ([u8; 32], u32) {
        debug_assert_eq!(data.len(), self.parts.len() * SUBTREE);
        let mut crc = crc32fast::Hasher::new();
        let mut cvs: Vec<ChainingValue> = Vec::with_capacity(self.parts.len());
        for (k, p) in self.parts.iter_mut().enumerate() {
            let (cv, c) = match p.take() {
                Some(x) => x,
                None => subtree(hasher, k, &data[k * SUBTREE..(k + 1) * SUBTREE]),
            };
            crc.combine(&crc32fast::Hasher::new_with_initial_len(c, SUBTREE as u64));
            cvs.push(cv);
        }
        let mode = match hasher {
            ChunkHasher::Plain => Mode::Hash,
            ChunkHasher::Keyed(key) => Mode::KeyedHash(key),
        };
        // Equal power-of-two subtrees: merge level by level down to the root's two children.
        while cvs.len() > 2 {
            cvs = cvs
                .chunks_exact(2)
                .map(|p| merge_subtrees_non_root(&p[0], &p[1], mode))
                .collect();
        }
        let root = merge_subtrees_root(&cvs[0], &cvs[1], mode);
        (*root.as_bytes(), crc.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn parts_give_the_whole_chunks_hash_and_crc() {
        for hasher in [ChunkHasher::Plain, ChunkHasher::Keyed([7u8; 32])] {
            for len in [2 * SUBTREE, 64 << 10, 1 << 20] {
                let data = bytes(len, len as u64);
                let want = (hasher.hash(&data), crc32fast::hash(&data));
                // None, some and all of the subtrees hashed beforehand.
                let n = len / SUBTREE;
                for known in [
                    vec![],
                    vec![1],
                    (0..n).step_by(3).collect(),
                    (0..n).collect(),
                ] {
                    let mut p = Partial::new(len).unwrap();
                    for &k in &known {
                        p.set(
                            k,
                            subtree(&hasher, k, &data[k * SUBTREE..(k + 1) * SUBTREE]),
                        );
                    }
                    assert_eq!(p.known(), known.len());
                    assert_eq!(p.finish(&hasher, &data), want, "{hasher:?} {len} {known:?}");
                }
            }
        }
    }

    #[test]
    fn a_part_of_other_bytes_changes_the_result() {
        let data = bytes(64 << 10, 3);
        let mut other = data.clone();
        other[SUBTREE + 5] ^= 1;
        let mut p = Partial::new(data.len()).unwrap();
        p.set(
            1,
            subtree(&ChunkHasher::Plain, 1, &other[SUBTREE..2 * SUBTREE]),
        );
        let (h, c) = p.finish(&ChunkHasher::Plain, &data);
        assert_eq!(
            (h, c),
            (blake3::hash(&other).into(), crc32fast::hash(&other))
        );
        assert_ne!(h, *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn only_whole_power_of_two_trees() {
        assert!(Partial::new(SUBTREE).is_none());
        assert!(Partial::new(3 * SUBTREE).is_none());
        assert!(Partial::new((1 << 20) - 512).is_none());
        assert_eq!(Partial::new(1 << 20).unwrap().subtrees(), 64);
    }
}
