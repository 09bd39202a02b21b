//! The disks screen and the source / target pickers (drawn by `view::disks`), and the one-line
//! descriptions of a disk and a partition every screen shows.
use super::super::keys::{step_index, Key};
use super::super::safety;
use super::{App, Command, JobKind, Screen};
use crate::devices::{Disk, Partition};
use crate::jobs::fmt_bytes;

impl App {
    pub(super) fn key_disks(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.disk_sel = step_index(self.disk_sel, s, self.disks.len());
        } else if matches!(k, Key::Enter | Key::Char('n') | Key::Char('l') | Key::Right) {
            self.screen = Screen::Menu;
        } else if k == Key::Char('b') {
            return self.toggle_mmc_boot();
        }
        vec![]
    }

    /// Whether a disk has eMMC boot partitions (or they are listed as disks already): `b`
    /// then switches how they are shown.
    pub fn has_mmc_boot(&self) -> bool {
        self.mmc_boot_as_disks || self.disks.iter().any(|d| !d.mmc_boot_partitions.is_empty())
    }

    /// `b`: eMMC boot partitions as disks of their own (to clone or image them), or back under
    /// their card.
    fn toggle_mmc_boot(&mut self) -> Vec<Command> {
        if !self.has_mmc_boot() {
            self.message = Some("No eMMC boot partitions on this machine.".into());
            return vec![];
        }
        self.mmc_boot_as_disks = !self.mmc_boot_as_disks;
        self.message = Some(if self.mmc_boot_as_disks {
            "eMMC boot partitions are listed as disks of their own: choose one to clone or image \
             it (b: back under their card)."
                .into()
        } else {
            "eMMC boot partitions are shown under their card again.".into()
        });
        vec![Command::MmcBootAsDisks(self.mmc_boot_as_disks)]
    }

    pub(super) fn key_source(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.pick_sel = step_index(self.pick_sel, s, self.disks.len());
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            if let Some(d) = self.disks.get(self.pick_sel) {
                self.source = Some(d.clone());
                self.forward();
                return self.location_reads();
            }
        } else if matches!(k, Key::Esc | Key::Left | Key::Char('h')) {
            self.back();
        }
        vec![]
    }

    /// The disks of the target picker (the source removed) and why each is refused.
    pub fn targets(&self) -> Vec<(Disk, Option<String>)> {
        let needed = match self.kind {
            JobKind::Clone => self.source.as_ref().map(safety::clone_needs).unwrap_or(0),
            _ => 0,
        };
        let image_disk = self.image_disk();
        self.disks
            .iter()
            .filter(|d| self.source.as_ref().is_none_or(|s| s.name != d.name))
            .map(|d| {
                let in_use = self.in_use.get(&d.name).map(Vec::as_slice).unwrap_or(&[]);
                let mut why = safety::target_refusal(d, self.source.as_ref(), needed, in_use);
                if why.is_none() && image_disk.as_deref() == Some(d.name.as_str()) {
                    why = Some("it holds the image".into());
                }
                (d.clone(), why)
            })
            .collect()
    }

    /// The disk holding the chosen image's partition, if any.
    pub(super) fn image_disk(&self) -> Option<String> {
        let places = self.places();
        self.image.as_ref()?;
        places
            .get(self.loc.sel)
            .and_then(|p| p.part().map(|_| p.disk.clone()))
    }

    pub(super) fn key_target(&mut self, k: Key) -> Vec<Command> {
        let t = self.targets();
        if let Some(s) = k.list_step() {
            self.pick_sel = step_index(self.pick_sel, s, t.len());
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            match t.get(self.pick_sel) {
                Some((d, None)) => {
                    self.target = Some(d.clone());
                    self.forward();
                    return self.read_usage();
                }
                Some((d, Some(why))) => {
                    self.message = Some(format!("{} cannot be the target: {why}.", d.name))
                }
                None => {
                    self.message =
                        Some("No disk can be the target. Plug one in: the list refreshes.".into())
                }
            }
        } else if matches!(k, Key::Esc | Key::Left | Key::Char('h')) {
            self.back();
        }
        vec![]
    }
}

/// "sda  WDC WD5000  serial WD-123  465.8 GiB".
pub fn describe(d: &Disk) -> String {
    let mut s = d.name.clone();
    if let Some(m) = &d.model {
        s.push_str("  ");
        s.push_str(m);
    }
    if let Some(x) = &d.serial {
        s.push_str("  serial ");
        s.push_str(x);
    }
    s.push_str("  ");
    s.push_str(&fmt_bytes(d.size_bytes));
    s
}

/// The width of the filesystem column for a disk's partitions: the longest type name among
/// them (`LVM2_member`, `linux_raid_member`), at least 6, so the sizes after it line up.
pub fn fs_column(parts: &[Partition]) -> usize {
    parts
        .iter()
        .filter_map(|p| p.fs_type.as_deref())
        .map(|f| f.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(6, 20)
}

/// "sda1 ntfs "Windows" 400.0 GiB" for a partition, the filesystem in a column `fs_w` wide
/// (see [`fs_column`]).
pub fn describe_part(p: &Partition, fs_w: usize) -> String {
    let mut s = format!(
        "{:<10} {:<fs_w$}",
        p.name,
        p.fs_type.as_deref().unwrap_or("-")
    );
    match &p.label {
        Some(l) => s.push_str(&format!(" {:<16}", format!("\"{l}\""))),
        None => s.push_str(&format!(" {:<16}", "")),
    }
    s.push_str(&format!(" {:>10}", fmt_bytes(p.size_bytes)));
    s
}
