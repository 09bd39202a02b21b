//! What every integration test shares: temporary directories (`tempfile`), loop devices detached
//! on drop (skipping with a printed message where `losetup` cannot attach), running tools and
//! the `lifeboat` binary, exit-code and JSON-output assertions, and sha256 of a file;
//! `usedfs`: random-filled files and the used-block referees (partclone, dumpe2fs, mtools).
//!
//! Each test file includes it with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

pub mod usedfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MIB: u64 = 1 << 20;

/// A temporary directory under `$TMPDIR`, removed on drop (also when the test fails).
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A fresh, uniquely named directory; `tag` appears in its name to tell tests apart.
    pub fn new(tag: &str) -> TempDir {
        let d = tempfile::Builder::new()
            .prefix(&format!("lifeboat-{tag}-"))
            .tempdir()
            .expect("create a temporary directory");
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `name` inside the directory.
    pub fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// How to attach a loop device (`losetup` options).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopOpts {
    /// `--offset`: the device starts this many bytes into the file.
    pub offset: u64,
    /// `--sizelimit`: the device is at most this many bytes long.
    pub size_limit: Option<u64>,
    /// `--sector-size`: the logical sector size (512 when `None`).
    pub sector_size: Option<u32>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--partscan`.
    pub partscan: bool,
}

/// A loop device over a file, detached on drop (every path, failing tests included).
pub struct Loop {
    /// The device node, e.g. `/dev/loop3`.
    pub dev: String,
}

impl Loop {
    /// `losetup --find --show FILE`, or `None` (with a printed skip message) where loop
    /// devices are unavailable.
    pub fn attach(file: &Path) -> Option<Loop> {
        Loop::attach_with(file, LoopOpts::default())
    }

    /// As [`Loop::attach`], with options.
    pub fn attach_with(file: &Path, o: LoopOpts) -> Option<Loop> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if o.offset != 0 {
            cmd.arg("--offset").arg(o.offset.to_string());
        }
        if let Some(n) = o.size_limit {
            cmd.arg("--sizelimit").arg(n.to_string());
        }
        if let Some(n) = o.sector_size {
            cmd.arg("--sector-size").arg(n.to_string());
        }
        if o.read_only {
            cmd.arg("--read-only");
        }
        if o.partscan {
            cmd.arg("--partscan");
        }
        cmd.arg(file);
        match cmd.output() {
            Ok(out) if out.status.success() => Some(Loop {
                dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            }),
            Ok(out) => {
                eprintln!(
                    "skipping the loop-device part: {cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping the loop-device part: cannot run losetup: {e}");
                None
            }
        }
    }
}

impl Loop {
    /// A loop device over bytes `offset..offset+len` of `file` (a partition of a disk-image
    /// file: this host's kernel does not parse partitions of loop devices).
    pub fn partition(file: &Path, offset: u64, len: u64) -> Option<Loop> {
        Loop::attach_with(
            file,
            LoopOpts {
                offset,
                size_limit: Some(len),
                ..Default::default()
            },
        )
    }

    /// A loop device over `file` from byte `offset` to its end.
    pub fn from_offset(file: &Path, offset: u64) -> Option<Loop> {
        Loop::attach_with(
            file,
            LoopOpts {
                offset,
                ..Default::default()
            },
        )
    }

    /// A loop device with 4096-byte logical sectors (a 4Kn disk) over `file`.
    pub fn sectors_4k(file: &Path) -> Option<Loop> {
        Loop::attach_with(
            file,
            LoopOpts {
                sector_size: Some(4096),
                ..Default::default()
            },
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Runs a tool, asserts it succeeded, returns its stdout followed by its stderr.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed ({}): {s}", o.status);
    s
}

/// Runs a shell script (`sh -c`), asserts it succeeded, returns its stdout.
#[track_caller]
pub fn sh(script: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        o.status.success(),
        "command failed ({}): {script}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The sha256 of a file (by `sha256sum`), as hex.
#[track_caller]
pub fn sha256(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A command running the `lifeboat` binary under test; `LIFEBOAT_TEST_BIN=/path/to/lifeboat`
/// runs the tests against another build (e.g. main's, to see a new test fail there first).
pub fn lifeboat_cmd() -> Command {
    match std::env::var_os("LIFEBOAT_TEST_BIN") {
        Some(b) => Command::new(b),
        None => Command::new(env!("CARGO_BIN_EXE_lifeboat")),
    }
}

/// Runs `lifeboat ARGS` to completion (stdin inherited, stdout and stderr captured).
pub fn lifeboat(args: &[&str]) -> Output {
    lifeboat_cmd().args(args).output().expect("run lifeboat")
}

/// Asserts the exit code, showing the command's stdout and stderr when it is wrong.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {}, expected {code}\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The one JSON value a `--json` command prints on stdout (asserting it is exactly one line).
#[track_caller]
pub fn json(o: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        s.lines().count(),
        1,
        "stdout must be one JSON line: {s:?}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad JSON {s:?}: {e}"))
}

/// The command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// One step of xorshift64 (`x` must not be zero): the next state, which is also the output.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `len` pseudo-random, incompressible bytes: the low byte of each xorshift64 step from the
/// state `x` (not zero); the same `x` gives the same bytes.
pub fn xorshift_bytes(len: usize, mut x: u64) -> Vec<u8> {
    (0..len).map(|_| xorshift(&mut x) as u8).collect()
}

/// A file of `len` pseudo-random bytes (xorshift64, deterministic for `seed`): a source whose
/// every sector differs, for tests that must tell bytes apart.
pub fn data_file(p: &Path, len: u64, seed: u8) {
    let v = xorshift_bytes(len as usize, 0x9e37_79b9_7f4a_7c15u64 ^ seed as u64);
    std::fs::write(p, v).unwrap();
}

/// A [`data_file`] `src` in `dir` of `len` bytes and its image `img` (`image create
/// --no-verify`, which must succeed): the starting point of tests that attack a restore.
pub fn imaged_data_file(
    dir: &TempDir,
    src: &str,
    len: u64,
    seed: u8,
    img: &str,
) -> (PathBuf, PathBuf) {
    let (src, img) = (dir.p(src), dir.p(img));
    data_file(&src, len, seed);
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&img), "--no-verify"]),
        0,
    );
    (src, img)
}

/// Whether `qemu-img` (the referee of the VM disk formats) runs; prints why a test skips when not.
pub fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        eprintln!(
            "SKIP: qemu-img not installed (Debian package qemu-utils; scripts/setup installs it)"
        );
    }
    ok
}

/// A source file S in `dir`: 4 MiB of [`data_file`], then an ext4 filesystem at 4 MiB..36 MiB
/// (40 MiB in all), for attacks through a filesystem mounted from the source.
pub fn source_with_ext4(dir: &TempDir) -> PathBuf {
    let sf = dir.p("S");
    data_file(&sf, 4 * MIB, 5);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sf)
        .unwrap()
        .set_len(40 * MIB)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .args([
            "-E",
            &format!("offset={},lazy_itable_init=0,lazy_journal_init=0", 4 * MIB),
        ])
        .arg(&sf)
        .arg(format!("{}k", 32 * 1024)));
    sf
}

/// The lines of the kernel log that say a filesystem on `dev` was mounted (a source must never
/// appear there).
pub fn mount_lines(dev: &str) -> Vec<String> {
    let name = dev.trim_start_matches("/dev/");
    let log = Command::new("dmesg")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&format!("({name})")) && l.contains("mounted filesystem"))
        .map(String::from)
        .collect()
}

/// Creates (or truncates) `path` as a zero-filled (sparse) file of `len` bytes.
pub fn zero_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Whether the tests run as root (loop devices, mounts).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// An ext4 filesystem inside `file` (bytes `offset..offset+len`, through a loop device) mounted
/// at `dir/m`; unmounted and detached on drop. `None`, with a printed skip message, where
/// losetup or mount is unavailable.
pub struct Mounted {
    pub mp: PathBuf,
    _lp: Loop,
}
impl Mounted {
    pub fn ext4_in(file: &Path, dir: &TempDir, offset: u64, len: u64) -> Option<Mounted> {
        let lp = Loop::partition(file, offset, len)?;
        let mp = dir.p("m");
        std::fs::create_dir_all(&mp).unwrap();
        let o = Command::new("mount").arg(&lp.dev).arg(&mp).output().ok()?;
        if !o.status.success() {
            eprintln!(
                "skipping the mount part: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Some(Mounted { mp, _lp: lp })
    }

    /// A new, empty ext4 filesystem of `mib` MiB in the file `dir/store.img`, mounted at
    /// `dir/m` (a small store to fill).
    pub fn new_ext4(dir: &TempDir, mib: u64) -> Option<Mounted> {
        let f = dir.p("store.img");
        ext4_file(&f, mib);
        Mounted::ext4_in(&f, dir, 0, mib * MIB)
    }
}

/// Creates `path` as a file of `mib` MiB holding a new, empty ext4 filesystem (`mkfs.ext4`).
pub fn ext4_file(path: &Path, mib: u64) {
    zero_file(path, mib * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path));
}

/// The names in `dir` without `lost+found`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    v.sort();
    v
}

/// Whether the tests run as root; prints why the test is skipped when not.
pub fn root_or_skip() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root (loop devices, mounts)");
        return false;
    }
    true
}

/// Argon2id with 64 KiB and one pass (`LIFEBOAT_KDF_PARAMS`): for tests about the format and
/// the rules, not the KDF's cost.
pub const CHEAP_KDF: &str = "64,1,1";

/// `lifeboat ARGS` with the cheap KDF ([`CHEAP_KDF`]), to completion.
pub fn lifeboat_cheap_kdf(args: &[&str]) -> Output {
    lifeboat_cmd()
        .args(args)
        .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
        .output()
        .expect("run lifeboat")
}
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mp).status();
    }
}

/// A simulated disk that records every read made of it (offset, length), for tests of what a
/// job reads.
pub struct Recorder {
    pub sim: lifeboat::rescue::sim::SimDevice,
    pub log: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl lifeboat::io::BlockSource for Recorder {
    fn size(&self) -> u64 {
        self.sim.size()
    }
    fn logical_block_size(&self) -> u32 {
        self.sim.logical_block_size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        self.log.lock().unwrap().push((off, buf.len() as u64));
        self.sim.read_at(buf, off)
    }
    fn name(&self) -> String {
        "recorder".into()
    }
}
