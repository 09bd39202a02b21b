//! Reads what the initramfs builder needs from ELF files: a kernel module's `.modinfo` section
//! (`depends=`, `alias=`, `softdep=`, `vermagic=`), compressed modules included, and whether the
//! `/init` binary is a static x86-64 executable (no program interpreter).
use crate::error::{Error, Result};
use crate::modindex::canonical;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Object, ObjectSection};
use std::path::Path;

/// The `.modinfo` fields the builder uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// Hard dependencies (module names as written by modpost, comma-separated in the section).
    pub depends: Vec<String>,
    /// Device/alias patterns (`pci:v00008086d...`, `fs-ext4`, `crypto-crc32c`...).
    pub aliases: Vec<String>,
    /// Raw `softdep=` values, e.g. `pre: crc32c post: foo`.
    pub softdeps: Vec<String>,
    pub vermagic: Option<String>,
}

/// Parses the content of a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_section(data: &[u8]) -> ModInfo {
    let mut mi = ModInfo::default();
    for raw in data.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(raw) else {
            continue;
        };
        let Some((k, v)) = s.split_once('=') else {
            continue;
        };
        match k {
            "depends" => mi.depends.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(canonical),
            ),
            "alias" => mi.aliases.push(v.to_string()),
            "softdep" => mi.softdeps.push(v.to_string()),
            "vermagic" => mi.vermagic = Some(v.to_string()),
            _ => {}
        }
    }
    mi
}

/// Splits a `softdep=` value into (pre, post) module names or aliases.
pub fn parse_softdep(v: &str) -> (Vec<String>, Vec<String>) {
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    // Words before any "pre:"/"post:" are pre-dependencies: cifs declares its crypto as
    // `softdep=gcm`, `softdep=cmac`, … (names only), which modprobe ignores but an initramfs
    // must carry and load first, since the kernel's own request for them needs a modprobe the
    // environment does not have.
    let mut into_post = false;
    for tok in v.split_whitespace() {
        match tok {
            "pre:" => into_post = false,
            "post:" => into_post = true,
            t if into_post => post.push(t.to_string()),
            t => pre.push(t.to_string()),
        }
    }
    (pre, post)
}

/// Reads a module file's bytes, decompressing `.ko.gz` (in process), `.ko.xz` and `.ko.zst`
/// (with the host's `xz`/`zstd`, which scripts/setup installs).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".ko") {
        return std::fs::read(path).map_err(|e| Error::io("read kernel module", path, e));
    }
    if name.ends_with(".ko.gz") {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| Error::io("open kernel module", path, e))?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .map_err(|e| Error::io("decompress (gzip) kernel module", path, e))?;
        return Ok(out);
    }
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else {
        return Err(Error::invalid(
            "not a kernel module file (expected .ko, .ko.gz, .ko.xz or .ko.zst)",
        )
        .at_path(path));
    };
    let out = std::process::Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| {
            Error::io(
                &format!("run `{tool} -dc` (install it: scripts/setup) on"),
                path,
                e,
            )
        })?;
    if !out.status.success() {
        return Err(Error::corrupt(format!(
            "`{tool} -dc` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .at_path(path));
    }
    Ok(out.stdout)
}

fn modinfo_of<'d, R: object::ReadRef<'d>>(data: R, path: &Path) -> Result<ModInfo> {
    let file = object::File::parse(data).map_err(|e| {
        Error::corrupt("kernel module is not a readable ELF file")
            .at_path(path)
            .caused_by(e)
    })?;
    let sec = file
        .section_by_name(".modinfo")
        .ok_or_else(|| Error::corrupt("kernel module has no .modinfo section").at_path(path))?;
    let bytes = sec.data().map_err(|e| {
        Error::corrupt("cannot read the .modinfo section")
            .at_path(path)
            .caused_by(e)
    })?;
    Ok(parse_section(bytes))
}

/// Reads the `.modinfo` of the module at `path`. Uncompressed modules are read in pieces (only the
/// ELF headers and the section), so scanning a whole modules tree stays cheap.
pub fn read_modinfo(path: &Path) -> Result<ModInfo> {
    if path.extension().is_some_and(|e| e == "ko") {
        let f = std::fs::File::open(path).map_err(|e| Error::io("open kernel module", path, e))?;
        let cache = object::ReadCache::new(f);
        modinfo_of(&cache, path)
    } else {
        let data = read_module(path)?;
        modinfo_of(&*data, path)
    }
}

/// Checks that `data` is an x86-64 ELF executable without a program interpreter (PT_INTERP),
/// i.e. it runs as /init with no dynamic loader or libraries in the initramfs.
pub fn check_static_x86_64(data: &[u8], path: &Path) -> Result<()> {
    type Hdr = object::elf::FileHeader64<object::Endianness>;
    let not = |why: &str| {
        Error::invalid(format!(
            "{why}; /init must be the static musl build: cargo build --release --target x86_64-unknown-linux-musl"
        ))
        .at_path(path)
    };
    let hdr = Hdr::parse(data).map_err(|_| not("not a 64-bit ELF file"))?;
    let endian = hdr.endian().map_err(|_| not("unreadable ELF header"))?;
    if hdr.e_machine(endian) != object::elf::EM_X86_64 {
        return Err(not("not an x86-64 binary"));
    }
    let t = hdr.e_type(endian);
    if t != object::elf::ET_EXEC && t != object::elf::ET_DYN {
        return Err(not("not an executable"));
    }
    let phdrs = hdr
        .program_headers(endian, data)
        .map_err(|_| not("unreadable ELF program headers"))?;
    if phdrs
        .iter()
        .any(|p| p.p_type(endian) == object::elf::PT_INTERP)
    {
        return Err(not("dynamically linked (has a program interpreter)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_section_fields() {
        let sec = b"license=GPL\0depends=libahci,libata\0alias=pci:v*d*sv*sd*bc01sc06i01*\0alias=pci:v00008086d00002922sv*sd*bc*sc*i*\0\0\0softdep=pre: crc32c\0vermagic=6.1.0-56-amd64 SMP\0name=ahci\0junk\0";
        let mi = parse_section(sec);
        assert_eq!(mi.depends, ["libahci", "libata"]);
        assert_eq!(mi.aliases.len(), 2);
        assert_eq!(mi.softdeps, ["pre: crc32c"]);
        assert_eq!(mi.vermagic.as_deref(), Some("6.1.0-56-amd64 SMP"));
        assert_eq!(parse_section(b"depends=\0").depends, Vec::<String>::new());
        assert_eq!(
            parse_section(b"depends=crc-t10dif,scsi_mod\0").depends,
            ["crc_t10dif", "scsi_mod"]
        );
    }

    #[test]
    fn softdeps() {
        assert_eq!(
            parse_softdep("pre: a b post: c"),
            (vec!["a".into(), "b".into()], vec!["c".into()])
        );
        assert_eq!(parse_softdep("post: x"), (vec![], vec!["x".into()]));
        // cifs's crypto: names without pre:/post: are loaded first.
        assert_eq!(parse_softdep("cmac"), (vec!["cmac".into()], vec![]));
        assert_eq!(
            parse_softdep("gcm post: x"),
            (vec!["gcm".into()], vec!["x".into()])
        );
    }

    #[test]
    fn static_check() {
        let me = std::env::current_exe().unwrap();
        let data = std::fs::read(&me).unwrap();
        // The test binary is a normal glibc (dynamic) build: it must be refused.
        if cfg!(target_env = "gnu") {
            let e = check_static_x86_64(&data, &me).unwrap_err();
            assert!(e.to_string().contains("dynamically linked"), "{e}");
        }
        assert!(check_static_x86_64(b"#!/bin/sh\n", Path::new("x")).is_err());
        assert!(check_static_x86_64(&[], Path::new("x")).is_err());
    }

    /// A real module from the Debian kernel, when it is present (scripts/setup unpacks it).
    #[test]
    fn real_module_modinfo() {
        let Some(dir) = crate::initramfs::test_modules_dir() else {
            crate::errln!("note: no kernel modules tree found (run scripts/setup); skipping");
            return;
        };
        let ahci = dir.join("kernel/drivers/ata/ahci.ko");
        let mi = read_modinfo(&ahci).unwrap();
        let mut deps = mi.depends.clone();
        deps.sort();
        assert_eq!(deps, ["libahci", "libata"]);
        assert!(
            mi.aliases.iter().any(|a| a.starts_with("pci:")),
            "{:?}",
            mi.aliases
        );
        let kver = dir.file_name().unwrap().to_str().unwrap();
        assert!(mi.vermagic.unwrap().starts_with(kver));
        let ext4 = read_modinfo(&dir.join("kernel/fs/ext4/ext4.ko")).unwrap();
        assert!(ext4.aliases.iter().any(|a| a == "fs-ext4"));
        assert!(!ext4.softdeps.is_empty());
        // Whole-file parse and piecewise parse agree.
        let data = read_module(&ahci).unwrap();
        assert_eq!(
            modinfo_of(&*data, &ahci).unwrap(),
            read_modinfo(&ahci).unwrap()
        );
    }
}
