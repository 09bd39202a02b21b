//! The disk a server exposes: the image chain's chunks (through the cache), with the writable
//! overlay's blocks on top when there is one. Reads come out in pieces of at most one chunk, so
//! a request of any size needs no buffer of its size.
use super::cache::ChunkCache;
use super::overlay::Overlay;
use crate::error::{Error, Result};

/// Why a read stopped: the disk failed (an NBD error can still be sent if nothing was), or the
/// consumer of the bytes (the client's socket) failed.
#[derive(Debug)]
pub enum ReadError {
    Disk(Error),
    Sink(std::io::Error),
}

/// What a session serves.
pub trait Disk: Send + Sync {
    fn size(&self) -> u64;
    /// Whether writes are taken (into an overlay).
    fn writable(&self) -> bool;
    /// Reads `[off, off + len)` (inside the disk) and hands it to `emit` in consecutive pieces.
    fn read(
        &self,
        off: u64,
        len: u64,
        emit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::result::Result<(), ReadError>;
    /// Writes `data` at `off` (only when [`Disk::writable`]).
    fn write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Makes the writes so far durable.
    fn flush(&self) -> Result<()>;
}

/// An image chain, read-only or with an overlay.
pub struct ImageDisk {
    pub cache: ChunkCache,
    pub overlay: Option<Overlay>,
}

impl ImageDisk {
    /// The image's bytes of `[off, off + buf.len())`, inside one chunk.
    fn base(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.cache.chunk_size;
        let i = off / cs;
        let within = (off - i * cs) as usize;
        let c = self.cache.get(i)?;
        buf.copy_from_slice(&c[within..within + buf.len()]);
        Ok(())
    }
}

impl Disk for ImageDisk {
    fn size(&self) -> u64 {
        self.cache.disk_size
    }
    fn writable(&self) -> bool {
        self.overlay.is_some()
    }
    fn read(
        &self,
        off: u64,
        len: u64,
        emit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::result::Result<(), ReadError> {
        let cs = self.cache.chunk_size;
        let end = off + len;
        // A reply is an error or the data, never both: a damaged chunk anywhere in the request
        // must fail it before the first byte goes out (else the connection has to be dropped,
        // and the kernel's NBD client then fails every later read). So the chunks of a request
        // spanning several are read (and checked) first; they stay in the cache for the copy,
        // or are read again when it is smaller than the request.
        if len > 0 && off / cs != (end - 1) / cs {
            for i in off / cs..end.div_ceil(cs) {
                self.cache.get(i).map_err(ReadError::Disk)?;
            }
        }
        let mut pos = off;
        let mut scratch = Vec::new();
        while pos < end {
            let i = pos / cs;
            let within = (pos - i * cs) as usize;
            let take = ((i + 1) * cs).min(end) - pos;
            let c = self.cache.get(i).map_err(ReadError::Disk)?;
            let piece = &c[within..within + take as usize];
            match &self.overlay {
                Some(o) if o.any_written(pos, take) => {
                    scratch.clear();
                    scratch.extend_from_slice(piece);
                    o.patch(pos, &mut scratch).map_err(ReadError::Disk)?;
                    emit(&scratch).map_err(ReadError::Sink)?;
                }
                _ => emit(piece).map_err(ReadError::Sink)?,
            }
            pos += take;
        }
        Ok(())
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let Some(o) = &self.overlay else {
            return Err(Error::refused(
                "the image is served read-only (give --writable-overlay FILE to take writes)",
            ));
        };
        o.write(off, data, &|bs, buf| self.base(bs, buf))
    }
    fn flush(&self) -> Result<()> {
        match &self.overlay {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}
