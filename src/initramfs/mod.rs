//! Builds the initramfs: a reproducible newc cpio with the Lifeboat binary as /init, the kernel
//! modules real PCs need (with their dependency closure) and an alias index, the helper
//! programs Lifeboat starts (`ntfs-3g`, with its loader and libraries: [`programs`]),
//! compressed as [`Compression`] says (LZ4 by default: see there why).
pub mod cpio;
pub mod kmods;
pub mod modinfo;
pub mod modlist;
pub mod programs;

use crate::error::{Error, Result};
use cpio::{Archive, Data, Node};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct MkArgs {
    /// The static Lifeboat binary to install as /init.
    #[arg(long, value_name = "BINARY")]
    pub init: PathBuf,
    /// The kernel's modules dir, /lib/modules/<kernel version> (its basename is the version).
    #[arg(long, value_name = "DIR", requires = "list")]
    pub modules_dir: Option<PathBuf>,
    /// The module list (see initramfs/modules.list for the syntax).
    #[arg(long, value_name = "FILE", requires = "modules_dir")]
    pub list: Option<PathBuf>,
    /// Where to write the compressed archive (written to a temporary name, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// How to compress it: lz4 (the default) unpacks fastest, gzip is smallest.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Compression::Lz4)]
    pub compression: Compression,
    /// Extra file to include, SRC:DEST (DEST is the path inside the image); repeatable.
    #[arg(long = "file", value_name = "SRC:DEST")]
    pub files: Vec<String>,
    /// A directory Debian packages were unpacked into (`dpkg-deb -x`), where --program's
    /// programs, their loader and libraries are taken from.
    #[arg(long, value_name = "DIR", requires = "programs")]
    pub sysroot: Option<PathBuf>,
    /// A dynamically linked program inside --sysroot (e.g. /bin/ntfs-3g), put at the same path
    /// with its interpreter and DT_NEEDED libraries; repeatable.
    #[arg(long = "program", value_name = "PATH", requires = "sysroot")]
    pub programs: Vec<String>,
}

/// How the archive is compressed; every Debian kernel unpacks both (`CONFIG_RD_LZ4`,
/// `CONFIG_RD_GZIP`).
///
/// LZ4 is the default: under QEMU's TCG the kernel took 0.64 s to inflate and unpack the
/// 13.5 MiB gzip archive and reached /init 0.5 s later than with the same archive in LZ4 (20.9
/// MiB), as late as with no compression at all (kernel timestamps, 2 runs each). On a real PC
/// either is a fraction of a second; the LZ4 archive is 7 MiB more to read from a stick.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// LZ4's legacy frame (`lz4 -l`), the only LZ4 format the kernel's initramfs unpacker reads.
    Lz4,
    /// gzip at its best compression, with a fixed header.
    Gzip,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
        }
    }
}

/// The LZ4 legacy frame as the kernel reads it (`lib/decompress_unlz4.c`): the magic number,
/// then blocks of at most [`LZ4_LEGACY_BLOCK`] input bytes, each a little-endian u32 length and
/// an LZ4 block; the input ends exactly after the last block.
pub struct Lz4Legacy<W: Write> {
    out: W,
    buf: Vec<u8>,
    started: bool,
}

/// The kernel decompresses each legacy block into an 8 MiB buffer.
pub const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;

impl<W: Write> Lz4Legacy<W> {
    pub fn new(out: W) -> Self {
        Lz4Legacy {
            out,
            buf: Vec::with_capacity(LZ4_LEGACY_BLOCK),
            started: false,
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        if !self.started {
            self.out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
            self.started = true;
        }
        Ok(())
    }

    fn block(&mut self) -> std::io::Result<()> {
        self.start()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let c = lz4_flex::block::compress(&self.buf);
        self.out.write_all(&(c.len() as u32).to_le_bytes())?;
        self.out.write_all(&c)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last block and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.block()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Lz4Legacy<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(LZ4_LEGACY_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == LZ4_LEGACY_BLOCK {
            self.block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Everything that goes into one image.
#[derive(Debug, Clone)]
pub struct Config {
    pub init: PathBuf,
    pub modules: Option<(PathBuf, Vec<modlist::Item>)>,
    pub files: Vec<(PathBuf, String)>,
    /// Programs taken from a sysroot with their loader and libraries ([`programs::closure`]).
    pub programs: Option<(PathBuf, Vec<String>)>,
    /// Refuse an /init that is not a static x86-64 executable (always on from the CLI).
    pub require_static_init: bool,
    pub compression: Compression,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kver: Option<String>,
    /// Modules chosen by the list / added as dependencies.
    pub listed: usize,
    pub modules: usize,
    pub entries: usize,
    pub uncompressed: u64,
    pub compressed: u64,
    pub notes: Vec<String>,
}

/// Assembles the archive for `cfg` (reads module metadata, not module contents).
pub fn assemble(cfg: &Config) -> Result<(Archive, Summary)> {
    let mut a = Archive::new();
    let mut notes = Vec::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt", "etc", "root"] {
        a.dir(d)?;
    }
    a.add("tmp", Node::Dir, 0o1777)?;
    a.add("dev/console", Node::CharDev(5, 1), 0o600)?;
    a.add("dev/null", Node::CharDev(1, 3), 0o666)?;

    let init =
        std::fs::read(&cfg.init).map_err(|e| Error::io("read the /init binary", &cfg.init, e))?;
    if cfg.require_static_init {
        modinfo::check_static_x86_64(&init, &cfg.init)?;
    }
    a.file("init", Data::Bytes(init), 0o755)?;

    let (mut kver, mut listed, mut nmods) = (None, 0, 0);
    if let Some((dir, items)) = &cfg.modules {
        let tree = kmods::ModuleTree::scan(dir)?;
        let roots = tree.select(items, &mut notes)?;
        let plan = tree.closure(&roots, &mut notes)?;
        let base = format!("lib/modules/{}", tree.kver);
        a.dir(&base)?;
        for m in plan.modules.values() {
            let src = dir.join(&m.rel);
            let data = if m.rel.ends_with(".ko") {
                Data::Path(src)
            } else {
                Data::Bytes(modinfo::read_module(&src)?)
            };
            a.file(&format!("{base}/{}", m.image_rel()), data, 0o644)?;
        }
        a.file(
            &format!("{base}/modules.dep"),
            Data::Bytes(plan.modules_dep().into_bytes()),
            0o644,
        )?;
        a.file(
            &format!("{base}/modules.alias"),
            Data::Bytes(plan.modules_alias().into_bytes()),
            0o644,
        )?;
        a.file(
            &format!("{base}/modules.softdep"),
            Data::Bytes(plan.modules_softdep().into_bytes()),
            0o644,
        )?;
        let builtin = dir.join("modules.builtin");
        let b = match std::fs::read(&builtin) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{} has no modules.builtin; writing an empty one",
                    dir.display()
                ));
                Vec::new()
            }
            Err(e) => return Err(Error::io("read", &builtin, e)),
        };
        a.file(&format!("{base}/modules.builtin"), Data::Bytes(b), 0o644)?;
        listed = roots.len();
        nmods = plan.modules.len();
        kver = Some(tree.kver.clone());
    }

    let info = serde_json::json!({
        "lifeboat_version": crate::VERSION,
        "kernel": kver,
        "modules": nmods,
    });
    a.file(
        "etc/lifeboat-build.json",
        Data::Bytes(format!("{info}\n").into_bytes()),
        0o644,
    )?;

    for (src, dest) in &cfg.files {
        let meta = std::fs::metadata(src).map_err(|e| Error::io("read the extra file", src, e))?;
        if !meta.is_file() {
            return Err(Error::invalid("--file takes a regular file").at_path(src));
        }
        use std::os::unix::fs::PermissionsExt;
        a.file(
            dest,
            Data::Path(src.clone()),
            meta.permissions().mode() & 0o777,
        )?;
    }

    if let Some((root, progs)) = &cfg.programs {
        for prog in progs {
            for p in programs::closure(root, prog)? {
                match p.link_to {
                    Some(t) => a.add(&p.dest, Node::Symlink(t), 0o777)?,
                    None => a.file(
                        &p.dest,
                        Data::Path(p.src),
                        if p.executable { 0o755 } else { 0o644 },
                    )?,
                }
            }
        }
    }

    let entries = a.len();
    Ok((
        a,
        Summary {
            kver,
            listed,
            modules: nmods,
            entries,
            uncompressed: 0,
            compressed: 0,
            notes,
        },
    ))
}

/// Writes `archive` compressed as `how` to `out` via a temporary file and a rename, so a failed
/// build never leaves a half image; returns (uncompressed, compressed) sizes.
pub fn write_compressed(archive: &Archive, how: Compression, out: &Path) -> Result<(u64, u64)> {
    let tmp = {
        let mut s = out.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let res = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let f = std::io::BufWriter::new(f);
        let (raw, mut w) = match how {
            Compression::Gzip => {
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(f, flate2::Compression::best());
                let raw = archive.write(&mut gz)?;
                (raw, gz.finish().map_err(|e| Error::io("write", &tmp, e))?)
            }
            Compression::Lz4 => {
                let mut lz = Lz4Legacy::new(f);
                let raw = archive.write(&mut lz)?;
                (raw, lz.finish().map_err(|e| Error::io("write", &tmp, e))?)
            }
        };
        w.flush().map_err(|e| Error::io("write", &tmp, e))?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        let comp = f.metadata().map_err(|e| Error::io("stat", &tmp, e))?.len();
        std::fs::rename(&tmp, out).map_err(|e| Error::io("rename into place", out, e))?;
        Ok((raw, comp))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Builds the image described by `cfg` into `out`.
pub fn build(cfg: &Config, out: &Path) -> Result<Summary> {
    let (a, mut s) = assemble(cfg)?;
    let (raw, comp) = write_compressed(&a, cfg.compression, out)?;
    s.uncompressed = raw;
    s.compressed = comp;
    Ok(s)
}

fn parse_file_arg(s: &str) -> Result<(PathBuf, String)> {
    match s.split_once(':') {
        Some((src, dest)) if !src.is_empty() && !dest.is_empty() => {
            Ok((PathBuf::from(src), dest.to_string()))
        }
        _ => Err(Error::invalid(format!(
            "--file {s:?}: expected SRC:DEST, e.g. --file ./motd:/etc/motd"
        ))),
    }
}

pub fn run(a: MkArgs) -> Result<i32> {
    let modules = match (&a.modules_dir, &a.list) {
        (Some(d), Some(l)) => Some((d.clone(), modlist::load(l)?)),
        _ => None,
    };
    let files = a
        .files
        .iter()
        .map(|f| parse_file_arg(f))
        .collect::<Result<Vec<_>>>()?;
    let cfg = Config {
        init: a.init.clone(),
        modules,
        files,
        programs: a.sysroot.clone().map(|r| (r, a.programs.clone())),
        require_static_init: true,
        compression: a.compression,
    };
    let s = build(&cfg, &a.out)?;
    for n in &s.notes {
        crate::errln!("mkinitramfs: note: {n}");
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    crate::outln!(
        "initramfs: {} ({} modules: {} listed + {} dependencies, kernel {}), {} entries, {:.2} MiB uncompressed, {:.2} MiB {} ({} bytes)",
        a.out.display(),
        s.modules,
        s.listed,
        s.modules.saturating_sub(s.listed),
        s.kver.as_deref().unwrap_or("none"),
        s.entries,
        mib(s.uncompressed),
        mib(s.compressed),
        a.compression.name(),
        s.compressed
    );
    Ok(crate::error::exit::OK)
}

/// Finds a kernel modules tree for tests: `$LIFEBOAT_MODULES_DIR`, then `MODULES_DIR` from
/// `target/kernel/current.env` (written by scripts/setup), then /tmp/k/x/lib/modules/*.
#[doc(hidden)]
pub fn find_test_modules_dir(repo: &Path) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LIFEBOAT_MODULES_DIR") {
        let d = PathBuf::from(d);
        if d.is_dir() {
            return Some(d);
        }
    }
    if let Ok(t) = std::fs::read_to_string(repo.join("target/kernel/current.env")) {
        for l in t.lines() {
            if let Some(v) = l.strip_prefix("MODULES_DIR=") {
                let d = PathBuf::from(v.trim().trim_matches('"').trim_matches('\''));
                if d.is_dir() {
                    return Some(d);
                }
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/tmp/k/x/lib/modules")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop().filter(|d| d.join("kernel").is_dir())
}

#[cfg(test)]
pub(crate) fn test_modules_dir() -> Option<PathBuf> {
    find_test_modules_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_arg() {
        assert_eq!(
            parse_file_arg("a:/etc/x").unwrap(),
            (PathBuf::from("a"), "/etc/x".to_string())
        );
        assert!(parse_file_arg("nocolon").is_err());
        assert!(parse_file_arg(":x").is_err());
    }

    /// A host program (with / as its sysroot) lands in the archive with its loader at the
    /// PT_INTERP path and its libraries in the loader's default directory; /init stays the
    /// static binary.
    #[test]
    fn programs_from_a_sysroot() {
        let Some(prog) = ["/bin/ntfs-3g", "/bin/ls"]
            .into_iter()
            .find(|p| Path::new(p).exists() && Path::new("/lib64/ld-linux-x86-64.so.2").exists())
        else {
            crate::errln!("note: no glibc program on this host; skipping");
            return;
        };
        let cfg = Config {
            init: std::env::current_exe().unwrap(),
            modules: None,
            files: vec![],
            programs: Some((PathBuf::from("/"), vec![prog.to_string()])),
            require_static_init: false,
            compression: Compression::Lz4,
        };
        let (a, _) = assemble(&cfg).unwrap();
        let paths: Vec<&str> = a.paths().collect();
        for want in [
            prog.trim_start_matches('/'),
            "lib64/ld-linux-x86-64.so.2",
            "lib/x86_64-linux-gnu/libc.so.6",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let mut raw = Vec::new();
        a.write(&mut raw).unwrap();
        let members = cpio::parse(&raw).unwrap();
        let ld = members
            .iter()
            .find(|m| m.name == "lib64/ld-linux-x86-64.so.2")
            .unwrap();
        assert_eq!(
            ld.data,
            std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap(),
            "the loader's bytes"
        );
    }

    /// Reads a legacy LZ4 frame the way the kernel's `unlz4` does: magic, then length-prefixed
    /// blocks of at most 8 MiB of output until the input ends exactly.
    fn unlz4(mut b: &[u8]) -> Vec<u8> {
        let word = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
        assert_eq!(word(b), LZ4_LEGACY_MAGIC, "magic");
        b = &b[4..];
        let mut out = Vec::new();
        while !b.is_empty() {
            let n = word(b) as usize;
            let block = &b[4..4 + n];
            let d = lz4_flex::block::decompress(block, LZ4_LEGACY_BLOCK).unwrap();
            assert!(d.len() <= LZ4_LEGACY_BLOCK);
            out.extend_from_slice(&d);
            b = &b[4 + n..];
        }
        out
    }

    #[test]
    fn lz4_legacy_frames_read_back_like_the_kernel() {
        // Across block edges, in odd-sized writes, compressible and not.
        let mut data: Vec<u8> = (0..LZ4_LEGACY_BLOCK * 2 + 12345)
            .map(|i| (i / 7) as u8)
            .collect();
        let mut x = 0x9E37_79B9u32;
        for b in &mut data[LZ4_LEGACY_BLOCK - 1000..LZ4_LEGACY_BLOCK + 70_000] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let mut w = Lz4Legacy::new(Vec::new());
        for piece in data.chunks(999_983) {
            w.write_all(piece).unwrap();
        }
        let frame = w.finish().unwrap();
        assert_eq!(unlz4(&frame), data);
        // Nothing written: the magic alone (a cpio archive never is empty: it has its trailer).
        let empty = Lz4Legacy::new(Vec::new()).finish().unwrap();
        assert_eq!(empty, LZ4_LEGACY_MAGIC.to_le_bytes());
        // Exactly one full block: no empty block after it.
        let mut w = Lz4Legacy::new(Vec::new());
        w.write_all(&data[..LZ4_LEGACY_BLOCK]).unwrap();
        let one = w.finish().unwrap();
        assert_eq!(unlz4(&one), &data[..LZ4_LEGACY_BLOCK]);
        let n = u32::from_le_bytes(one[4..8].try_into().unwrap()) as usize;
        assert_eq!(one.len(), 8 + n, "one block, ending the input");
    }

    #[test]
    fn dynamic_init_refused() {
        let cfg = Config {
            init: std::env::current_exe().unwrap(),
            modules: None,
            files: vec![],
            programs: None,
            require_static_init: true,
            compression: Compression::Lz4,
        };
        if cfg!(target_env = "gnu") {
            assert!(assemble(&cfg).is_err());
        }
    }
}
