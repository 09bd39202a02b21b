//! Kernel-module loading in the running environment: reads the depmod-format indexes the
//! initramfs builder wrote under `/lib/modules/<release>/` (`modules.dep`, `modules.alias`,
//! `modules.softdep`, `modules.builtin`), matches device modaliases against the alias patterns
//! like modprobe, and loads a module after its dependencies with `finit_module`.
//! [`load_by_name`] is the entry point for any process in the environment (e.g. before a mount).
use crate::error::{Error, Result};
use crate::initramfs::kmods::glob_match;
use crate::initramfs::modinfo::{canonical, module_name_of};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The module indexes of one kernel.
#[derive(Debug, Default, Clone)]
pub struct ModIndex {
    pub dir: PathBuf,
    /// Canonical name → (path relative to `dir`, dependencies in modules.dep order: load them
    /// from the last to the first).
    pub deps: HashMap<String, (String, Vec<String>)>,
    /// (pattern, canonical module name), in file order.
    pub aliases: Vec<(String, String)>,
    /// Canonical name → (pre, post) soft dependencies (module names or aliases).
    pub softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    pub builtin: HashSet<String>,
}

fn name_of_path(p: &str) -> Option<String> {
    module_name_of(p.rsplit('/').next().unwrap_or(p))
}

impl ModIndex {
    /// Parses the index texts (any may be empty).
    pub fn parse(dir: &Path, dep: &str, alias: &str, softdep: &str, builtin: &str) -> ModIndex {
        let mut ix = ModIndex {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for l in dep.lines() {
            let Some((m, rest)) = l.split_once(':') else {
                continue;
            };
            let Some(name) = name_of_path(m.trim()) else {
                continue;
            };
            let ds = rest.split_whitespace().filter_map(name_of_path).collect();
            ix.deps.insert(name, (m.trim().to_string(), ds));
        }
        for l in alias.lines() {
            let mut w = l.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                ix.aliases.push((pat.to_string(), canonical(m)));
            }
        }
        for l in softdep.lines() {
            let mut w = l.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut into_post = None;
            for t in w {
                match t {
                    "pre:" => into_post = Some(false),
                    "post:" => into_post = Some(true),
                    t => match into_post {
                        Some(false) => pre.push(t.to_string()),
                        Some(true) => post.push(t.to_string()),
                        None => {}
                    },
                }
            }
            let e = ix.softdeps.entry(canonical(m)).or_default();
            e.0.extend(pre);
            e.1.extend(post);
        }
        for l in builtin.lines() {
            if let Some(n) = name_of_path(l.trim()) {
                ix.builtin.insert(n);
            }
        }
        ix
    }

    /// Reads the indexes in `dir` (missing files count as empty).
    pub fn load(dir: &Path) -> Result<ModIndex> {
        if !dir.is_dir() {
            return Err(Error::not_found("no kernel modules for the running kernel").at_path(dir));
        }
        let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        Ok(ModIndex::parse(
            dir,
            &rd("modules.dep"),
            &rd("modules.alias"),
            &rd("modules.softdep"),
            &rd("modules.builtin"),
        ))
    }

    /// The modules whose alias patterns match `modalias` (each once, in index order).
    pub fn match_alias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pat, m) in &self.aliases {
            // Cheap rejection on the literal head of the pattern before the full glob match.
            let head = &pat[..pat.find(['*', '?', '[']).unwrap_or(pat.len())];
            if !modalias.starts_with(head) {
                continue;
            }
            if glob_match(pat, modalias) && !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// What `name` means: a module (by name), a builtin, or the modules an alias resolves to.
    pub fn resolve(&self, name: &str) -> Resolved {
        let c = canonical(name);
        if self.deps.contains_key(&c) {
            return Resolved::Modules(vec![c]);
        }
        if self.builtin.contains(&c) {
            return Resolved::Builtin;
        }
        let m = self.match_alias(name);
        if m.is_empty() {
            Resolved::Unknown
        } else {
            Resolved::Modules(m)
        }
    }

    /// Load order for `name`: its hard dependencies (deepest first), then itself.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        match self.deps.get(name) {
            Some((_, ds)) => ds.iter().rev().cloned().chain([name.to_string()]).collect(),
            None => vec![name.to_string()],
        }
    }
}

/// The result of resolving a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Modules(Vec<String>),
    Builtin,
    Unknown,
}

/// Directory of the running kernel's modules: `/lib/modules/<release>`.
pub fn running_modules_dir() -> PathBuf {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rel = rel.trim();
    if !rel.is_empty() {
        return Path::new("/lib/modules").join(rel);
    }
    // /proc not mounted: take the only version present.
    let mut v: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v.pop()
        .unwrap_or_else(|| PathBuf::from("/lib/modules/unknown"))
}

/// Module parameters given on the kernel command line as `module.param=value`.
pub fn cmdline_module_params(cmdline: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in super::cmdline::parse_pairs(cmdline) {
        let Some((m, p)) = k.split_once('.') else {
            continue;
        };
        if m.is_empty() || p.is_empty() || m == "lifeboat" || k.contains('/') {
            continue;
        }
        let val = if v.contains(char::is_whitespace) {
            format!("{p}=\"{v}\"")
        } else {
            format!("{p}={v}")
        };
        let e = out.entry(canonical(m)).or_default();
        if !e.is_empty() {
            e.push(' ');
        }
        e.push_str(&val);
    }
    out
}

/// Loads modules of one kernel; safe to share between threads (loads are serialised).
pub struct Loader {
    pub index: ModIndex,
    params: HashMap<String, String>,
    loaded: Mutex<HashSet<String>>,
    /// Names that failed to load, so a uevent storm does not retry them again and again.
    failed: Mutex<HashSet<String>>,
    sys_module: PathBuf,
}

impl Loader {
    pub fn new(index: ModIndex, params: HashMap<String, String>) -> Loader {
        Loader {
            index,
            params,
            loaded: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashSet::new()),
            sys_module: PathBuf::from("/sys/module"),
        }
    }

    /// The loader for the running kernel (indexes read once per process).
    pub fn system() -> Result<&'static Loader> {
        static L: OnceLock<std::result::Result<Loader, String>> = OnceLock::new();
        let l = L.get_or_init(|| {
            let dir = running_modules_dir();
            let cmd = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            ModIndex::load(&dir)
                .map(|ix| Loader::new(ix, cmdline_module_params(&cmd)))
                .map_err(|e| e.to_string())
        });
        l.as_ref().map_err(|e| Error::not_found(e.clone()))
    }

    /// Whether the kernel already has `name` (loaded, loading, or built in with a sysfs entry).
    pub fn is_loaded(&self, name: &str) -> bool {
        if self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
        {
            return true;
        }
        let d = self.sys_module.join(name);
        d.join("initstate").exists() || (self.index.builtin.contains(name) && d.exists())
    }

    /// Inserts one module file (its dependencies must already be in).
    fn insert(&self, name: &str) -> Result<bool> {
        if self.is_loaded(name) {
            return Ok(false);
        }
        let (rel, _) = self.index.deps.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "module {name} is not in this environment's modules.dep"
            ))
        })?;
        let path = self.index.dir.join(rel);
        let f = std::fs::File::open(&path).map_err(|e| Error::io("open the module", &path, e))?;
        let params = self.params.get(name).cloned().unwrap_or_default();
        let params = CString::new(params).unwrap_or_default();
        let t = std::time::Instant::now();
        let r = nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty());
        super::console::kmsg(
            7,
            &format!("module {name}: {r:?} in {} ms", t.elapsed().as_millis()),
        );
        match r {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {
                self.loaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string());
                Ok(true)
            }
            Err(e) => Err(Error::io(
                "load the kernel module (finit_module)",
                &path,
                std::io::Error::from_raw_os_error(e as i32),
            )),
        }
    }

    /// Loads `name` (a canonical module name) with soft pre-dependencies, hard dependencies,
    /// itself, then soft post-dependencies. Returns the modules newly inserted.
    pub fn load_module(&self, name: &str) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mut visiting = BTreeSet::new();
        self.load_rec(name, &mut done, &mut visiting, 0)?;
        Ok(done)
    }

    fn load_soft(
        &self,
        list: &[String],
        done: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
        depth: u32,
    ) {
        for s in list {
            if let Resolved::Modules(ms) = self.index.resolve(s) {
                for m in ms {
                    // A missing soft dependency is not fatal (that is what "soft" means).
                    if let Err(e) = self.load_rec(&m, done, visiting, depth + 1) {
                        super::console::kmsg(4, &format!("soft dependency {m}: {e}"));
                    }
                }
            }
        }
    }

    fn load_rec(
        &self,
        name: &str,
        done: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
        depth: u32,
    ) -> Result<()> {
        if depth > 16 || !visiting.insert(name.to_string()) || self.is_loaded(name) {
            return Ok(());
        }
        if self.index.builtin.contains(name) && !self.index.deps.contains_key(name) {
            return Ok(());
        }
        let (pre, post) = self.index.softdeps.get(name).cloned().unwrap_or_default();
        self.load_soft(&pre, done, visiting, depth);
        for m in self.index.load_order(name) {
            if self.insert(&m)? {
                done.push(m);
            }
        }
        self.load_soft(&post, done, visiting, depth);
        Ok(())
    }

    /// Loads every module matching `modalias`; failures are logged once per module.
    pub fn load_for_alias(&self, modalias: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.index.match_alias(modalias) {
            if self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&m)
            {
                continue;
            }
            match self.load_module(&m) {
                Ok(v) => out.extend(v),
                Err(e) => {
                    super::console::kmsg(4, &format!("{modalias}: module {m}: {e}"));
                    self.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(m);
                }
            }
        }
        out
    }

    /// Loads a module by name or alias (see [`load_by_name`]).
    pub fn load_by_name(&self, name: &str) -> Result<Vec<String>> {
        let c = canonical(name);
        if self.is_loaded(&c) {
            return Ok(Vec::new());
        }
        match self.index.resolve(name) {
            Resolved::Builtin => Ok(Vec::new()),
            Resolved::Modules(ms) => {
                let mut out = Vec::new();
                let mut last_err = None;
                let n = ms.len();
                for m in ms {
                    match self.load_module(&m) {
                        Ok(v) => out.extend(v),
                        Err(e) => last_err = Some(e),
                    }
                }
                match last_err {
                    // modprobe semantics: an alias is satisfied when any of its modules loads.
                    Some(e) if out.is_empty() || n == 1 => Err(e),
                    _ => Ok(out),
                }
            }
            Resolved::Unknown => {
                if self.sys_module.join(&c).exists() {
                    return Ok(Vec::new());
                }
                Err(Error::not_found(format!(
                    "kernel module {name:?} is neither in this environment ({}) nor built into the kernel",
                    self.index.dir.display()
                )))
            }
        }
    }
}

/// Loads the kernel module `name` — a module name (`exfat`, `usb-storage`) or an alias
/// (`fs-exfat`) — after its dependencies. Ok when it is already loaded or built in.
/// Works from any process in the Lifeboat environment (not only PID 1).
pub fn load_by_name(name: &str) -> Result<()> {
    Loader::system()?.load_by_name(name).map(|_| ())
}

/// Every `modalias` value under `root` (normally `/sys/devices`), sorted, without symlinks.
pub fn scan_modaliases(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(s) = std::fs::read_to_string(e.path()) {
                    let s = s.trim();
                    if !s.is_empty() {
                        out.insert(s.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Coldplug: loads modules for every device present, repeating while loading made new devices
/// appear (a host controller's driver reveals the disks behind it). Returns the modules loaded.
pub fn coldplug(loader: &Loader, sys_devices: &Path, max_passes: usize) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut loaded = Vec::new();
    for _ in 0..max_passes {
        let now = scan_modaliases(sys_devices);
        let new: Vec<String> = now.into_iter().filter(|a| !seen.contains(a)).collect();
        if new.is_empty() {
            break;
        }
        let before = loaded.len();
        for a in new {
            loaded.extend(loader.load_for_alias(&a));
            seen.insert(a);
        }
        // Devices that appear later are announced by uevents (the listener runs before the
        // first pass); another pass is only a safety net after a pass that loaded something.
        if loaded.len() == before {
            break;
        }
    }
    let mut dedup = HashSet::new();
    loaded.retain(|m| dedup.insert(m.clone()));
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ModIndex {
        ModIndex::parse(
            Path::new("/lib/modules/k"),
            "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko\n\
             kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko\n\
             kernel/drivers/ata/libata.ko:\n\
             kernel/fs/exfat/exfat.ko: kernel/fs/nls/nls_base.ko\n\
             kernel/fs/nls/nls_base.ko:\n\
             kernel/drivers/usb/storage/usb-storage.ko:\n\
             kernel/fs/ext4/ext4.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n",
            "alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
             alias fs-exfat exfat\n\
             alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage\n\
             alias crypto-crc32c crc32c_generic\n\
             alias crc32c crc32c_generic\n",
            "softdep ext4 pre: crypto-crc32c\n",
            "kernel/drivers/scsi/sd_mod.ko\n",
        )
    }

    #[test]
    fn parses_indexes() {
        let ix = index();
        assert_eq!(ix.deps.len(), 8);
        assert_eq!(ix.deps["ahci"].1, ["libahci", "libata"]);
        assert_eq!(ix.load_order("ahci"), ["libata", "libahci", "ahci"]);
        assert_eq!(ix.load_order("libata"), ["libata"]);
        assert_eq!(
            ix.softdeps["ext4"],
            (vec!["crypto-crc32c".to_string()], vec![])
        );
        assert!(ix.builtin.contains("sd_mod"));
        assert!(ix.deps.contains_key("usb_storage"), "names are canonical");
    }

    #[test]
    fn alias_matching() {
        let ix = index();
        assert_eq!(
            ix.match_alias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert!(ix
            .match_alias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i00")
            .is_empty());
        assert_eq!(
            ix.match_alias("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert_eq!(
            ix.resolve("fs-exfat"),
            Resolved::Modules(vec!["exfat".into()])
        );
        assert_eq!(ix.resolve("exfat"), Resolved::Modules(vec!["exfat".into()]));
        assert_eq!(
            ix.resolve("usb-storage"),
            Resolved::Modules(vec!["usb_storage".into()])
        );
        assert_eq!(ix.resolve("sd-mod"), Resolved::Builtin);
        assert_eq!(ix.resolve("nope"), Resolved::Unknown);
    }

    #[test]
    fn module_params_from_cmdline() {
        let p = cmdline_module_params(
            "console=ttyS0 usb-storage.delay_use=0 usb_storage.quirks=\"a b\" lifeboat.run=x BOOT_IMAGE=/a.b/c",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p["usb_storage"], "delay_use=0 quirks=\"a b\"");
    }

    #[test]
    fn loader_against_fake_sysfs() {
        let t = std::env::temp_dir().join(format!("lb-mod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("libata")).unwrap();
        std::fs::write(t.join("libata/initstate"), "live\n").unwrap();
        std::fs::create_dir_all(t.join("sd_mod")).unwrap();
        let mut l = Loader::new(index(), HashMap::new());
        l.sys_module = t.clone();
        assert!(l.is_loaded("libata"));
        assert!(l.is_loaded("sd_mod"), "builtin with a sysfs dir");
        assert!(!l.is_loaded("ahci"));
        // Already loaded / built in: nothing to do, no finit_module call.
        assert!(l.load_by_name("libata").unwrap().is_empty());
        assert!(l.load_by_name("sd-mod").unwrap().is_empty());
        let e = l.load_by_name("no_such_thing").unwrap_err();
        assert!(e.to_string().contains("no_such_thing"), "{e}");
        // A module whose file is missing reports the path.
        let e = l.load_by_name("fs-exfat").unwrap_err();
        assert!(e.to_string().contains("nls_base.ko"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn modalias_scan_skips_symlinks() {
        let t = std::env::temp_dir().join(format!("lb-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("pci0/0000:00:01.0/virtio0")).unwrap();
        std::fs::write(t.join("pci0/0000:00:01.0/modalias"), "pci:v1AF4\n").unwrap();
        std::fs::write(
            t.join("pci0/0000:00:01.0/virtio0/modalias"),
            "virtio:d00000002v00001AF4\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(t.join("pci0"), t.join("pci0/0000:00:01.0/loop")).unwrap();
        let v: Vec<String> = scan_modaliases(&t).into_iter().collect();
        assert_eq!(v, ["pci:v1AF4", "virtio:d00000002v00001AF4"]);
        std::fs::remove_dir_all(&t).unwrap();
    }

    /// The real index the builder writes for the real kernel resolves the names the image
    /// helper asks for.
    #[test]
    fn real_kernel_names_resolve() {
        let Some(dir) = crate::initramfs::test_modules_dir() else {
            eprintln!("note: no kernel modules tree found (run scripts/setup); skipping");
            return;
        };
        let tree = crate::initramfs::kmods::ModuleTree::scan(&dir).unwrap();
        let mut notes = Vec::new();
        let items =
            crate::initramfs::modlist::parse("exfat\nvfat\next4\nusb_storage\n", Path::new("l"))
                .unwrap();
        let roots = tree.select(&items, &mut notes).unwrap();
        let plan = tree.closure(&roots, &mut notes).unwrap();
        let ix = ModIndex::parse(
            Path::new("/x"),
            &plan.modules_dep(),
            &plan.modules_alias(),
            &plan.modules_softdep(),
            "",
        );
        for (name, want) in [
            ("fs-exfat", "exfat"),
            ("fs-vfat", "vfat"),
            ("fs-ext4", "ext4"),
            ("usb-storage", "usb_storage"),
        ] {
            match ix.resolve(name) {
                Resolved::Modules(m) => assert!(m.contains(&want.to_string()), "{name}: {m:?}"),
                r => panic!("{name}: {r:?}"),
            }
        }
        let order = ix.load_order("vfat");
        assert_eq!(order.last().map(String::as_str), Some("vfat"));
        assert!(order.iter().any(|m| m == "fat"), "{order:?}");
    }
}
