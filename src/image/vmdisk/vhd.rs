//! VHD, dynamic (Microsoft's "Virtual Hard Disk Image Format Specification"): a copy of the
//! footer at offset 0, the dynamic disk header at 512, the block allocation table (BAT) at 1536,
//! then 2 MiB blocks — each a 512-byte sector bitmap (all set) and its data — in disk order,
//! only for blocks holding data, and the footer at the end. All big-endian.
//!
//! The size: VHD readers take it either from the footer's current size or from the CHS
//! geometry. When the geometry the specification's algorithm computes does not give exactly
//! the disk's size, the maximum geometry (65535/16/255) is written, which tells readers (QEMU
//! among them) to use the current size. Memory: the BAT, 4 bytes per 2 MiB of disk.
use super::{Out, VmWriter};
use crate::error::{Error, Result};

const BLOCK: u64 = 2 << 20;
const BAT_AT: u64 = 1536;
/// 2040 GiB, the largest disk a VHD holds.
pub const MAX_SIZE: u64 = 0xff00_0000 * 512;
/// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;
const UNUSED: u32 = 0xffff_ffff;

pub struct Vhd {
    out: Out,
    size: u64,
    bat: Vec<u32>,
    next: u64,
    uuid: [u8; 16],
}

/// The one's complement of the byte sum (the checksum of the footer and of the header).
pub fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(x as u32))
}

/// The specification's CHS geometry for a disk of `sectors` 512-byte sectors.
pub fn geometry(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        (spt, heads, cth) = (s, h, c);
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

impl Vhd {
    pub fn new(out: Out, size: u64) -> Result<Vhd> {
        super::require_sectors(size, "VHD")?;
        if size > MAX_SIZE {
            return Err(Error::unsupported(
                "the disk is larger than 2040 GiB, the most a VHD holds: export it as VHDX, qcow2 or raw",
            ));
        }
        let n = size.div_ceil(BLOCK);
        let bat_bytes = (n * 4).next_multiple_of(512);
        let uuid = crate::image::format::new_uuid()?;
        Ok(Vhd {
            out,
            size,
            bat: vec![UNUSED; n as usize],
            next: BAT_AT + bat_bytes,
            uuid,
        })
    }

    fn footer(&self) -> [u8; 512] {
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&512u64.to_be_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        f[24..28].copy_from_slice(&(now.saturating_sub(VHD_EPOCH) as u32).to_be_bytes());
        f[28..32].copy_from_slice(b"lbot");
        f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[36..40].copy_from_slice(b"Wi2k");
        f[40..48].copy_from_slice(&self.size.to_be_bytes());
        f[48..56].copy_from_slice(&self.size.to_be_bytes());
        let sectors = self.size / 512;
        let (c, h, s) = geometry(sectors);
        let (c, h, s) = if c as u64 * h as u64 * s as u64 == sectors {
            (c, h, s)
        } else {
            (65535, 16, 255)
        };
        f[56..58].copy_from_slice(&c.to_be_bytes());
        f[58] = h;
        f[59] = s;
        f[60..64].copy_from_slice(&3u32.to_be_bytes());
        f[68..84].copy_from_slice(&self.uuid);
        let sum = checksum(&f);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        f
    }

    fn dynamic_header(&self) -> [u8; 1024] {
        let mut d = [0u8; 1024];
        d[0..8].copy_from_slice(b"cxsparse");
        d[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        d[16..24].copy_from_slice(&BAT_AT.to_be_bytes());
        d[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        d[28..32].copy_from_slice(&(self.bat.len() as u32).to_be_bytes());
        d[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        let sum = checksum(&d);
        d[36..40].copy_from_slice(&sum.to_be_bytes());
        d
    }
}

impl VmWriter for Vhd {
    fn data(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let mut pos = off;
        for piece in super::split_at_multiples(off, data, BLOCK) {
            let b = (pos / BLOCK) as usize;
            if !crate::io::is_zero(piece) {
                if self.bat[b] == UNUSED {
                    self.bat[b] = (self.next / 512) as u32;
                    self.out.write_at(&[0xff; 512], self.next)?;
                    self.next += 512 + BLOCK;
                }
                let at = self.bat[b] as u64 * 512 + 512 + (pos - b as u64 * BLOCK);
                self.out.write_at(piece, at)?;
            }
            pos += piece.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut bat: Vec<u8> = self.bat.iter().flat_map(|e| e.to_be_bytes()).collect();
        bat.resize(bat.len().next_multiple_of(512), 0xff);
        self.out.write_at(&bat, BAT_AT)?;
        let f = self.footer();
        self.out.write_at(&f, 0)?;
        self.out.write_at(&self.dynamic_header(), 512)?;
        self.out.write_at(&f, self.next)?;
        self.out.set_len(self.next + 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // 64 MiB: 17 sectors a track, 4+ heads...
        let (c, h, s) = geometry(131072);
        assert_eq!((h, s), (8, 17));
        assert_eq!(c, 963);
        // Large disks: 255 sectors, 16 heads, capped.
        assert_eq!(geometry(1 << 40), (65535, 16, 255));
        assert_eq!(geometry(65535 * 16 * 63), (16191, 16, 255));
    }

    #[test]
    fn checksum_is_the_complement_of_the_byte_sum() {
        assert_eq!(checksum(&[1, 2, 3]), !6u32);
        assert_eq!(checksum(&[]), u32::MAX);
    }
}
