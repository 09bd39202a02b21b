//! The kernel-module side of the initramfs: indexes a modules tree (`/lib/modules/<kver>`),
//! turns the module list into a set, closes it over `depends=` and `softdep=` from each module's
//! `.modinfo`, and writes the standard depmod text indexes (`modules.dep`, `modules.alias`,
//! `modules.softdep`) that PID 1's loader reads.
use crate::error::{Error, Result};
use crate::initramfs::modinfo::{self, ModInfo};
use crate::initramfs::modlist::Item;
use crate::modindex::{canonical, glob_match, module_name_of};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// A modules directory: which modules exist (by canonical name) and which are built in.
#[derive(Debug)]
pub struct ModuleTree {
    pub dir: PathBuf,
    /// The kernel version: the modules dir's basename.
    pub kver: String,
    /// Canonical name → path relative to `dir` (as on disk, maybe compressed).
    pub modules: BTreeMap<String, String>,
    /// Canonical names of modules built into the kernel (from `modules.builtin`).
    pub builtin: BTreeSet<String>,
}

fn rank(rel: &str) -> u8 {
    // depmod's default search order: updates/ first, then the kernel's own tree, then the rest.
    if rel.starts_with("updates/") {
        0
    } else if rel.starts_with("kernel/") {
        1
    } else {
        2
    }
}

impl ModuleTree {
    /// Indexes `dir` (walks it for `*.ko[.gz|.xz|.zst]`, reads `modules.builtin` if present).
    pub fn scan(dir: &Path) -> Result<Self> {
        let kver = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::invalid("the modules dir must be named after the kernel version")
                    .at_path(dir)
            })?
            .to_string();
        let meta =
            std::fs::metadata(dir).map_err(|e| Error::io("open the kernel modules dir", dir, e))?;
        if !meta.is_dir() {
            return Err(Error::invalid("the kernel modules dir is not a directory").at_path(dir));
        }
        let mut modules: BTreeMap<String, String> = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let rd = std::fs::read_dir(&abs).map_err(|e| Error::io("list", &abs, e))?;
            let mut names = Vec::new();
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("list", &abs, e))?;
                let ft = ent
                    .file_type()
                    .map_err(|e| Error::io("stat", ent.path(), e))?;
                let Some(n) = ent.file_name().to_str().map(String::from) else {
                    continue;
                };
                names.push((n, ft.is_dir()));
            }
            names.sort();
            for (n, is_dir) in names {
                let r = if rel.is_empty() {
                    n.clone()
                } else {
                    format!("{rel}/{n}")
                };
                if is_dir {
                    stack.push(r);
                } else if let Some(m) = module_name_of(&n) {
                    match modules.get(&m) {
                        Some(old) if rank(old) <= rank(&r) => {}
                        _ => {
                            modules.insert(m, r);
                        }
                    }
                }
            }
        }
        let mut builtin = BTreeSet::new();
        let bpath = dir.join("modules.builtin");
        match std::fs::read_to_string(&bpath) {
            Ok(t) => {
                for l in t.lines() {
                    if let Some(m) = l.rsplit('/').next().and_then(module_name_of) {
                        builtin.insert(m);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &bpath, e)),
        }
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            kver,
            modules,
            builtin,
        })
    }

    /// The set of modules the list chooses (before dependencies). Items that name a builtin are
    /// satisfied by the kernel; notes about those and about optional misses go to `notes`.
    pub fn select(&self, items: &[Item], notes: &mut Vec<String>) -> Result<BTreeSet<String>> {
        let excluded: BTreeSet<&str> = items
            .iter()
            .filter_map(|i| {
                if let Item::Exclude(n) = i {
                    Some(n.as_str())
                } else {
                    None
                }
            })
            .collect();
        let mut out = BTreeSet::new();
        for it in items {
            match it {
                Item::Dir { path, optional } => {
                    let mut any = false;
                    for (name, rel) in &self.modules {
                        if rel.starts_with(path.as_str()) {
                            any = true;
                            if !excluded.contains(name.as_str()) {
                                out.insert(name.clone());
                            }
                        }
                    }
                    if !any {
                        if *optional {
                            notes.push(format!(
                                "optional directory {path} has no modules in this kernel"
                            ));
                        } else {
                            return Err(Error::not_found(format!(
                                "module list: no modules under {path} in {}; fix the line or mark it optional with '?'",
                                self.dir.display()
                            )));
                        }
                    }
                }
                Item::Name { name, optional } => {
                    if self.modules.contains_key(name) {
                        out.insert(name.clone());
                    } else if self.builtin.contains(name) {
                        notes.push(format!("{name} is built into kernel {}", self.kver));
                    } else if *optional {
                        notes.push(format!(
                            "optional module {name} is not in kernel {}",
                            self.kver
                        ));
                    } else {
                        return Err(Error::not_found(format!(
                            "module list: kernel {} has no module {name:?} (neither a .ko nor built in); fix the name or mark it optional with '?'",
                            self.kver
                        )));
                    }
                }
                Item::Exclude(_) => {}
            }
        }
        Ok(out)
    }

    fn modinfo(&self, name: &str) -> Result<ModInfo> {
        let rel = self.modules.get(name).ok_or_else(|| {
            Error::not_found(format!("module {name} is not in {}", self.dir.display()))
        })?;
        modinfo::read_modinfo(&self.dir.join(rel))
    }

    /// Every module's aliases (reads every module's `.modinfo`; only needed to resolve a softdep
    /// that names an alias such as `crypto-crc32c`).
    fn all_aliases(&self) -> Result<Vec<(String, String)>> {
        let mut v = Vec::new();
        for name in self.modules.keys() {
            for a in self.modinfo(name)?.aliases {
                v.push((a, name.clone()));
            }
        }
        Ok(v)
    }

    /// Closes `roots` over hard dependencies (`depends=`) and soft dependencies (`softdep=`,
    /// resolved by module name or, failing that, by alias), checking each module's vermagic.
    pub fn closure(&self, roots: &BTreeSet<String>, notes: &mut Vec<String>) -> Result<Plan> {
        let mut mods: BTreeMap<String, PlanModule> = BTreeMap::new();
        let mut queue: VecDeque<(String, Option<String>)> =
            roots.iter().map(|r| (r.clone(), None)).collect();
        let mut alias_table: Option<Vec<(String, String)>> = None;
        while let Some((name, why)) = queue.pop_front() {
            if mods.contains_key(&name) {
                continue;
            }
            let info = self.modinfo(&name)?;
            if let Some(vm) = &info.vermagic {
                if vm.split_whitespace().next() != Some(self.kver.as_str()) {
                    return Err(Error::invalid(format!(
                        "module {name} was built for kernel {:?}, not {}: the modules dir does not belong to this kernel; point --modules-dir at /lib/modules/<version> of the same package as vmlinuz",
                        vm.split_whitespace().next().unwrap_or(""),
                        self.kver
                    ))
                    .at_path(self.dir.join(&self.modules[&name])));
                }
            }
            let mut hard = Vec::new();
            for d in &info.depends {
                if self.modules.contains_key(d) {
                    hard.push(d.clone());
                    queue.push_back((d.clone(), Some(name.clone())));
                } else if !self.builtin.contains(d) {
                    return Err(Error::not_found(format!(
                        "module {name} depends on {d}, which kernel {} has neither as a module nor built in; the modules tree is incomplete",
                        self.kver
                    )));
                }
            }
            for sd in &info.softdeps {
                let (pre, post) = modinfo::parse_softdep(sd);
                for s in pre.iter().chain(post.iter()) {
                    let c = canonical(s);
                    if self.modules.contains_key(&c) {
                        queue.push_back((c, Some(name.clone())));
                    } else if self.builtin.contains(&c) {
                    } else {
                        if alias_table.is_none() {
                            alias_table = Some(self.all_aliases()?);
                        }
                        let hits: Vec<&String> = alias_table
                            .iter()
                            .flatten()
                            .filter(|(pat, _)| glob_match(pat, s))
                            .map(|(_, m)| m)
                            .collect();
                        if hits.is_empty() {
                            notes.push(format!("{name}: soft dependency {s} is not a module of this kernel (built in?)"));
                        }
                        for m in hits {
                            queue.push_back((m.clone(), Some(name.clone())));
                        }
                    }
                }
            }
            let rel = self.modules[&name].clone();
            mods.insert(
                name.clone(),
                PlanModule {
                    rel,
                    info,
                    hard,
                    pulled_by: why,
                },
            );
        }
        Plan::new(self.kver.clone(), mods)
    }
}

/// One module in the image.
#[derive(Debug, Clone)]
pub struct PlanModule {
    /// Path relative to the source modules dir (maybe compressed).
    pub rel: String,
    pub info: ModInfo,
    /// Direct hard dependencies that are modules (builtins dropped).
    pub hard: Vec<String>,
    /// The module that pulled this one in, `None` when the list chose it.
    pub pulled_by: Option<String>,
}

impl PlanModule {
    /// Path inside `/lib/modules/<kver>/`: the same relative path, always uncompressed `.ko`.
    pub fn image_rel(&self) -> String {
        for s in [".ko.gz", ".ko.xz", ".ko.zst"] {
            if let Some(stem) = self.rel.strip_suffix(s) {
                return format!("{stem}.ko");
            }
        }
        self.rel.clone()
    }
}

/// The closed set of modules and their load order.
#[derive(Debug)]
pub struct Plan {
    pub kver: String,
    pub modules: BTreeMap<String, PlanModule>,
    /// Position of each module in a users-before-dependencies order (depmod's sort index).
    order: HashMap<String, usize>,
}

impl Plan {
    fn new(kver: String, modules: BTreeMap<String, PlanModule>) -> Result<Plan> {
        // Kahn's algorithm from the modules nobody uses down to the leaves.
        let mut users: HashMap<&str, usize> = modules.keys().map(|k| (k.as_str(), 0)).collect();
        for m in modules.values() {
            for d in &m.hard {
                *users.entry(d.as_str()).or_default() += 1;
            }
        }
        let mut ready: BTreeSet<&str> = users
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut order = HashMap::new();
        while let Some(&n) = ready.iter().next() {
            ready.remove(n);
            order.insert(n.to_string(), order.len());
            for d in &modules[n].hard {
                let u = users.entry(d.as_str()).or_default();
                *u -= 1;
                if *u == 0 {
                    ready.insert(d.as_str());
                }
            }
        }
        if order.len() != modules.len() {
            let cyc: Vec<&str> = modules
                .keys()
                .filter(|k| !order.contains_key(*k))
                .map(String::as_str)
                .collect();
            return Err(Error::corrupt(format!(
                "kernel modules depend on each other in a cycle: {}",
                cyc.join(", ")
            )));
        }
        Ok(Plan {
            kver,
            modules,
            order,
        })
    }

    /// The full transitive hard dependencies of `name`, ordered so that loading them from the last
    /// to the first satisfies every dependency (as in depmod's modules.dep).
    pub fn deps_of(&self, name: &str) -> Vec<&str> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = self
            .modules
            .get(name)
            .map(|m| m.hard.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(d) = stack.pop() {
            if seen.insert(d) {
                if let Some(m) = self.modules.get(d) {
                    stack.extend(m.hard.iter().map(String::as_str));
                }
            }
        }
        let mut v: Vec<&str> = seen.into_iter().collect();
        v.sort_by_key(|d| self.order.get(*d).copied().unwrap_or(usize::MAX));
        v
    }

    /// `modules.dep`: `path: dep-path dep-path ...` for every module, sorted by path.
    pub fn modules_dep(&self) -> String {
        let mut lines: Vec<String> = self
            .modules
            .iter()
            .map(|(name, m)| {
                let mut l = format!("{}:", m.image_rel());
                for d in self.deps_of(name) {
                    l.push(' ');
                    l.push_str(&self.modules[d].image_rel());
                }
                l
            })
            .collect();
        lines.sort();
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// `modules.alias`: `alias <pattern> <module>` for every alias of every module, sorted.
    pub fn modules_alias(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        for (name, m) in &self.modules {
            for a in &m.info.aliases {
                lines.push(format!("alias {a} {name}\n"));
            }
        }
        lines.sort();
        lines.dedup();
        lines.concat()
    }

    /// `modules.softdep`: `softdep <module> pre: ... post: ...` for modules that declare one.
    pub fn modules_softdep(&self) -> String {
        let mut s = String::new();
        for (name, m) in &self.modules {
            for sd in &m.info.softdeps {
                // Normalised: bare names (cifs's `softdep=gcm`) are written as `pre:`.
                let (pre, post) = modinfo::parse_softdep(sd);
                let mut line = format!("softdep {name}");
                if !pre.is_empty() {
                    line.push_str(&format!(" pre: {}", pre.join(" ")));
                }
                if !post.is_empty() {
                    line.push_str(&format!(" post: {}", post.join(" ")));
                }
                if !pre.is_empty() || !post.is_empty() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake tree: a → b → c (hard), a softdep pre on "alias-d" (an alias of d), e builtin.
    fn fake_plan() -> Plan {
        let mk = |hard: &[&str], aliases: &[&str]| PlanModule {
            rel: String::new(),
            info: ModInfo {
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            hard: hard.iter().map(|s| s.to_string()).collect(),
            pulled_by: None,
        };
        let mut m = BTreeMap::new();
        for (n, hard, al) in [
            ("a", &["b", "c"][..], &["pci:v1*"][..]),
            ("b", &["c"][..], &[][..]),
            ("c", &[][..], &["fs-c"][..]),
            ("d", &["c"][..], &[][..]),
        ] {
            let mut pm = mk(hard, al);
            pm.rel = format!("kernel/{n}.ko");
            m.insert(n.to_string(), pm);
        }
        Plan::new("k".into(), m).unwrap()
    }

    #[test]
    fn dep_order_loads_last_to_first() {
        let p = fake_plan();
        assert_eq!(p.deps_of("a"), ["b", "c"]);
        assert_eq!(p.deps_of("c"), Vec::<&str>::new());
        let dep = p.modules_dep();
        assert!(
            dep.contains("kernel/a.ko: kernel/b.ko kernel/c.ko\n"),
            "{dep}"
        );
        assert!(dep.contains("kernel/c.ko:\n"), "{dep}");
        assert_eq!(dep.lines().count(), 4);
        assert_eq!(p.modules_alias(), "alias fs-c c\nalias pci:v1* a\n");
    }

    #[test]
    fn cycle_is_an_error() {
        let mut m = BTreeMap::new();
        for (n, d) in [("x", "y"), ("y", "x")] {
            m.insert(
                n.to_string(),
                PlanModule {
                    rel: format!("{n}.ko"),
                    info: ModInfo::default(),
                    hard: vec![d.into()],
                    pulled_by: None,
                },
            );
        }
        assert!(Plan::new("k".into(), m).is_err());
    }

    #[test]
    fn image_rel_drops_compression() {
        let pm = PlanModule {
            rel: "kernel/fs/ext4/ext4.ko.xz".into(),
            info: ModInfo::default(),
            hard: vec![],
            pulled_by: None,
        };
        assert_eq!(pm.image_rel(), "kernel/fs/ext4/ext4.ko");
    }

    #[test]
    fn real_tree_selection_and_closure() {
        let Some(dir) = crate::initramfs::test_modules_dir() else {
            crate::errln!("note: no kernel modules tree found (run scripts/setup); skipping");
            return;
        };
        let tree = ModuleTree::scan(&dir).unwrap();
        assert!(
            tree.modules.contains_key("crc32c_intel"),
            "names are canonical"
        );
        let mut notes = Vec::new();
        let items =
            crate::initramfs::modlist::parse("ext4\n?no_such_mod\n", Path::new("l")).unwrap();
        let roots = tree.select(&items, &mut notes).unwrap();
        assert_eq!(roots.iter().collect::<Vec<_>>(), ["ext4"]);
        assert!(notes.iter().any(|n| n.contains("no_such_mod")));
        let plan = tree.closure(&roots, &mut notes).unwrap();
        for m in ["ext4", "jbd2", "mbcache", "crc16"] {
            assert!(
                plan.modules.contains_key(m),
                "{m} missing: {:?}",
                plan.modules.keys()
            );
        }
        // ext4's softdep pre: crypto-crc32c resolves through aliases to a crc32c module.
        assert!(
            plan.modules.keys().any(|k| k.starts_with("crc32c")),
            "{:?}",
            plan.modules.keys()
        );
        assert!(plan
            .modules_softdep()
            .contains("softdep ext4 pre: crypto-crc32c"));
        let bad = crate::initramfs::modlist::parse("no_such_mod\n", Path::new("l")).unwrap();
        assert!(tree.select(&bad, &mut notes).is_err());
        let bad_dir =
            crate::initramfs::modlist::parse("kernel/nowhere/\n", Path::new("l")).unwrap();
        assert!(tree.select(&bad_dir, &mut notes).is_err());
    }
}
