//! Image create reads a failing source through the rescue engine, like clone: on the same
//! simulated fault patterns (rescue::sim) it reports exactly the bad ranges clone reports, with
//! the same failed reads, and the image holds exactly the bytes clone wrote (zeros at
//! unreadable sectors) — also when more chunks are touched by errors than the feed keeps in
//! memory (their good bytes are read again, never their bad ones).
use lifeboat::image::{create, CreateOptions, SourceIdentity};
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{self, ExtentMap, MemTarget, SimDevice, Status};
use std::sync::Arc;

mod common;
use common::TempDir;

const MIB: u64 = 1 << 20;

/// A fault pattern: permanent bad `(start, len)` ranges and transient ones `(start, len, times)`.
struct Pattern {
    name: &'static str,
    size: u64,
    lbs: u32,
    bad: Vec<(u64, u64)>,
    transient: Vec<(u64, u64, u32)>,
}

/// Deterministic contents that zstd compresses to about half (the second half of every 4 KiB
/// repeats its first half), so that image create makes zstd groups of them.
fn compressible(size: usize, seed: u64) -> Vec<u8> {
    let mut v = SimDevice::pattern(size, seed);
    for b in v.chunks_mut(4096) {
        let h = b.len() / 2;
        let (x, y) = b.split_at_mut(h);
        y[..h].copy_from_slice(x);
    }
    v
}

fn sim(p: &Pattern, seed: u64) -> SimDevice {
    sim_of(p, compressible(p.size as usize, seed))
}

/// A simulated disk of `p`'s faults holding `data`.
fn sim_of(p: &Pattern, data: Vec<u8>) -> SimDevice {
    let mut d = SimDevice::new(data, p.lbs);
    for &(s, l) in &p.bad {
        d = d.bad(s, l);
    }
    for &(s, l, n) in &p.transient {
        d = d.transient(s, l, n);
    }
    d
}

fn patterns() -> Vec<Pattern> {
    let scattered: Vec<(u64, u64)> = (0..40u64)
        .map(|k| (MIB + k * 1_187_840 + (k % 7) * 4096, 512))
        .collect();
    vec![
        Pattern {
            name: "single sectors, a 4 KiB block, a 128 KiB region, a transient",
            size: 24 * MIB,
            lbs: 512,
            bad: vec![
                (3 * MIB + 512, 512),
                (5 * MIB + 8192, 4096),
                (9 * MIB - 64 * 1024, 128 * 1024),
                (20 * MIB + 77 * 512, 512),
            ],
            transient: vec![(12 * MIB + 4096, 512, 1)],
        },
        Pattern {
            name: "a 1 MiB dead region and 40 scattered sectors (more chunks than the cache)",
            size: 56 * MIB,
            lbs: 512,
            bad: {
                let mut v = scattered;
                v.push((30 * MIB + 300 * 1024, MIB));
                v.sort_unstable();
                v
            },
            transient: vec![(7 * MIB + 512, 512, 2)],
        },
        Pattern {
            name: "4096-byte sectors, the last sector bad",
            size: 16 * MIB,
            lbs: 4096,
            bad: vec![
                (2 * MIB, 4096),
                (6 * MIB + 12288, 3 * 4096),
                (16 * MIB - 4096, 4096),
            ],
            transient: vec![],
        },
    ]
}

/// Failed reads of the used-block analysis (partition table, backup GPT) before imaging.
fn probe_failures(p: &Pattern, seed: u64) -> u64 {
    let s = sim(p, seed);
    let _ = lifeboat::fs::UsageMap::analyze(&s);
    s.failed_reads()
}

fn clone_of(p: &Pattern, seed: u64) -> (Vec<u8>, rescue::Outcome) {
    let src = Arc::new(sim(p, seed));
    let dst = Arc::new(MemTarget::new(p.size as usize, 0xAA));
    let out = rescue::run(
        src,
        dst.clone(),
        ExtentMap::new(p.size),
        &rescue::Options::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    (dst.take(), out)
}

fn check_image_equals_clone(p: &Pattern, chunk_size: u32, seed: u64) {
    let t = TempDir::new(&format!("imgresc-{seed}"));
    let (cloned, out) = clone_of(p, seed);
    assert!(out.map.is_complete(), "{}", p.name);
    let clone_bad = out.map.ranges(Status::Bad);
    let src = Arc::new(sim(p, seed));
    let img = t.p("r.lbi");
    let opts = CreateOptions {
        chunk_size,
        ..Default::default()
    };
    let rep = create(
        src.clone(),
        &SourceIdentity::default(),
        &img,
        &opts,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        rep.bad_ranges, clone_bad,
        "{}: bad ranges differ from clone's",
        p.name
    );
    assert_eq!(rep.bad_bytes, clone_bad.iter().map(|r| r.1).sum::<u64>());
    // `ok` follows the exit code, as clone's report: true only with exit 0 (no unreadable
    // sector); an image with unreadable sectors is complete, exit 3, not ok.
    let want_exit = if clone_bad.is_empty() { 0 } else { 3 };
    assert_eq!(
        (rep.ok, rep.exit_code),
        (want_exit == 0, want_exit),
        "{}",
        p.name
    );
    assert_eq!(
        rep.reads_failed, out.reads_failed,
        "{}: image create failed more (or fewer) reads than clone",
        p.name
    );
    assert_eq!(rep.reread_failed_bytes, 0, "{}", p.name);
    // Every held-back chunk stays in memory (the cache holds 64 MiB worth): none is read again.
    assert_eq!(rep.reread_bytes, 0, "{}", p.name);
    // Re-reads touched only good sectors: the device saw no more failed reads than clone's
    // (besides those of the partition-table probe before the job, which clone makes too).
    assert_eq!(
        src.failed_reads(),
        out.reads_failed + probe_failures(p, seed),
        "{}",
        p.name
    );
    let v = lifeboat::image::verify(&img, &NoProgress, &Cancel::new()).unwrap();
    assert!(v.ok, "{}: {:?}", p.name, v.problems);
    let raw = t.p("r.raw");
    lifeboat::image::export(&img, &raw, false, &NoProgress, &Cancel::new()).unwrap();
    let got = std::fs::read(&raw).unwrap();
    assert!(
        got == cloned,
        "{}: the image's bytes differ from the clone's",
        p.name
    );
}

#[test]
fn image_create_reports_the_bad_ranges_clone_reports() {
    for (k, p) in patterns().iter().enumerate() {
        check_image_equals_clone(p, 1 << 20, 11 + k as u64);
    }
}

#[test]
fn small_chunks_assemble_from_engine_reads() {
    // 64 KiB chunks: one 1 MiB engine read completes sixteen chunks.
    let p = &patterns()[0];
    check_image_equals_clone(p, 64 << 10, 5);
}

#[test]
fn chunks_beyond_the_cache_are_read_again_from_good_sectors_only() {
    let p = &patterns()[1];
    let t = TempDir::new("imgresc-reread");
    let src = Arc::new(sim(p, 3));
    let opts = CreateOptions {
        held_back_chunks: Some(lifeboat::image::feed::CACHE_CHUNKS),
        ..Default::default()
    };
    let rep = create(
        src.clone(),
        &SourceIdentity::default(),
        &t.p("x.lbi"),
        &opts,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(
        rep.reread_bytes > 0,
        "41 chunks with errors and a cache of {}: some must have been read again",
        lifeboat::image::feed::CACHE_CHUNKS
    );
    assert_eq!(rep.reread_failed_bytes, 0);
    assert_eq!(src.failed_reads(), rep.reads_failed + probe_failures(p, 3));
    // With every held-back chunk kept (none read again; subtrees hashed ahead as far as the
    // hashing thread got), the same image.
    let all = create(
        Arc::new(sim(p, 3)),
        &SourceIdentity::default(),
        &t.p("y.lbi"),
        &CreateOptions::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(all.reread_bytes, 0);
    assert!(normalized(&t.p("x.lbi")) == normalized(&t.p("y.lbi")));
}

/// The image's bytes with the image UUID, the creation and completion times and the CRCs
/// over them zeroed (one volume): what two separate runs of the same job have in common.
fn normalized(img: &std::path::Path) -> Vec<u8> {
    let mut b = std::fs::read(img).unwrap();
    for r in [24..40, 88..96, 508..512] {
        b[r].fill(0);
    }
    let f = b.len() - 160;
    for r in [8..24, 128..136, 156..160] {
        b[f + r.start..f + r.end].fill(0);
    }
    b
}

/// A failing disk with permanent faults only (a healed transient error reads differently
/// after a resume; see image::journal).
fn failing() -> SimDevice {
    let mut p = patterns().remove(1);
    p.transient.clear();
    sim(&p, 21)
}

/// Where a run is cut: at the `at`-th read of the rescue engine's reader (counted from 0),
/// which cancels the job and is held there until the job has returned, so the cut falls at
/// that point of the job's progress on a machine of any speed (a timer would fall anywhere,
/// or after the end, on a loaded one). Reads on other threads (the analysis before the
/// engine, chunks the feed reads again) are not counted and never held.
struct Cut {
    at: u64,
    reads: std::sync::atomic::AtomicU64,
    cancel: Cancel,
    released: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Cut {
    fn new(at: Option<u64>) -> Arc<Cut> {
        Arc::new(Cut {
            at: at.unwrap_or(u64::MAX),
            reads: Default::default(),
            cancel: Cancel::new(),
            released: std::sync::Mutex::new(false),
            cv: std::sync::Condvar::new(),
        })
    }

    /// `src` with this cut's hook.
    fn on(self: &Arc<Cut>, src: SimDevice) -> SimDevice {
        let c = self.clone();
        src.on_read(move |_, _, _| {
            if std::thread::current().name() != Some("rescue-reader") {
                return;
            }
            let n = c.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < c.at {
                return;
            }
            c.cancel.cancel();
            // Held until the job has returned (a reader left in a read is left behind by the
            // engine); the timeout only keeps a broken job from hanging the test.
            let g = c.released.lock().unwrap();
            let _ =
                c.cv.wait_timeout_while(g, std::time::Duration::from_secs(300), |r| !*r);
        })
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// The engine reader's reads so far.
    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Image create of `src` into `img`, cut at the `cut`-th read of its engine (see [`Cut`]) when
/// given. Returns the report of a finished run (None: cut; the `.partial` and its journal are
/// left for a resume) and the engine's reads. Checkpoints are taken at every calm point of the
/// engine (`checkpoint_every` zero), so the journal a cut leaves is the last one before the
/// cut, whatever the machine's speed.
fn create_cut_with(
    src: SimDevice,
    img: &std::path::Path,
    cut: Option<u64>,
    split: Option<u64>,
) -> (Option<lifeboat::image::CreateReport>, u64) {
    let opts = CreateOptions {
        checkpoint_every: std::time::Duration::ZERO,
        split,
        ..Default::default()
    };
    let c = Cut::new(cut);
    let r = create(
        Arc::new(c.on(src)),
        &SourceIdentity::default(),
        img,
        &opts,
        &NoProgress,
        &c.cancel,
    );
    c.release();
    match r {
        Ok(rep) => {
            assert!(
                c.reads() <= c.at,
                "the job was cancelled at read {} but finished",
                c.at
            );
            (Some(rep), c.reads())
        }
        Err(e) => {
            assert_eq!(e.kind, lifeboat::ErrorKind::Cancelled, "{e}");
            assert!(c.reads() > c.at, "cancelled before the cut");
            (None, c.reads())
        }
    }
}

fn create_cut(
    img: &std::path::Path,
    cut: Option<u64>,
) -> (Option<lifeboat::image::CreateReport>, u64) {
    create_cut_with(failing(), img, cut, None)
}

#[test]
fn an_interrupted_create_resumes_to_the_same_bytes() {
    let t = TempDir::new("imgresc-resume");
    let whole = t.p("whole.lbi");
    let (rep, total) = create_cut(&whole, None);
    let rep = rep.unwrap();
    assert!(!rep.bad_ranges.is_empty());
    let want = normalized(&whole);
    // Cut once at several points of the engine's reads (the copy pass, the trimming and
    // scraping near the end), and several times in one job (each run cut after a quarter of
    // the whole job's reads of its own).
    let plans: Vec<Vec<u64>> = vec![
        vec![total / 10],
        vec![total / 2],
        vec![total * 9 / 10],
        vec![total / 4; 3],
    ];
    for (k, cuts) in plans.iter().enumerate() {
        let img = t.p(&format!("cut{k}.lbi"));
        let mut uuid = None;
        for &c in cuts {
            let (r, _) = create_cut(&img, Some(c));
            if r.is_some() {
                break;
            }
            assert!(t.p(&format!("cut{k}.lbi.partial.journal")).exists());
            let part = t.p(&format!("cut{k}.lbi.partial"));
            let h = std::fs::read(&part).unwrap()[24..40].to_vec();
            assert!(
                uuid.get_or_insert(h.clone()) == &h,
                "the header changed across a resume"
            );
        }
        assert!(uuid.is_some(), "plan {cuts:?}: the first run was not cut");
        if !img.exists() {
            let r = create_cut(&img, None).0.unwrap();
            assert_eq!(r.bad_ranges, rep.bad_ranges);
        }
        assert!(
            !t.p(&format!("cut{k}.lbi.partial.journal")).exists(),
            "the journal of a finished image is removed"
        );
        if let Some(u) = &uuid {
            assert_eq!(
                &std::fs::read(&img).unwrap()[24..40],
                &u[..],
                "the first run's UUID"
            );
        }
        assert!(
            normalized(&img) == want,
            "cut at reads {cuts:?} of {total}: the resumed image differs from the uninterrupted one"
        );
        let v = lifeboat::image::verify(&img, &NoProgress, &Cancel::new()).unwrap();
        assert!(v.ok, "{:?}", v.problems);
    }
}

/// zstd groups (see `image::pack`): a checkpoint often falls inside a compressor batch, whose
/// chunks the writer cannot store yet (a group is one payload). The journal then describes the
/// moment before the batch and names the batch's chunks already emitted (`open_batch`); a
/// resumed create emits them again first. Cut at many points of a disk with few errors (most
/// chunks complete during the copy pass): some journals end inside a batch, and every resumed
/// image is byte-identical to the uninterrupted one, which has groups — and batches of
/// random-looking chunks stored raw (`image::pack`: the disk's last 3 × `GROUP_CHUNKS` chunks,
/// after 24 MiB with bad sectors, are random bytes: at least one whole batch of sequence
/// numbers falls among them, whatever the chunks held back before them).
#[test]
fn a_create_cut_inside_a_zstd_group_resumes_to_the_same_bytes() {
    use lifeboat::image::format::{Kind, GROUP_CHUNKS};
    // The random chunks (MiB numbers).
    const RANDOM: std::ops::Range<u64> = 24..24 + 3 * GROUP_CHUNKS as u64;
    let disk = || {
        let mut p = patterns().remove(0);
        p.transient.clear();
        p.size = RANDOM.end * MIB;
        let mut data = compressible(p.size as usize, 5);
        let r = (RANDOM.start * MIB) as usize..(RANDOM.end * MIB) as usize;
        data[r.clone()].copy_from_slice(&SimDevice::pattern(r.len(), 77));
        sim_of(&p, data)
    };
    let t = TempDir::new("imgresc-groups");
    let whole = t.p("whole.lbi");
    let (rep, total) = create_cut_with(disk(), &whole, None, None);
    let rep = rep.unwrap();
    assert!(!rep.bad_ranges.is_empty());
    let mut im = lifeboat::image::Image::open(&whole).unwrap();
    let groups = (0..im.header.chunk_count())
        .filter(|&i| im.entry(i).unwrap().kind == Kind::Group)
        .count();
    assert!(groups >= 8, "{groups} chunks in groups");
    // Raw chunks are random ones only, and a whole batch of them at least.
    let raw: Vec<u64> = (0..im.header.chunk_count())
        .filter(|&i| im.entry(i).unwrap().kind == Kind::Raw)
        .collect();
    assert!(raw.iter().all(|i| RANDOM.contains(i)), "{raw:?}");
    assert!(raw.len() >= GROUP_CHUNKS, "the random batch: {raw:?}");
    let v = lifeboat::image::verify(&whole, &NoProgress, &Cancel::new()).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let want = normalized(&whole);
    let mut inside = 0;
    for k in 1..=12u64 {
        let img = t.p(&format!("g{k}.lbi"));
        let (r, _) = create_cut_with(disk(), &img, Some(total * k / 13), None);
        assert!(r.is_none(), "cut {k}/13 of {total} reads: not cut");
        let j: serde_json::Value = serde_json::from_slice(
            &std::fs::read(t.p(&format!("g{k}.lbi.partial.journal"))).unwrap(),
        )
        .unwrap();
        let open = j["open_batch"].as_array().unwrap().len();
        assert!(open < lifeboat::image::format::GROUP_CHUNKS, "{j}");
        inside += (open > 0) as u32;
        let r = create_cut_with(disk(), &img, None, None).0.unwrap();
        assert_eq!(r.bad_ranges, rep.bad_ranges);
        assert!(
            normalized(&img) == want,
            "cut {k}/13 of the run: the resumed image differs from the uninterrupted one"
        );
    }
    assert!(
        inside > 0,
        "no cut left a journal inside a compressor batch: nothing was tested"
    );
}

/// Every volume of a split image, normalized as [`normalized`] does (the header of each, the
/// footer of the last).
fn normalized_volumes(vols: &[std::path::PathBuf]) -> Vec<Vec<u8>> {
    vols.iter()
        .enumerate()
        .map(|(k, v)| {
            let mut b = std::fs::read(v).unwrap();
            for r in [24..40, 88..96, 508..512] {
                b[r].fill(0);
            }
            if k + 1 == vols.len() {
                let f = b.len() - 160;
                for r in [8..24, 128..136, 156..160] {
                    b[f + r.start..f + r.end].fill(0);
                }
            }
            b
        })
        .collect()
}

/// A `--split` create cut and resumed (the journal keeps every volume's length; groups never
/// span volumes) ends with the same volumes as an uninterrupted one, and they export to the
/// same bytes.
#[test]
fn a_cut_split_create_resumes_to_the_same_volumes() {
    let disk = || {
        let mut p = patterns().remove(0);
        p.transient.clear();
        sim(&p, 6)
    };
    let split = Some(4 << 20);
    let t = TempDir::new("imgresc-split");
    let whole = t.p("whole.lbi");
    let (rep, total) = create_cut_with(disk(), &whole, None, split);
    let rep = rep.unwrap();
    assert!(rep.volumes.len() >= 3, "{:?}", rep.volumes);
    let want = normalized_volumes(&rep.volumes);
    let raw = t.p("whole.raw");
    lifeboat::image::export(&whole, &raw, false, &NoProgress, &Cancel::new()).unwrap();
    for k in 1..=6u64 {
        let img = t.p(&format!("s{k}.lbi"));
        let (r, _) = create_cut_with(disk(), &img, Some(total * k / 7), split);
        assert!(r.is_none(), "cut {k}/7 of {total} reads: not cut");
        let r = create_cut_with(disk(), &img, None, split).0.unwrap();
        assert_eq!(r.volumes.len(), rep.volumes.len());
        assert!(
            normalized_volumes(&r.volumes) == want,
            "cut {k}/7: the resumed volumes differ from the uninterrupted ones"
        );
        for v in &r.volumes {
            assert!(std::fs::metadata(v).unwrap().len() <= 4 << 20);
        }
    }
    let img = t.p("s3.lbi");
    let v = lifeboat::image::verify(&img, &NoProgress, &Cancel::new()).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let out = t.p("s3.raw");
    lifeboat::image::export(&img, &out, false, &NoProgress, &Cancel::new()).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&raw).unwrap());
}

/// The volumes of the image `img` that exist: `img`, `img.002`, `img.003`, …
fn volumes_of(img: &std::path::Path) -> Vec<std::path::PathBuf> {
    (1..)
        .map(|k| match k {
            1 => img.to_path_buf(),
            _ => std::path::PathBuf::from(format!("{}.{k:03}", img.display())),
        })
        .take_while(|p| p.exists())
        .collect()
}

/// An 80 MiB source of noise with runs of zeros and of repeated bytes between (stored, zero
/// and compressed chunks).
fn kill_source(t: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let src = t.p("src.img");
    let mut data = SimDevice::pattern(80 << 20, 77);
    for k in 0..20 {
        let a = k * (4 << 20);
        data[a..a + (1 << 20)].fill(0);
        data[a + (2 << 20)..a + (2 << 20) + 300_000].fill(k as u8);
    }
    std::fs::write(&src, &data).unwrap();
    (src, data)
}

/// Runs `lifeboat image create SRC IMG ARGS` uninterrupted, then killed (SIGKILL) at five
/// points of its progress — when its `.partial` volumes hold 15, 30, 45, 60 and 75 % of the
/// uninterrupted image's bytes, watched from here, so the kills fall at those points on a
/// machine of any speed — and run again until it finishes: every resumed image must have the
/// uninterrupted one's bytes in every volume. Returns whether any run resumed (killed after
/// its first write), so the caller can tell a test that tested nothing.
fn killed_creates_resume(t: &TempDir, src: &std::path::Path, args: &[&str]) -> bool {
    use common::{assert_exit, lifeboat, lifeboat_cmd, s};
    let create_args = |img: &std::path::Path| -> Vec<String> {
        ["image", "create", s(src), s(img)]
            .iter()
            .chain(args)
            .map(|x| x.to_string())
            .collect()
    };
    let run = |img: &std::path::Path| {
        let a = create_args(img);
        lifeboat(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>())
    };
    let whole = t.p("whole.lbi");
    assert_exit(&run(&whole), 0);
    let want = normalized_volumes(&volumes_of(&whole));
    let total: u64 = want.iter().map(|v| v.len() as u64).sum();
    // The bytes in the `.partial` volumes of image `k{k}.lbi` now.
    let written = |k: usize| -> u64 {
        std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("k{k}.lbi")) && n.ends_with(".partial")
            })
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let mut resumed_any = false;
    let kills: Vec<u64> = [15u64, 30, 45, 60, 75]
        .iter()
        .map(|p| total * p / 100)
        .collect();
    for (k, at) in kills.iter().enumerate() {
        let img = t.p(&format!("k{k}.lbi"));
        let mut child = lifeboat_cmd()
            .args(create_args(&img))
            .env("LIFEBOAT_CHECKPOINT_SECS", "0.005")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while written(k) < *at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        let ms = format!("{}% of its bytes", at * 100 / total.max(1));
        if !img.exists() {
            assert!(!status.success());
            // Killed before its first write, there is nothing to resume: it starts afresh.
            let partial = t.p(&format!("k{k}.lbi.partial")).exists();
            assert_exit(&run(&img), 0);
            resumed_any |= partial;
        }
        let got = normalized_volumes(&volumes_of(&img));
        assert_eq!(
            got.len(),
            want.len(),
            "killed at {ms}: the resumed image has another number of volumes"
        );
        for (v, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "killed at {ms}: volume {} of the resumed image differs from the \
                 uninterrupted one's",
                v + 1
            );
        }
        assert!(!t.p(&format!("k{k}.lbi.partial.journal")).exists());
    }
    resumed_any
}

/// Power loss, as near as a host test gets: the `lifeboat image create` process is killed with
/// SIGKILL at several points; the same command then resumes from the `.partial` and its
/// journal and ends with the bytes of an uninterrupted create (but for the image UUID and the
/// times), which restores to the source. The source is unchanged.
#[test]
fn a_killed_create_command_resumes_to_the_same_bytes() {
    use common::{assert_exit, lifeboat, lifeboat_cmd, s, sha256};
    let t = TempDir::new("imgresc-kill");
    let (src, data) = kill_source(&t);
    let sha = sha256(&src);
    assert!(
        killed_creates_resume(&t, &src, &[]),
        "every create finished before it was killed: nothing was tested"
    );
    // The resumed image restores to the source.
    let out = t.p("restored.img");
    std::fs::write(&out, vec![0xAAu8; data.len()]).unwrap();
    assert_exit(
        &lifeboat(&["image", "restore", s(&t.p("k2.lbi")), s(&out), "--yes"]),
        0,
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "restored bytes differ from the source"
    );
    assert_eq!(sha256(&src), sha, "the source changed");
    // Another source under the same image name: the unfinished image is not resumed by it.
    let img = t.p("other.lbi");
    let mut child = lifeboat_cmd()
        .args(["image", "create", s(&src), s(&img)])
        .env("LIFEBOAT_CHECKPOINT_SECS", "0.005")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has written a quarter of the image (its journal exists by then).
    let part = t.p("other.lbi.partial");
    let quarter = std::fs::metadata(t.p("k2.lbi")).unwrap().len() / 4;
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < quarter
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    if !img.exists() {
        let src2 = t.p("src2.img");
        std::fs::write(&src2, &data).unwrap();
        let before = sha256(&t.p("other.lbi.partial"));
        let o = lifeboat(&["image", "create", s(&src2), s(&img)]);
        assert_exit(&o, 4);
        assert!(
            common::stderr(&o).contains("another source"),
            "{}",
            common::stderr(&o)
        );
        assert_eq!(
            sha256(&t.p("other.lbi.partial")),
            before,
            "a refused resume wrote"
        );
    }
}

/// A `--split` create whose `lifeboat` process is killed (SIGKILL) mid-job resumes to the same
/// bytes in every volume as an uninterrupted one (volumes closed before the kill, the one being
/// written, those not begun), and restores to the source. The source is unchanged.
#[test]
fn a_killed_split_create_command_resumes_to_the_same_volumes() {
    use common::{assert_exit, lifeboat, s, sha256};
    let t = TempDir::new("imgresc-killsplit");
    let (src, data) = kill_source(&t);
    let sha = sha256(&src);
    assert!(
        killed_creates_resume(&t, &src, &["--split", "4M"]),
        "every create finished before it was killed: nothing was tested"
    );
    let n = volumes_of(&t.p("whole.lbi")).len();
    assert!(
        n >= 3,
        "the test image should span several volumes, not {n}"
    );
    let out = t.p("restored.img");
    std::fs::write(&out, vec![0xAAu8; data.len()]).unwrap();
    assert_exit(
        &lifeboat(&["image", "restore", s(&t.p("k2.lbi")), s(&out), "--yes"]),
        0,
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "restored bytes differ from the source"
    );
    assert_eq!(sha256(&src), sha, "the source changed");
}
