//! The environment's `/sbin/modprobe`: the kernel asks for modules by itself — crypto
//! algorithms and templates (`crypto-cmac`, `crypto-ctr`, `crypto-ghash` while cifs negotiates
//! SMB 3), character sets (`nls_cp437` when vfat mounts), filesystems (`fs-nfs4`), protocol
//! families (`net-pf-*`) — by running the program named in `/proc/sys/kernel/modprobe` as
//! `modprobe -q -- NAME`. The one Lifeboat binary answers when it is started under the name
//! `modprobe` (argv[0]): NAME, a module name or an alias, is resolved through the
//! `modules.alias` / `modules.dep` / `modules.softdep` the initramfs carries and loaded after its
//! dependencies by [`super::modules`]. PID 1 links `/sbin/modprobe` to `/init` and points the
//! kernel at it ([`install`], the boot step `modprobe`).
//!
//! Only what the initramfs carries can be loaded: a name it does not know exits 1 (silently with
//! `-q`, as kmod's modprobe does), which the kernel takes as "not available".
use super::modules::Loader;
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

/// Where PID 1 puts the link and what it writes to `/proc/sys/kernel/modprobe`.
pub const PATH: &str = "/sbin/modprobe";

/// Whether the binary was started as modprobe (its argv[0]'s file name).
pub fn invoked_as(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|b| b == "modprobe")
}

/// A parsed modprobe command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `-q`: say nothing about a name that is not here (the kernel always passes it).
    pub quiet: bool,
    /// `-v`: name each module as it is inserted.
    pub verbose: bool,
    /// `-n`: print the modules that would be inserted, insert nothing.
    pub dry_run: bool,
    /// The names (one without `-a`) to load.
    pub names: Vec<String>,
}

/// Parses modprobe's arguments (after argv[0]): `[-q] [-v] [-n] [-a] [-b] [-s] [--] NAME...`.
/// Module parameters after the name (`NAME param=value`) are refused: in the environment they
/// come from the kernel command line (`MODULE.PARAM=VALUE`).
pub fn parse_args(args: &[String]) -> std::result::Result<Request, String> {
    let mut r = Request::default();
    let mut all = false;
    let mut it = args.iter();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => {
                rest.extend(it.by_ref().cloned());
                break;
            }
            "--quiet" => r.quiet = true,
            "--verbose" => r.verbose = true,
            "--dry-run" | "--show" => r.dry_run = true,
            "--all" => all = true,
            // No blacklist file here (the kernel's module_blacklist= still applies); no syslog.
            "--use-blacklist" | "--syslog" => {}
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'q' => r.quiet = true,
                        'v' => r.verbose = true,
                        'n' => r.dry_run = true,
                        'a' => all = true,
                        'b' | 's' => {}
                        _ => {
                            return Err(format!(
                                "unknown option -{c} (this modprobe takes -q, -v, -n, -a, -b, -s)"
                            ))
                        }
                    }
                }
            }
            _ => rest.push(a.clone()),
        }
    }
    if rest.is_empty() {
        return Err("no module name given (usage: modprobe [-q] [-v] [-n] [--] NAME)".into());
    }
    if !all && rest.len() > 1 {
        return Err(format!(
            "module parameters on the modprobe command line are not supported here ({}): give \
             {}.PARAM=VALUE on the kernel command line, or use -a to load several modules",
            rest[1..].join(" "),
            rest[0]
        ));
    }
    if let Some(bad) = rest.iter().find(|n| n.is_empty() || n.contains('/')) {
        return Err(format!("{bad:?} is not a module name or alias"));
    }
    r.names = rest;
    Ok(r)
}

/// The modules `name` would insert, in order (dependencies first); empty when it is loaded or
/// built in already. Soft dependencies are not listed (they are loaded when present).
pub fn plan(loader: &Loader, name: &str) -> Result<Vec<String>> {
    use crate::modindex::Resolved;
    if loader.is_loaded(&crate::modindex::canonical(name)) {
        return Ok(Vec::new());
    }
    match loader.index.resolve(name) {
        Resolved::Builtin => Ok(Vec::new()),
        Resolved::Modules(ms) => Ok(ms
            .iter()
            .flat_map(|m| loader.index.load_order(m))
            .filter(|m| !loader.is_loaded(m))
            .fold(Vec::new(), |mut v, m| {
                if !v.contains(&m) {
                    v.push(m);
                }
                v
            })),
        Resolved::Unknown => Err(Error::not_found(format!(
            "module {name} not found in this environment ({})",
            loader.index.dir.display()
        ))),
    }
}

/// Runs one request against `loader`; returns modprobe's exit status (0 loaded or already there,
/// 1 not found or a load failed). Messages go to `err` unless quiet; everything to the kernel log.
pub fn run(loader: &Loader, req: &Request, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut code = 0;
    for name in &req.names {
        if req.dry_run {
            match plan(loader, name) {
                Ok(ms) => {
                    for m in ms {
                        if let Some((rel, _)) = loader.index.deps.get(&m) {
                            let _ =
                                writeln!(out, "insmod {}", loader.index.dir.join(rel).display());
                        }
                    }
                }
                Err(e) => {
                    if !req.quiet {
                        let _ = writeln!(err, "modprobe: {e}");
                    }
                    code = 1;
                }
            }
            continue;
        }
        match loader.load_by_name(name) {
            Ok(ms) => {
                super::console::kmsg(7, &format!("modprobe {name}: inserted {ms:?}"));
                if req.verbose {
                    for m in ms {
                        let _ = writeln!(out, "insmod {m}");
                    }
                }
            }
            Err(e) => {
                let not_here = loader.index.resolve(name) == crate::modindex::Resolved::Unknown;
                // A name this environment does not carry is routine (the kernel asks for many);
                // a module that is here but fails to load is worth a warning in the log.
                super::console::kmsg(
                    if not_here { 7 } else { 4 },
                    &format!("modprobe {name}: {e}"),
                );
                if !(req.quiet && not_here) {
                    let _ = writeln!(err, "modprobe: {name}: {e}");
                }
                code = 1;
            }
        }
    }
    code
}

/// modprobe's entry point: `args` without argv[0]. Returns the exit status.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut err = std::io::stderr();
    let req = match parse_args(&args) {
        Ok(r) => r,
        Err(m) => {
            let _ = writeln!(err, "modprobe: {m}");
            return 1;
        }
    };
    let loader = match Loader::system() {
        Ok(l) => l,
        Err(e) => {
            super::console::kmsg(4, &format!("modprobe {:?}: {e}", req.names));
            if !req.quiet {
                let _ = writeln!(err, "modprobe: {e}");
            }
            return 1;
        }
    };
    run(loader, &req, &mut std::io::stdout(), &mut err)
}

/// PID 1's boot step: `/sbin/modprobe` → `/init`, and the kernel told to run it. Returns the path.
pub fn install() -> Result<String> {
    std::fs::create_dir_all("/sbin").map_err(|e| Error::io("create", "/sbin", e))?;
    match std::os::unix::fs::symlink("/init", PATH) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let target = std::fs::read_link(PATH).ok();
            if target.as_deref() != Some(Path::new("/init")) {
                return Err(Error::io(
                    "create the symlink (something else is there)",
                    PATH,
                    e,
                ));
            }
        }
        Err(e) => return Err(Error::io("create the symlink", PATH, e)),
    }
    std::fs::write("/proc/sys/kernel/modprobe", format!("{PATH}\n"))
        .map_err(|e| Error::io("write", "/proc/sys/kernel/modprobe", e))?;
    Ok(PATH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv0_decides() {
        use std::ffi::OsStr;
        assert!(invoked_as(OsStr::new("/sbin/modprobe")));
        assert!(invoked_as(OsStr::new("modprobe")));
        assert!(!invoked_as(OsStr::new("/init")));
        assert!(!invoked_as(OsStr::new("/bin/lifeboat")));
        assert!(!invoked_as(OsStr::new("/sbin/modprobe.d")));
    }

    #[test]
    fn the_kernels_command_line() {
        // kernel/kmod.c: { modprobe_path, "-q", "--", module_name, NULL }
        let r = parse_args(&args(&["-q", "--", "crypto-cmac(aes)"])).unwrap();
        assert_eq!(
            r,
            Request {
                quiet: true,
                names: vec!["crypto-cmac(aes)".into()],
                ..Default::default()
            }
        );
        // A name that starts with '-' after "--" is a name.
        assert_eq!(
            parse_args(&args(&["--", "-x"])).unwrap().names,
            ["-x".to_string()]
        );
        let r = parse_args(&args(&["-qv", "-n", "nls_cp437"])).unwrap();
        assert!(r.quiet && r.verbose && r.dry_run);
        let r = parse_args(&args(&["-a", "cifs", "nfsv4"])).unwrap();
        assert_eq!(r.names, ["cifs", "nfsv4"]);
    }

    #[test]
    fn bad_command_lines() {
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["-q", "--"])).is_err());
        assert!(parse_args(&args(&["-r", "cifs"]))
            .unwrap_err()
            .contains("-r"));
        assert!(parse_args(&args(&["--remove", "cifs"])).is_err());
        let e = parse_args(&args(&["usb-storage", "quirks=1:2:u"])).unwrap_err();
        assert!(e.contains("usb-storage.PARAM=VALUE"), "{e}");
        assert!(parse_args(&args(&["../x"])).is_err());
    }

    /// An index like the initramfs's: the names the kernel asks for resolve by module name
    /// (`nls_cp437`, `nls_iso8859-1`) or by alias (`crypto-cmac`, `fs-nfs4`, `fs-cifs`).
    fn index() -> crate::modindex::ModIndex {
        crate::modindex::ModIndex::parse(
            Path::new("/lib/modules/k"),
            "kernel/crypto/cmac.ko:\n\
             kernel/crypto/ctr.ko:\n\
             kernel/crypto/gcm.ko: kernel/crypto/ghash-generic.ko kernel/crypto/gf128mul.ko\n\
             kernel/crypto/ghash-generic.ko: kernel/crypto/gf128mul.ko\n\
             kernel/crypto/gf128mul.ko:\n\
             kernel/fs/nls/nls_cp437.ko:\n\
             kernel/fs/nls/nls_iso8859-1.ko:\n\
             kernel/fs/nfs/nfs.ko: kernel/net/sunrpc/sunrpc.ko\n\
             kernel/fs/nfs/nfsv4.ko: kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko\n\
             kernel/net/sunrpc/sunrpc.ko:\n\
             kernel/fs/smb/client/cifs.ko:\n",
            "alias crypto-cmac cmac\n\
             alias cmac cmac\n\
             alias crypto-ctr ctr\n\
             alias crypto-rfc3686 ctr\n\
             alias crypto-gcm gcm\n\
             alias crypto-ghash ghash_generic\n\
             alias crypto-ghash-generic ghash_generic\n\
             alias fs-nfs nfs\n\
             alias fs-nfs4 nfsv4\n\
             alias nfs4 nfsv4\n\
             alias fs-cifs cifs\n\
             alias smb3 cifs\n",
            "softdep cifs pre: ccm\n",
            "kernel/crypto/hmac.ko\n",
        )
    }

    /// A loader over `index()` whose sysfs says `loaded` are in the kernel (no finit_module).
    fn loader(t: &Path, loaded: &[&str]) -> Loader {
        let _ = std::fs::remove_dir_all(t);
        for m in loaded {
            std::fs::create_dir_all(t.join(m)).unwrap();
            std::fs::write(t.join(m).join("initstate"), "live\n").unwrap();
        }
        let mut l = Loader::new(index(), HashMap::new());
        l.set_sys_module(t);
        l
    }

    #[test]
    fn names_the_kernel_asks_for_resolve_through_the_index() {
        let t = std::env::temp_dir().join(format!("lb-modprobe-{}", std::process::id()));
        let l = loader(&t, &["sunrpc"]);
        for (name, want) in [
            ("crypto-cmac", vec!["cmac"]),
            ("crypto-ctr", vec!["ctr"]),
            ("crypto-gcm", vec!["gf128mul", "ghash_generic", "gcm"]),
            ("crypto-ghash", vec!["gf128mul", "ghash_generic"]),
            ("fs-nfs4", vec!["nfs", "nfsv4"]),
            ("nfsv4", vec!["nfs", "nfsv4"]),
            ("fs-cifs", vec!["cifs"]),
            ("nls_cp437", vec!["nls_cp437"]),
            ("nls_iso8859-1", vec!["nls_iso8859_1"]),
        ] {
            assert_eq!(plan(&l, name).unwrap(), want, "{name}");
        }
        // Built in, or in the kernel already: nothing to insert.
        assert!(plan(&l, "crypto-hmac").is_err(), "no such alias here");
        assert_eq!(plan(&l, "hmac").unwrap(), Vec::<String>::new());
        assert_eq!(plan(&l, "sunrpc").unwrap(), Vec::<String>::new());
        // The kernel's first try for an instance ("cmac(aes)") matches no alias: not found, so
        // it goes on to the template.
        for name in ["crypto-cmac(aes)", "crypto-cmac(aes)-all", "net-pf-10"] {
            let e = plan(&l, name).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::NotFound, "{name}");
        }
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn exit_status_and_messages() {
        let t = std::env::temp_dir().join(format!("lb-modprobe-run-{}", std::process::id()));
        let l = loader(&t, &["cmac"]);
        let run_with = |a: &[&str]| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run(&l, &parse_args(&args(a)).unwrap(), &mut out, &mut err);
            (
                code,
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            )
        };
        // Already loaded: success without inserting anything.
        assert_eq!(
            run_with(&["-q", "--", "crypto-cmac"]),
            (0, "".into(), "".into())
        );
        // Built in: success.
        assert_eq!(run_with(&["-q", "--", "hmac"]).0, 0);
        // Not here: 1, silent with -q, a message without.
        assert_eq!(
            run_with(&["-q", "--", "net-pf-10"]),
            (1, "".into(), "".into())
        );
        let (code, _, err) = run_with(&["net-pf-10"]);
        assert_eq!(code, 1);
        assert!(
            err.contains("net-pf-10") && err.contains("neither in this environment"),
            "{err}"
        );
        // Here but its file is missing (this index points nowhere): 1 and said even with -q.
        let (code, _, err) = run_with(&["-q", "--", "fs-cifs"]);
        assert_eq!(code, 1);
        assert!(err.contains("cifs.ko"), "{err}");
        // -n lists the files in load order, inserts nothing.
        let (code, out, _) = run_with(&["-n", "crypto-gcm"]);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "insmod /lib/modules/k/kernel/crypto/gf128mul.ko\n\
             insmod /lib/modules/k/kernel/crypto/ghash-generic.ko\n\
             insmod /lib/modules/k/kernel/crypto/gcm.ko\n"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }

    /// The initramfs built from the repository's `initramfs/modules.list` for the real kernel
    /// carries every module the kernel asks modprobe for while Lifeboat mounts its stores:
    /// cifs's SMB 3 crypto, nfs's versions, the character sets of vfat and exfat.
    #[test]
    fn the_real_initramfs_answers_the_kernels_requests() {
        let Some(dir) = crate::initramfs::test_modules_dir() else {
            crate::errln!("note: no kernel modules tree found (run scripts/setup); skipping");
            return;
        };
        let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("initramfs/modules.list");
        let items = crate::initramfs::modlist::load(&list).unwrap();
        let tree = crate::initramfs::kmods::ModuleTree::scan(&dir).unwrap();
        let mut notes = Vec::new();
        let roots = tree.select(&items, &mut notes).unwrap();
        let plan = tree.closure(&roots, &mut notes).unwrap();
        let ix = crate::modindex::ModIndex::parse(
            Path::new("/x"),
            &plan.modules_dep(),
            &plan.modules_alias(),
            &plan.modules_softdep(),
            &std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default(),
        );
        use crate::modindex::Resolved;
        for name in [
            // cifs, SMB 3: signing (cmac(aes)), pre-authentication (sha512), encryption
            // (gcm(aes) = ctr + ghash, ccm(aes)); hmac, sha256, aes and md5 are built into
            // Debian's kernel (registered at boot, never asked for).
            "fs-cifs",
            "crypto-cmac",
            "crypto-sha512",
            "crypto-gcm",
            "crypto-ctr",
            "crypto-ghash",
            "crypto-ccm",
            "crypto-ecb",
            // nfs asks for its version modules by these names; mount -t nfs4 for fs-nfs4.
            "fs-nfs",
            "nfsv4",
            "nfsv3",
            "fs-nfs4",
            // vfat's codepage and iocharset, exfat's.
            "nls_cp437",
            "nls_ascii",
            "nls_utf8",
            "nls_iso8859-1",
            "fs-vfat",
            "fs-exfat",
            "fs-fuse",
        ] {
            match ix.resolve(name) {
                Resolved::Modules(ms) => {
                    for m in ms {
                        assert!(ix.deps.contains_key(&m), "{name}: {m} not in modules.dep");
                    }
                }
                Resolved::Builtin => {}
                Resolved::Unknown => panic!("the initramfs cannot answer a request for {name}"),
            }
        }
    }
}
