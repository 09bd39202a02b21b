//! `image export --format`: the disk of an image written as a virtual machine's disk file, so an
//! old PC's disk boots as a VM — raw (sparse), qcow2, VHD (dynamic), VHDX (dynamic) or VMDK
//! (monolithic sparse), each written by Lifeboat itself from its format's description in one
//! pass over the chain's chunks (in disk order), leaving out what is zero. One file per format:
//! `qcow2`, `vhd`, `vhdx`, `vmdk`.
pub mod qcow2;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use super::ops::{RestoreReport, RestoreSink};
use crate::error::{Error, Result};
use crate::jobs::{Cancel, ProgressSink};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file formats `image export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vhd,
    Vhdx,
    Vmdk,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vhd" | "vpc" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            "vmdk" => Format::Vmdk,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown export format {s:?}: use raw, qcow2, vhd, vhdx or vmdk"
                )))
            }
        })
    }
    /// The name `qemu-img -f` knows it by.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
        }
    }
}

/// The output file, written at offsets.
pub struct Out {
    pub file: File,
    pub path: PathBuf,
}

impl Out {
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<()> {
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io("write", &self.path, e).at_offset(off))
    }
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("set the size of", &self.path, e))
    }
}

/// A format writer: gets the disk's non-zero data in disk order, then `finish`.
pub trait VmWriter {
    /// `data` at disk offset `off` (a chunk, chunk-aligned, in increasing order).
    fn data(&mut self, off: u64, data: &[u8]) -> Result<()>;
    /// Writes the format's tables and trailers.
    fn finish(&mut self) -> Result<()>;
}

/// Feeds the restore stream into a format writer; zero and unallocated chunks are holes.
struct Sink<'a>(&'a mut dyn VmWriter);

impl RestoreSink for Sink<'_> {
    fn write_chunk(&mut self, data: &[u8], off: u64, zero: bool) -> Result<u64> {
        if !zero {
            self.0.data(off, data)?;
        }
        Ok(data.len() as u64)
    }
}

/// Makes the writer of `format` for a disk of `size` bytes (sector size `sector`).
/// `name` is the output's final file name (a VMDK's descriptor names its extent).
fn writer(
    format: Format,
    out: Out,
    size: u64,
    sector: u32,
    name: &str,
) -> Result<Box<dyn VmWriter>> {
    Ok(match format {
        Format::Raw => unreachable!("raw is written by ops::export"),
        Format::Qcow2 => {
            qcow2::check_size(size)?;
            Box::new(qcow2::Qcow2::new(out, size))
        }
        Format::Vhd => Box::new(vhd::Vhd::new(out, size)?),
        Format::Vhdx => Box::new(vhdx::Vhdx::new(out, size, sector)?),
        Format::Vmdk => Box::new(vmdk::Vmdk::new(out, size, name)?),
    })
}

/// `image export --format F`: the disk of the chain at `path` as a VM disk file, written under
/// a temporary name and renamed when complete (the media hash checked as for raw).
pub fn export(
    path: &Path,
    out: &Path,
    format: Format,
    force: bool,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<RestoreReport> {
    if format == Format::Raw {
        return super::ops::export(path, out, force, sink, cancel);
    }
    if out.exists() && !force {
        return Err(Error::refused(format!(
            "{} already exists; use --force to replace it",
            out.display()
        )));
    }
    let h = super::Image::open(path)?.header;
    let tmp = super::create::partial_name(out);
    let file = crate::io::open::create_fresh(&tmp)?;
    let o = Out {
        file,
        path: tmp.clone(),
    };
    let r = (|| {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut w = writer(format, o, h.disk_size, h.sector_size, &name)?;
        let rep = super::ops::stream(path, &mut Sink(&mut *w), "image-export", out, sink, cancel)?;
        w.finish()?;
        drop(w);
        let f = File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io("rename the export to", out, e))?;
        super::create::sync_dir(out);
        Ok(rep)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Refuses a disk size a sector-based format cannot hold exactly.
pub fn require_sectors(size: u64, what: &str) -> Result<()> {
    if !size.is_multiple_of(512) {
        return Err(Error::unsupported(format!(
            "the disk is {size} bytes, not a whole number of 512-byte sectors: {what} cannot \
             hold it exactly; export it as raw or qcow2"
        )));
    }
    Ok(())
}

/// `data` (at disk offset `off`) cut where the disk offset crosses a multiple of `unit`.
pub fn split_at_multiples(off: u64, data: &[u8], unit: u64) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut pos = off;
    let mut rest = data;
    while !rest.is_empty() {
        let n = ((pos / unit + 1) * unit - pos).min(rest.len() as u64) as usize;
        let (a, b) = rest.split_at(n);
        v.push(a);
        rest = b;
        pos += n as u64;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_stop_at_unit_boundaries() {
        let d = [0u8; 10];
        let p: Vec<usize> = split_at_multiples(6, &d, 4)
            .iter()
            .map(|x| x.len())
            .collect();
        assert_eq!(p, [2, 4, 4]);
        let p: Vec<usize> = split_at_multiples(8, &d, 4)
            .iter()
            .map(|x| x.len())
            .collect();
        assert_eq!(p, [4, 4, 2]);
        assert!(split_at_multiples(3, &[], 4).is_empty());
        assert!(Format::parse("QCOW2").is_ok() && Format::parse("iso").is_err());
    }
}
