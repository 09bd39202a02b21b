//! Parses `initramfs/modules.list`, the readable choice of kernel modules for the image:
//! one item per line, `#` starts a comment.
//!   `kernel/drivers/ata/`  every module below that directory of the modules tree (has a `/`)
//!   `ahci`                 one module by name (`-` and `_` are equivalent)
//!   `?sr_mod`              optional: no error when the kernel lacks it (or the directory)
//!   `!pata_legacy`         never chosen by a directory line (still added if another module needs it)
use crate::error::{Error, Result};
use crate::modindex::canonical;
use std::path::Path;

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A directory relative to the modules dir, normalised to end with `/`.
    Dir { path: String, optional: bool },
    /// A module name (canonical, with `_`).
    Name { name: String, optional: bool },
    /// A module name excluded from directory matches.
    Exclude(String),
}

/// Parses the text of a list; errors name the line.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |why: &str| Error::invalid(format!("line {}: {why}: {line:?}", i + 1)).at_path(origin);
        if line.split_whitespace().count() != 1 {
            return Err(bad("one module name or directory per line"));
        }
        if let Some(n) = line.strip_prefix('!') {
            if n.is_empty() || n.contains('/') || n.starts_with('?') {
                return Err(bad("'!' takes a module name"));
            }
            items.push(Item::Exclude(canonical(n.trim_end_matches(".ko"))));
            continue;
        }
        let (optional, body) = match line.strip_prefix('?') {
            Some(b) => (true, b),
            None => (false, line),
        };
        if body.is_empty() {
            return Err(bad("'?' needs a module name or directory after it"));
        }
        if body.contains('/') {
            if body.starts_with('/') || body.split('/').any(|c| c == "..") {
                return Err(bad(
                    "directories are relative to the modules dir (like kernel/drivers/ata/)",
                ));
            }
            let mut path = body.trim_end_matches('/').to_string();
            path.push('/');
            items.push(Item::Dir { path, optional });
        } else {
            items.push(Item::Name {
                name: canonical(body.trim_end_matches(".ko")),
                optional,
            });
        }
    }
    Ok(items)
}

/// Reads and parses a list file.
pub fn load(path: &Path) -> Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("read the module list", path, e))?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let t = "# disks\nkernel/drivers/ata   # all of ATA\n  ahci\n?sr-mod\n?kernel/drivers/mmc/host/\n!pata_legacy\n\n";
        let items = parse(t, Path::new("l")).unwrap();
        assert_eq!(
            items,
            [
                Item::Dir {
                    path: "kernel/drivers/ata/".into(),
                    optional: false
                },
                Item::Name {
                    name: "ahci".into(),
                    optional: false
                },
                Item::Name {
                    name: "sr_mod".into(),
                    optional: true
                },
                Item::Dir {
                    path: "kernel/drivers/mmc/host/".into(),
                    optional: true
                },
                Item::Exclude("pata_legacy".into()),
            ]
        );
    }

    #[test]
    fn rejects_bad_lines_with_line_number() {
        for bad in [
            "a b",
            "/lib/modules/x/",
            "kernel/../x/",
            "!",
            "?",
            "!kernel/x/",
        ] {
            let e = parse(&format!("ok\n{bad}\n"), Path::new("l")).unwrap_err();
            assert!(e.to_string().contains("line 2"), "{bad}: {e}");
        }
    }

    /// The project's own list parses and names the essentials.
    #[test]
    fn project_list_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("initramfs/modules.list");
        let items = load(&p).unwrap();
        for need in [
            "ahci",
            "nvme",
            "xhci_pci",
            "usb_storage",
            "uas",
            "virtio_blk",
            "ext4",
            "vfat",
            "exfat",
            "hid_generic",
        ] {
            assert!(
                items
                    .iter()
                    .any(|i| matches!(i, Item::Name { name, .. } if name == need)),
                "modules.list lacks {need}"
            );
        }
    }
}
