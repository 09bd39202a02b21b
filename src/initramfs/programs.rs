//! Dynamically linked helper programs in the initramfs (today: Debian's `ntfs-3g`, which Lifeboat
//! starts to mount NTFS image stores): a program is taken from a *sysroot* — a directory the
//! Debian packages were unpacked into with `dpkg-deb -x` (scripts/build does that) — together
//! with everything the dynamic loader needs to run it: its program interpreter (PT_INTERP, e.g.
//! `/lib64/ld-linux-x86-64.so.2`, put at exactly that path) and the closure of its `DT_NEEDED`
//! libraries, each found in the sysroot's library directories and put at the same directory in
//! the image (one the loader searches by default, so no `ld.so.cache` is needed). Symbolic links
//! inside the sysroot are followed within the sysroot (never onto the build host's files); the
//! image holds regular files. A library that cannot be found is an error naming the package
//! directories searched: a missing library must fail the build, not the boot.
use crate::error::{Error, Result};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Where the loader looks for libraries without an `ld.so.cache` on Debian x86-64, in order.
pub const LIB_DIRS: [&str; 5] = [
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
];

/// What an ELF file asks of the dynamic loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// The program interpreter (PT_INTERP), for an executable.
    pub interp: Option<String>,
    /// The `DT_NEEDED` sonames, in order.
    pub needed: Vec<String>,
}

/// Reads PT_INTERP and the `DT_NEEDED` entries of the x86-64 ELF file `data`.
pub fn dynamic_of(data: &[u8], path: &Path) -> Result<Dynamic> {
    type Hdr = object::elf::FileHeader64<object::Endianness>;
    let bad = |why: &str| Error::corrupt(format!("{why} (not an x86-64 ELF file?)")).at_path(path);
    let hdr = Hdr::parse(data).map_err(|_| bad("not a 64-bit ELF file"))?;
    let endian = hdr.endian().map_err(|_| bad("unreadable ELF header"))?;
    if hdr.e_machine(endian) != object::elf::EM_X86_64 {
        return Err(bad("not an x86-64 binary"));
    }
    let mut out = Dynamic::default();
    let phdrs = hdr
        .program_headers(endian, data)
        .map_err(|_| bad("unreadable ELF program headers"))?;
    for p in phdrs {
        if let Some(i) = p
            .interpreter(endian, data)
            .map_err(|_| bad("unreadable PT_INTERP"))?
        {
            out.interp = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let sections = hdr
        .sections(endian, data)
        .map_err(|_| bad("unreadable ELF section headers"))?;
    for s in sections.iter() {
        let Some((entries, link)) = s
            .dynamic(endian, data)
            .map_err(|_| bad("unreadable .dynamic section"))?
        else {
            continue;
        };
        let strings = sections
            .strings(endian, data, link)
            .map_err(|_| bad("unreadable .dynstr section"))?;
        for d in entries {
            if d.d_tag(endian) as u32 == object::elf::DT_NEEDED {
                let name = d
                    .string(endian, strings)
                    .map_err(|_| bad("a DT_NEEDED entry points outside .dynstr"))?;
                out.needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(out)
}

/// `rel` (a path inside the sysroot, absolute or not) with symbolic links followed inside
/// `root`: an absolute link target is taken relative to `root`, `..` never climbs above it.
/// Returns the real file's path on the build host and its path relative to `root`.
pub fn resolve_in(root: &Path, rel: &str) -> Result<(PathBuf, String)> {
    let mut todo: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let here = root.join(done.join("/")).join(&c);
        let meta = std::fs::symlink_metadata(&here)
            .map_err(|e| Error::io("find in the sysroot", &here, e))?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return Err(Error::invalid("too many symbolic links").at_path(&here));
            }
            let t = std::fs::read_link(&here).map_err(|e| Error::io("read link", &here, e))?;
            if t.is_absolute() {
                done.clear();
            }
            let mut comps: Vec<String> = t
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            comps.reverse();
            todo.extend(comps);
        } else {
            done.push(c);
        }
    }
    let rel = done.join("/");
    Ok((root.join(&rel), rel))
}

/// One file for the image: the host file to read and its path inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub src: PathBuf,
    pub dest: String,
    pub executable: bool,
    /// The same file is already in the image at this path (e.g. the loader, which is both the
    /// interpreter and a DT_NEEDED of libc): a symbolic link to it, not a second copy.
    pub link_to: Option<String>,
}

/// The program `prog` (a path inside `sysroot`, kept at that path in the image), its
/// interpreter and its libraries' closure, each with where it goes in the image.
pub fn closure(sysroot: &Path, prog: &str) -> Result<Vec<Placed>> {
    let mut out: BTreeMap<String, Placed> = BTreeMap::new();
    let dest_prog = prog.trim_start_matches('/').to_string();
    let (src, _) = resolve_in(sysroot, prog)?;
    let data = std::fs::read(&src).map_err(|e| Error::io("read the program", &src, e))?;
    let dynm = dynamic_of(&data, &src)?;
    let Some(interp) = dynm.interp.clone() else {
        return Err(Error::invalid(
            "the program has no interpreter: a static program needs no sysroot, add it with --file",
        )
        .at_path(&src));
    };
    out.insert(
        dest_prog.clone(),
        Placed {
            src,
            dest: dest_prog,
            executable: true,
            link_to: None,
        },
    );
    let (isrc, _) = resolve_in(sysroot, &interp).map_err(|e| {
        Error::not_found(format!(
            "the program's interpreter {interp} is not in {} (unpack the libc6 package there)",
            sysroot.display()
        ))
        .caused_by(e)
    })?;
    out.insert(
        interp.trim_start_matches('/').to_string(),
        Placed {
            src: isrc,
            dest: interp.trim_start_matches('/').to_string(),
            executable: true,
            link_to: None,
        },
    );
    let mut todo: Vec<String> = dynm.needed;
    let mut seen: Vec<String> = Vec::new();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        if name.contains('/') {
            return Err(Error::invalid(format!(
                "DT_NEEDED {name:?} is a path; only sonames are supported"
            )));
        }
        let found = LIB_DIRS.iter().find_map(|d| {
            let rel = format!("{d}/{name}");
            resolve_in(sysroot, &rel).ok().map(|(src, _)| (src, rel))
        });
        let Some((lsrc, dest)) = found else {
            return Err(Error::not_found(format!(
                "library {name} (needed by {prog}) is not in {} under {}: download and unpack the Debian package that ships it (scripts/build)",
                LIB_DIRS.join(", "),
                sysroot.display()
            )));
        };
        let ldata = std::fs::read(&lsrc).map_err(|e| Error::io("read the library", &lsrc, e))?;
        todo.extend(dynamic_of(&ldata, &lsrc)?.needed);
        let link_to = out
            .values()
            .find(|p| p.src == lsrc && p.link_to.is_none())
            .map(|p| format!("/{}", p.dest));
        out.insert(
            dest.clone(),
            Placed {
                src: lsrc,
                dest,
                executable: false,
                link_to,
            },
        );
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own dynamically linked tools are real ELF files to read (this test binary is
    /// one when built for glibc).
    #[test]
    fn reads_interp_and_needed_of_a_real_binary() {
        if !cfg!(target_env = "gnu") {
            return;
        }
        let me = std::env::current_exe().unwrap();
        let d = dynamic_of(&std::fs::read(&me).unwrap(), &me).unwrap();
        assert_eq!(d.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(d.needed.iter().any(|n| n == "libc.so.6"), "{:?}", d.needed);
        assert!(dynamic_of(b"#!/bin/sh\n", Path::new("x")).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_sysroot() {
        let t = std::env::temp_dir().join(format!("lb-sysroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(t.join("lib64")).unwrap();
        std::fs::write(t.join("lib/x86_64-linux-gnu/ld.so"), b"L").unwrap();
        // Absolute link: relative to the sysroot, not the host's /lib.
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld.so",
            t.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        // Relative link with .. that would climb out of the sysroot.
        std::os::unix::fs::symlink("../../../../lib64/ld-linux-x86-64.so.2", t.join("lib/x"))
            .unwrap();
        let (src, rel) = resolve_in(&t, "/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(rel, "lib/x86_64-linux-gnu/ld.so");
        assert_eq!(std::fs::read(src).unwrap(), b"L");
        assert_eq!(resolve_in(&t, "lib/x").unwrap().1, rel);
        assert!(resolve_in(&t, "/etc/passwd").is_err());
        std::fs::remove_dir_all(&t).unwrap();
    }

    /// The real closure of a host program, taken with / as the sysroot: every file ldd names is
    /// there, at the loader's path.
    #[test]
    fn closure_of_a_host_program_matches_ldd() {
        if !cfg!(target_env = "gnu") || !Path::new("/lib64/ld-linux-x86-64.so.2").exists() {
            crate::errln!("note: not a glibc x86-64 host; skipping");
            return;
        }
        let prog = ["/bin/ntfs-3g", "/usr/bin/sha256sum", "/bin/ls"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap();
        let c = closure(Path::new("/"), prog).unwrap();
        let dests: Vec<&str> = c.iter().map(|p| p.dest.as_str()).collect();
        assert!(dests.contains(&"lib64/ld-linux-x86-64.so.2"), "{dests:?}");
        // The loader is the interpreter and libc's DT_NEEDED: one copy, the other a link.
        let copies: Vec<&Placed> = c
            .iter()
            .filter(|p| p.dest.ends_with("/ld-linux-x86-64.so.2") && p.link_to.is_none())
            .collect();
        assert_eq!(copies.len(), 1, "{c:?}");
        let ldd = std::process::Command::new("ldd")
            .arg(prog)
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&ldd.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if name.starts_with("linux-vdso") || name.starts_with('/') {
                continue;
            }
            assert!(
                dests.iter().any(|d| d.ends_with(&format!("/{name}"))),
                "{name} (from ldd) missing in {dests:?}"
            );
        }
    }
}
