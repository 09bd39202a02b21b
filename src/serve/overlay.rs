//! The copy-on-write overlay of `image serve --writable-overlay FILE`: writes to the served
//! disk go into FILE, never into the image. FILE is a sparse file — a header, a bitmap of the
//! blocks written, and a data area where block `b` of the disk lives at `data_offset + b *
//! block_size` — bound to one image (its UUID and media hash), so it can be served again later
//! and is refused with another image. The format is in docs/image-format.md ("Overlay file").
//!
//! A write of part of a block not yet in the overlay first copies the block from the image
//! (read-modify-write). Reads take written blocks from FILE and the rest from the image.
//! Memory: the bitmap, one bit per 64 KiB block (2 MiB for a 1 TiB disk).
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const MAGIC: &[u8; 8] = b"LBOVRLY\0";
pub const VERSION: u32 = 1;
/// Bytes of the header at offset 0 (the bitmap starts right after it).
pub const HEADER_LEN: u64 = 4096;
/// The overlay's unit of copy-on-write.
pub const BLOCK: u64 = 64 << 10;
/// The data area starts at a multiple of this.
const DATA_ALIGN: u64 = 1 << 20;
/// Header bytes covered by the CRC32 (the CRC follows them).
const HEADER_FIELDS: usize = 96;

/// The overlay's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayHeader {
    pub block_size: u64,
    pub disk_size: u64,
    pub image_uuid: [u8; 16],
    pub media_hash: [u8; 32],
    pub bitmap_offset: u64,
    pub bitmap_len: u64,
    pub data_offset: u64,
}

impl OverlayHeader {
    /// The layout for a disk of `disk_size` bytes of the image `uuid` / `media_hash`.
    pub fn new(disk_size: u64, image_uuid: [u8; 16], media_hash: [u8; 32]) -> OverlayHeader {
        let blocks = disk_size.div_ceil(BLOCK);
        let bitmap_len = blocks.div_ceil(8).next_multiple_of(HEADER_LEN);
        OverlayHeader {
            block_size: BLOCK,
            disk_size,
            image_uuid,
            media_hash,
            bitmap_offset: HEADER_LEN,
            bitmap_len,
            data_offset: (HEADER_LEN + bitmap_len).next_multiple_of(DATA_ALIGN),
        }
    }

    pub fn blocks(&self) -> u64 {
        self.disk_size.div_ceil(self.block_size)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.block_size as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.disk_size.to_le_bytes());
        b[24..40].copy_from_slice(&self.image_uuid);
        b[40..72].copy_from_slice(&self.media_hash);
        b[72..80].copy_from_slice(&self.bitmap_offset.to_le_bytes());
        b[80..88].copy_from_slice(&self.bitmap_len.to_le_bytes());
        b[88..96].copy_from_slice(&self.data_offset.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_FIELDS]);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header (`None`: not an overlay file at all).
    pub fn decode(b: &[u8]) -> Option<std::result::Result<OverlayHeader, String>> {
        if b.len() < 100 || &b[..8] != MAGIC {
            return None;
        }
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if crc32fast::hash(&b[..HEADER_FIELDS]) != u32at(96) {
            return Some(Err("its header is damaged (CRC32 mismatch)".into()));
        }
        if u32at(8) != VERSION {
            return Some(Err(format!(
                "it is version {} of the overlay format; this Lifeboat reads version {VERSION}",
                u32at(8)
            )));
        }
        let h = OverlayHeader {
            block_size: u32at(12) as u64,
            disk_size: u64at(16),
            image_uuid: b[24..40].try_into().expect("16 bytes"),
            media_hash: b[40..72].try_into().expect("32 bytes"),
            bitmap_offset: u64at(72),
            bitmap_len: u64at(80),
            data_offset: u64at(88),
        };
        let want = OverlayHeader::new(h.disk_size, h.image_uuid, h.media_hash);
        if h != want {
            return Some(Err("its layout fields are not valid".into()));
        }
        Some(Ok(h))
    }
}

/// An open overlay file.
pub struct Overlay {
    file: File,
    path: PathBuf,
    pub header: OverlayHeader,
    bitmap: Mutex<Vec<u8>>,
}

/// Whether bit `b` is set.
fn bit(map: &[u8], b: u64) -> bool {
    map.get((b / 8) as usize)
        .is_some_and(|x| x & (1 << (b % 8)) != 0)
}

impl Overlay {
    /// Opens the overlay at `path`, creating it (sparse) when it does not exist. An existing
    /// file must be an overlay of this very image (`uuid`, `media_hash`, `disk_size`).
    pub fn open_or_create(
        path: &Path,
        disk_size: u64,
        uuid: [u8; 16],
        media_hash: [u8; 32],
    ) -> Result<Overlay> {
        let want = OverlayHeader::new(disk_size, uuid, media_hash);
        let exists = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => true,
            Ok(m) => {
                return Err(Error::refused(format!(
                "the overlay {} is {}, not a regular file; name a new file or an existing overlay",
                path.display(),
                crate::io::open::file_kind(&m.file_type())
            ))
                .at_path(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("look at", path, e)),
        };
        if !exists {
            let file = crate::io::open::create_fresh(path)?;
            file.write_all_at(&want.encode(), 0)
                .and_then(|_| file.set_len(want.data_offset + disk_size))
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::io("write", path, e))?;
            return Ok(Overlay {
                file,
                path: path.to_path_buf(),
                bitmap: Mutex::new(vec![0u8; want.bitmap_len as usize]),
                header: want,
            });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let mut hb = vec![0u8; HEADER_LEN as usize];
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len < HEADER_LEN {
            return Err(not_overlay(path));
        }
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| Error::io("read", path, e))?;
        let h = match OverlayHeader::decode(&hb) {
            None => return Err(not_overlay(path)),
            Some(Err(why)) => {
                return Err(
                    Error::corrupt(format!("the overlay is not usable: {why}")).at_path(path)
                )
            }
            Some(Ok(h)) => h,
        };
        if h.image_uuid != uuid || h.media_hash != media_hash || h.disk_size != disk_size {
            return Err(Error::refused(format!(
                "the overlay {} holds writes made to another image (UUID {}); its blocks only \
                 make sense over that image: serve that image with it, or name a new overlay file",
                path.display(),
                crate::image::format::uuid_str(&h.image_uuid)
            ))
            .at_path(path));
        }
        let mut bitmap = vec![0u8; h.bitmap_len as usize];
        file.read_exact_at(&mut bitmap, h.bitmap_offset)
            .map_err(|e| Error::io("read the bitmap of", path, e))?;
        // A file cut short (a copy that stopped, a full disk, a careless truncate) has lost
        // the bytes of any written block past its end: they would read back as zeros, so it
        // is damaged. A cut past the last written block loses nothing and is extended again.
        if let Some(b) = (0..h.blocks()).rev().find(|&b| bit(&bitmap, b)) {
            let need = h.data_offset + b * BLOCK + (disk_size - b * BLOCK).min(BLOCK);
            if len < need {
                return Err(Error::corrupt(format!(
                    "the overlay {} is cut short: {} bytes where its written blocks need {}; \
                     the writes past its end are lost (serve with a new overlay file)",
                    path.display(),
                    len,
                    need
                ))
                .at_path(path));
            }
        }
        if len < h.data_offset + disk_size {
            file.set_len(h.data_offset + disk_size)
                .map_err(|e| Error::io("extend", path, e))?;
        }
        Ok(Overlay {
            file,
            path: path.to_path_buf(),
            header: h,
            bitmap: Mutex::new(bitmap),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bitmap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks written so far.
    pub fn written_blocks(&self) -> u64 {
        self.lock().iter().map(|b| b.count_ones() as u64).sum()
    }

    fn block_len(&self, b: u64) -> u64 {
        (self.header.disk_size - b * BLOCK).min(BLOCK)
    }

    /// Whether any block touching `[off, off + len)` is in the overlay.
    pub fn any_written(&self, off: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let map = self.lock();
        (off / BLOCK..(off + len).div_ceil(BLOCK)).any(|b| bit(&map, b))
    }

    /// Replaces the bytes of `buf` (disk bytes `[off, off + buf.len())`) that are in the
    /// overlay with the overlay's.
    pub fn patch(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let end = off + buf.len() as u64;
        let map = self.lock();
        for b in off / BLOCK..end.div_ceil(BLOCK) {
            if !bit(&map, b) {
                continue;
            }
            let a = (b * BLOCK).max(off);
            let e = ((b + 1) * BLOCK).min(end);
            let dst = &mut buf[(a - off) as usize..(e - off) as usize];
            self.file
                .read_exact_at(dst, self.header.data_offset + a)
                .map_err(|err| Error::io("read", &self.path, err).at_offset(a))?;
        }
        Ok(())
    }

    /// Writes `data` at disk offset `off`. `base(block_start, buf)` fills `buf` with the
    /// image's bytes of a block, for a partial write to a block not yet in the overlay.
    pub fn write(
        &self,
        off: u64,
        data: &[u8],
        base: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let end = off + data.len() as u64;
        if end > self.header.disk_size {
            return Err(Error::invalid("a write past the end of the disk"));
        }
        let mut map = self.lock();
        let mut block_buf = Vec::new();
        for b in off / BLOCK..end.div_ceil(BLOCK) {
            let bs = b * BLOCK;
            let bl = self.block_len(b);
            let a = bs.max(off);
            let e = (bs + bl).min(end);
            let src = &data[(a - off) as usize..(e - off) as usize];
            let whole = a == bs && e == bs + bl;
            if whole || bit(&map, b) {
                self.put(a, src)?;
            } else {
                block_buf.resize(bl as usize, 0);
                base(bs, &mut block_buf)?;
                block_buf[(a - bs) as usize..(e - bs) as usize].copy_from_slice(src);
                self.put(bs, &block_buf)?;
            }
            if !bit(&map, b) {
                let i = (b / 8) as usize;
                map[i] |= 1 << (b % 8);
                // The data is in place before the bit that says so.
                self.file
                    .write_all_at(&map[i..i + 1], self.header.bitmap_offset + i as u64)
                    .map_err(|err| Error::io("write the bitmap of", &self.path, err))?;
            }
        }
        Ok(())
    }

    fn put(&self, disk_off: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, self.header.data_offset + disk_off)
            .map_err(|e| Error::io("write", &self.path, e).at_offset(disk_off))
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }
}

fn not_overlay(path: &Path) -> Error {
    Error::refused(format!(
        "{} exists and is not a Lifeboat overlay file; name a new file (it is created) or an \
         existing overlay",
        path.display()
    ))
    .at_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_byte(pos: u64) -> u8 {
        (pos % 251) as u8
    }

    fn base(bs: u64, buf: &mut [u8]) -> Result<()> {
        for (k, x) in buf.iter_mut().enumerate() {
            *x = base_byte(bs + k as u64);
        }
        Ok(())
    }

    fn read(o: &Overlay, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        base(off, &mut v).unwrap();
        o.patch(off, &mut v).unwrap();
        v
    }

    #[test]
    fn header_round_trips_and_is_checked() {
        let h = OverlayHeader::new(10 << 20 | 512, [7; 16], [9; 32]);
        assert_eq!(h.blocks(), 161);
        assert_eq!(h.data_offset, 1 << 20);
        let b = h.encode();
        assert_eq!(OverlayHeader::decode(&b), Some(Ok(h.clone())));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(matches!(OverlayHeader::decode(&bad), Some(Err(_))));
        assert_eq!(OverlayHeader::decode(&[0u8; 200]), None);
    }

    #[test]
    fn writes_stay_in_the_overlay_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.ovl");
        let size = 3 * BLOCK + 1000;
        let o = Overlay::open_or_create(&p, size, [1; 16], [2; 32]).unwrap();
        // A partial write: the rest of the block keeps the image's bytes.
        o.write(BLOCK + 10, &[0xAA; 20], &base).unwrap();
        let r = read(&o, BLOCK, BLOCK as usize);
        for (k, x) in r.iter().enumerate() {
            let want = if (10..30).contains(&k) {
                0xAA
            } else {
                base_byte(BLOCK + k as u64)
            };
            assert_eq!(*x, want, "byte {k}");
        }
        // Across blocks, into the short last block.
        o.write(3 * BLOCK - 5, &[0x55; 1005], &base).unwrap();
        let r = read(&o, 3 * BLOCK - 10, 1010);
        assert_eq!(&r[..5], &read(&o, 3 * BLOCK - 10, 5)[..]);
        assert!(r[5..].iter().all(|&x| x == 0x55));
        assert!(o.write(size - 1, &[1, 2], &base).is_err());
        assert!(o.any_written(BLOCK, 1));
        assert!(!o.any_written(0, BLOCK));
        assert_eq!(o.written_blocks(), 3);
        o.flush().unwrap();
        drop(o);
        // Opened again: the same bytes; another image is refused.
        let o = Overlay::open_or_create(&p, size, [1; 16], [2; 32]).unwrap();
        assert_eq!(o.written_blocks(), 3);
        assert_eq!(read(&o, BLOCK + 10, 20), vec![0xAA; 20]);
        let e = Overlay::open_or_create(&p, size, [3; 16], [2; 32])
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::ErrorKind::Refused);
        let other = dir.path().join("x");
        std::fs::write(&other, vec![1u8; 5000]).unwrap();
        let e = Overlay::open_or_create(&other, size, [1; 16], [2; 32])
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::ErrorKind::Refused);
        // Sparse: only what was written takes space.
        let md = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{} bytes used",
            md.blocks() * 512
        );
    }

    #[test]
    fn a_truncated_overlay_is_damaged_not_zeros() {
        // A written block cut off by truncating the file would read back as zeros (the file
        // was silently extended again): refused as damaged, and the file is left alone.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.ovl");
        let size = 4 * BLOCK;
        let o = Overlay::open_or_create(&p, size, [1; 16], [2; 32]).unwrap();
        o.write(BLOCK, &[0xAA; 100], &base).unwrap();
        o.flush().unwrap();
        let data_offset = o.header.data_offset;
        drop(o);
        let cut = data_offset + BLOCK + 50;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let e = Overlay::open_or_create(&p, size, [1; 16], [2; 32])
            .err()
            .expect("a truncated overlay must be refused");
        assert_eq!(e.kind, crate::ErrorKind::Corrupt);
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            cut,
            "the file was changed"
        );
        // Cut after the last written block only (no written byte lost): still usable.
        let p2 = dir.path().join("o2.ovl");
        let o = Overlay::open_or_create(&p2, size, [1; 16], [2; 32]).unwrap();
        o.write(10, &[0x55; 100], &base).unwrap();
        o.flush().unwrap();
        drop(o);
        let f = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
        f.set_len(data_offset + BLOCK).unwrap();
        drop(f);
        let o = Overlay::open_or_create(&p2, size, [1; 16], [2; 32]).unwrap();
        assert_eq!(read(&o, 10, 100), vec![0x55; 100]);
    }
}
