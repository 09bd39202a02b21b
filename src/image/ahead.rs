//! Verify ahead: part of image create's verify after writing done while the image is still
//! being made. On a failing disk the rescue engine's trim, scrape and retry phases leave the
//! CPUs mostly idle (seconds here, hours on a dying drive) while the chunks stored so far sit
//! on the target. From the engine's first phase after copying on, a thread in the kernel's idle
//! scheduling class (it only takes CPU time nothing else wants) reads back the records this
//! run stored, from the storage with O_DIRECT, and checks each as the verify after writing
//! would: its tag (encrypted) and CRC32, that it decodes (decompressed, or a group member cut
//! out) to the chunk's length, and that the CRC32 of the decoded bytes is the one the job
//! computed from the bytes it read from the source. A chunk that passes is marked, per index
//! segment, with the place of its record ([`super::verify::place`]: chunk number and every
//! field of its entry, hash included) and its share of the [`super::verify::WrittenDigest`];
//! the verify after writing then reads every record but those, and takes a segment's marks
//! only when the entries it reads back from the finished index are exactly those that were
//! checked (see `verify_one`). Everything else — the records of chunks held back until the end,
//! the index, tail and footer, the counts, the media hash, the coverage of every byte — is
//! checked after the image is complete, as before.
//!
//! Only a record that is on the storage for good is read ahead: it must end where its volume
//! is settled ([`super::volumes::VolumeWriter::settled`]: written with O_DIRECT in whole
//! blocks, or fsynced and in a block that is never written again); in the volume's first block
//! only once the headers are final (a new encrypted image's key slot is written into them at
//! its first checkpoint, and that block with it). A volume the
//! filesystem cannot read with O_DIRECT is not read ahead at all (its page cache is not
//! dropped under the writer): everything is then verified after writing. A check that fails,
//! or cannot be made, marks nothing — the verify after writing reads that record again and
//! reports what it finds, as it always did. The volumes are read through descriptors of the
//! writer's own files (reopened through `/proc/self/fd`), never by name.
use super::crypt::Sealer;
use super::dio::{Stored, VolFile};
use super::format::*;
use super::reader::PayloadReader;
use crate::io::{AlignedBuf, IO_ALIGN};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Records waiting to be read ahead at most (~70 bytes each): beyond that, a record is left
/// to the verify after writing. Memory stays bounded whatever the disk's size.
const MAX_QUEUED: usize = 1 << 16;

/// A stored chunk for the checker: its number, its entry, and the CRC32 of its disk bytes.
#[derive(Debug, Clone, Copy)]
struct Item {
    i: u64,
    e: Entry,
    plain_crc: u32,
}

impl Item {
    /// The group (kind 6) payload this chunk is a member of (None: a payload of its own).
    fn group_key(&self) -> Option<(u16, u64, u32, u32)> {
        let e = &self.e;
        (e.kind == Kind::Group).then_some((e.volume, e.offset, e.len, e.crc))
    }
}

/// What the checker is told, in order (an unbounded channel: the writer never waits).
enum Msg {
    /// A volume opened by the writer, reopened for reading, and its path (for messages).
    Volume(File, PathBuf),
    Item(Item),
    /// Per volume: bytes settled on the storage (see the module text); whether the volumes'
    /// headers are final (no key slot still to be written into them).
    Settled(Vec<u64>, bool),
    /// The engine has left its copying phase: start reading.
    Activate,
    /// Stop after the record being checked (`true`: first check every settled record; tests).
    Close(bool),
}

/// The writer's side: records handed to the checker without ever waiting for it.
pub(super) struct Feeder {
    tx: Sender<Msg>,
    /// Items sent and not yet taken off the checker's queue (bounded by [`MAX_QUEUED`]).
    queued: Arc<AtomicUsize>,
    /// Volumes handed over (reopened) so far.
    vols: usize,
    /// The settled bytes last sent, and whether the headers were final.
    sent: (Vec<u64>, bool),
    /// No volume can be reopened here (no `/proc`), or the checker is gone: nothing is read
    /// ahead.
    off: bool,
}

impl Feeder {
    /// Chunk `i`, stored with entry `e`, its disk bytes' CRC32 `plain_crc`. Beyond
    /// [`MAX_QUEUED`] waiting, left to the verify after writing.
    pub(super) fn add(&mut self, i: u64, e: &Entry, plain_crc: u32) {
        if self.off || self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let it = Item {
            i,
            e: *e,
            plain_crc,
        };
        if self.tx.send(Msg::Item(it)).is_err() {
            self.off = true;
        }
    }

    /// Hands the volumes opened so far (`files`, the writer's), where they are settled
    /// (`settled`) and whether their headers are final (`headers`) to the checker.
    pub(super) fn publish(&mut self, settled: &[u64], headers: bool, files: &[(File, PathBuf)]) {
        while !self.off && self.vols < files.len() {
            let (f, p) = &files[self.vols];
            match reopen(f) {
                Some(r) => self.off = self.tx.send(Msg::Volume(r, p.clone())).is_err(),
                None => self.off = true,
            }
            self.vols += 1;
        }
        if !self.off && (self.sent.0 != settled || self.sent.1 != headers) {
            self.sent = (settled.to_vec(), headers);
            let m = Msg::Settled(self.sent.0.clone(), headers);
            self.off = self.tx.send(m).is_err();
        }
    }
}

/// A new open file description of the file open on `f` (read only): its own O_DIRECT flag,
/// the writer's inode whatever its name now points to.
fn reopen(f: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()
}

/// What was read ahead and passed, per index segment (see the module text).
#[derive(Debug, Clone, Default)]
pub struct Ahead {
    segs: Vec<AheadSeg>,
    chunks: u64,
}

/// One index segment's chunks read ahead: which (bit `j` for chunk `first_chunk + j`), the
/// sum of their places and of their [`super::verify::WrittenDigest`] shares, how many.
#[derive(Debug, Clone, Default)]
pub(super) struct AheadSeg {
    bits: Vec<u64>,
    pub(super) place: u64,
    pub(super) fold: u64,
    pub(super) n: u32,
}

impl AheadSeg {
    /// Whether chunk `j` of the segment was read ahead.
    pub(super) fn has(&self, j: usize) -> bool {
        self.bits
            .get(j / 64)
            .is_some_and(|w| w >> (j % 64) & 1 == 1)
    }
}

impl Ahead {
    /// Marks chunk `i` (entry `e`; `sc` chunks per segment) as read back and matching the
    /// CRC32 `plain_crc` the job computed from its disk bytes.
    fn mark(&mut self, sc: u64, i: u64, e: &Entry, plain_crc: u32) {
        let (k, j) = ((i / sc) as usize, (i % sc) as usize);
        if self.segs.len() <= k {
            self.segs.resize(k + 1, AheadSeg::default());
        }
        let s = &mut self.segs[k];
        if s.has(j) {
            return;
        }
        if s.bits.len() <= j / 64 {
            s.bits.resize(j / 64 + 1, 0);
        }
        s.bits[j / 64] |= 1 << (j % 64);
        s.place = s.place.wrapping_add(super::verify::place(i, e));
        s.fold = s
            .fold
            .wrapping_add(super::verify::fold(i, plain_crc, &e.hash));
        s.n += 1;
        self.chunks += 1;
    }

    /// Segment `k`'s chunks read ahead.
    pub(super) fn seg(&self, k: u64) -> Option<&AheadSeg> {
        self.segs.get(k as usize).filter(|s| s.n > 0)
    }

    /// Chunks read ahead and passed.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }
}

/// The checker thread (see the module text).
pub(super) struct Checker {
    tx: Sender<Msg>,
    active: AtomicBool,
    handle: Option<std::thread::JoinHandle<Ahead>>,
}

/// Tests only: [`Checker::finish`] first checks every record settled by then (see
/// [`drain_for_tests`]).
#[cfg(test)]
pub(super) static DRAIN: AtomicBool = AtomicBool::new(false);

/// Tests only (debug builds): with `LIFEBOAT_TEST_VERIFY_AHEAD=drain` (or [`DRAIN`] in unit
/// tests) the checker runs in the normal scheduling class and, when the create finishes,
/// checks every record settled by then before it stops — so that a test knows which records
/// were read ahead whatever the machine's load.
fn drain_for_tests() -> bool {
    #[cfg(test)]
    if DRAIN.load(Ordering::Relaxed) {
        return true;
    }
    cfg!(debug_assertions)
        && std::env::var("LIFEBOAT_TEST_VERIFY_AHEAD").is_ok_and(|v| v == "drain")
}

/// Starts the checker of the image being written at `image` (`header`; `seal` for an
/// encrypted one): idle until [`Checker::activate`], fed through the returned [`Feeder`].
pub(super) fn start(image: &Path, header: &Header, seal: Option<Arc<Sealer>>) -> (Feeder, Checker) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let (q, path, h) = (queued.clone(), image.to_path_buf(), header.clone());
    let handle = std::thread::Builder::new()
        .name("verify-ahead".into())
        .spawn(move || run(rx, &q, &path, h, seal))
        .ok();
    let feeder = Feeder {
        tx: tx.clone(),
        queued,
        vols: 0,
        sent: (Vec::new(), false),
        off: handle.is_none(),
    };
    let checker = Checker {
        tx,
        active: AtomicBool::new(false),
        handle,
    };
    (feeder, checker)
}

impl Checker {
    /// The engine has left its copying phase: start reading ahead.
    pub(super) fn activate(&self) {
        if !self.active.swap(true, Ordering::Relaxed) {
            let _ = self.tx.send(Msg::Activate);
        }
    }

    /// Stops the checker (after the record it is checking) and returns what it passed.
    pub(super) fn finish(mut self) -> Ahead {
        let _ = self.tx.send(Msg::Close(drain_for_tests()));
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.tx.send(Msg::Close(false));
            let _ = h.join();
        }
    }
}

/// Whether `it` (a record of `overhead` more bytes than its entry's length) lies where its
/// volume is settled (`settled`; in the volume's first block only once the headers are final,
/// `headers`): `Some(true)` yes, `Some(false)` not yet, None never (no such volume).
fn settled(it: &Item, settled: &[u64], headers: bool, overhead: u64) -> Option<bool> {
    let end = it.e.offset + it.e.len as u64 + overhead;
    let v = (it.e.volume as usize).checked_sub(1)?;
    Some((headers || it.e.offset >= IO_ALIGN as u64) && settled.get(v).is_some_and(|&s| end <= s))
}

/// The checker's side of the channel: the records waiting, in the order written.
struct Inbox {
    rx: Receiver<Msg>,
    items: VecDeque<Item>,
    settled: Vec<u64>,
    headers: bool,
    new_vols: Vec<(File, PathBuf)>,
    active: bool,
    /// Closed: None, or Some(drain).
    closed: Option<bool>,
}

impl Inbox {
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Volume(f, p) => self.new_vols.push((f, p)),
            Msg::Item(it) => self.items.push_back(it),
            Msg::Settled(s, h) => (self.settled, self.headers) = (s, h),
            Msg::Activate => self.active = true,
            Msg::Close(drain) => self.closed = Some(drain),
        }
    }

    /// The next records to check, once active and settled: one record, or the members of one
    /// group (one payload); None once closed (in drain mode: once nothing settled is left).
    fn next(&mut self, queued: &AtomicUsize, overhead: u64) -> Option<Vec<Item>> {
        loop {
            while let Ok(m) = self.rx.try_recv() {
                self.take(m);
            }
            if self.closed == Some(false) {
                return None;
            }
            if self.active || self.closed.is_some() {
                while let Some(front) = self.items.front() {
                    match settled(front, &self.settled, self.headers, overhead) {
                        None => {
                            self.items.pop_front();
                            queued.fetch_sub(1, Ordering::Relaxed);
                        }
                        Some(false) => break,
                        Some(true) => {
                            let first = self.items.pop_front().expect("front exists");
                            let mut take = vec![first];
                            while let Some(n) = self.items.front() {
                                if first.group_key().is_none() || n.group_key() != first.group_key()
                                {
                                    break;
                                }
                                take.push(self.items.pop_front().expect("front exists"));
                            }
                            queued.fetch_sub(take.len(), Ordering::Relaxed);
                            return Some(take);
                        }
                    }
                }
            }
            if self.closed.is_some() {
                return None;
            }
            match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// The checker thread: takes settled records in the order written and checks each.
fn run(
    rx: Receiver<Msg>,
    queued: &AtomicUsize,
    image: &Path,
    header: Header,
    seal: Option<Arc<Sealer>>,
) -> Ahead {
    // Only CPU time no other thread wants (a failure to ask for it: the default class).
    if !drain_for_tests() {
        let _ = crate::io::sys::idle_priority_this_thread();
    }
    let overhead = if seal.is_some() {
        super::crypt::OVERHEAD as u64
    } else {
        0
    };
    let cs = header.chunk_size as usize;
    let sc = header.segment_chunks as u64;
    let mut inbox = Inbox {
        rx,
        items: VecDeque::new(),
        settled: Vec::new(),
        headers: false,
        new_vols: Vec::new(),
        active: false,
        closed: None,
    };
    let mut files: Vec<(File, PathBuf)> = Vec::new();
    let mut reader: Option<PayloadReader> = None;
    let mut direct = true;
    let mut out = Ahead::default();
    let mut st = Stored::with_capacity(max_payload_any(cs) + overhead as usize);
    let mut plain = AlignedBuf::new(cs);
    let mut group = Vec::new();
    while let Some(items) = inbox.next(queued, overhead) {
        for (f, p) in inbox.new_vols.drain(..) {
            // O_DIRECT on this description only; a filesystem without it: nothing read ahead.
            if crate::io::set_direct(&f, true).is_err() {
                direct = false;
            }
            files.push((f, p));
            reader = None;
        }
        if !direct {
            continue;
        }
        if reader.is_none() {
            let mut vols = Vec::with_capacity(files.len());
            for (f, p) in &files {
                match f.try_clone().ok().map(|c| VolFile::from_storage(c, p)) {
                    Some(Ok(v)) if v.is_direct() => vols.push((v, p.clone())),
                    _ => direct = false,
                }
            }
            reader = Some(PayloadReader::unfinished(
                image,
                header.clone(),
                vols,
                seal.clone(),
            ));
        }
        let Some(r) = reader.as_ref().filter(|_| direct) else {
            continue;
        };
        for (it, crc) in check(r, &header, &items, &mut st, &mut plain, &mut group) {
            if it.plain_crc == crc {
                out.mark(sc, it.i, &it.e, crc);
            }
        }
        if !r.reads_directly() {
            direct = false;
        }
    }
    out
}

/// Reads the record of `items` (one chunk, or the members of one group) from the storage and
/// checks it as the verify after writing does; returns each chunk that decoded, with the CRC32
/// of its decoded bytes (a chunk that did not is left out).
fn check<'a>(
    r: &PayloadReader,
    header: &Header,
    items: &'a [Item],
    st: &mut Stored,
    plain: &mut AlignedBuf,
    group: &mut Vec<u8>,
) -> Vec<(&'a Item, u32)> {
    let mut ok = Vec::with_capacity(items.len());
    let first = &items[0];
    if r.fetch_into(first.i, &first.e, st).is_err() || !r.reads_directly() {
        return ok;
    }
    match first.group_key() {
        None => {
            if let Ok(b) = r.decode(first.i, &first.e, st.bytes(), plain) {
                // A raw chunk's CRC32 is its record's, which `decode` just checked.
                let crc = if first.e.kind == Kind::Raw {
                    first.e.crc
                } else {
                    crc32fast::hash(b)
                };
                ok.push((first, crc));
            }
        }
        Some(_) => {
            if r.decode_group(first.i, &first.e, st.bytes(), group)
                .is_err()
            {
                return ok;
            }
            for it in items {
                let len = header.chunk_len(it.i);
                if r.check_group_entry(it.i, &it.e).is_err() {
                    continue;
                }
                if let Ok(b) = r.group_member(it.i, &it.e, group, len) {
                    ok.push((it, crc32fast::hash(b)));
                }
            }
        }
    }
    ok
}

/// The create's progress sink as the rescue engine sees it: forwards everything, and starts
/// the checker at the engine's first phase after copying (trimming, scraping or retrying).
pub(super) struct PhaseWatch<'a> {
    inner: &'a dyn crate::jobs::ProgressSink,
    checker: Option<&'a Checker>,
}

impl<'a> PhaseWatch<'a> {
    pub(super) fn new(
        inner: &'a dyn crate::jobs::ProgressSink,
        checker: Option<&'a Checker>,
    ) -> Self {
        PhaseWatch { inner, checker }
    }
}

impl crate::jobs::ProgressSink for PhaseWatch<'_> {
    fn progress(&self, p: &crate::jobs::Progress) {
        if let Some(c) = self.checker {
            if matches!(p.phase.as_str(), "trimming" | "scraping" | "retrying") {
                c.activate();
            }
        }
        self.inner.progress(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::crypt::Keys;
    use crate::image::format::Compression;
    use crate::image::verify::{verify_written, VerifyReport, WrittenDigest};
    use crate::image::{create, CreateOptions, SourceIdentity};
    use crate::jobs::{Cancel, NoProgress};
    use crate::rescue::sim::SimDevice;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 48 * MIB;

    fn dir(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("ahead-{tag}"))
    }

    /// A failing disk: random MiBs (stored raw; one in `random`) and compressible ones, two bad
    /// areas (so the engine trims, scrapes and retries after copying).
    fn disk(random: usize) -> SimDevice {
        let mut data = SimDevice::pattern(SIZE as usize, 7);
        for (c, chunk) in data.chunks_mut(MIB as usize).enumerate() {
            if c % random != 0 {
                chunk
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (j / 512 + c) as u8);
            }
        }
        // Reads at a bad sector take a moment, as on a failing drive (the writer idles then).
        SimDevice::new(data, 512)
            .bad(20 * MIB + 4096, 512)
            .slow(20 * MIB + 4096, 512, Duration::from_millis(40))
            .bad(33 * MIB, 64 << 10)
    }

    /// Creates `name.lbi` of `src` with `opts` (the verify ahead draining: every record settled
    /// by the end is read ahead); returns its path and what the create wrote.
    fn made(
        d: &Path,
        name: &str,
        src: SimDevice,
        opts: &CreateOptions,
    ) -> (PathBuf, WrittenDigest) {
        DRAIN.store(true, Ordering::Relaxed);
        let img = d.join(format!("{name}.lbi"));
        let rep = create(
            Arc::new(src),
            &SourceIdentity::default(),
            &img,
            opts,
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(rep.bad_bytes, 512 + (64 << 10), "{name}");
        let w = rep.written.expect("what the create wrote");
        assert_eq!(rep.verified_ahead_chunks, w.ahead_chunks());
        (img, w)
    }

    fn after_writing(img: &Path, keys: &Keys, w: Option<&WrittenDigest>) -> VerifyReport {
        verify_written(img, None, keys, w, "t", &NoProgress, &Cancel::new()).unwrap()
    }

    /// The stored chunks of `img` that were read ahead, with their entries.
    fn read_ahead(img: &Path, keys: &Keys, w: &WrittenDigest) -> Vec<(u64, Entry)> {
        let mut im = crate::image::Image::open_with(img, keys).unwrap();
        let sc = im.header.segment_chunks as u64;
        (0..im.header.chunk_count())
            .filter(|&i| {
                w.ahead()
                    .seg(i / sc)
                    .is_some_and(|s| s.has((i % sc) as usize))
            })
            .map(|i| (i, im.entry(i).unwrap()))
            .collect()
    }

    /// Flips a bit of the byte at `off` of the file `p`.
    fn flip(p: &Path, off: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], off).unwrap();
    }

    #[test]
    fn records_stored_before_the_trim_are_read_back_then_and_not_again() {
        let d = dir("ahead");
        let pw = Keys::passphrase(b"ahead of time");
        let plain = Keys::global();
        let cases: [(&str, Compression, Option<u64>, bool, usize); 3] = [
            ("lz4", Compression::Lz4, None, false, 2),
            // zstd groups (of 16 chunks, ~2 MiB here: a volume each)
            ("zstd-split", Compression::Zstd(2), Some(4 * MIB), false, 8),
            ("sealed", Compression::Lz4, None, true, 2),
        ];
        for (name, compress, split, encrypt, random) in cases {
            let keys = if encrypt { &pw } else { &plain };
            let opts = CreateOptions {
                all_sectors: true,
                compress,
                split,
                encrypt,
                keys: keys.clone(),
                force: true,
                ..Default::default()
            };
            let (img, w) = made(&d, name, disk(random), &opts);
            let ahead = read_ahead(&img, keys, &w);
            // All but the chunks held back around the bad areas and the record stored last
            // before the trim (its last block is written again with the next record); in
            // zstd, whole groups of 16 (the held-back chunks' group, the last group before
            // the trim).
            let min = if name == "zstd-split" { 32 } else { 45 };
            assert!(
                ahead.len() >= min,
                "{name}: {} chunks read ahead",
                ahead.len()
            );
            if name == "zstd-split" {
                assert!(ahead.iter().all(|(_, e)| e.kind == Kind::Group), "{name}");
                assert!(ahead.iter().any(|(_, e)| e.volume > 1), "{name}");
            } else {
                assert!(ahead.iter().any(|(_, e)| e.kind == Kind::Raw), "{name}");
                assert!(ahead.iter().any(|(_, e)| e.kind == Kind::Lz4), "{name}");
            }
            let r = after_writing(&img, keys, Some(&w));
            assert!(r.ok, "{name}: {:?}", r.problems);
            assert_eq!(r.bytes_checked, SIZE, "{name}");
            // A byte changed *after* the record was read back: the verify after writing does
            // not read that record again (what it relies on is the read-back during the
            // create); without what was read ahead, the change is found.
            let (i, e) = ahead[ahead.len() / 2];
            let vol = crate::image::create::partial_name(&volume_path(&img, e.volume as u32));
            let vol = if vol.exists() {
                vol
            } else {
                volume_path(&img, e.volume as u32)
            };
            flip(&vol, e.offset + 3);
            assert!(
                after_writing(&img, keys, Some(&w)).ok,
                "{name}: chunk {i} read again"
            );
            let r = after_writing(&img, keys, None);
            assert!(!r.ok, "{name}: the change to chunk {i} was not found");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_index_that_is_not_the_one_read_ahead_is_checked_in_full() {
        // Two chunks read ahead whose entries point at each other's records (with each
        // other's CRC32s, each keeping its own hash): every record reads back with its CRC;
        // only reading them again (the place of every entry read ahead is compared) finds it.
        let d = dir("ahead-index");
        let opts = CreateOptions {
            all_sectors: true,
            compress: Compression::Lz4,
            force: true,
            ..Default::default()
        };
        let (img, w) = made(&d, "swap", disk(2), &opts);
        let raw: Vec<u64> = read_ahead(&img, &Keys::global(), &w)
            .into_iter()
            .filter(|(_, e)| e.kind == Kind::Raw)
            .map(|(i, _)| i)
            .collect();
        let (x, y) = (raw[1], raw[2]);
        let mut im = crate::image::Image::open(&img).unwrap();
        let r = im.segment_refs()[0];
        let mut seg = im.segment(0).unwrap().clone();
        let (a, b) = (seg.entries[x as usize], seg.entries[y as usize]);
        for (to, from) in [(x, b), (y, a)] {
            let t = &mut seg.entries[to as usize];
            (t.offset, t.crc) = (from.offset, from.crc);
        }
        let bytes = seg.encode();
        assert_eq!(bytes.len(), r.len as usize);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&bytes, r.offset).unwrap();
        let r = after_writing(&img, &Keys::global(), Some(&w));
        assert!(!r.ok, "entries changed after the read-back passed");
        for c in [x, y] {
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.starts_with(&format!("chunk {c} ")) && p.contains("BLAKE3")),
                "chunk {c}: {:?}",
                r.problems
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_record_damaged_on_its_way_to_the_storage_is_not_passed_ahead() {
        // A byte of a record changed on the storage after it was written and before the
        // engine's trim (as storage that corrupts what it is given would): the read-back
        // ahead fails, marks nothing, and the verify after writing reads the record and
        // reports it.
        let d = dir("ahead-bad");
        let img = d.join("bad.lbi");
        let part = crate::image::create::partial_name(&img);
        let at = 9 * MIB + 1000;
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        let p = part.clone();
        let src = disk(2).on_read(move |_, off, len| {
            // Late in the copy (a large read: not the used-block analysis' look at the end of
            // the disk; and never ahead of the copy: the reading starts at the trim), once the
            // writer has put the byte on the storage.
            if off >= 40 * MIB && len >= 64 << 10 && !seen.swap(true, Ordering::Relaxed) {
                let until = std::time::Instant::now() + Duration::from_secs(60);
                while std::fs::metadata(&p).map_or(0, |m| m.len()) < at + 6 * MIB
                    && std::time::Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                flip(&p, at);
            }
        });
        let opts = CreateOptions {
            all_sectors: true,
            compress: Compression::Lz4,
            force: true,
            ..Default::default()
        };
        let (img, w) = made(&d, "bad", src, &opts);
        assert!(done.load(Ordering::Relaxed));
        assert!(w.ahead_chunks() > 10, "{}", w.ahead_chunks());
        let r = after_writing(&img, &Keys::global(), Some(&w));
        assert!(!r.ok, "a record damaged before its read-back passed");
        assert_eq!(r.problem_count, 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("CRC32 mismatch"), "{:?}", r.problems);
        let _ = std::fs::remove_dir_all(&d);
    }
}
