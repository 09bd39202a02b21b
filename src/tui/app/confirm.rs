//! The confirmation screen (drawn by `view::confirm`) and the job it starts: the command line is
//! built as the CLI's own argument values (`CloneArgs`, `ImageCmd`) and rendered by
//! [`crate::cli::to_argv`], so every flag has one definition. A clone's confirmation also shows
//! what will be copied of each source partition (filesystem, used bytes, mode), read in the
//! background ([`Command::ReadUsage`]) through the same used-block plan the job uses.
use super::super::keys::Key;
use super::{describe, image_arg, App, Command, JobKind, Screen};
use crate::cli::{to_argv, Cmd};
use crate::clone::CloneArgs;
use crate::devices::Disk;
use crate::fs::PartitionUsage;
use crate::image::ImageCmd;
use crate::jobs::fmt_bytes;
use crate::jobs::jobdir::JobSpec;
use std::path::Path;

/// What a clone of a disk will copy, per partition (the used-block plan's report part).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUsage {
    pub partitions: Vec<PartitionUsage>,
    /// Bytes the copy covers (used blocks, everything outside partitions, unmapped partitions).
    pub used_bytes: u64,
    pub disk_bytes: u64,
}

impl SourceUsage {
    /// Reads the plan of the disk at `path` (read-only; its filesystems' maps).
    pub fn read(path: &Path) -> Result<SourceUsage, String> {
        let dev =
            crate::io::Device::open(path, crate::io::Access::Read).map_err(|e| e.to_string())?;
        let u = crate::fs::UsageMap::analyze(&dev);
        Ok(SourceUsage {
            used_bytes: u.used_bytes,
            disk_bytes: u.disk_size,
            partitions: u.partitions,
        })
    }
}

/// One partition in a line of the console: "p1  ext4    1.2 GiB used of   20.0 GiB  used blocks".
pub fn usage_line(p: &PartitionUsage) -> String {
    let mode = p.mode_text();
    let fs = p.filesystem.as_deref().unwrap_or("?");
    let fs = if fs.chars().count() > 9 {
        format!("{}~", fs.chars().take(8).collect::<String>())
    } else {
        fs.to_string()
    };
    format!(
        "p{:<2} {fs:<9} {:>10} used of {:>10}  {mode}",
        p.number,
        fmt_bytes(p.used_bytes),
        fmt_bytes(p.size_bytes)
    )
}
impl App {
    /// On the clone's confirmation screen: starts reading the source's used-block plan.
    pub(super) fn read_usage(&mut self) -> Vec<Command> {
        match (&self.source, self.screen, self.kind) {
            (Some(s), Screen::Confirm, JobKind::Clone) => {
                if self.usage.as_ref().is_some_and(|u| u.0 == s.path) {
                    return vec![];
                }
                self.usage = Some((s.path.clone(), None));
                vec![Command::ReadUsage(s.path.clone())]
            }
            _ => vec![],
        }
    }

    /// The clone source's plan, once read.
    pub fn source_usage(&self) -> Option<&Result<SourceUsage, String>> {
        match (&self.usage, &self.source) {
            (Some((p, r)), Some(s)) if *p == s.path => r.as_ref(),
            _ => None,
        }
    }

    /// What the confirmation screen asks to type (the target disk's kernel name).
    pub fn confirm_word(&self) -> Option<String> {
        if self.kind.destructive() {
            self.target.as_ref().map(|t| t.name.clone())
        } else {
            None
        }
    }

    #[allow(clippy::collapsible_match)]
    pub(super) fn key_confirm(&mut self, k: Key) -> Vec<Command> {
        match k {
            Key::Esc => self.back(),
            Key::Backspace => {
                self.typed.pop();
            }
            Key::Char(c) if self.kind.destructive() => {
                if self.typed.len() < 64 {
                    self.typed.push(c)
                }
            }
            Key::Char('h') | Key::Left => self.back(),
            Key::Enter => {
                if let Some(w) = self.confirm_word() {
                    if self.typed.trim() != w {
                        self.message = Some(format!(
                            "Type {w} exactly to erase it, or press Esc to go back."
                        ));
                        return vec![];
                    }
                }
                if self.job_running() {
                    self.message = Some("Another job is running; wait for it to finish.".into());
                    return vec![];
                }
                self.jobs_started += 1;
                match self.job_spec() {
                    Some(spec) => {
                        self.typed.clear();
                        self.screen = Screen::Progress;
                        return vec![Command::StartJob(spec)];
                    }
                    None => {
                        self.message =
                            Some("Something is missing: go back and choose again.".into())
                    }
                }
            }
            _ => {}
        }
        vec![]
    }

    /// The job the current choices describe.
    pub fn job_spec(&self) -> Option<JobSpec> {
        let src = self.source.as_ref();
        let tgt = self.target.as_ref();
        let img = self.image.as_deref();
        let disk = |d: &Disk| d.path.to_string_lossy().into_owned();
        // The passphrase goes to the job in a mode-0600 file of the job directory (written by
        // `jobdir::start`, removed by the runner): the command line names only the file.
        let pass_file = self.secret.as_ref().map(|_| {
            Path::new(&self.job_dir)
                .join(crate::jobs::jobdir::PASSPHRASE_FILE)
                .to_string_lossy()
                .into_owned()
        });
        let encrypt = self.kind == JobKind::FullImage && self.pass.encrypt;
        if encrypt && pass_file.is_none() {
            return None;
        }
        let cmd = match self.kind {
            JobKind::Clone => Cmd::Clone(CloneArgs {
                source: disk(src?),
                target: disk(tgt?),
                yes: true,
                map: Some(Path::new(&self.job_dir).join("map")),
                no_verify: false,
                // Used blocks by default; partitions without a trustworthy map are copied whole.
                all_sectors: false,
                json: true,
            }),
            JobKind::FullImage | JobKind::Incremental => Cmd::Image(ImageCmd::Create {
                source: disk(src?),
                image: img?.to_string(),
                parent: match self.kind {
                    JobKind::Incremental => Some(image_arg(
                        self.places().get(self.loc.sel)?,
                        self.loc.parent.trim(),
                    )),
                    _ => None,
                },
                split: None,
                force: false,
                // Used blocks by default; partitions without a trustworthy map are copied whole.
                all_sectors: false,
                compress: None,
                map: None,
                encrypt,
                clear_identity: false,
                passphrase_file: pass_file.clone(),
                // The image is read back from its storage and checked before it is called good.
                no_verify: false,
                // The location screen refused a place too small already (same rule).
                ignore_free_space: false,
                json: true,
            }),
            JobKind::Restore => Cmd::Image(ImageCmd::Restore {
                image: img?.to_string(),
                target: disk(tgt?),
                yes: true,
                zero_free: false,
                discard: false,
                map: None,
                passphrase_file: pass_file.clone(),
                json: true,
            }),
            JobKind::Verify => Cmd::Image(ImageCmd::Verify {
                image: img?.to_string(),
                state: None,
                passphrase_file: pass_file.clone(),
                json: true,
            }),
            // The image with every parent it needs, read back from the new place and checked.
            JobKind::Copy => Cmd::Image(ImageCmd::Copy {
                image: self.copy_of.clone()?,
                dest: img?.to_string(),
                chain: true,
                verify: false,
                no_verify: false,
                force: false,
                ignore_free_space: false,
                // An encrypted image is copied as ciphertext and compared byte for byte.
                passphrase_file: None,
                json: true,
            }),
            JobKind::RestoreFiles => {
                Cmd::Image(ImageCmd::Extract(crate::serve::extract::ExtractArgs {
                    image: img?.to_string(),
                    paths: self.browse.marked.iter().cloned().collect(),
                    to: self.dest.clone()?,
                    partition: self.browse.partition,
                    passphrase_file: pass_file.clone(),
                    json: true,
                }))
            }
        };
        if self.kind == JobKind::RestoreFiles && self.browse.marked.is_empty() {
            return None;
        }
        let total = match self.kind {
            JobKind::Clone | JobKind::FullImage | JobKind::Incremental => src?.size_bytes,
            JobKind::Restore => tgt?.size_bytes,
            JobKind::Verify | JobKind::Copy | JobKind::RestoreFiles => 0,
        };
        let mut details = Vec::new();
        if let Some(s) = src {
            details.push(format!("Source: {}", describe(s)));
        }
        if let Some(t) = tgt {
            details.push(format!("Target: {}", describe(t)));
        }
        if let Some(c) = &self.copy_of {
            details.push(format!("Image:  {c}"));
        }
        if let Some(i) = img {
            let what = if self.kind == JobKind::Copy {
                "Copy:  "
            } else {
                "Image: "
            };
            details.push(format!("{what} {i}"));
        }
        if encrypt {
            details.push("Encrypted: yes (keep the passphrase apart from the image)".into());
        } else if self.secret.is_some() {
            details.push("Encrypted: yes (its passphrase was checked)".into());
        }
        if self.kind == JobKind::RestoreFiles {
            details.push(format!(
                "Files:  {} item(s) of partition {}",
                self.browse.marked.len(),
                self.browse.partition.unwrap_or(1)
            ));
            details.push(format!("Into:   {}", self.dest.as_deref().unwrap_or("?")));
        }
        let partitions = match (self.kind, self.source_usage()) {
            (JobKind::Clone, Some(Ok(u))) => u.partitions.iter().map(usage_line).collect(),
            _ => vec![],
        };
        Some(JobSpec {
            id: format!("{}-{}", self.id_prefix, self.jobs_started),
            kind: self.kind.job_name().into(),
            title: self.kind.job_title(src, tgt, img),
            args: if self.mmc_boot_as_disks {
                // The job must see the boot partitions as disks too (its selectors resolve
                // against its own scan).
                std::iter::once("--mmc-boot-partitions".to_string())
                    .chain(to_argv(&cmd))
                    .collect()
            } else {
                to_argv(&cmd)
            },
            details,
            total_bytes: total,
            partitions,
        })
    }
}
