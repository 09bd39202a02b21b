//! Kernel-module loading in the running environment: reads the depmod-format indexes the
//! initramfs builder wrote under `/lib/modules/<release>/` (parsed by [`crate::modindex`], which
//! build and boot share), matches device modaliases against the alias patterns like modprobe,
//! and loads a module after its dependencies with `finit_module`.
//! [`load_by_name`] is the entry point for any process in the environment (e.g. before a mount).
use crate::error::{Error, Result};
use crate::modindex::canonical;
pub use crate::modindex::{ModIndex, Resolved};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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

/// The (module, parameter) of a command-line key that is a module parameter
/// (`nvme_core.default_ps_max_latency_us`); None for other keys (`console`, `lifeboat.run`, a
/// path with a dot).
pub fn module_param_key(k: &str) -> Option<(&str, &str)> {
    let (m, p) = k.split_once('.')?;
    if m.is_empty() || p.is_empty() || m == "lifeboat" || k.contains('/') {
        return None;
    }
    Some((m, p))
}

/// Module parameters given on the kernel command line as `module.param=value`.
pub fn cmdline_module_params(cmdline: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in crate::kcmdline::parse_pairs(cmdline) {
        let Some((m, p)) = module_param_key(&k) else {
            continue;
        };
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

/// Loads modules of one kernel; safe to share between threads (the kernel inserts a module
/// loaded twice at once only once; see [`BESIDE_OTHERS`]).
pub struct Loader {
    pub index: ModIndex,
    params: HashMap<String, String>,
    loaded: Mutex<HashSet<String>>,
    /// Names that failed to load, so a uevent storm does not retry them again and again.
    failed: Mutex<HashSet<String>>,
    sys_module: PathBuf,
    /// This CPU's modalias (`/sys/devices/system/cpu/modalias`), read when first needed.
    cpu: OnceLock<String>,
}

impl Loader {
    pub fn new(index: ModIndex, params: HashMap<String, String>) -> Loader {
        Loader {
            index,
            params,
            loaded: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashSet::new()),
            sys_module: PathBuf::from("/sys/module"),
            cpu: OnceLock::new(),
        }
    }

    /// Reads "is it loaded" from `dir` instead of `/sys/module` (tests).
    #[cfg(test)]
    pub(crate) fn set_sys_module(&mut self, dir: &Path) {
        self.sys_module = dir.to_path_buf();
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

    /// Whether module `m` can run on this CPU: a module that declares CPU features (a `cpu:`
    /// alias, such as `crct10dif_pclmul` needing PCLMULQDQ) needs one of its patterns to match
    /// the CPU's modalias; others always can. An alias with alternatives (`crypto-crct10dif`:
    /// the generic code and the PCLMUL one) then loads only what can work, instead of having
    /// the kernel refuse the rest (`ENODEV`, 85 ms under QEMU's TCG, whose CPU has no PCLMUL).
    pub fn fits_cpu(&self, m: &str) -> bool {
        let mut patterns = self
            .index
            .aliases
            .iter()
            .filter(|(p, n)| n == m && p.starts_with("cpu:"))
            .peekable();
        if patterns.peek().is_none() {
            return true;
        }
        let cpu = self.cpu.get_or_init(|| {
            std::fs::read_to_string("/sys/devices/system/cpu/modalias")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        });
        // Unknown CPU (no sysfs): let the kernel decide, as before.
        cpu.is_empty() || patterns.any(|(p, _)| crate::modindex::glob_match(p, cpu))
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
                for m in ms.into_iter().filter(|m| self.fits_cpu(m)) {
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
            Resolved::Modules(mut ms) => {
                // Of an alias's alternatives, those this CPU can run (all when none can: the
                // kernel's refusal is then the error to report).
                if ms.len() > 1 && ms.iter().any(|m| self.fits_cpu(m)) {
                    ms.retain(|m| self.fits_cpu(m));
                }
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

/// Before a mount: loads the module of filesystem `fs` (`ext4`, `vfat`, `cifs`, `nfs`…) when
/// `/proc/filesystems` does not list it yet; a failure is only said on stderr (the mount that
/// follows reports the error that matters). What the filesystem needs while mounting (character
/// sets, crypto templates, `nfsv4`) the kernel asks for itself through modprobe (in the
/// environment: `init::modprobe`). On a host the module is usually loaded or built in already.
///
/// The module may be loading already (PID 1 loads the store filesystems' in the background
/// during the boot): its `/sys/module/NAME/initstate` then says `coming` and the kernel
/// registers the filesystem only at the end of its init, so this waits (up to
/// [`FS_MODULE_WAIT`]) until `/proc/filesystems` lists it or the module is no longer coming.
pub fn load_fs_module(fs: &str) {
    let listed = || {
        std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().last() == Some(fs))
    };
    if listed() {
        return;
    }
    // PID 1 still loading the store filesystems' modules: wait for it rather than load the
    // same module file again beside it (the kernel would unpack and check it twice).
    let t0 = std::time::Instant::now();
    while Path::new(FS_MODULES_LOADING).exists() && !listed() && t0.elapsed() < FS_MODULE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if listed() {
        return;
    }
    if let Err(e) = load_by_name(fs) {
        crate::errln!("lifeboat: could not load the {fs} module: {e}");
    }
    let state = Path::new("/sys/module")
        .join(canonical(fs))
        .join("initstate");
    let t0 = std::time::Instant::now();
    while !listed() && t0.elapsed() < FS_MODULE_WAIT {
        let coming = std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "coming");
        if !coming {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Exists while PID 1 loads the store filesystems' modules in the background (boot step
/// `fs-modules`): [`load_fs_module`] waits for it to go.
pub const FS_MODULES_LOADING: &str = "/run/lifeboat/fs-modules-loading";

/// How long [`load_fs_module`] waits for a module another process is loading.
pub const FS_MODULE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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

/// The drivers coldplug loads beside the others, each on a thread of its own; every other
/// driver is loaded one at a time, as before.
///
/// A driver's init often waits rather than computes: AHCI's took 382 ms under QEMU's TCG,
/// probing six empty SATA ports, while NVMe's chain (its CRC modules, with the kernel's own
/// module requests) took 420 ms and virtio's 110 ms, one after the other; side by side the
/// slowest sets the time. Only these three: their devices interrupt by MSI/MSI-X, not on a
/// shared line. Loading everything four at a time once made the kernel panic in CI: the
/// am53c974 driver (`esp_scsi`) took an interrupt on its shared line before it was ready to
/// (`esp_reset_cleanup`, a NULL pointer) while mptsas and xhci loaded beside it. The kernel
/// copes with the loads themselves: a module loaded twice at once is inserted once (the second
/// load waits, then gets `EEXIST`, taken as success), and a module needing symbols of one still
/// initialising waits for it.
pub const BESIDE_OTHERS: &[&str] = &["ahci", "nvme", "virtio_pci"];

/// `f` of each of `items` on up to `threads` threads (this one among them); the results in the
/// order of `items`.
fn map_parallel<I: Sync, T: Default + Send>(
    items: &[I],
    threads: usize,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<T>> = Mutex::new(items.iter().map(|_| T::default()).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { return };
        let v = f(item);
        out.lock().unwrap_or_else(|p| p.into_inner())[i] = v;
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, items.len().max(1)) {
            // A thread that cannot start leaves its share to the others (and to this one).
            let _ = std::thread::Builder::new()
                .name("coldplug".into())
                .spawn_scoped(s, work);
        }
        work();
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The modaliases of one coldplug pass in groups loaded beside each other: one per device whose
/// drivers are all in [`BESIDE_OTHERS`], then one of all the rest (loaded one after another).
fn coldplug_groups(index: &ModIndex, aliases: &[String]) -> Vec<Vec<String>> {
    let (beside, rest): (Vec<String>, Vec<String>) = aliases.iter().cloned().partition(|a| {
        let ms = index.match_alias(a);
        !ms.is_empty() && ms.iter().all(|m| BESIDE_OTHERS.contains(&m.as_str()))
    });
    let mut groups = vec![rest];
    groups.extend(beside.into_iter().map(|a| vec![a]));
    groups
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
        let groups = coldplug_groups(&loader.index, &new);
        let n = groups.len();
        for v in map_parallel(&groups, n, |g| {
            g.iter()
                .flat_map(|a| loader.load_for_alias(a))
                .collect::<Vec<String>>()
        }) {
            loaded.extend(v);
        }
        seen.extend(new);
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

    #[test]
    fn module_params_from_cmdline() {
        let p = cmdline_module_params(
            "console=ttyS0 usb-storage.delay_use=0 usb_storage.quirks=\"a b\" lifeboat.run=x BOOT_IMAGE=/a.b/c",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p["usb_storage"], "delay_use=0 quirks=\"a b\"");
        // The parameters odd hardware needs (README: kernel parameters), each for its module
        // (nvme_core and libata are loaded as dependencies, with these).
        let p = cmdline_module_params(
            "nvme_core.default_ps_max_latency_us=0 libata.force=1.5Gbps,noncq \
             usb-storage.quirks=152d:0578:u,0bc2:2322:u",
        );
        assert_eq!(p["nvme_core"], "default_ps_max_latency_us=0");
        assert_eq!(p["libata"], "force=1.5Gbps,noncq");
        assert_eq!(p["usb_storage"], "quirks=152d:0578:u,0bc2:2322:u");
    }

    #[test]
    fn loader_against_fake_sysfs() {
        let t = std::env::temp_dir().join(format!("lb-mod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("libata")).unwrap();
        std::fs::write(t.join("libata/initstate"), "live\n").unwrap();
        std::fs::create_dir_all(t.join("sd_mod")).unwrap();
        let mut l = Loader::new(crate::modindex::tests::index(), HashMap::new());
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
    fn coldplug_loads_side_by_side_each_alias_once_results_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let items: Vec<String> = (0..23).map(|i| format!("alias{i}")).collect();
        let calls = Mutex::new(Vec::new());
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = map_parallel(&items, 4, |a| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            calls.lock().unwrap().push(a.to_string());
            now.fetch_sub(1, Ordering::SeqCst);
            vec![format!("{a}.ko")]
        });
        let want: Vec<Vec<String>> = items.iter().map(|a| vec![format!("{a}.ko")]).collect();
        assert_eq!(out, want);
        let mut calls = calls.into_inner().unwrap();
        calls.sort();
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(calls, sorted, "every alias once");
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= 4, "{most} at once");
        // One thread, or nothing to do.
        assert_eq!(map_parallel(&items[..2], 1, |a| a.len()), [6, 6]);
        assert!(map_parallel(&[], 4, |a: &String| a.len()).is_empty());
    }

    #[test]
    fn modules_needing_cpu_features_this_cpu_lacks_are_left_out() {
        let ix = ModIndex::parse(
            Path::new("/m"),
            "kernel/crypto/crct10dif_generic.ko:\nkernel/arch/x86/crypto/crct10dif-pclmul.ko:\n",
            "alias crypto-crct10dif crct10dif_generic\n\
             alias crypto-crct10dif crct10dif_pclmul\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0081* crct10dif_pclmul\n",
            "",
            "",
        );
        let l = Loader::new(ix, HashMap::new());
        // QEMU's qemu64: no PCLMULQDQ (feature 0x81).
        l.cpu
            .set("cpu:type:x86,ven0000fam0006mod006B:feature:,0000,0001,0002,0080".into())
            .unwrap();
        assert!(l.fits_cpu("crct10dif_generic"), "no CPU alias: always");
        assert!(!l.fits_cpu("crct10dif_pclmul"));
        let l2 = Loader::new(l.index.clone(), HashMap::new());
        l2.cpu
            .set("cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0080,0081,0089".into())
            .unwrap();
        assert!(l2.fits_cpu("crct10dif_pclmul"));
        // No CPU modalias to judge by: the kernel decides.
        let l3 = Loader::new(l.index.clone(), HashMap::new());
        l3.cpu.set(String::new()).unwrap();
        assert!(l3.fits_cpu("crct10dif_pclmul"));
    }

    #[test]
    fn only_msi_drivers_load_beside_the_others() {
        let ix = ModIndex::parse(
            Path::new("/m"),
            "",
            "alias pci:v00008086d00002922* ahci\n\
             alias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
             alias pci:v00001AF4d* virtio_pci\n\
             alias pci:v00001022d00002020* am53c974\n\
             alias pci:v00001000d00000054* mptsas\n",
            "",
            "",
        );
        let a = |s: &str| s.to_string();
        let g = coldplug_groups(
            &ix,
            &[
                a("pci:v00001022d00002020sv0sd0bc01sc00i00"),
                a("pci:v00008086d00002922sv0sd0bc01sc06i01"),
                a("pci:v00001B36d00000010sv0sd0bc01sc08i02"),
                a("pci:v00001000d00000054sv0sd0bc01sc00i00"),
                a("pci:v00001AF4d00001001sv0sd0bc01sc00i00"),
                a("acpi:PNP0C0C:"),
            ],
        );
        assert_eq!(
            g,
            [
                vec![
                    a("pci:v00001022d00002020sv0sd0bc01sc00i00"),
                    a("pci:v00001000d00000054sv0sd0bc01sc00i00"),
                    a("acpi:PNP0C0C:"),
                ],
                vec![a("pci:v00008086d00002922sv0sd0bc01sc06i01")],
                vec![a("pci:v00001B36d00000010sv0sd0bc01sc08i02")],
                vec![a("pci:v00001AF4d00001001sv0sd0bc01sc00i00")],
            ]
        );
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
}
