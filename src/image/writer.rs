//! Image create's writer: chunks stored in the order the reader side completed them, a
//! compressor batch at a time (payloads of stored chunks into the volumes: a zstd group's once,
//! see `pack`), each index segment once all its chunks are stored, the journal at each
//! checkpoint of the rescue engine (see `journal`), and the tail (usage record, segment table,
//! footer) with the media hash from the segments read back in chunk order.
//!
//! A checkpoint may fall inside a batch (the reader side has emitted only part of it): a group
//! is one payload, so the journal then describes the moment before the batch — volumes and
//! index as they were after the previous batch — and lists the chunks of the batch emitted
//! before the checkpoint, which a resumed create emits again first (`feed::Feed::replay`). The
//! batch is then made of the same chunks in the same order as in an uninterrupted run.
use super::create::{push_bad, Slot};
use super::format::*;
use super::journal;
use super::pack::Done;
use super::volumes::VolumeWriter;
use crate::error::{Error, Result};
use crate::rescue::engine::ResumePoint;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// How long the writer waits for the next batch before it writes its staged whole blocks out
/// when reading ahead (see `write_loop`).
const IDLE: Duration = Duration::from_millis(100);

/// Bad ranges kept for the report (all of them are in the index regardless).
const REPORT_BAD_RANGES: usize = 10_000;

/// An index segment being filled: chunks arrive in the order the reader side completed them.
#[derive(Debug, Clone, Default)]
pub(super) struct OpenSegment {
    pub(super) entries: Vec<Option<Entry>>,
    pub(super) filled: usize,
    pub(super) bad: Vec<(u64, u64)>,
}

/// The index as written so far: what a resumed create needs to go on (see `journal`).
#[derive(Debug, Clone, Default)]
pub(super) struct IndexState {
    /// Segments written, in the order written.
    pub(super) segtab: Vec<SegRef>,
    /// Segments not complete yet (by segment number): their chunks written so far.
    pub(super) open: BTreeMap<u64, OpenSegment>,
    pub(super) footer: Footer,
    /// Chunks written (entries made).
    pub(super) written: u64,
    /// The next sequence number to write.
    pub(super) next_seq: u64,
    /// What this process wrote, for the verify after writing (chunks written by an earlier,
    /// interrupted run are not in it: their segments are verified in full).
    pub(super) digest: super::verify::WrittenDigest,
}

/// A finished image's footer, its bad ranges (capped for the report) and what this process
/// wrote (for the verify after writing).
pub(super) type Written = (Footer, Vec<(u64, u64)>, super::verify::WrittenDigest);

/// What the writer is sent: compressed batches (see `pack`), and checkpoints of the reader side.
pub(super) enum WMsg {
    Batch(Vec<Done>),
    /// The reader side's state after it emitted the sequence numbers before `at_seq`: write
    /// the journal once every batch before the one `at_seq` belongs to is written (and none
    /// after), naming the chunks of that batch emitted before `at_seq` (`open_batch`, in
    /// sequence order).
    Checkpoint {
        at_seq: u64,
        open_batch: Vec<u64>,
        map: String,
        resume: Option<ResumePoint>,
    },
}

/// What a journal needs besides the index.
pub(super) struct JournalCtx {
    pub(super) image: PathBuf,
    pub(super) settings: journal::Settings,
    /// Chunks per compressor batch (see `pack::group_chunks`).
    pub(super) batch: u64,
    /// This run of the create ([`journal::Journal::run`]).
    pub(super) run: u32,
}

/// A checkpoint waiting for the writer to reach its batch.
struct Pending {
    /// The first sequence number of the batch `at_seq` belongs to.
    batch_start: u64,
    open_batch: Vec<u64>,
    map: String,
    resume: Option<ResumePoint>,
}

/// Writes the batches in sequence order (payloads of stored chunks; an index segment as soon
/// as all its chunks are written) and the journal at each checkpoint, then the tail; returns
/// the footer and the bad ranges (capped for the report), or `None` when the reader side
/// stopped before the end.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_loop(
    vw: &mut VolumeWriter,
    header: &Header,
    usage: &[u8],
    done_rx: Receiver<WMsg>,
    free_tx: SyncSender<Slot>,
    mut idx: IndexState,
    jctx: &JournalCtx,
    mut ahead: Option<super::ahead::Feeder>,
) -> Result<Option<Written>> {
    let chunks = header.chunk_count();
    let mut pending: BTreeMap<u64, Vec<Done>> = BTreeMap::new();
    let mut checkpoints: std::collections::VecDeque<Pending> = Default::default();
    // Every whole block written is on the storage (see below).
    let mut flushed = false;
    loop {
        // Checkpoints reached: every batch before theirs is written, nothing after. (A batch
        // reaches the writer only after the checkpoints sent before its last chunk was
        // emitted, so none is ever passed; should one be, it is dropped: the journal stays at
        // the previous one, which is still true.)
        while let Some(c) = checkpoints.front() {
            if c.batch_start > idx.next_seq {
                break;
            }
            debug_assert_eq!(c.batch_start, idx.next_seq, "a checkpoint passed");
            let Some(c) = checkpoints.pop_front() else {
                break;
            };
            if c.batch_start == idx.next_seq {
                // A journal is what a resumed create opens the image with: its key slot first.
                vw.settle_slots()?;
                vw.sync()?;
                if let Some(a) = ahead.as_mut() {
                    a.publish(vw.settled(), vw.headers_final(), vw.files());
                }
                journal::Journal::new(
                    &jctx.settings,
                    vw.header(),
                    vw.lens()?,
                    c.map,
                    c.resume,
                    &idx,
                    c.open_batch,
                )
                .in_run(jctx.run)
                .save(&jctx.image)?;
            }
        }
        if idx.written >= chunks {
            break;
        }
        if let Some(batch) = pending.remove(&idx.next_seq) {
            write_batch(vw, header, &mut idx, batch, &free_tx, ahead.as_mut())?;
            if let Some(a) = ahead.as_mut() {
                a.publish(vw.settled(), vw.headers_final(), vw.files());
                flushed = false;
            }
            continue;
        }
        // Reading ahead (`ahead`): when nothing comes for a moment (the engine trims, scrapes,
        // retries), the whole blocks written so far go to the storage, so that the records
        // in them can be read back meanwhile.
        let msg = match ahead.as_mut().filter(|_| !flushed) {
            Some(a) => match done_rx.recv_timeout(IDLE) {
                Err(RecvTimeoutError::Timeout) => {
                    vw.write_whole_blocks()?;
                    a.publish(vw.settled(), vw.headers_final(), vw.files());
                    flushed = true;
                    continue;
                }
                m => m.map_err(|_| ()),
            },
            None => done_rx.recv().map_err(|_| ()),
        };
        match msg {
            Ok(WMsg::Batch(b)) => {
                if let Some(first) = b.first() {
                    pending.insert(first.seq, b);
                }
            }
            Ok(WMsg::Checkpoint {
                at_seq,
                open_batch,
                map,
                resume,
            }) => checkpoints.push_back(Pending {
                batch_start: at_seq - at_seq % jctx.batch.max(1),
                open_batch,
                map,
                resume,
            }),
            // The reader side stopped (error or cancel): the caller reports why.
            Err(_) => return Ok(None),
        }
    }
    drop(free_tx);
    vw.settle_slots()?;
    finish_tail(vw, header, usage, idx).map(Some)
}

/// Writes one batch: the group payload if it has one, every chunk's payload and entry, and
/// each index segment it completes.
fn write_batch(
    vw: &mut VolumeWriter,
    header: &Header,
    idx: &mut IndexState,
    batch: Vec<Done>,
    free_tx: &SyncSender<Slot>,
    mut ahead: Option<&mut super::ahead::Feeder>,
) -> Result<()> {
    let chunks = header.chunk_count();
    let sc = header.segment_chunks as u64;
    let group_at = write_group(vw, &batch, &mut idx.footer)?;
    for d in batch {
        let f = &mut idx.footer;
        let len = header.chunk_len(d.i);
        let (volume, offset) = match d.kind {
            Kind::Zero | Kind::Parent | Kind::Unallocated => (0, 0),
            Kind::Lz4 | Kind::Zstd => vw.record(&[&d.slot.out[..d.stored]])?,
            Kind::Raw => vw.record(&[&d.slot.data[..len]])?,
            Kind::Group => group_at,
        };
        match d.kind {
            Kind::Zero => f.zero_chunks += 1,
            Kind::Parent => f.parent_chunks += 1,
            Kind::Unallocated => f.unallocated_chunks += 1,
            _ => f.stored_chunks += 1,
        }
        if d.kind != Kind::Group {
            f.payload_bytes += d.stored as u64;
        }
        let entry = Entry {
            offset,
            len: d.stored as u32,
            volume,
            kind: d.kind,
            flags: if d.bad.is_empty() { 0 } else { FLAG_BAD },
            crc: d.crc,
            member: d.member,
            members: d.members,
            hash: d.hash,
        };
        let k = d.i / sc;
        let n = (chunks - k * sc).min(sc) as usize;
        let seg = idx.open.entry(k).or_insert_with(|| OpenSegment {
            entries: vec![None; n],
            filled: 0,
            bad: Vec::new(),
        });
        let slot = &mut seg.entries[(d.i - k * sc) as usize];
        if slot.is_none() {
            seg.filled += 1;
        }
        if matches!(d.kind, Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group) {
            match d.plain_crc.filter(|_| slot.is_none()) {
                Some(crc) => {
                    idx.digest.add(k, d.i, crc, &d.hash);
                    // Read back ahead of the verify after writing once settled (`ahead`).
                    if let Some(a) = ahead.as_deref_mut() {
                        a.add(d.i, &entry, crc);
                    }
                }
                None => idx.digest.poison(k),
            }
        }
        *slot = Some(entry);
        seg.bad.extend_from_slice(&d.bad);
        let _ = free_tx.send(d.slot);
        idx.written += 1;
        idx.next_seq += 1;
        if seg.filled == n {
            let Some(seg) = idx.open.remove(&k) else {
                continue;
            };
            let mut bad = seg.bad;
            bad.sort_unstable();
            let mut merged = Vec::with_capacity(bad.len());
            for (s, l) in bad {
                push_bad(&mut merged, s, l);
            }
            let f = &mut idx.footer;
            f.bad_ranges += merged.len() as u64;
            f.bad_bytes += merged.iter().map(|r| r.1).sum::<u64>();
            let segment = Segment {
                first_chunk: k * sc,
                entries: seg.entries.into_iter().flatten().collect(),
                bad: merged,
            };
            let bytes = segment.encode();
            let (volume, offset) = vw.record(&[&bytes])?;
            idx.segtab.push(SegRef {
                offset,
                volume,
                len: bytes.len() as u32,
                first_chunk: k * sc,
            });
        }
    }
    Ok(())
}

/// Writes the group payload of a batch, if it has one (the members' pieces in member order,
/// one record); returns where it went.
fn write_group(vw: &mut VolumeWriter, batch: &[Done], f: &mut Footer) -> Result<(u16, u64)> {
    let Some(m0) = batch.iter().find(|d| d.kind == Kind::Group) else {
        return Ok((0, 0));
    };
    let parts: Vec<&[u8]> = batch
        .iter()
        .filter(|d| d.kind == Kind::Group)
        .map(|d| &d.slot.out[..d.part])
        .collect();
    f.payload_bytes += m0.stored as u64;
    vw.record(&parts)
}

impl IndexState {
    /// One bit per chunk: written (in a written segment, or an entry of an open one).
    pub(super) fn emitted(&self, header: &Header) -> Vec<u64> {
        let chunks = header.chunk_count();
        let sc = header.segment_chunks as u64;
        let mut bits = vec![0u64; chunks.div_ceil(64) as usize];
        let mut set = |i: u64| {
            if let Some(w) = bits.get_mut((i / 64) as usize) {
                *w |= 1 << (i % 64);
            }
        };
        for r in &self.segtab {
            for i in r.first_chunk..(r.first_chunk + sc).min(chunks) {
                set(i);
            }
        }
        for (&k, o) in &self.open {
            for (j, e) in o.entries.iter().enumerate() {
                if e.is_some() {
                    set(k * sc + j as u64);
                }
            }
        }
        bits
    }
}

/// The tail once every chunk is written: the media hash and the report's bad ranges from the
/// segments read back in chunk order, then usage record + segment table + footer in one record
/// (never split across volumes).
pub(super) fn finish_tail(
    vw: &mut VolumeWriter,
    header: &Header,
    usage: &[u8],
    idx: IndexState,
) -> Result<Written> {
    let mut f = idx.footer;
    let mut segtab = idx.segtab;
    segtab.sort_by_key(|r| r.first_chunk);
    let sc = header.segment_chunks as u64;
    let chunks = header.chunk_count();
    let mut media = MediaHasher::new(header.disk_size, header.chunk_size);
    let mut report_bad = Vec::new();
    for r in &segtab {
        let b = vw.read_record(r.volume, r.offset, r.len as usize)?;
        let n = (chunks - r.first_chunk).min(sc) as usize;
        let seg = Segment::decode(&b, header, r.first_chunk, n).map_err(|m| {
            Error::corrupt(format!(
                "the index segment just written reads back wrong: {m}"
            ))
        })?;
        for e in &seg.entries {
            media.add(&e.hash);
        }
        for &(s, l) in &seg.bad {
            if report_bad.len() < REPORT_BAD_RANGES {
                push_bad(&mut report_bad, s, l);
            }
        }
    }
    let mut tab = vec![0u8; segtab.len() * SEGTAB_ENTRY];
    for (k, r) in segtab.iter().enumerate() {
        r.encode_into(&mut tab[k * SEGTAB_ENTRY..(k + 1) * SEGTAB_ENTRY]);
    }
    f.segments = segtab.len() as u32;
    f.segtab_crc = crc32fast::hash(&tab);
    f.media_hash = media.finish();
    f.finished = super::create::now_secs();
    // An encrypted image seals the header's text fields and the usage record into one tail
    // record whose associated data is the segment table and the footer.
    let sealer = vw.sealer();
    let rec_len = match &sealer {
        Some(_) => super::crypt::TEXT_LEN + usage.len() + super::crypt::OVERHEAD,
        None => usage.len(),
    };
    // The footer must know its volume and offset: decide whether the tail needs a new volume first.
    let tail = (rec_len + tab.len() + FOOTER_SIZE) as u64;
    let (volumes, at) = vw.reserve(tail)?;
    f.volumes = volumes;
    f.usage_len = rec_len as u32;
    f.segtab_offset = at + rec_len as u64;
    let fb = f.encode();
    match &sealer {
        Some(s) => {
            let mut rec = Vec::with_capacity(rec_len);
            s.seal_tail(
                volumes as u16,
                at,
                &s.tail_ad(&tab, &fb),
                &[&header.text_area(), usage],
                &mut rec,
            )?;
            vw.record_clear(&[&rec, &tab, &fb])?;
        }
        None => {
            vw.record_clear(&[usage, &tab, &fb])?;
        }
    }
    Ok((f, report_bad, idx.digest))
}
