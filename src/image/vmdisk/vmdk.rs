//! VMDK, monolithic sparse (VMware's "Virtual Disk Format 1.1", hosted sparse extent): the
//! sparse extent header in sector 0, the embedded descriptor (sectors 1..21), the grain
//! directory, every grain table (preallocated, 512 entries each), then 64 KiB grains in disk
//! order, only for grains holding data. All little-endian; offsets in 512-byte sectors.
//! Memory: one grain table (2 KiB).
use super::{Out, VmWriter};
use crate::error::{Error, Result};

const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * 512;
const GTES: u64 = 512;
const DESC_AT: u64 = 1;
const DESC_SECTORS: u64 = 20;

pub struct Vmdk {
    out: Out,
    capacity: u64,
    gt_at: u64,
    /// The grain table being filled and its number.
    gt: Vec<u32>,
    gt_index: Option<u64>,
    next: u64,
}

impl Vmdk {
    /// A writer for a disk of `size` bytes; `name` is the file name the descriptor names as
    /// its extent (the final name of the output).
    pub fn new(out: Out, size: u64, name: &str) -> Result<Vmdk> {
        super::require_sectors(size, "VMDK")?;
        let capacity = size / 512;
        let gts = capacity.div_ceil(GRAIN_SECTORS * GTES);
        let gd_at = DESC_AT + DESC_SECTORS;
        let gd_sectors = (gts * 4).div_ceil(512);
        let gt_at = gd_at + gd_sectors;
        let overhead = (gt_at + gts * 4).next_multiple_of(GRAIN_SECTORS);
        // Grain offsets are 32-bit sector numbers.
        if overhead + capacity.next_multiple_of(GRAIN_SECTORS) > u32::MAX as u64 {
            return Err(Error::unsupported(
                "the disk is too large for a sparse VMDK (2 TiB): export it as qcow2, VHDX or raw",
            ));
        }
        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..12].copy_from_slice(&1u32.to_le_bytes()); // valid newline-detection test
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&DESC_AT.to_le_bytes());
        h[36..44].copy_from_slice(&DESC_SECTORS.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
        h[56..64].copy_from_slice(&gd_at.to_le_bytes());
        h[64..72].copy_from_slice(&overhead.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        out.write_at(&h, 0)?;
        let desc = descriptor(capacity, name);
        out.write_at(desc.as_bytes(), DESC_AT * 512)?;
        let gd: Vec<u8> = (0..gts)
            .flat_map(|i| ((gt_at + i * 4) as u32).to_le_bytes())
            .collect();
        out.write_at(&gd, gd_at * 512)?;
        Ok(Vmdk {
            out,
            capacity,
            gt_at,
            gt: vec![0; GTES as usize],
            gt_index: None,
            next: overhead * 512,
        })
    }

    fn flush_gt(&mut self) -> Result<()> {
        if let Some(i) = self.gt_index.take() {
            let b: Vec<u8> = self.gt.iter().flat_map(|e| e.to_le_bytes()).collect();
            self.out.write_at(&b, (self.gt_at + i * 4) * 512)?;
            self.gt.fill(0);
        }
        Ok(())
    }
}

/// The embedded descriptor (NUL padded to its sectors).
fn descriptor(capacity: u64, name: &str) -> String {
    let cid = crc32fast::hash(name.as_bytes()) | 1;
    let cylinders = (capacity / (16 * 63)).min(16383);
    let name = name.replace('"', "_");
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"monolithicSparse\"\n\n# Extent description\nRW {capacity} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    )
}

impl VmWriter for Vmdk {
    fn data(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let mut pos = off;
        for piece in super::split_at_multiples(off, data, GRAIN) {
            if !crate::io::is_zero(piece) {
                let g = pos / GRAIN;
                let gti = g / GTES;
                if self.gt_index != Some(gti) {
                    self.flush_gt()?;
                    self.gt_index = Some(gti);
                }
                self.out.write_at(piece, self.next + (pos - g * GRAIN))?;
                self.gt[(g % GTES) as usize] = (self.next / 512) as u32;
                self.next += GRAIN;
            }
            pos += piece.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_gt()?;
        debug_assert!(self.capacity > 0 || self.next > 0);
        self.out.set_len(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_the_extent_and_fits() {
        let d = descriptor(131072, "pc.vmdk");
        assert!(d.contains("RW 131072 SPARSE \"pc.vmdk\""));
        assert!(d.contains("createType=\"monolithicSparse\""));
        assert!(d.len() < (DESC_SECTORS * 512) as usize);
    }
}
