//! NTFS used blocks: `$Bitmap` (MFT record 6), found through `$MFT`'s own data runs, gives the
//! used clusters; the boot sector area, `$MFT`, `$MFTMirr`, `$LogFile` and the backup boot
//! sector after the volume are always used. A volume marked dirty in `$Volume`, or whose
//! `$LogFile` restart area is not clean (Windows still had it mounted: a crash, hibernation or
//! Fast Startup), is refused — its bitmap may not describe its data — and so is a bitmap that
//! does not mark the boot sector and the MFT. hiberfil.sys itself is not opened. Memory: one
//! [`PIECE`] of the bitmap plus `$Bitmap`'s run list (one MFT record's worth).
use super::{bit_runs, le16, le32, le64, ListMap, Range, Region, Union, UsedMap};
use crate::error::{Error, Result};
use std::collections::VecDeque;

/// Bitmap bytes examined at once.
const PIECE: u64 = 256 << 10;
const AT_VOLUME_INFORMATION: u32 = 0x70;
const AT_DATA: u32 = 0x80;
const AT_END: u32 = 0xFFFF_FFFF;

/// One data run: first VCN, LCN (None for a sparse run), cluster count.
type Run = (u64, Option<u64>, u64);

fn corrupt(m: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("NTFS: {m}"))
}

/// Decodes a mapping-pairs array into runs starting at `vcn`.
fn decode_runs(b: &[u8], mut vcn: u64) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut lcn: i64 = 0;
    let mut o = 0usize;
    while o < b.len() && b[o] != 0 {
        let h = b[o];
        let (ls, os) = ((h & 0xF) as usize, (h >> 4) as usize);
        if ls == 0 || ls > 8 || os > 8 || o + 1 + ls + os > b.len() {
            return Err(corrupt("malformed data run"));
        }
        let mut len = 0u64;
        for k in 0..ls {
            len |= u64::from(b[o + 1 + k]) << (8 * k);
        }
        let lcn_of = if os == 0 {
            None
        } else {
            let mut d: i64 = 0;
            for k in 0..os {
                d |= i64::from(b[o + 1 + ls + k]) << (8 * k);
            }
            if os < 8 && b[o + ls + os] & 0x80 != 0 {
                d -= 1i64 << (8 * os);
            }
            lcn = lcn
                .checked_add(d)
                .filter(|&x| x >= 0)
                .ok_or_else(|| corrupt("data run before the volume"))?;
            Some(lcn as u64)
        };
        runs.push((vcn, lcn_of, len));
        vcn += len;
        o += 1 + ls + os;
    }
    Ok(runs)
}

struct Vol {
    cs: u64,
    rec_size: u64,
    clusters: u64,
}

/// Reads `len` bytes at byte offset `off` of a non-resident stream described by `runs`.
fn read_stream(r: &Region, v: &Vol, runs: &[Run], off: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let pos = off + out.len() as u64;
        let vcn = pos / v.cs;
        let run = runs
            .iter()
            .find(|x| vcn >= x.0 && vcn < x.0 + x.2)
            .ok_or_else(|| corrupt(format!("stream offset {pos} is not mapped")))?;
        let run_end = (run.0 + run.2) * v.cs;
        let n = (run_end - pos).min(len - out.len() as u64);
        match run.1 {
            Some(lcn) => {
                let abs = lcn * v.cs + (pos - run.0 * v.cs);
                out.extend(r.read(abs, n as usize)?);
            }
            None => out.resize(out.len() + n as usize, 0),
        }
    }
    Ok(out)
}

/// Checks a multi-sector record's update sequence and puts the saved bytes back.
fn fixup(rec: &mut [u8]) -> Result<()> {
    let usa = le16(rec, 4) as usize;
    let cnt = le16(rec, 6) as usize;
    if cnt == 0 || usa + 2 * cnt > rec.len() || (cnt - 1) * 512 > rec.len() {
        return Err(corrupt("invalid update sequence array"));
    }
    let check = [rec[usa], rec[usa + 1]];
    for i in 1..cnt {
        let end = i * 512;
        if rec[end - 2..end] != check {
            return Err(corrupt(
                "torn multi-sector record (update sequence mismatch)",
            ));
        }
        let saved = [rec[usa + 2 * i], rec[usa + 2 * i + 1]];
        rec[end - 2..end].copy_from_slice(&saved);
    }
    Ok(())
}

/// An attribute found in an MFT record: the resident value, or the runs + data size.
enum Attr {
    Resident(Vec<u8>),
    NonResident {
        runs: Vec<Run>,
        size: u64,
        last_vcn: u64,
    },
}

/// The unnamed attribute `ty` of a (fixed-up) MFT record.
fn find_attr(rec: &[u8], ty: u32) -> Result<Option<Attr>> {
    let mut o = le16(rec, 0x14) as usize;
    while o + 16 <= rec.len() {
        let t = le32(rec, o);
        let len = le32(rec, o + 4) as usize;
        if t == AT_END {
            break;
        }
        if len < 16 || o + len > rec.len() {
            return Err(corrupt("malformed attribute in an MFT record"));
        }
        let a = &rec[o..o + len];
        if t == ty && a[9] == 0 {
            if a[8] == 0 {
                let vl = le32(a, 16) as usize;
                let vo = le16(a, 20) as usize;
                let val = a
                    .get(vo..vo + vl)
                    .ok_or_else(|| corrupt("resident value overflows"))?;
                return Ok(Some(Attr::Resident(val.to_vec())));
            }
            let start = le64(a, 16);
            let mp = le16(a, 32) as usize;
            let runs = decode_runs(a.get(mp..).unwrap_or(&[]), start)?;
            return Ok(Some(Attr::NonResident {
                runs,
                size: le64(a, 48),
                last_vcn: le64(a, 24),
            }));
        }
        o += len;
    }
    Ok(None)
}

fn read_record(r: &Region, v: &Vol, mft: &[Run], n: u64) -> Result<Vec<u8>> {
    let mut rec = read_stream(r, v, mft, n * v.rec_size, v.rec_size)?;
    if rec.get(0..4) != Some(b"FILE") {
        return Err(corrupt(format!("MFT record {n} has no FILE signature")));
    }
    fixup(&mut rec)?;
    Ok(rec)
}

/// Whether the `$LogFile` says Windows shut the volume down cleanly.
fn log_clean(r: &Region, v: &Vol, runs: &[Run], size: u64) -> Result<bool> {
    let first = read_stream(r, v, runs, 0, 4096.min(size))?;
    if first.iter().all(|&b| b == 0xFF) {
        return Ok(true); // emptied by chkdsk / ntfsfix / ntfs-3g: nothing to replay
    }
    let mut best: Option<(u64, bool)> = None;
    let psize = u64::from(le32(&first, 16));
    let pages = if (512..=65536).contains(&psize) && psize.is_power_of_two() && 2 * psize <= size {
        vec![0, psize]
    } else {
        vec![0]
    };
    for p in pages {
        let len = if psize >= 512 { psize } else { 4096 };
        let mut page = read_stream(r, v, runs, p, len.min(size - p))?;
        if page.get(0..4) != Some(b"RSTR") || fixup(&mut page).is_err() {
            continue;
        }
        let ra = le16(&page, 24) as usize;
        if ra + 16 > page.len() {
            continue;
        }
        let lsn = le64(&page, ra);
        let in_use = le16(&page, ra + 12);
        let clean = in_use == 0xFFFF || le16(&page, ra + 14) & 0x2 != 0;
        if best.is_none_or(|b| lsn >= b.0) {
            best = Some((lsn, clean));
        }
    }
    best.map(|b| b.1)
        .ok_or_else(|| corrupt("$LogFile has no valid restart page"))
}

/// The streamed `$Bitmap` part of the map.
pub struct BitmapMap<'a> {
    r: Region<'a>,
    v: Vol,
    runs: Vec<Run>,
    next: u64,
    bytes: u64,
    queue: VecDeque<Range>,
    tail_done: bool,
}

impl UsedMap for BitmapMap<'_> {
    fn next_range(&mut self) -> Result<Option<Range>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.next < self.bytes {
                let len = PIECE.min(self.bytes - self.next);
                let bits = read_stream(&self.r, &self.v, &self.runs, self.next, len)?;
                let base = self.next * 8;
                let nbits = (self.v.clusters - base).min(len * 8);
                let (cs, q) = (self.v.cs, &mut self.queue);
                bit_runs(&bits, nbits, |c, k| {
                    q.push_back(((base + c) * cs, (base + c + k) * cs));
                });
                self.next += len;
                continue;
            }
            if !self.tail_done {
                self.tail_done = true;
                // The backup boot sector follows the volume; anything else after it is copied too.
                let end = self.v.clusters * self.v.cs;
                if end < self.r.len() {
                    return Ok(Some((end, self.r.len())));
                }
            }
            return Ok(None);
        }
    }
}

/// Why Windows' own state makes an NTFS volume unsafe to trust or to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclean {
    /// The dirty flag in `$Volume` (a crash, or chkdsk scheduled).
    Dirty,
    /// `$LogFile`'s restart area is not clean: Windows still had it mounted (hibernation, Fast
    /// Startup, a crash).
    Log,
}

impl Unclean {
    /// In plain words.
    pub fn reason(self) -> &'static str {
        match self {
            Unclean::Dirty => "the NTFS volume is marked dirty",
            Unclean::Log => "the NTFS log is not clean: Windows did not shut down fully (hibernation, Fast Startup or a crash)",
        }
    }
}

/// The system files' locations, from the boot sector and `$MFT`.
struct Layout {
    v: Vol,
    mft_lcn: u64,
    mft: Vec<Run>,
    mirr: Vec<Run>,
    log: Vec<Run>,
    log_size: u64,
    bmp: Vec<Run>,
    bmp_size: u64,
    bmp_last: u64,
}

/// Whether the NTFS volume at the start of `r` was left unclean by Windows (only reads).
pub fn unclean(r: Region<'_>) -> Result<Option<Unclean>> {
    let l = layout(&r)?;
    unclean_in(&r, &l)
}

fn unclean_in(r: &Region<'_>, l: &Layout) -> Result<Option<Unclean>> {
    let vol = read_record(r, &l.v, &l.mft, 3)?;
    match find_attr(&vol, AT_VOLUME_INFORMATION)? {
        Some(Attr::Resident(val)) if val.len() >= 12 => {
            if le16(&val, 10) & 0x1 != 0 {
                return Ok(Some(Unclean::Dirty));
            }
        }
        _ => return Err(corrupt("$Volume has no volume information")),
    }
    if !log_clean(r, &l.v, &l.log, l.log_size)? {
        return Ok(Some(Unclean::Log));
    }
    Ok(None)
}

/// Opens the map of the NTFS volume at the start of `r`.
pub fn open(r: Region<'_>) -> Result<Union<ListMap, BitmapMap<'_>>> {
    let l = layout(&r)?;
    match unclean_in(&r, &l)? {
        Some(Unclean::Dirty) => {
            return Err(Error::refused(format!(
                "{} (run chkdsk in Windows first, or copy all sectors)",
                Unclean::Dirty.reason()
            )))
        }
        Some(u) => return Err(Error::refused(u.reason())),
        None => {}
    }
    let Layout {
        v,
        mft_lcn,
        mft,
        mirr,
        log,
        bmp,
        bmp_size,
        bmp_last,
        ..
    } = l;
    let cs = v.cs;
    let bytes = v.clusters.div_ceil(8);
    if bmp_size < bytes || (bmp_last + 1) * cs < bytes || bmp.first().is_none_or(|x| x.0 != 0) {
        return Err(corrupt(
            "$Bitmap is smaller than the volume or continues in another MFT record",
        ));
    }
    let mut always = vec![(0, 8192.max(cs))];
    for runs in [&mft, &mirr, &log] {
        for &(_, lcn, n) in runs.iter() {
            if let Some(l) = lcn {
                always.push((l * cs, (l + n) * cs));
            }
        }
    }
    let map = BitmapMap {
        r,
        v,
        runs: bmp,
        next: 0,
        bytes,
        queue: VecDeque::new(),
        tail_done: false,
    };
    // The bitmap must mark cluster 0 (the boot sector) and the MFT's first cluster.
    for c in [0, mft_lcn] {
        let byte = read_stream(&map.r, &map.v, &map.runs, c / 8, 1)?;
        if byte[0] >> (c % 8) & 1 == 0 {
            return Err(corrupt(format!(
                "$Bitmap does not mark system cluster {c} as used"
            )));
        }
    }
    Ok(Union::new(ListMap::new(always), map))
}

/// Reads the boot sector and finds the system files through `$MFT`'s own runs.
fn layout(r: &Region<'_>) -> Result<Layout> {
    let b = r.read(0, 512)?;
    if b.get(3..11) != Some(b"NTFS    ") {
        return Err(corrupt("no NTFS signature"));
    }
    let bps = u64::from(le16(&b, 11));
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Err(corrupt("invalid bytes per sector"));
    }
    let spc = match b[13] {
        x if x > 0x80 => 1u64 << (256 - u32::from(x)).min(31),
        x => u64::from(x),
    };
    if spc == 0 {
        return Err(corrupt("invalid sectors per cluster"));
    }
    let cs = bps * spc;
    let rec_size = match b[0x40] as i8 {
        x if x < 0 => 1u64 << (-i32::from(x)).min(20),
        x => x as u64 * cs,
    };
    if !(512..=65536).contains(&rec_size) {
        return Err(corrupt("invalid MFT record size"));
    }
    let total = le64(&b, 40);
    let v = Vol {
        cs,
        rec_size,
        clusters: total / spc,
    };
    if total.saturating_mul(bps) > r.len() {
        return Err(corrupt("the volume is larger than its partition"));
    }
    let mft_lcn = le64(&b, 48);
    if mft_lcn >= v.clusters {
        return Err(corrupt("the MFT lies outside the volume"));
    }
    // Record 0 read straight from the boot sector's MFT location, then through its own runs.
    let boot_mft: Vec<Run> = vec![(0, Some(mft_lcn), rec_size.div_ceil(cs).max(1) * 16)];
    let rec0 = read_record(r, &v, &boot_mft, 0)?;
    let Some(Attr::NonResident { runs: mft, .. }) = find_attr(&rec0, AT_DATA)? else {
        return Err(corrupt("$MFT has no non-resident data"));
    };
    let runs_of = |n: u64| -> Result<(Vec<Run>, u64, u64)> {
        match find_attr(&read_record(r, &v, &mft, n)?, AT_DATA)? {
            Some(Attr::NonResident {
                runs,
                size,
                last_vcn,
            }) => Ok((runs, size, last_vcn)),
            _ => Err(corrupt(format!("system file {n} has no non-resident data"))),
        }
    };
    let (mirr, _, _) = runs_of(1)?;
    let (log, log_size, _) = runs_of(2)?;
    let (bmp, bmp_size, bmp_last) = runs_of(6)?;
    Ok(Layout {
        v,
        mft_lcn,
        mft,
        mirr,
        log,
        log_size,
        bmp,
        bmp_size,
        bmp_last,
    })
}
