//! VHDX, dynamic (Microsoft's "[MS-VHDX]" specification): the file type identifier, two headers
//! (CRC-32C, no log to replay), two region tables naming the BAT and the metadata region, an
//! empty 1 MiB log, the metadata (file parameters: 2 MiB blocks; virtual disk size; page 83 id;
//! logical and physical sector sizes), the BAT, then 2 MiB payload blocks at 1 MiB-aligned
//! offsets in disk order, only for blocks holding data ("fully present"; the others "not
//! present" read as zeros). All little-endian; GUIDs in Microsoft's mixed-endian layout.
//! Memory: the BAT, 8 bytes per 2 MiB of disk.
use super::{Out, VmWriter};
use crate::error::{Error, Result};
use crate::fs::crc32c::crc32c;

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 2 * MIB;
const HEADER1: u64 = 64 * KIB;
const HEADER2: u64 = 128 * KIB;
const REGIONS1: u64 = 192 * KIB;
const REGIONS2: u64 = 256 * KIB;
const LOG_AT: u64 = MIB;
const LOG_LEN: u64 = MIB;
const META_AT: u64 = 2 * MIB;
const META_LEN: u64 = MIB;
const BAT_AT: u64 = 3 * MIB;
/// 64 TiB, the largest VHDX.
const MAX_SIZE: u64 = 64 << 40;

const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const META_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const PAGE83: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";

/// BAT entry states.
const PAYLOAD_FULLY_PRESENT: u64 = 6;

/// A GUID's 16 bytes as VHDX stores them: the first three fields little-endian, the rest as
/// written.
pub fn guid(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a GUID constant");
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

pub struct Vhdx {
    out: Out,
    size: u64,
    sector: u32,
    /// Payload blocks' file offsets (0: not present).
    blocks: Vec<u64>,
    chunk_ratio: u64,
    bat_len: u64,
    next: u64,
}

impl Vhdx {
    pub fn new(out: Out, size: u64, sector: u32) -> Result<Vhdx> {
        let sector = if sector == 4096 { 4096 } else { 512 };
        if !size.is_multiple_of(sector as u64) {
            return Err(Error::unsupported(format!(
                "the disk is {size} bytes, not a whole number of {sector}-byte sectors: VHDX \
                 cannot hold it exactly; export it as raw or qcow2"
            )));
        }
        if size > MAX_SIZE {
            return Err(Error::unsupported(
                "the disk is larger than 64 TiB, the most a VHDX holds",
            ));
        }
        let chunk_ratio = (1u64 << 23) * sector as u64 / BLOCK;
        let data_blocks = size.div_ceil(BLOCK);
        let entries = data_blocks + data_blocks.saturating_sub(1) / chunk_ratio;
        let bat_len = (entries * 8).next_multiple_of(MIB).max(MIB);
        Ok(Vhdx {
            out,
            size,
            sector,
            blocks: vec![0; data_blocks as usize],
            chunk_ratio,
            bat_len,
            next: BAT_AT + bat_len,
        })
    }

    fn header(seq: u64, file_write: [u8; 16], data_write: [u8; 16]) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&file_write);
        h[32..48].copy_from_slice(&data_write);
        // LogGuid (48..64) zero: no log entries to replay.
        h[64..66].copy_from_slice(&0u16.to_le_bytes());
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(LOG_LEN as u32).to_le_bytes());
        h[72..80].copy_from_slice(&LOG_AT.to_le_bytes());
        let c = crc32c(&h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        h
    }

    fn region_table(&self) -> Vec<u8> {
        let mut r = vec![0u8; 64 * KIB as usize];
        r[0..4].copy_from_slice(b"regi");
        r[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (k, (g, at, len)) in [
            (BAT_GUID, BAT_AT, self.bat_len),
            (META_GUID, META_AT, META_LEN),
        ]
        .into_iter()
        .enumerate()
        {
            let e = 16 + k * 32;
            r[e..e + 16].copy_from_slice(&guid(g));
            r[e + 16..e + 24].copy_from_slice(&at.to_le_bytes());
            r[e + 24..e + 28].copy_from_slice(&(len as u32).to_le_bytes());
            r[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes()); // required
        }
        let c = crc32c(&r);
        r[4..8].copy_from_slice(&c.to_le_bytes());
        r
    }

    fn metadata(&self, page83: [u8; 16]) -> Vec<u8> {
        const IS_VIRTUAL_DISK: u32 = 2;
        const IS_REQUIRED: u32 = 4;
        let mut m = vec![0u8; META_LEN as usize];
        m[0..8].copy_from_slice(b"metadata");
        let items: [(&str, Vec<u8>, u32); 5] = [
            (
                FILE_PARAMETERS,
                [(BLOCK as u32).to_le_bytes(), 0u32.to_le_bytes()].concat(),
                IS_REQUIRED,
            ),
            (
                VIRTUAL_DISK_SIZE,
                self.size.to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
            (PAGE83, page83.to_vec(), IS_VIRTUAL_DISK | IS_REQUIRED),
            (
                LOGICAL_SECTOR,
                self.sector.to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
            (
                PHYSICAL_SECTOR,
                4096u32.to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
        ];
        m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut data_at = 64 * KIB as usize;
        for (k, (g, data, flags)) in items.iter().enumerate() {
            let e = 32 + k * 32;
            m[e..e + 16].copy_from_slice(&guid(g));
            m[e + 16..e + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
            m[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            m[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            m[data_at..data_at + data.len()].copy_from_slice(data);
            data_at += data.len().next_multiple_of(8);
        }
        m
    }

    fn bat(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.bat_len as usize];
        for (i, &at) in self.blocks.iter().enumerate() {
            if at == 0 {
                continue;
            }
            let i = i as u64;
            let idx = (i + i / self.chunk_ratio) as usize;
            let e = (at / MIB) << 20 | PAYLOAD_FULLY_PRESENT;
            b[idx * 8..idx * 8 + 8].copy_from_slice(&e.to_le_bytes());
        }
        b
    }
}

impl VmWriter for Vhdx {
    fn data(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let mut pos = off;
        for piece in super::split_at_multiples(off, data, BLOCK) {
            let b = (pos / BLOCK) as usize;
            if !crate::io::is_zero(piece) {
                if self.blocks[b] == 0 {
                    self.blocks[b] = self.next;
                    self.next += BLOCK;
                }
                self.out
                    .write_at(piece, self.blocks[b] + (pos - b as u64 * BLOCK))?;
            }
            pos += piece.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut id = [0u8; 512];
        id[0..8].copy_from_slice(b"vhdxfile");
        for (k, u) in "Lifeboat".encode_utf16().enumerate() {
            id[8 + 2 * k..10 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
        self.out.write_at(&id, 0)?;
        let (fw, dw) = (
            crate::image::format::new_uuid()?,
            crate::image::format::new_uuid()?,
        );
        self.out.write_at(&Vhdx::header(1, fw, dw), HEADER1)?;
        self.out.write_at(&Vhdx::header(2, fw, dw), HEADER2)?;
        let r = self.region_table();
        self.out.write_at(&r, REGIONS1)?;
        self.out.write_at(&r, REGIONS2)?;
        let page83 = crate::image::format::new_uuid()?;
        self.out.write_at(&self.metadata(page83), META_AT)?;
        self.out.write_at(&self.bat(), BAT_AT)?;
        self.out.set_len(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_mixed_endian() {
        assert_eq!(
            guid(BAT_GUID),
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
    }
}
