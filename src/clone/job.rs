//! A clone job as a library call: plan (resolve selectors, every safety refusal, sizes, the
//! used-block plan and the rescue domain), then execute (source read-only in the kernel, the
//! rescue onto the target, verify, partition table fix-up) and a report. The CLI, the
//! unattended runner and the TUI all go through here.
//!
//! By default a clone copies the used blocks of every filesystem Lifeboat can map plus
//! everything outside partitions (tables, gaps, boot code, the backup GPT) and every partition
//! it cannot map, whole: the [`crate::fs::UsageMap`] of the source, read through the same
//! device as the data, becomes the rescue engine's domain (GNU ddrescue's `--domain-mapfile`),
//! so bad sectors in free space are never read. The target's free space keeps its old bytes
//! (as with Clonezilla), the verify pass compares exactly the copied domain, and the map marks
//! the free areas (`# free`, see [`crate::rescue::map`]). `--all-sectors` copies every sector.
use super::gpt::{self, PartitionTable, TableKind};
use crate::devices::{self, Selected};
use crate::error::{exit, Error, ErrorKind, Result};
use crate::fs::{Domain, PartitionUsage, UsageMap};
use crate::io::{Access, BlockSource, Device};
use crate::jobs::{fmt_bytes, Cancel, Progress, ProgressSink, RateMeter};
use crate::rescue::map::MapOrigin;
use crate::rescue::{self, ExtentMap, Status};
use crate::storage::{self, Check, ReadOnlyGuard, Target};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to clone where, and how.
#[derive(Debug, Clone)]
pub struct CloneJob {
    /// Source selector (`/dev/sda`, `sda`, `serial=X`, a file).
    pub source: String,
    /// Target selector.
    pub target: String,
    /// GNU ddrescue mapfile to resume from and keep up to date.
    pub map: Option<PathBuf>,
    /// Re-read the target afterwards and compare with hashes taken while copying.
    pub verify: bool,
    /// Retry passes over bad sectors.
    pub retries: u32,
    /// Read size on good areas.
    pub cluster: usize,
    /// Recorded in the mapfile.
    pub command_line: String,
    /// Write onto a target whose health is FAILING (`--yes`); otherwise it is refused.
    pub allow_failing_target: bool,
    /// Copy every sector (`--all-sectors`), not only the used blocks.
    pub all_sectors: bool,
}

impl CloneJob {
    pub fn new(source: &str, target: &str) -> CloneJob {
        CloneJob {
            source: source.into(),
            target: target.into(),
            map: None,
            verify: true,
            retries: 1,
            cluster: 1 << 20,
            command_line: format!("lifeboat clone {source} {target}"),
            allow_failing_target: false,
            all_sectors: false,
        }
    }
}

/// A checked plan: everything resolved and opened, nothing written yet.
pub struct Plan {
    pub source: Selected,
    pub source_dev: Arc<Device>,
    pub table: PartitionTable,
    pub target: Target,
    /// Bytes to copy: the source, or as much as the (smaller, but big enough) target holds.
    pub copy_len: u64,
    /// The least the target must hold.
    pub min_size: u64,
    /// The map to start from: fresh, or the `--map` file's once it matched this copy.
    pub map: ExtentMap,
    /// Things to tell (e.g. a table-less source copied byte for byte onto other sectors, a map
    /// without a record of its source).
    pub notes: Vec<String>,
    /// The `--map` file as checked, its directory resolved ([`storage::pin_dir`]): saved under
    /// this name.
    pub map_path: Option<PathBuf>,
    /// The used-block plan of the source (per partition: filesystem, used bytes, mode).
    pub usage: UsageMap,
    /// What is read: the used blocks and everything outside partitions; `None`: every sector.
    pub domain: Option<Domain>,
    /// Keeps a `PARTITION:/path` map's filesystem mounted for the job.
    pub map_store: Option<crate::image::store::SideFile>,
}

impl Plan {
    /// What will be destroyed, for the confirmation question.
    pub fn describe(&self) -> String {
        let t = &self.target;
        let mut s = format!(
            "Clone {} ({}) onto {} ({}).\n",
            self.source.name(),
            fmt_bytes(self.source_dev.size()),
            t.selected.name(),
            fmt_bytes(t.size)
        );
        if let Some(d) = t.selected.disk() {
            let id: Vec<String> = [
                d.model.clone(),
                d.serial.clone().map(|x| format!("serial={x}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !id.is_empty() {
                s.push_str(&format!("Target identity: {}\n", id.join(" ")));
            }
            if !d.partitions.is_empty() && matches!(t.selected, Selected::Disk(_)) {
                s.push_str("EVERYTHING on the target will be destroyed, including:\n");
                for p in &d.partitions {
                    s.push_str(&format!(
                        "  {} {} {} {}\n",
                        p.name,
                        fmt_bytes(p.size_bytes),
                        p.fs_type.clone().unwrap_or_else(|| "-".into()),
                        p.label.clone().unwrap_or_default()
                    ));
                }
            }
        }
        if self.copy_len < self.source_dev.size() {
            s.push_str(&format!(
                "The target is smaller than the source: copying the first {} (every partition) and fixing the partition table.\n",
                fmt_bytes(self.copy_len)
            ));
        }
        match &self.domain {
            Some(d) => s.push_str(&format!(
                "Copying {} of {}: the used blocks, everything outside partitions, and whole \
                 partitions without a used-block map (the target's free space keeps its old bytes):\n",
                fmt_bytes(d.bytes),
                fmt_bytes(self.copy_len)
            )),
            None if !self.usage.partitions.is_empty() => {
                s.push_str("Copying every sector:\n");
            }
            None => {}
        }
        for p in &self.usage.partitions {
            s.push_str(&format!("  {}\n", p.describe()));
        }
        s
    }
}

/// The final report (`--json` prints it; `LIFEBOAT-RESULT` carries it).
#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    /// Everything copied, nothing unreadable, verification (if done) passed.
    pub ok: bool,
    pub source: String,
    pub target: String,
    /// Bytes the job covered (source size, or less onto a smaller target).
    pub size_bytes: u64,
    /// Bytes read from the source and written to the target.
    pub bytes_copied: u64,
    /// Bytes that could not be read (zeros on the target).
    pub bad_bytes: u64,
    /// The same in logical sectors.
    pub bad_sectors: u64,
    pub logical_block_size: u32,
    /// `[start_byte, length_bytes]` of every unreadable range.
    pub bad_ranges: Vec<[u64; 2]>,
    pub duration_ms: u64,
    pub rate_bytes_per_sec: u64,
    /// Reads issued to the source by this run, and how many of them failed (on a failing
    /// drive each failed read can cost seconds).
    pub reads_total: u64,
    pub reads_failed: u64,
    /// true/false after a verify pass, null with `--no-verify`.
    pub verified: Option<bool>,
    /// Bytes the verify pass compared (less than size_bytes when resuming from a mapfile).
    pub verified_bytes: u64,
    /// `[start_byte, length_bytes]` of target areas that did not match.
    pub verify_mismatches: Vec<[u64; 2]>,
    /// Bytes the copy covers: the used blocks, everything outside partitions and whole
    /// partitions without a used-block map (size_bytes with `--all-sectors`).
    pub used_bytes: u64,
    /// Per partition: filesystem, used bytes, mode (used blocks / all sectors) and why (the
    /// fields of image create's report).
    pub partitions: Vec<PartitionUsage>,
    /// "gpt", "mbr" or "none" (the source's table).
    pub partition_table: String,
    /// Whether the GPT was rewritten for the target's size.
    pub partition_table_fixed: bool,
    pub map_file: Option<String>,
    /// Things a technician should know (e.g. a table that could not be fixed).
    pub notes: Vec<String>,
    /// 0 ok, 3 completed with unreadable sectors, 5 verification failed.
    pub exit_code: i32,
}

/// Resolves and checks everything; writes nothing.
pub fn plan(job: &CloneJob) -> Result<Plan> {
    plan_in(job, &storage::Env::system()?)
}

/// [`plan`] against a given environment (tests).
pub fn plan_in(job: &CloneJob, env: &storage::Env) -> Result<Plan> {
    let source = match std::path::Path::new(&job.source) {
        p if job.source.contains('/') && p.is_file() => Selected::File(p.to_path_buf()),
        _ => devices::resolve_in(&job.source, &env.disks)?,
    };
    let spath = source.path();
    // The identity rule: the target and the map file are written; neither may share storage
    // with the source (nor with each other).
    let mut check = Check::new();
    check.keeps("the source", &spath)?;
    // A plain path, or PARTITION:/path on a store Lifeboat mounts (after the checks).
    let mut map_store = job
        .map
        .as_deref()
        .map(crate::image::store::SideFile::resolve)
        .transpose()?;
    if let Some(m) = &map_store {
        m.check_items(&mut check, "the map file")?;
    }
    let source_dev = Arc::new(Device::open(&spath, Access::Read)?);
    let ssize = source_dev.size();
    // A table we cannot read (bad sectors right there) means the whole source is needed.
    // Planning reads go through one memory of failed reads (a bad tail is read once).
    let planning = crate::fs::known_bad::KnownBad::new(source_dev.as_ref());
    let table_read = gpt::read(&planning).ok();
    let table = table_read.clone().unwrap_or(PartitionTable {
        kind: TableKind::None,
        sector_size: source_dev.logical_block_size(),
        partitions: vec![],
        gpt: None,
        used_backup: false,
    });
    let min_size = table.min_disk_bytes().unwrap_or(ssize).min(ssize);
    let target = storage::open_target_in(&job.target, &mut check, min_size, env)?;
    let what = format!("the source {}", source.name());
    let mut notes: Vec<String> = storage::target::check_sector_size(
        &what,
        Some(&table),
        &target,
        "clone into a disk-image file and take the files from it",
    )?
    .into_iter()
    .collect();
    // The health rule: a FAILING target only with --yes (its own SMART / NVMe log says so).
    notes.extend(storage::target::check_health(
        &target.selected,
        job.allow_failing_target,
    )?);
    let lbs = source_dev.logical_block_size().max(512) as u64;
    let copy_len = if target.size >= ssize {
        ssize
    } else {
        target.size / lbs * lbs
    };
    // The used-block plan and the domain, read through the source device like the data (the
    // table is the one read above: each byte of the plan is read once).
    let mut usage = UsageMap::analyze_with(&planning, table_read.as_ref());
    if job.all_sectors {
        usage.force_all_sectors("--all-sectors was given");
    }
    let domain = usage.domain(copy_len, lbs);
    if domain.is_none() {
        usage.used_bytes = copy_len;
    }
    if let Selected::Disk(d) = &source {
        notes.extend(d.mmc_boot_note());
    }
    if let Some(d) = domain.as_ref().filter(|d| d.gaps_read_below > 0) {
        notes.push(format!(
            "the used blocks lie in very many pieces: free gaps shorter than {} were read too, \
             to keep the rescue map within {} ranges",
            fmt_bytes(d.gaps_read_below),
            crate::fs::domain::MAX_RANGES
        ));
    }
    let free = domain
        .as_ref()
        .map(|d| d.free(copy_len))
        .unwrap_or_default();
    // The map: where it will be saved and whether it is this copy's, before anything is written.
    let map_path = match map_store.as_mut() {
        Some(m) => Some(m.open()?),
        None => None,
    };
    if let Some(m) = &map_path {
        super::resume::check_location(m)?;
    }
    let origin = MapOrigin {
        source: super::resume::storage_id(&source, ssize),
        target: super::resume::storage_id(&target.selected, target.size),
    };
    let map =
        super::resume::load_or_new(map_path.as_deref(), &origin, copy_len, &free, &mut notes)?;
    Ok(Plan {
        source,
        source_dev,
        table,
        target,
        copy_len,
        min_size,
        map,
        notes,
        map_path,
        usage,
        domain,
        map_store,
    })
}

/// Plans and executes `job` (no confirmation: callers ask before).
pub fn run_job(job: &CloneJob, sink: &dyn ProgressSink, cancel: &Cancel) -> Result<CloneReport> {
    let p = plan(job)?;
    execute(p, job, sink, cancel)
}

/// Runs a checked plan: source read-only, rescue onto the target, verify, GPT fix-up.
pub fn execute(
    plan: Plan,
    job: &CloneJob,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<CloneReport> {
    let start = Instant::now();
    let Plan {
        source,
        source_dev,
        table,
        target,
        copy_len,
        map,
        mut notes,
        map_path,
        usage,
        domain,
        map_store,
        ..
    } = plan;
    // A map on a store partition stays mounted until the job is over.
    let _map_store = map_store;
    let guard = ReadOnlyGuard::new(&[source.path()])?;
    let tdev = Arc::new(target.device);
    let ctarget = Arc::new(CloneTarget::new(tdev.clone()));
    let opts = rescue::Options {
        cluster: job.cluster,
        retries: job.retries,
        hash: job.verify,
        mapfile: map_path,
        save_every: crate::image::resume::save_interval(Duration::from_secs(30)),
        command_line: job.command_line.clone(),
        job: "clone".into(),
        domain: domain.map(|d| d.ranges),
        ..rescue::Options::default()
    };
    let out = rescue::run(
        source_dev.clone(),
        ctarget.clone(),
        map,
        &opts,
        sink,
        cancel,
    );
    let ahead = ctarget.take_ahead(out.is_err() || cancel.is_cancelled());
    let out = out?;
    if out.cancelled {
        drop(guard);
        let mut e = Error::cancelled();
        if let Some(m) = &job.map {
            e.msg.push_str(&format!(
                "; the map {} lets the same command resume",
                m.display()
            ));
        }
        return Err(e);
    }
    let copy_secs = out.duration.as_secs_f64().max(1e-6);
    let totals = out.map.totals();
    let lbs = source_dev.logical_block_size().max(512);
    // Verify before the table fix-up (which changes sectors on purpose).
    let (verified, verified_bytes, mismatches) = match (&out.hashes, job.verify) {
        (Some(h), true) => {
            let r = verify(h, ahead, tdev.clone(), sink, cancel)?;
            (Some(r.ok()), r.verified_bytes, r.mismatches)
        }
        _ => (None, 0, vec![]),
    };
    drop(guard);
    let mut fixed = false;
    if table.kind == TableKind::Gpt {
        match gpt::fix_after_copy(&tdev) {
            Ok(r) => fixed = r.fixed,
            Err(e) => notes.push(format!(
                "the GPT could not be adjusted to the target's size: {e}"
            )),
        }
    }
    // Best effort: a partition in use keeps the old table until the next boot.
    let _ = tdev.reread_partitions();
    let bad_ranges: Vec<[u64; 2]> = out
        .map
        .ranges(Status::Bad)
        .into_iter()
        .map(|(a, l)| [a, l])
        .collect();
    let exit_code = if verified == Some(false) {
        exit::CORRUPT
    } else if totals.bad > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    };
    if verified_bytes > 0 && verified_bytes < usage.used_bytes {
        notes.push(format!(
            "verified {} of {}: areas copied by an earlier run (resumed from the map) were not hashed",
            fmt_bytes(verified_bytes),
            fmt_bytes(usage.used_bytes)
        ));
    }
    Ok(CloneReport {
        ok: exit_code == exit::OK,
        source: source.path().display().to_string(),
        target: target.selected.path().display().to_string(),
        size_bytes: copy_len,
        bytes_copied: totals.finished,
        bad_bytes: totals.bad,
        bad_sectors: bad_ranges.iter().map(|r| r[1].div_ceil(lbs as u64)).sum(),
        logical_block_size: lbs,
        bad_ranges,
        duration_ms: start.elapsed().as_millis() as u64,
        rate_bytes_per_sec: ((totals.finished + totals.bad) as f64 / copy_secs) as u64,
        reads_total: out.reads_total,
        reads_failed: out.reads_failed,
        verified,
        verified_bytes,
        verify_mismatches: mismatches.into_iter().map(|(a, l)| [a, l]).collect(),
        used_bytes: usage.used_bytes,
        partitions: usage.partitions,
        partition_table: format!("{:?}", table.kind).to_lowercase(),
        partition_table_fixed: fixed,
        map_file: job.map.as_ref().map(|m| m.display().to_string()),
        notes,
        exit_code,
    })
}

/// The clone's target: the disk, and the verify of its settled chunks while the rescue trims,
/// scrapes and retries a failing source ([`RescueTarget::copy_done`]). Those phases read the
/// source sector by sector and wait on its errors; the target is idle meanwhile, so reading
/// back what is already final there takes that part of the verify off the job's end (0.4 s of
/// a 4 s clone of the 384 MiB failing disk under QEMU's TCG).
struct CloneTarget {
    dev: Arc<Device>,
    ahead: std::sync::Mutex<Option<Ahead>>,
    stop: Arc<AtomicBool>,
}

/// A verify of settled chunks, started when the copy phase ended.
struct Ahead {
    /// The hashes as they were then, and the chunks verified.
    snapshot: rescue::Hashes,
    want: Arc<Vec<bool>>,
    worker: std::thread::JoinHandle<Result<rescue::VerifyResult>>,
    /// How far it got (bytes of the copy, checked or passed over); its stop flag.
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CloneTarget {
    fn new(dev: Arc<Device>) -> CloneTarget {
        CloneTarget {
            dev,
            ahead: std::sync::Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The verify started ahead, if any; `abandon` stops it (the run failed or was cancelled).
    fn take_ahead(&self, abandon: bool) -> Option<Ahead> {
        if abandon {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.ahead.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl rescue::RescueTarget for CloneTarget {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        rescue::RescueTarget::write_at(self.dev.as_ref(), buf, off)
    }
    fn sync(&self) -> Result<()> {
        rescue::RescueTarget::sync(self.dev.as_ref())
    }
    fn copy_done(&self, map: &ExtentMap, hashes: &rescue::Hashes) {
        // Reading back must reach the disk, not the page cache (the final verify drops the
        // cache first; while the run still writes, only O_DIRECT can be trusted).
        if !self.dev.is_direct() {
            return;
        }
        let want = Arc::new(hashes.settled(map));
        if !want.iter().any(|&w| w) {
            return;
        }
        let done = Arc::new(AtomicU64::new(0));
        let (h, w, dev, stop, d) = (
            hashes.clone(),
            want.clone(),
            self.dev.clone(),
            self.stop.clone(),
            done.clone(),
        );
        let worker = std::thread::Builder::new()
            .name("verify-ahead".into())
            .spawn(move || {
                // Only when the CPU has nothing else to do: the rescue's reader comes first.
                let _ = crate::io::sys::idle_priority_this_thread();
                h.verify_where(dev.as_ref(), &d, &stop, |c| w[c])
            });
        // Not started: the verify after the run reads those chunks itself.
        if let Ok(worker) = worker {
            *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ahead {
                snapshot: hashes.clone(),
                want,
                worker,
                done,
                stop: self.stop.clone(),
            });
        }
    }
}

/// The verify pass in a worker thread; this thread reports progress and watches cancel. With
/// `ahead`, the chunks it verified are taken from it (when their hashes did not change since)
/// and only the others are read.
fn verify(
    h: &rescue::Hashes,
    ahead: Option<Ahead>,
    tdev: Arc<Device>,
    sink: &dyn ProgressSink,
    cancel: &Cancel,
) -> Result<rescue::VerifyResult> {
    // The verify ahead finishes first (it still runs when the retries ended quickly); a chunk
    // it checked counts only if nothing was written to it after (never, by `settled`: this is
    // the belt to those braces), and a failed verify ahead leaves everything to this pass.
    let total = h.covered();
    let mut meter = RateMeter::new(Duration::from_secs(10));
    let mut report = |done: u64| {
        let mut p = Progress::new("clone", "verifying", total);
        p.done_bytes = done.min(total);
        let (r, eta) = meter.update(Instant::now(), p.done_bytes, total);
        p.rate_bytes_per_sec = r;
        p.eta_secs = eta;
        sink.progress(&p);
    };
    if let Some(a) = &ahead {
        while !a.worker.is_finished() {
            if cancel.is_cancelled() {
                a.stop.store(true, Ordering::SeqCst);
            }
            report(a.done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
    }
    let (before, done_ahead) = match ahead {
        Some(a) => match a.worker.join() {
            Ok(Ok(r))
                if (0..h.chunks())
                    .all(|c| !a.want[c] || a.snapshot.chunk_state(c) == h.chunk_state(c)) =>
            {
                (Some(r), a.want.to_vec())
            }
            _ => (None, vec![false; h.chunks()]),
        },
        None => (None, vec![false; h.chunks()]),
    };
    tdev.drop_cache()?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h2, d2, s2) = (h.clone(), done.clone(), stop.clone());
    let t2 = tdev.clone();
    let skip = Arc::new(done_ahead);
    let worker = std::thread::Builder::new()
        .name("verify".into())
        .spawn(move || h2.verify_where(t2.as_ref(), &d2, &s2, |c| !skip[c]))
        .map_err(|e| Error::os("start the verify thread", e))?;
    while !worker.is_finished() {
        if cancel.is_cancelled() {
            stop.store(true, Ordering::SeqCst);
        }
        report(done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = worker
        .join()
        .map_err(|_| Error::new(ErrorKind::Io, "the verify thread panicked"))??;
    Ok(match before {
        Some(b) => rescue::Hashes::merge(b, after),
        None => after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;
    use crate::jobs::NoProgress;
    use crate::rescue::RescueTarget;

    const MIB: u64 = 1 << 20;

    /// A 6 MiB target file written through the clone's target, with its hashes; chunk 2 holds
    /// an unreadable sector (bad: not settled), the others are finished.
    fn written(name: &str) -> (Arc<Device>, CloneTarget, rescue::Hashes, ExtentMap) {
        let d = crate::io::scratch_dir(name);
        let p = d.join("target.img");
        std::fs::write(&p, vec![0u8; (6 * MIB) as usize]).unwrap();
        let dev = Arc::new(Device::open(&p, Access::Write).unwrap());
        assert!(dev.is_direct(), "the scratch directory takes O_DIRECT");
        let t = CloneTarget::new(dev.clone());
        let mut h = rescue::Hashes::new(6 * MIB, 512);
        let mut map = ExtentMap::new(6 * MIB);
        let mut buf = AlignedBuf::new(MIB as usize);
        for c in 0..6u64 {
            buf.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i as u64 * 7 + c * 13) as u8);
            let off = c * MIB;
            if c == 2 {
                t.write_at(&buf[..4096], off).unwrap();
                h.add(off, &buf[..4096]);
                h.add_zeros(off + 4096, 512);
                t.write_at(&vec![0u8; 512], off + 4096).unwrap();
                t.write_at(&buf[4608..], off + 4608).unwrap();
                h.add(off + 4608, &buf[4608..]);
                map.set(off, MIB, Status::Finished);
                map.set(off + 4096, 512, Status::Bad);
            } else {
                t.write_at(&buf, off).unwrap();
                h.add(off, &buf);
                map.set(off, MIB, Status::Finished);
            }
        }
        (dev, t, h, map)
    }

    fn corrupt(dev: &Device, off: u64) {
        let mut b = AlignedBuf::new(4096);
        b.fill(0xEE);
        dev.write_all_at(&b, off).unwrap();
    }

    #[test]
    fn verify_ahead_covers_settled_chunks_and_the_rest_is_read_after() {
        let (dev, t, h, map) = written("clone-ahead-ok");
        assert_eq!(h.settled(&map), [true, true, false, true, true, true]);
        t.copy_done(&map, &h);
        let ahead = t.take_ahead(false).expect("a verify ahead started");
        while !ahead.worker.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Changed on the disk after the verify ahead checked it: the verify after the run
        // takes the chunk as checked and does not read it again (only chunk 2 is read).
        corrupt(&dev, 5 * MIB);
        let r = verify(&h, Some(ahead), dev.clone(), &NoProgress, &Cancel::new()).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.verified_bytes, 6 * MIB);
    }

    #[test]
    fn corruption_is_found_in_chunks_checked_ahead_and_after() {
        // A settled chunk bad on the disk when the verify ahead reads it.
        let (dev, t, h, map) = written("clone-ahead-bad1");
        corrupt(&dev, 4 * MIB + 8192);
        t.copy_done(&map, &h);
        let ahead = t.take_ahead(false).unwrap();
        // And the unsettled chunk, changed after the verify ahead (it is read at the end).
        let a = ahead;
        while !a.worker.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        corrupt(&dev, 2 * MIB + 65536);
        let r = verify(&h, Some(a), dev.clone(), &NoProgress, &Cancel::new()).unwrap();
        assert_eq!(r.mismatches, [(2 * MIB, MIB), (4 * MIB, MIB)]);
        assert_eq!(r.verified_bytes, 6 * MIB);
    }

    #[test]
    fn a_chunk_written_after_the_verify_ahead_is_read_again() {
        let (dev, t, mut h, map) = written("clone-ahead-stale");
        t.copy_done(&map, &h);
        let ahead = t.take_ahead(false).unwrap();
        while !ahead.worker.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Never done by the rescue (a settled chunk is final), but if it were: the hashes of
        // chunk 0 change and the disk with them, after the verify ahead read it. Its result is
        // dropped and everything is read again, which sees the new bytes match.
        let mut b = AlignedBuf::new(4096);
        b.fill(0x5A);
        h.replace_zeros(0, &b);
        dev.write_all_at(&b, 0).unwrap();
        let r = verify(&h, Some(ahead), dev.clone(), &NoProgress, &Cancel::new()).unwrap();
        // replace_zeros on bytes that were not zeros: the hash now describes neither the old
        // nor the new bytes, so the full re-read must report chunk 0 — which proves it was
        // read again rather than taken from the verify ahead (which saw it match).
        assert_eq!(r.mismatches, [(0, MIB)]);
    }

    #[test]
    fn no_verify_ahead_without_o_direct_or_settled_chunks() {
        let (dev, t, h, mut map) = written("clone-ahead-none");
        map.set(0, 6 * MIB, Status::NonTrimmed);
        t.copy_done(&map, &h);
        assert!(t.take_ahead(false).is_none(), "nothing settled");
        drop(dev);
    }
}
