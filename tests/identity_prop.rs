//! Property test of the storage-identity rule (root and loop devices; skipped with a message
//! otherwise): random arrangements — files, a hard link, a symlink, loop devices with random
//! offsets and size limits over either file or the hard link, an ext4 filesystem inside one file
//! mounted through a loop device with an offset, files inside it, images and an incremental —
//! and random jobs (clone with and without `--map`, image create with and without `--force` and
//! `--parent`, restore, export with and without `--force`) over any of those names. Every job
//! either is refused (exit 4: then no file of the arrangement changed), fails otherwise with every
//! source and image unchanged, or completes with every source and image byte-identical (sha256
//! before and after, `sync`ed). 24 cases; loops and mounts are released on every path.
mod common;

use common::*;
use proptest::prelude::*;
use std::path::PathBuf;
use std::process::Command;

const F0_MIB: u64 = 16;
/// The ext4 filesystem inside F0: bytes 4..14 MiB.
const FS_AT_MIB: u64 = 4;
const FS_MIB: u64 = 10;

#[derive(Debug, Clone)]
struct LoopSpec {
    /// 0: F0, 1: F1, 2: the hard link of F0.
    backing: u8,
    offset_mib: u64,
    limit_mib: Option<u64>,
}

#[derive(Debug, Clone)]
struct Arrangement {
    hard_link: bool,
    symlink_to_f1: bool,
    loops: Vec<LoopSpec>,
    mount: bool,
    image_link: bool,
}

#[derive(Debug, Clone)]
enum Job {
    Clone {
        src: u8,
        tgt: u8,
        map: Option<u8>,
    },
    Create {
        src: u8,
        out: u8,
        force: bool,
        parent: Option<u8>,
    },
    Restore {
        img: u8,
        tgt: u8,
    },
    Export {
        img: u8,
        out: u8,
        force: bool,
    },
}

fn arrangement() -> impl Strategy<Value = Arrangement> {
    // Loops mostly over F0 or its hard link, mostly with an offset: where names mislead.
    let backing = prop_oneof![2 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8)];
    let offset = prop_oneof![1 => Just(0u64), 3 => 1u64..6];
    let lp = (backing, offset, prop::option::of(1u64..12)).prop_map(|(b, o, l)| LoopSpec {
        backing: b,
        offset_mib: o,
        limit_mib: l,
    });
    (
        prop::bool::weighted(0.75),
        any::<bool>(),
        prop::collection::vec(lp, 1..3),
        prop::bool::weighted(0.6),
        any::<bool>(),
    )
        .prop_map(
            |(hard_link, symlink_to_f1, loops, mount, image_link)| Arrangement {
                hard_link,
                symlink_to_f1,
                loops,
                mount,
                image_link,
            },
        )
}

fn job() -> impl Strategy<Value = Job> {
    let clone = (any::<u8>(), any::<u8>(), prop::option::of(any::<u8>()))
        .prop_map(|(src, tgt, map)| Job::Clone { src, tgt, map });
    let create = (
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        prop::option::of(any::<u8>()),
    )
        .prop_map(|(src, out, force, parent)| Job::Create {
            src,
            out,
            force,
            parent,
        });
    let restore = (any::<u8>(), any::<u8>()).prop_map(|(img, tgt)| Job::Restore { img, tgt });
    let export = (any::<u8>(), any::<u8>(), any::<bool>())
        .prop_map(|(img, out, force)| Job::Export { img, out, force });
    prop_oneof![3 => clone, 2 => create, 1 => restore, 1 => export]
}

/// A mount through a loop device, unmounted (then detached) on drop.
struct Mounted {
    mp: PathBuf,
    _lp: Loop,
}
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mp).status();
    }
}

/// One arrangement on disk. Field order is drop order: the mount goes before the loops.
struct World {
    mount: Option<Mounted>,
    _loops: Vec<Loop>,
    dir: TempDir,
    /// Names a job may use as a disk (source or target).
    disks: Vec<String>,
    /// Names a job may use as an image.
    images: Vec<String>,
    /// Names a job may write an output or a map to.
    outputs: Vec<String>,
}

/// `len` bytes, each 512-byte sector filled with one value that depends on its number and `seed`.
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    for sector in 0..len.div_ceil(512) {
        let n = (512).min(len - sector * 512) as usize;
        let b = (sector as u8).wrapping_mul(31).wrapping_add(seed);
        v.resize(v.len() + n, b);
    }
    v
}

fn build(a: &Arrangement) -> Option<World> {
    let dir = TempDir::new("idprop");
    let f0 = dir.p("F0");
    std::fs::write(&f0, pattern(F0_MIB * MIB, 1)).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg(format!(
            "offset={},lazy_itable_init=0,lazy_journal_init=0",
            FS_AT_MIB * MIB
        ))
        .arg(&f0)
        .arg(format!("{}k", FS_MIB * 1024)));
    let f1 = dir.p("F1");
    std::fs::write(&f1, pattern(4 * MIB, 2)).unwrap();
    let t = dir.p("T");
    zero_file(&t, F0_MIB * MIB);
    let mut disks: Vec<String> = vec![s(&f0).into(), s(&f1).into(), s(&t).into()];
    let mut outputs: Vec<String> = vec![
        s(&dir.p("new.lbi")).into(),
        s(&dir.p("map")).into(),
        s(&f0).into(),
        s(&t).into(),
    ];
    if a.hard_link {
        std::fs::hard_link(&f0, dir.p("H0")).unwrap();
        disks.push(s(&dir.p("H0")).into());
        outputs.push(s(&dir.p("H0")).into());
    }
    let y = dir.p("Y");
    std::os::unix::fs::symlink(if a.symlink_to_f1 { &f1 } else { &f0 }, &y).unwrap();
    disks.push(s(&y).into());
    // Images of F1: a full one and an incremental on it (made with the binary under test).
    let i0 = dir.p("I0.lbi");
    let i1 = dir.p("I1.lbi");
    run(lifeboat_cmd().args(["image", "create", s(&f1), s(&i0)]));
    run(lifeboat_cmd().args(["image", "create", s(&f1), s(&i1), "--parent", s(&i0)]));
    let mut images: Vec<String> = vec![s(&i0).into(), s(&i1).into()];
    outputs.extend(images.iter().cloned());
    if a.image_link {
        std::fs::hard_link(&i0, dir.p("HI0.lbi")).unwrap();
        images.push(s(&dir.p("HI0.lbi")).into());
        outputs.push(s(&dir.p("HI0.lbi")).into());
    }
    let mut loops = Vec::new();
    for l in &a.loops {
        let b = match l.backing {
            0 => f0.clone(),
            1 => f1.clone(),
            _ if a.hard_link => dir.p("H0"),
            _ => f0.clone(),
        };
        let flen = std::fs::metadata(&b).unwrap().len();
        let off = (l.offset_mib * MIB).min(flen - MIB);
        let lp = Loop::attach_with(
            &b,
            LoopOpts {
                offset: off,
                size_limit: l.limit_mib.map(|m| m * MIB),
                ..Default::default()
            },
        )?;
        // Named through a private node of the same device (another name for it; and an old
        // binary under test that replaces a node with a file only replaces this one).
        let node = private_node(&dir, &lp.dev, loops.len());
        disks.push(node.clone());
        outputs.push(node);
        loops.push(lp);
    }
    let mut mount = None;
    if a.mount {
        let lp = Loop::partition(&f0, FS_AT_MIB * MIB, FS_MIB * MIB)?;
        let mp = dir.p("m");
        std::fs::create_dir_all(&mp).unwrap();
        let ok = Command::new("mount")
            .args(["-o", "noatime"])
            .arg(&lp.dev)
            .arg(&mp)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: cannot mount ext4 here");
            return None;
        }
        disks.push(private_node(&dir, &lp.dev, 9));
        let g = mp.join("G");
        std::fs::write(&g, pattern(2 * MIB, 3)).unwrap();
        let g2 = mp.join("T2");
        zero_file(&g2, 2 * MIB);
        disks.push(s(&g).into());
        disks.push(s(&g2).into());
        outputs.push(s(&g2).into());
        outputs.push(s(&mp.join("new.lbi")).into());
        outputs.push(s(&mp.join("map")).into());
        mount = Some(Mounted { mp, _lp: lp });
    }
    Some(World {
        mount,
        _loops: loops,
        dir,
        disks,
        images,
        outputs,
    })
}

/// A block device node `dir/devN` with the same device number as `dev`.
fn private_node(dir: &TempDir, dev: &str, n: usize) -> String {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(dev).unwrap().rdev();
    let (ma, mi) = (
        ((rdev >> 8) & 0xfff),
        ((rdev & 0xff) | ((rdev >> 12) & !0xff)),
    );
    let p = dir.p(&format!("dev{n}"));
    run(Command::new("mknod")
        .arg(&p)
        .arg("b")
        .arg(ma.to_string())
        .arg(mi.to_string()));
    s(&p).to_string()
}

fn pick(v: &[String], i: u8) -> String {
    v[i as usize % v.len()].clone()
}

/// sha256 of a file, or of a block device read with O_DIRECT (its own buffer cache may be stale
/// when the file under a loop device was written through another name). None when it does not
/// exist or cannot be read.
fn digest(p: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(p).ok()?;
    let o = if md.file_type().is_block_device() {
        Command::new("sh")
            .arg("-c")
            .arg("dd if=\"$1\" iflag=direct bs=1M status=none | sha256sum")
            .arg("sh")
            .arg(p)
            .output()
            .ok()?
    } else {
        Command::new("sha256sum").arg(p).output().ok()?
    };
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

/// Every volume of the chain of image `img` (itself when it cannot be read as one).
fn chain_of(img: &str) -> Vec<String> {
    let o = lifeboat_cmd()
        .args(["image", "info", img, "--json"])
        .output()
        .unwrap();
    let mut v = vec![img.to_string()];
    if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
        for l in j["chain"].as_array().into_iter().flatten() {
            if let Some(p) = l["path"].as_str() {
                if !v.iter().any(|x| x == p) {
                    v.push(p.to_string());
                }
            }
        }
    }
    v
}

/// Every regular file of the arrangement (for "a refusal writes nothing").
fn all_files(w: &World) -> Vec<String> {
    let mut v = Vec::new();
    let mut dirs = vec![w.dir.path().to_path_buf()];
    if let Some(m) = &w.mount {
        dirs.push(m.mp.clone());
    }
    for d in dirs {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_file() {
                v.push(e.path().display().to_string());
            }
        }
    }
    v.sort();
    v
}

/// sha256 of each path, after the mounted filesystem (if any) flushed its dirty pages into the
/// file under it (a `syncfs` of that small filesystem, not a system-wide `sync`).
fn snapshot(w: &World, paths: &[String]) -> Vec<(String, Option<String>)> {
    if let Some(m) = &w.mount {
        let _ = Command::new("sync").arg("-f").arg(&m.mp).status();
    }
    paths.iter().map(|p| (p.clone(), digest(p))).collect()
}

fn run_job(w: &World, j: &Job) -> Result<(), TestCaseError> {
    let (args, protected): (Vec<String>, Vec<String>) = match j {
        Job::Clone { src, tgt, map } => {
            let (sp, tp) = (pick(&w.disks, *src), pick(&w.disks, *tgt));
            let mut a = vec![
                "clone".into(),
                sp.clone(),
                tp,
                "--yes".into(),
                "--no-verify".into(),
            ];
            if let Some(m) = map {
                a.push("--map".into());
                a.push(pick(&w.outputs, *m));
            }
            (a, vec![sp])
        }
        Job::Create {
            src,
            out,
            force,
            parent,
        } => {
            let sp = pick(&w.disks, *src);
            let mut a = vec![
                "image".into(),
                "create".into(),
                sp.clone(),
                pick(&w.outputs, *out),
            ];
            let mut prot = vec![sp];
            if *force {
                a.push("--force".into());
            }
            if let Some(p) = parent {
                let pp = pick(&w.images, *p);
                prot.extend(chain_of(&pp));
                a.push("--parent".into());
                a.push(pp);
            }
            (a, prot)
        }
        Job::Restore { img, tgt } => {
            let ip = pick(&w.images, *img);
            let a = vec![
                "image".into(),
                "restore".into(),
                ip.clone(),
                pick(&w.disks, *tgt),
                "--yes".into(),
            ];
            (a, chain_of(&ip))
        }
        Job::Export { img, out, force } => {
            let ip = pick(&w.images, *img);
            let mut a = vec![
                "image".into(),
                "export".into(),
                ip.clone(),
                pick(&w.outputs, *out),
            ];
            if *force {
                a.push("--force".into());
            }
            (a, chain_of(&ip))
        }
    };
    let everything = all_files(w);
    let before_all = snapshot(w, &everything);
    let before = snapshot(w, &protected);
    let o = lifeboat_cmd().args(&args).output().unwrap();
    let code = o.status.code();
    let why = format!("{args:?} -> {code:?}: {}", stderr(&o));
    prop_assert_eq!(
        snapshot(w, &protected),
        before,
        "a source or image changed: {}",
        why
    );
    if code == Some(4) {
        prop_assert_eq!(
            snapshot(w, &everything),
            before_all,
            "a refused job wrote something: {}",
            why
        );
    }
    prop_assert!(code.is_some(), "killed by a signal: {}", why);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 8, ..ProptestConfig::default() })]
    #[test]
    fn every_job_refuses_or_leaves_sources_and_images_intact(
        a in arrangement(),
        jobs in prop::collection::vec(job(), 1..4),
    ) {
        if !is_root() {
            eprintln!("skipping: needs root for loop devices and mounts");
            return Ok(());
        }
        let Some(w) = build(&a) else { return Ok(()) };
        for j in &jobs {
            run_job(&w, j)?;
        }
        drop(w);
    }
}
