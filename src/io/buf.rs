//! Page-aligned heap buffers for O_DIRECT I/O (the kernel requires the buffer address, the
//! length and the file offset to be multiples of the device's logical block size), and the
//! all-zero test image create runs on every chunk.
use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment used for every I/O buffer: covers 512 and 4096-byte logical sectors.
pub const IO_ALIGN: usize = 4096;

/// A zero-initialised, `IO_ALIGN`-aligned byte buffer of fixed length.
pub struct AlignedBuf {
    /// The aligned start, inside the allocation at `raw`.
    ptr: NonNull<u8>,
    len: usize,
    /// Usable bytes from `ptr` (a multiple of `IO_ALIGN`).
    cap: usize,
    raw: NonNull<u8>,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); moving it to another thread
// moves that ownership, and &AlignedBuf only gives out &[u8].
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only permit reads of plain bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (len is rounded up to a multiple of IO_ALIGN, minimum one block).
    ///
    /// One block more is allocated with the allocator's own alignment and the buffer starts at
    /// the first aligned byte in it: a zeroed allocation of ordinary alignment is `calloc`,
    /// which hands out large buffers as fresh zero pages without writing them, where a zeroed
    /// allocation aligned to a page is written with zeros byte by byte (megabytes per job at
    /// its start, all to be overwritten by reads).
    pub fn new(len: usize) -> Self {
        let cap = len.max(1).div_ceil(IO_ALIGN) * IO_ALIGN;
        let layout =
            Layout::from_size_align(cap + IO_ALIGN, 16).expect("I/O buffer size overflows");
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let raw = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let off = raw.as_ptr().align_offset(IO_ALIGN);
        assert!(off < IO_ALIGN, "cannot align an I/O buffer");
        // SAFETY: off < IO_ALIGN, so `raw + off .. raw + off + cap` lies inside the allocation
        // of cap + IO_ALIGN bytes.
        let ptr = unsafe { NonNull::new_unchecked(raw.as_ptr().add(off)) };
        AlignedBuf {
            ptr,
            len,
            cap,
            raw,
            layout,
        }
    }
    /// The usable length (what `new` was asked for).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The allocated capacity (multiple of IO_ALIGN).
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Changes the usable length within the capacity (for the short tail of a disk).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "AlignedBuf::set_len beyond capacity"
        );
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for capacity() >= len initialised (zeroed) bytes and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: raw was allocated with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.raw.as_ptr(), self.layout) }
    }
}

/// Whether every byte of `b` is zero (a chunk an image stores as a hole), eight bytes at a time.
pub fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the aligned middle.
        unsafe { b.align_to::<u64>() }
    };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_test_at_any_alignment_and_position() {
        let mut v = [0u8; 200];
        for start in 0..9 {
            assert!(is_zero(&v[start..start + 150]));
            for at in [0, 1, 7, 8, 63, 149] {
                v[start + at] = 1;
                assert!(!is_zero(&v[start..start + 150]), "{start} {at}");
                v[start + at] = 0;
            }
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::new(10_000);
        assert_eq!(b.as_ptr() as usize % IO_ALIGN, 0);
        assert_eq!(b.len(), 10_000);
        assert_eq!(b.capacity(), 12_288);
        assert!(b.iter().all(|&x| x == 0));
        b[9_999] = 7;
        b.set_len(12_288);
        assert_eq!(b[9_999], 7);
    }
}
