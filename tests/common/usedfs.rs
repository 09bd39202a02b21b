//! Filesystems on reused space and the referees that say which of their bytes are used:
//! partclone's domain log (`partclone.<fs> -D`), e2fsprogs' `dumpe2fs` (bigalloc, which
//! partclone cannot read) and mtools (FAT12, whose tables partclone misreads). Shared by the
//! used-block tests of the maps (fs_used), images (image_used) and clones (clone_used).
use super::{sh, TempDir};
use lifeboat::rescue::sim::SimDevice;
use std::fs as stdfs;
use std::path::Path;
use std::process::Command;

/// A byte range `[start, end)`.
pub type Range = (u64, u64);

/// Whether every tool is installed (printing which one is missing: the caller skips).
pub fn have(tools: &[&str]) -> bool {
    for t in tools {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            println!("skipped: {t} missing");
            return false;
        }
    }
    true
}

/// Writes `len` bytes of deterministic random data (old data in the free space) to `p`.
pub fn random_file(p: &Path, len: u64, seed: u64) {
    stdfs::write(p, SimDevice::pattern(len as usize, seed)).unwrap();
}

/// e2fsprogs' view: everything in the filesystem except the "Free blocks:" of every group
/// (dumpe2fs prints free clusters by their first block). partclone.ext4 cannot read bigalloc.
pub fn dumpe2fs_referee(img: &Path) -> Vec<Range> {
    let o = Command::new("dumpe2fs").arg(img).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    };
    let (bs, blocks) = (field("Block size"), field("Block count"));
    let ratio = (field("Cluster size") / bs).max(1);
    let mut free: Vec<Range> = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("  Free blocks: ")) {
        for part in l["  Free blocks: ".len()..]
            .split(", ")
            .filter(|p| !p.is_empty())
        {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => (part.parse().unwrap(), part.parse().unwrap()),
            };
            free.push((a * bs, ((b + ratio).min(blocks)) * bs));
        }
    }
    free.sort_unstable();
    minus(&[(0, blocks * bs)], &free)
}

/// mtools' view of a FAT: the areas before the first cluster plus the clusters of every file
/// and directory (`mshowfat`). partclone.fat misreads FAT12 tables, so it is no referee there.
pub fn mtools_referee(img: &Path) -> Vec<Range> {
    let out = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let i = img.to_str().unwrap();
    let info = out(&["minfo", "-i", i, "::"]);
    let num = |name: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| {
                l[name.len()..]
                    .trim_start_matches([':', '=', ' '])
                    .split_whitespace()
                    .next()
            })
            .map(|v| v.parse().unwrap())
            .unwrap_or_else(|| panic!("minfo has no {name}"))
    };
    let sector = num("sector size");
    let spc = num("cluster size");
    let reserved = num("reserved (boot) sectors");
    let fats = num("fats");
    let fat_sectors = match num("sectors per fat") {
        0 => num("Big fatlen"),
        n => n,
    };
    let root_slots = num("max available root directory slots");
    let data =
        (reserved + fats * fat_sectors) * sector + (root_slots * 32).div_ceil(sector) * sector;
    let mut v = vec![(0, data)];
    let mut paths: Vec<String> = out(&["mdir", "-i", i, "-/", "-b", "::"])
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    paths.push("::/".into());
    for p in paths {
        let show = out(&["mshowfat", "-i", i, &p]);
        let Some(list) = show.split('<').nth(1) else {
            continue;
        };
        for r in list.trim_end().trim_end_matches('>').split(',') {
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => (r.parse().unwrap(), r.parse().unwrap()),
            };
            let at = |c: u64| data + (c - 2) * spc * sector;
            v.push((at(a), at(b + 1)));
        }
    }
    v.sort_unstable();
    let mut m: Vec<Range> = Vec::new();
    for (s, e) in v {
        match m.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => m.push((s, e)),
        }
    }
    m
}

/// partclone's used ranges (its ddrescue domain log, '+' lines), coalesced.
pub fn referee(fs: &str, img: &Path, dir: &TempDir) -> Vec<Range> {
    let dom = dir.p(&format!("{fs}.domain"));
    let _ = stdfs::remove_file(&dom);
    sh(&format!(
        "partclone.{fs} -D -q -s {} -o {} >/dev/null 2>&1",
        img.display(),
        dom.display()
    ));
    let text = stdfs::read_to_string(&dom).unwrap();
    let mut v: Vec<Range> = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 3 || f[2] != "+" {
            continue;
        }
        let n = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        let (s, len) = (n(f[0]), n(f[1]));
        match v.last_mut() {
            Some(last) if last.1 == s => last.1 += len,
            _ => v.push((s, s + len)),
        }
    }
    v
}

/// Ranges of `a` not covered by `b`.
pub fn minus(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(s, e) in a {
        let mut pos = s;
        for &(bs, be) in b {
            if be <= pos || bs >= e {
                continue;
            }
            if bs > pos {
                out.push((pos, bs));
            }
            pos = pos.max(be);
        }
        if pos < e {
            out.push((pos, e));
        }
    }
    out
}
