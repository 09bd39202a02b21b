//! The kernel-module index shared by the initramfs builder and the running environment: module
//! names (`-` and `_` are the same, file names to module names), modprobe's alias patterns, and
//! the depmod text indexes (`modules.dep`, `modules.alias`, `modules.softdep`,
//! `modules.builtin`) as the builder writes them (`initramfs::kmods`) and `init::modules` reads
//! them to load drivers at boot.
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Canonical module name: `-` and `_` are equivalent in module names; the kernel uses `_`.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file name such as `crc32c-intel.ko` or `ext4.ko.xz`.
pub fn module_name_of(file_name: &str) -> Option<String> {
    let stem = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"]
        .iter()
        .find_map(|s| file_name.strip_suffix(s))?;
    if stem.is_empty() {
        return None;
    }
    Some(canonical(stem))
}

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

/// Shell-style pattern match as modprobe uses for aliases: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub fn glob_match(pat: &str, text: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, t[ti]) {
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the bracket class starting at `p[i] == '['`; returns (matched, index after
/// the class), or None when the class is not closed (then '[' is literal).
fn class(p: &[char], i: usize, c: char) -> Option<(bool, usize)> {
    let mut j = i + 1;
    let neg = matches!(p.get(j), Some('!') | Some('^'));
    if neg {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    while j < p.len() && (p[j] != ']' || first) {
        first = false;
        if j + 2 < p.len() && p[j + 1] == '-' && p[j + 2] != ']' {
            if p[j] <= c && c <= p[j + 2] {
                hit = true;
            }
            j += 3;
        } else {
            if p[j] == c {
                hit = true;
            }
            j += 1;
        }
    }
    if j >= p.len() {
        return None;
    }
    Some((hit != neg, j + 1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(
            module_name_of("crc32c-intel.ko").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(module_name_of("ext4.ko.xz").as_deref(), Some("ext4"));
        assert_eq!(module_name_of("modules.dep"), None);
        assert_eq!(module_name_of(".ko"), None);
        assert_eq!(canonical("usb-storage"), "usb_storage");
    }

    pub(crate) fn index() -> ModIndex {
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
    fn glob() {
        assert!(glob_match(
            "pci:v00008086d*sv*sd*bc01sc06i01*",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
        ));
        assert!(!glob_match(
            "pci:v00008086d*sv*sd*bc01sc06i01*",
            "pci:v00001022d00002922sv0sd0bc01sc06i00"
        ));
        assert!(glob_match("crypto-crc32c", "crypto-crc32c"));
        assert!(!glob_match("crypto-crc32c", "crypto-crc32"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("x[0-9]y", "x5y"));
        assert!(!glob_match("x[!0-9]y", "x5y"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(glob_match("acpi*:PNP0303:*", "acpi:PNP0303:PNP030B:"));
        assert!(glob_match("[x", "[x"));
    }

    /// The real index the builder writes for the real kernel resolves the names the image
    /// helper asks for.
    #[test]
    fn real_kernel_names_resolve() {
        let Some(dir) = crate::initramfs::test_modules_dir() else {
            crate::errln!("note: no kernel modules tree found (run scripts/setup); skipping");
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
