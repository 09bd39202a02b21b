//! The `.lbi` on-disk structures (docs/image-format.md): header, index segments, entries, segment
//! table and footer, with their encoders and strictly bounds-checked decoders.
use crate::error::{Error, Result};

pub const HEADER_MAGIC: &[u8; 8] = b"LBIMAGE\0";
pub const FOOTER_MAGIC: &[u8; 8] = b"LBIFOOT\0";
pub const SEGMENT_MAGIC: &[u8; 4] = b"LBIX";
/// The version written. Version 1 images (no used-block support) are still read.
pub const VERSION: u16 = 2;
/// The oldest version read.
pub const MIN_VERSION: u16 = 1;
pub const HEADER_SIZE: usize = 512;
pub const FOOTER_SIZE: usize = 160;
pub const ENTRY_SIZE: usize = 56;
pub const BAD_RANGE_SIZE: usize = 16;
pub const SEGMENT_HEAD: usize = 24;
pub const SEGTAB_ENTRY: usize = 24;

/// Default chunk size written by Lifeboat.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Default number of chunks per index segment.
pub const DEFAULT_SEGMENT_CHUNKS: u32 = 1024;
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
pub const MAX_SEGMENT_CHUNKS: u32 = 65536;
/// Most index segments an image may have: its segment table (24 bytes each) is held in memory
/// while the image is open, so a header claiming a huge disk in tiny segments (the file sparse,
/// a few KiB on disk) must not make the reader allocate gigabytes. 2^20 segments are 1 PiB
/// at the 1 MiB chunks and 1024-chunk segments Lifeboat writes (24 MiB of table).
pub const MAX_SEGMENTS: u64 = 1 << 20;
/// Longest index segment a reader loads (bytes). Lifeboat's segments are at most ~16 MiB (1024
/// entries and, on a disk unreadable at every other sector, one range per two sectors of its
/// 1 GiB); the format's own bound reaches 4 GiB with 16 MiB chunks, which a hostile segment
/// table entry (over a sparse file) could make a reader allocate.
pub const MAX_SEGMENT_LEN: u64 = 64 << 20;

/// Incompatible feature: chunks may refer to the parent image.
pub const FEAT_INCREMENTAL: u32 = 1;
/// Incompatible feature: the image may have more than one volume.
pub const FEAT_SPLIT: u32 = 2;
/// Incompatible feature (version 2): only the source's used blocks were read — chunks may be
/// kind 4 (unallocated) and the free blocks inside stored chunks are zeros.
pub const FEAT_USED_BLOCKS: u32 = 4;
/// Incompatible feature (version 2): chunks may be kind 5 (one zstd frame).
pub const FEAT_ZSTD: u32 = 8;
/// Incompatible feature (version 2): chunks may be kind 6 (a member of a zstd frame holding
/// several consecutive stored chunks; a larger compression unit, same 1 MiB chunks).
pub const FEAT_GROUPS: u32 = 16;
/// Incompatible feature (version 2): every record is sealed (see `crypt`); the header holds key
/// slots where the source name and parent path were (those are in the sealed tail).
pub const FEAT_ENCRYPTED: u32 = 32;
pub const KNOWN_INCOMPAT: u32 =
    FEAT_INCREMENTAL | FEAT_SPLIT | FEAT_USED_BLOCKS | FEAT_ZSTD | FEAT_GROUPS | FEAT_ENCRYPTED;
/// Chunks Lifeboat puts in one group (kind 6) at most (16 MiB groups of 1 MiB chunks: on the
/// reused-disk benchmark zstd level 2 stores ~1.3 % less over 16 than over 8, and with longer
/// matches spends ~10 % less CPU; each compressor thread then holds 16 chunk buffers and a
/// 16 MiB group in and out, ~64 MiB).
pub const GROUP_CHUNKS: usize = 16;
/// Largest decompressed group a reader accepts (bounds its buffer).
pub const MAX_GROUP_BYTES: usize = 16 << 20;
/// Magic of the usage record (version 2): the per-partition used-block plan, before the tail.
pub const USAGE_MAGIC: &[u8; 4] = b"LBIU";
/// Largest usage record accepted (a plan of thousands of partitions fits easily).
pub const MAX_USAGE_LEN: u32 = 1 << 20;

/// Entry flag: the chunk contains unreadable sectors (stored as zeros).
pub const FLAG_BAD: u8 = 1;

/// How a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Zero = 0,
    Raw = 1,
    Lz4 = 2,
    Parent = 3,
    /// No byte of the chunk is in use by a filesystem: not read, not stored, zeros logically.
    Unallocated = 4,
    /// One zstd frame (only with `FEAT_ZSTD`).
    Zstd = 5,
    /// A member of a zstd frame that holds several stored chunks (only with `FEAT_GROUPS`).
    Group = 6,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Zero,
            1 => Kind::Raw,
            2 => Kind::Lz4,
            3 => Kind::Parent,
            4 => Kind::Unallocated,
            5 => Kind::Zstd,
            6 => Kind::Group,
            _ => return None,
        })
    }
}

/// The largest valid payload of a compressed chunk of `len` bytes (bounds every read).
pub fn max_payload(kind: Kind, len: usize) -> usize {
    match kind {
        Kind::Lz4 => lz4_flex::block::get_maximum_output_size(len),
        Kind::Zstd => zstd::zstd_safe::compress_bound(len),
        Kind::Group => zstd::zstd_safe::compress_bound(MAX_GROUP_BYTES),
        _ => len,
    }
}

/// Buffer size that holds any payload of a `chunk`-byte chunk.
pub fn max_payload_any(chunk: usize) -> usize {
    max_payload(Kind::Lz4, chunk).max(max_payload(Kind::Zstd, chunk))
}

/// How create compresses chunks (`--compress lz4|zstd[:LEVEL]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    /// zstd at a level 1..=19.
    Zstd(i32),
}

impl Compression {
    /// Parses `lz4`, `zstd` (level 3) or `zstd:LEVEL`.
    pub fn parse(s: &str) -> Result<Compression> {
        let bad = || {
            Error::invalid(format!(
                "--compress {s:?}: use lz4, zstd or zstd:LEVEL with LEVEL 1 to 19"
            ))
        };
        match s.split_once(':') {
            None if s == "lz4" => Ok(Compression::Lz4),
            None if s == "zstd" => Ok(Compression::Zstd(ZSTD_DEFAULT_LEVEL)),
            Some(("zstd", l)) => match l.parse::<i32>() {
                Ok(n) if (1..=19).contains(&n) => Ok(Compression::Zstd(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// zstd level of a plain `--compress zstd`.
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    a
}
fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}
/// A NUL-padded UTF-8 field (truncated on a character boundary).
fn put_str(b: &mut [u8], o: usize, len: usize, s: &str) {
    let mut n = s.len().min(len);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    b[o..o + n].copy_from_slice(&s.as_bytes()[..n]);
}
fn get_str(b: &[u8], o: usize, len: usize) -> String {
    let f = &b[o..o + len];
    let end = f.iter().position(|&c| c == 0).unwrap_or(len);
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// The header at the start of every volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub compat: u32,
    pub incompat: u32,
    pub volume: u32,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub parent_media_hash: [u8; 32],
    pub created: u64,
    pub disk_size: u64,
    pub sector_size: u32,
    pub chunk_size: u32,
    pub segment_chunks: u32,
    pub split_size: u64,
    pub model: String,
    pub serial: String,
    pub source_name: String,
    pub parent_path: String,
    /// Encryption (with `FEAT_ENCRYPTED`): cipher, flags, key slots. The model and serial are
    /// then in clear only when it says so, and the source name and parent path are sealed in
    /// the tail (the reader fills them in once the image is unlocked).
    pub crypt: Option<super::crypt::CryptHeader>,
}

impl Header {
    pub fn has_parent(&self) -> bool {
        self.incompat & FEAT_INCREMENTAL != 0
    }
    pub fn chunk_count(&self) -> u64 {
        self.disk_size.div_ceil(self.chunk_size as u64)
    }
    pub fn segment_count(&self) -> u64 {
        self.chunk_count().div_ceil(self.segment_chunks as u64)
    }
    /// Length in bytes of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: u64) -> usize {
        let start = i * self.chunk_size as u64;
        (self.disk_size.saturating_sub(start)).min(self.chunk_size as u64) as usize
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        put(&mut b, 0, HEADER_MAGIC);
        put(&mut b, 8, &self.version.to_le_bytes());
        put(&mut b, 10, &(HEADER_SIZE as u16).to_le_bytes());
        put(&mut b, 12, &self.compat.to_le_bytes());
        put(&mut b, 16, &self.incompat.to_le_bytes());
        put(&mut b, 20, &self.volume.to_le_bytes());
        put(&mut b, 24, &self.uuid);
        put(&mut b, 40, &self.parent_uuid);
        put(&mut b, 56, &self.parent_media_hash);
        put(&mut b, 88, &self.created.to_le_bytes());
        put(&mut b, 96, &self.disk_size.to_le_bytes());
        put(&mut b, 104, &self.sector_size.to_le_bytes());
        put(&mut b, 108, &self.chunk_size.to_le_bytes());
        put(&mut b, 112, &self.segment_chunks.to_le_bytes());
        put(&mut b, 120, &self.split_size.to_le_bytes());
        match &self.crypt {
            None => b[128..508].copy_from_slice(&self.text_area()),
            Some(c) => {
                if c.identity_clear {
                    b[128..256].copy_from_slice(&self.text_area()[..128]);
                }
                use super::crypt::{AREA_AT, AREA_LEN};
                c.encode_into(&mut b[AREA_AT..AREA_AT + AREA_LEN]);
            }
        }
        let crc = crc32fast::hash(&b[..508]);
        put(&mut b, 508, &crc.to_le_bytes());
        b
    }

    /// The text fields (model, serial, source name, parent path) as the header of an image
    /// without encryption stores them at bytes 128..508; an encrypted image seals them in its tail.
    pub fn text_area(&self) -> [u8; 380] {
        let mut b = [0u8; 380];
        put_str(&mut b, 0, 64, &self.model);
        put_str(&mut b, 64, 64, &self.serial);
        put_str(&mut b, 128, 128, &self.source_name);
        put_str(&mut b, 256, 124, &self.parent_path);
        b
    }

    /// Takes the text fields from a [`Header::text_area`].
    pub fn set_text_area(&mut self, b: &[u8]) {
        self.model = get_str(b, 0, 64);
        self.serial = get_str(b, 64, 64);
        self.source_name = get_str(b, 128, 128);
        self.parent_path = get_str(b, 256, 124);
    }

    pub fn is_encrypted(&self) -> bool {
        self.crypt.is_some()
    }

    /// Decodes and validates a header. Errors are `Corrupt` (or `Unsupported` for a newer format).
    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_SIZE {
            return Err(Error::corrupt(
                "not a Lifeboat image: the file is shorter than an image header",
            ));
        }
        if &b[0..8] != HEADER_MAGIC {
            return Err(Error::corrupt(
                "not a Lifeboat image (no LBIMAGE signature at the start)",
            ));
        }
        if crc32fast::hash(&b[..508]) != u32_at(b, 508) {
            return Err(Error::corrupt("image header is damaged (CRC32 mismatch)").at_offset(0));
        }
        let version = u16_at(b, 8);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(Error::unsupported(format!(
                "image format version {version} is not supported by this Lifeboat (it reads versions {MIN_VERSION} to {VERSION}); use a newer Lifeboat"
            )));
        }
        if u16_at(b, 10) as usize != HEADER_SIZE {
            return Err(Error::corrupt("image header has an unexpected size"));
        }
        let encrypted = u32_at(b, 16) & FEAT_ENCRYPTED != 0;
        let crypt = if encrypted {
            use super::crypt::{AREA_AT, AREA_LEN};
            Some(super::crypt::CryptHeader::decode(
                &b[AREA_AT..AREA_AT + AREA_LEN],
            )?)
        } else {
            None
        };
        let mut h = Header {
            version,
            compat: u32_at(b, 12),
            incompat: u32_at(b, 16),
            volume: u32_at(b, 20),
            uuid: arr(b, 24),
            parent_uuid: arr(b, 40),
            parent_media_hash: arr(b, 56),
            created: u64_at(b, 88),
            disk_size: u64_at(b, 96),
            sector_size: u32_at(b, 104),
            chunk_size: u32_at(b, 108),
            segment_chunks: u32_at(b, 112),
            split_size: u64_at(b, 120),
            model: get_str(b, 128, 64),
            serial: get_str(b, 192, 64),
            source_name: String::new(),
            parent_path: String::new(),
            crypt,
        };
        match &h.crypt {
            None => h.set_text_area(&b[128..508]),
            Some(c) => {
                if c.identity_clear {
                    let mut t = [0u8; 380];
                    t[..128].copy_from_slice(&b[128..256]);
                    h.set_text_area(&t);
                } else if b[128..256].iter().any(|&x| x != 0) {
                    return Err(Error::corrupt(
                        "encrypted image header holds identity text it does not declare",
                    ));
                }
                if b[super::crypt::AREA_AT + super::crypt::AREA_LEN..508]
                    .iter()
                    .any(|&x| x != 0)
                {
                    return Err(Error::corrupt(
                        "encrypted image header has reserved bytes set",
                    ));
                }
            }
        }
        if h.incompat & (FEAT_USED_BLOCKS | FEAT_ZSTD | FEAT_GROUPS | FEAT_ENCRYPTED) != 0
            && version < 2
        {
            return Err(Error::corrupt(
                "image header of version 1 claims the used-blocks feature",
            ));
        }
        if h.incompat & !KNOWN_INCOMPAT != 0 {
            return Err(Error::unsupported(format!(
                "image uses features this Lifeboat does not know (flags {:#x}); use a newer Lifeboat",
                h.incompat & !KNOWN_INCOMPAT
            )));
        }
        if !h.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&h.chunk_size)
        {
            return Err(Error::corrupt(format!(
                "image header has an invalid chunk size {}",
                h.chunk_size
            )));
        }
        if h.segment_chunks == 0 || h.segment_chunks > MAX_SEGMENT_CHUNKS {
            return Err(Error::corrupt(
                "image header has an invalid index segment size",
            ));
        }
        if !(h.sector_size == 512 || h.sector_size == 4096) {
            return Err(Error::corrupt(format!(
                "image header has an invalid sector size {}",
                h.sector_size
            )));
        }
        if h.volume == 0 || h.disk_size > (1u64 << 60) {
            return Err(Error::corrupt(
                "image header has an invalid volume number or disk size",
            ));
        }
        if h.segment_count() > MAX_SEGMENTS {
            return Err(Error::corrupt(format!(
                "image header claims a disk of {} bytes in {} index segments, more than an image \
                 can have ({MAX_SEGMENTS}): the header is damaged or was not written by Lifeboat",
                h.disk_size,
                h.segment_count()
            )));
        }
        Ok(h)
    }
}

/// One index entry: where chunk `i` is and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub len: u32,
    pub volume: u16,
    pub kind: Kind,
    pub flags: u8,
    pub crc: u32,
    /// Kind 6: this chunk's position among the group's members, and the number of members.
    pub member: u8,
    pub members: u8,
    pub hash: [u8; 32],
}

impl Entry {
    pub fn encode_into(&self, b: &mut [u8]) {
        put(b, 0, &self.offset.to_le_bytes());
        put(b, 8, &self.len.to_le_bytes());
        put(b, 12, &self.volume.to_le_bytes());
        b[14] = self.kind as u8;
        b[15] = self.flags;
        put(b, 16, &self.crc.to_le_bytes());
        put(b, 20, &[self.member, self.members, 0, 0]);
        put(b, 24, &self.hash);
    }
    pub fn decode(b: &[u8]) -> Option<Entry> {
        Some(Entry {
            offset: u64_at(b, 0),
            len: u32_at(b, 8),
            volume: u16_at(b, 12),
            kind: Kind::from_u8(b[14])?,
            flags: b[15],
            crc: u32_at(b, 16),
            member: b[20],
            members: b[21],
            hash: arr(b, 24),
        })
    }
}

/// A decoded index segment.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    pub first_chunk: u64,
    pub entries: Vec<Entry>,
    /// Unreadable disk byte ranges (start, len) inside this segment's chunks.
    pub bad: Vec<(u64, u64)>,
}

impl Segment {
    pub fn encoded_len(n: usize, m: usize) -> usize {
        SEGMENT_HEAD + n * ENTRY_SIZE + m * BAD_RANGE_SIZE + 4
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::encoded_len(self.entries.len(), self.bad.len())];
        put(&mut b, 0, SEGMENT_MAGIC);
        put(&mut b, 4, &(self.entries.len() as u32).to_le_bytes());
        put(&mut b, 8, &self.first_chunk.to_le_bytes());
        put(&mut b, 16, &(self.bad.len() as u32).to_le_bytes());
        let mut o = SEGMENT_HEAD;
        for e in &self.entries {
            e.encode_into(&mut b[o..o + ENTRY_SIZE]);
            o += ENTRY_SIZE;
        }
        for &(s, l) in &self.bad {
            put(&mut b, o, &s.to_le_bytes());
            put(&mut b, o + 8, &l.to_le_bytes());
            o += BAD_RANGE_SIZE;
        }
        let crc = crc32fast::hash(&b[..o]);
        put(&mut b, o, &crc.to_le_bytes());
        b
    }

    /// Decodes a segment that is expected to describe chunks `first..first+n` of an image with header `h`.
    pub fn decode(
        b: &[u8],
        h: &Header,
        first: u64,
        n: usize,
    ) -> std::result::Result<Segment, String> {
        if b.len() < SEGMENT_HEAD + 4 || &b[0..4] != SEGMENT_MAGIC {
            return Err("index segment signature missing".into());
        }
        let crc_at = b.len() - 4;
        if crc32fast::hash(&b[..crc_at]) != u32_at(b, crc_at) {
            return Err("index segment CRC32 mismatch".into());
        }
        let count = u32_at(b, 4) as usize;
        let m = u32_at(b, 16) as usize;
        if count != n || u64_at(b, 8) != first {
            return Err("index segment describes other chunks than expected".into());
        }
        if b.len() != Self::encoded_len(count, m) {
            return Err("index segment length does not match its counts".into());
        }
        let mut entries = Vec::with_capacity(count);
        let mut o = SEGMENT_HEAD;
        for _ in 0..count {
            let e = Entry::decode(&b[o..o + ENTRY_SIZE])
                .ok_or("index entry has an unknown chunk kind")?;
            entries.push(e);
            o += ENTRY_SIZE;
        }
        let span_start = first * h.chunk_size as u64;
        let span_end = (span_start + n as u64 * h.chunk_size as u64).min(h.disk_size);
        let mut bad = Vec::with_capacity(m);
        let mut prev_end = span_start;
        for _ in 0..m {
            let (s, l) = (u64_at(b, o), u64_at(b, o + 8));
            o += BAD_RANGE_SIZE;
            if l == 0 || s < prev_end || s.checked_add(l).is_none_or(|e| e > span_end) {
                return Err("index segment has an invalid unreadable range".into());
            }
            prev_end = s + l;
            bad.push((s, l));
        }
        Ok(Segment {
            first_chunk: first,
            entries,
            bad,
        })
    }
}

/// Where one index segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegRef {
    pub offset: u64,
    pub volume: u16,
    pub len: u32,
    pub first_chunk: u64,
}

impl SegRef {
    pub fn encode_into(&self, b: &mut [u8]) {
        put(b, 0, &self.offset.to_le_bytes());
        put(b, 8, &self.volume.to_le_bytes());
        put(b, 10, &[0u8; 2]);
        put(b, 12, &self.len.to_le_bytes());
        put(b, 16, &self.first_chunk.to_le_bytes());
    }
    pub fn decode(b: &[u8]) -> SegRef {
        SegRef {
            offset: u64_at(b, 0),
            volume: u16_at(b, 8),
            len: u32_at(b, 12),
            first_chunk: u64_at(b, 16),
        }
    }
}

/// The footer that marks a complete image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footer {
    pub uuid: [u8; 16],
    pub volumes: u32,
    pub segments: u32,
    pub segtab_offset: u64,
    pub segtab_crc: u32,
    pub chunks: u64,
    pub stored_chunks: u64,
    pub zero_chunks: u64,
    pub parent_chunks: u64,
    pub payload_bytes: u64,
    pub bad_bytes: u64,
    pub media_hash: [u8; 32],
    pub finished: u64,
    pub bad_ranges: u64,
    /// Chunks of kind 4 (version 2; reserved zeros in version 1).
    pub unallocated_chunks: u64,
    /// Length of the usage record just before the segment table (version 2; 0 = none).
    pub usage_len: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        put(&mut b, 0, FOOTER_MAGIC);
        put(&mut b, 8, &self.uuid);
        put(&mut b, 24, &self.volumes.to_le_bytes());
        put(&mut b, 28, &self.segments.to_le_bytes());
        put(&mut b, 32, &self.segtab_offset.to_le_bytes());
        put(&mut b, 40, &self.segtab_crc.to_le_bytes());
        put(&mut b, 48, &self.chunks.to_le_bytes());
        put(&mut b, 56, &self.stored_chunks.to_le_bytes());
        put(&mut b, 64, &self.zero_chunks.to_le_bytes());
        put(&mut b, 72, &self.parent_chunks.to_le_bytes());
        put(&mut b, 80, &self.payload_bytes.to_le_bytes());
        put(&mut b, 88, &self.bad_bytes.to_le_bytes());
        put(&mut b, 96, &self.media_hash);
        put(&mut b, 128, &self.finished.to_le_bytes());
        put(&mut b, 136, &self.bad_ranges.to_le_bytes());
        put(&mut b, 144, &self.unallocated_chunks.to_le_bytes());
        put(&mut b, 152, &self.usage_len.to_le_bytes());
        let crc = crc32fast::hash(&b[..156]);
        put(&mut b, 156, &crc.to_le_bytes());
        b
    }

    /// `None` when there is no footer signature at all (an incomplete image); `Err` when a footer
    /// is there but damaged.
    pub fn decode(b: &[u8]) -> Option<std::result::Result<Footer, String>> {
        if b.len() != FOOTER_SIZE || &b[0..8] != FOOTER_MAGIC {
            return None;
        }
        if crc32fast::hash(&b[..156]) != u32_at(b, 156) {
            return Some(Err("image footer is damaged (CRC32 mismatch)".into()));
        }
        Some(Ok(Footer {
            uuid: arr(b, 8),
            volumes: u32_at(b, 24),
            segments: u32_at(b, 28),
            segtab_offset: u64_at(b, 32),
            segtab_crc: u32_at(b, 40),
            chunks: u64_at(b, 48),
            stored_chunks: u64_at(b, 56),
            zero_chunks: u64_at(b, 64),
            parent_chunks: u64_at(b, 72),
            payload_bytes: u64_at(b, 80),
            bad_bytes: u64_at(b, 88),
            media_hash: arr(b, 96),
            finished: u64_at(b, 128),
            bad_ranges: u64_at(b, 136),
            unallocated_chunks: u64_at(b, 144),
            usage_len: u32_at(b, 152),
        }))
    }
}

/// Encodes the usage record: magic, JSON length, the JSON of the used-block plan, CRC32.
pub fn encode_usage(json: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(json.len() + 12);
    b.extend_from_slice(USAGE_MAGIC);
    b.extend_from_slice(&(json.len() as u32).to_le_bytes());
    b.extend_from_slice(json);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a usage record to its JSON bytes.
pub fn decode_usage(b: &[u8]) -> std::result::Result<&[u8], String> {
    if b.len() < 12 || &b[0..4] != USAGE_MAGIC {
        return Err("usage record signature missing".into());
    }
    let n = u32_at(b, 4) as usize;
    if n + 12 != b.len() {
        return Err("usage record length does not match".into());
    }
    if crc32fast::hash(&b[..8 + n]) != u32_at(b, 8 + n) {
        return Err("usage record CRC32 mismatch".into());
    }
    Ok(&b[8..8 + n])
}

/// Incremental media-hash computation (see the spec): fed chunk hashes in order.
pub struct MediaHasher(blake3::Hasher);
impl MediaHasher {
    pub fn new(disk_size: u64, chunk_size: u32) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"lifeboat-media-v1");
        h.update(&disk_size.to_le_bytes());
        h.update(&chunk_size.to_le_bytes());
        MediaHasher(h)
    }
    pub fn add(&mut self, chunk_hash: &[u8; 32]) {
        self.0.update(chunk_hash);
    }
    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Lower-case hex of `b` (hashes, keys and UUIDs in JSON and object names).
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The bytes of the hex text `s` ([`hex`]'s inverse; either case), or None when it is not
/// whole bytes of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A UUID in its canonical text form.
pub fn uuid_str(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random version-4 UUID (from the kernel's random source).
pub fn new_uuid() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| Error::io("read random bytes from", "/dev/urandom", e))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// The file name of volume `n` (1-based) of the image at `base`.
pub fn volume_path(base: &std::path::Path, n: u32) -> std::path::PathBuf {
    if n <= 1 {
        return base.to_path_buf();
    }
    let mut s = base.as_os_str().to_os_string();
    s.push(format!(".{n:03}"));
    std::path::PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            vec![0, 1, 0xab, 0xff]
        );
        assert_eq!(unhex("ABff").unwrap(), vec![0xab, 0xff]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        assert!(unhex("0g").is_none());
    }

    fn header() -> Header {
        Header {
            version: VERSION,
            compat: 0,
            incompat: FEAT_INCREMENTAL,
            volume: 1,
            uuid: [7; 16],
            parent_uuid: [9; 16],
            parent_media_hash: [3; 32],
            created: 1_700_000_000,
            disk_size: 10 << 20 | 512,
            sector_size: 512,
            chunk_size: DEFAULT_CHUNK_SIZE,
            segment_chunks: 4,
            split_size: 0,
            model: "QEMU HARDDISK".into(),
            serial: "SRC-1".into(),
            source_name: "/dev/sda".into(),
            parent_path: "full.lbi".into(),
            crypt: None,
        }
    }

    #[test]
    fn header_round_trip_and_crc() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.chunk_count(), 11);
        assert_eq!(h.chunk_len(10), 512);
        assert_eq!(h.segment_count(), 3);
        for i in [0usize, 20, 100, 300, 507, 510] {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Header::decode(&c).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn segment_round_trip_and_bounds() {
        let h = header();
        let e = Entry {
            offset: 512,
            len: 100,
            volume: 1,
            kind: Kind::Lz4,
            flags: FLAG_BAD,
            crc: 5,
            member: 0,
            members: 0,
            hash: [1; 32],
        };
        let s = Segment {
            first_chunk: 4,
            entries: vec![e; 4],
            bad: vec![(4 << 20, 512)],
        };
        let b = s.encode();
        let d = Segment::decode(&b, &h, 4, 4).unwrap();
        assert_eq!(d.entries, s.entries);
        assert_eq!(d.bad, s.bad);
        assert!(Segment::decode(&b, &h, 0, 4).is_err());
        let mut c = b.clone();
        c[30] ^= 1;
        assert!(Segment::decode(&c, &h, 4, 4).is_err());
        // A bad range outside the segment's span is refused even with a valid CRC.
        let s2 = Segment {
            first_chunk: 4,
            entries: vec![e; 4],
            bad: vec![(0, 512)],
        };
        assert!(Segment::decode(&s2.encode(), &h, 4, 4).is_err());
    }

    #[test]
    fn footer_round_trip() {
        let f = Footer {
            uuid: [1; 16],
            volumes: 2,
            chunks: 9,
            unallocated_chunks: 3,
            usage_len: 77,
            media_hash: [4; 32],
            ..Default::default()
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b).unwrap().unwrap(), f);
        let mut c = b;
        c[50] ^= 1;
        assert!(Footer::decode(&c).unwrap().is_err());
        c[0] = 0;
        assert!(Footer::decode(&c).is_none());
    }

    #[test]
    fn compression_names() {
        assert_eq!(Compression::parse("lz4").unwrap(), Compression::Lz4);
        assert_eq!(Compression::parse("zstd").unwrap(), Compression::Zstd(3));
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd(19)
        );
        for bad in ["zstd:0", "zstd:20", "zstd:x", "gzip", "lz4:1", ""] {
            assert_eq!(
                Compression::parse(bad).unwrap_err().kind,
                crate::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn usage_record_round_trip() {
        let r = encode_usage(br#"{"partitions":[]}"#);
        assert_eq!(decode_usage(&r).unwrap(), br#"{"partitions":[]}"#);
        let mut c = r.clone();
        c[10] ^= 1;
        assert!(decode_usage(&c).is_err());
        assert!(decode_usage(&r[..r.len() - 1]).is_err());
    }

    #[test]
    fn version_one_still_read() {
        let mut h = header();
        h.version = 1;
        assert_eq!(Header::decode(&h.encode()).unwrap().version, 1);
        h.incompat |= FEAT_USED_BLOCKS;
        assert!(Header::decode(&h.encode()).is_err());
        h.version = 3;
        h.incompat = 0;
        let e = Header::decode(&h.encode()).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
    }

    #[test]
    fn volume_names() {
        let p = std::path::Path::new("/x/full.lbi");
        assert_eq!(volume_path(p, 1), p);
        assert_eq!(volume_path(p, 2), std::path::Path::new("/x/full.lbi.002"));
    }
}
