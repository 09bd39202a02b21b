//! The console's state and its only mutator, [`App::update`]: keys, inventory scans and job
//! snapshots come in as [`Event`]s; side effects (start/cancel a job, power off, quit) go out as
//! [`Command`]s that the event loop performs. Views only read an `App`.
//!
//! One file per screen, like `view/`: `disks` (the disks screen and the source/target pickers),
//! `menu`, `location`, `browse` (the "restore files" browser and its destination), `confirm`
//! (which also builds the job), `job` (progress and result), `passphrase` (the "Encrypt" choice
//! of a new image, the passphrase of an encrypted one), `net` (network places and the network
//! settings screen); the six jobs and every text about them are in `kind`.
mod browse;
mod confirm;
mod disks;
mod job;
mod kind;
mod location;
mod menu;
mod net;
mod passphrase;

/// `d` as the console shows it: the strings the device and its filesystems chose (model,
/// vendor, serial, labels, the file behind a loop device, mount points) with their controls
/// escaped ([`crate::out::shown`]), so a hostile USB stick can neither rewrite the terminal
/// nor pass for another disk. Jobs are started by kernel name, never by these strings.
fn shown_disk(mut d: crate::devices::Disk) -> crate::devices::Disk {
    fn esc(s: &mut String) {
        if let std::borrow::Cow::Owned(o) = crate::out::shown(s) {
            *s = o;
        }
    }
    for s in [&mut d.model, &mut d.vendor, &mut d.serial, &mut d.label]
        .into_iter()
        .flatten()
    {
        esc(s);
    }
    if let Some(b) = d.backing_file.as_mut() {
        esc(b);
    }
    d.mounted.iter_mut().for_each(esc);
    for p in d.partitions.iter_mut() {
        for s in [&mut p.label, &mut p.part_label, &mut p.fs_type]
            .into_iter()
            .flatten()
        {
            esc(s);
        }
        p.mounted.iter_mut().for_each(esc);
    }
    d
}

#[cfg(test)]
mod tests;

pub use browse::{join as browse_join, Browse, OpenedImage};
pub use confirm::{usage_line, SourceUsage};
pub use disks::{describe, describe_part, fs_column};
pub use kind::JobKind;
pub use location::{image_arg, Free, LocField, Location, Place, PlaceKind};
pub use net::{parse_place, NetField, NetForm, NetPlace, NetSettings, Secret, ShareInfo};
pub use passphrase::{Masked, PassCheck, PassEntry, PassField};

use super::keys::Key;
use crate::devices::Disk;
use crate::jobs::jobdir::{JobSnapshot, JobSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Disks,
    Menu,
    Source,
    Target,
    Location,
    /// A new image's "Encrypt" choice and passphrase, or an encrypted image's passphrase.
    Passphrase,
    /// The "restore files" browser: a partition of the image, its directories, marks.
    Browse,
    /// Where restored files go (a partition and a folder).
    Dest,
    Confirm,
    Progress,
    Result,
    /// Add a network place: its URL and the (masked) password.
    NetAdd,
    /// The network settings: adapters, link, address; DHCP or a static address.
    Network,
}

/// Side effects `update` asks the event loop to perform.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    StartJob(JobSpec),
    /// Read the used-block plan of a clone's source (the disk at this path) in the background.
    ReadUsage(std::path::PathBuf),
    /// Read the free space of these partitions in the background (`image::space::free_bytes`).
    ReadFree(Vec<crate::devices::Partition>),
    /// Mount partition `partition` (None: the first) of the image read-only for the browser
    /// (the one mounted before is unmounted first).
    OpenImage {
        image: String,
        partition: Option<u32>,
        /// The image's passphrase, when it is encrypted.
        secret: Option<Masked>,
    },
    /// Read the header of this image (the engine's IMAGE argument): is it encrypted?
    ProbeImage(String),
    /// Try this passphrase on the key slots of this image (one KDF run, in the background).
    CheckPassphrase {
        image: String,
        secret: Masked,
    },
    /// List the directory `path` of the partition mounted at `root`.
    ListDir {
        root: std::path::PathBuf,
        path: String,
    },
    /// Mount the network place `url` in the background (starting the network if needed) with
    /// this login (None: the credentials file's), read its free space, unmount it.
    CheckShare {
        url: String,
        login: Option<crate::net::cred::Login>,
    },
    /// Read the wired adapters' link state and addresses.
    ReadNet,
    /// Configure the network now (the network settings screen) on this adapter (None: the
    /// first with a link).
    ConfigureNet(crate::net::NetConfig, Option<String>),
    CancelJob,
    /// List eMMC boot partitions as disks (true) or only under their card (false) from the
    /// next disk scan on.
    MmcBootAsDisks(bool),
    /// Dismiss the shown result for every console.
    AckResult,
    PowerOff,
    Reboot,
    Quit,
}

/// Inputs of `update`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(Key),
    /// A fresh inventory (or why scanning failed).
    Disks(Result<Vec<Disk>, String>),
    /// Why disks are in use (kernel name -> reasons: swap, held by md/dm, mounted...).
    InUse(std::collections::BTreeMap<String, Vec<String>>),
    /// Storage controllers and USB mass-storage interfaces that give no disk (without a driver,
    /// or with one: `driver` says which).
    Unsupported(Vec<crate::devices::controllers::Unsupported>),
    /// The job directory changed.
    Job(Option<JobSnapshot>),
    /// Starting a job failed (the lock was taken, the runner could not start...).
    JobStartFailed(String),
    /// The used-block plan of the disk at this path (or why it could not be read).
    Usage(std::path::PathBuf, Result<SourceUsage, String>),
    /// The free space of the partition at this path (or why it is unknown).
    Free(std::path::PathBuf, Result<u64, String>),
    /// The image's partition asked for (None: the first) is mounted for the browser, or why not.
    ImageOpened(Option<u32>, Result<OpenedImage, String>),
    /// A directory of it listed (its path from the partition's top), or why not.
    Listing(String, Result<Vec<crate::serve::extract::LsEntry>, String>),
    /// Whether this image is encrypted (or why its header could not be read).
    Probed(String, Result<bool, String>),
    /// What trying a passphrase on this image's key slots gave.
    PassphraseChecked(String, PassCheck),
    /// A network place checked: its free space and what was mounted, or why it failed.
    ShareChecked(String, Result<ShareInfo, String>),
    /// The wired adapters now.
    Nics(Vec<crate::net::Nic>),
    /// The network configured (the line saying how), or why not.
    NetConfigured(Result<String, String>),
}

/// Dialogs drawn over the current screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// "Cancel the job?" asked once.
    CancelAsk,
    QuitAsk,
}

pub struct App {
    pub disks: Vec<Disk>,
    pub in_use: std::collections::BTreeMap<String, Vec<String>>,
    /// Controllers that give no disk (no driver in the image, a USB disk that never came up, a
    /// driver loaded but no disk behind it).
    pub unsupported: Vec<crate::devices::controllers::Unsupported>,
    pub scan_error: Option<String>,
    pub scanned: bool,
    /// eMMC boot partitions (`mmcblk0boot0`, `mmcblk0boot1`) listed as disks of their own, to
    /// be cloned or imaged (`b` on the Disks screen; the CLI's `--mmc-boot-partitions`, which
    /// every job then gets too).
    pub mmc_boot_as_disks: bool,
    pub screen: Screen,
    pub overlay: Overlay,
    pub disk_sel: usize,
    pub menu_sel: usize,
    pub kind: JobKind,
    pub source: Option<Disk>,
    pub target: Option<Disk>,
    pub pick_sel: usize,
    pub loc: Location,
    /// The image chosen on the location screen, as the engine's IMAGE argument (for the
    /// second copy: where the copy goes).
    pub image: Option<String>,
    /// The image a second copy is made of (the finished job's image).
    pub copy_of: Option<String>,
    /// What the user typed on the confirmation screen.
    pub typed: String,
    /// A one-line message for the user (errors, refusals), cleared by the next key.
    pub message: Option<String>,
    pub job: Option<JobSnapshot>,
    /// Under PID 1 (power off / reboot) or on a host (quit only).
    pub under_init: bool,
    /// Job ids are `id_prefix-N` (the prefix names this console and its start time).
    pub id_prefix: String,
    pub jobs_started: u32,
    pub job_dir: String,
    /// The clone source's used-block plan for the confirmation screen: the disk's path, and
    /// the plan once read (`None` while reading).
    pub usage: Option<(std::path::PathBuf, Option<Result<SourceUsage, String>>)>,
    /// Free space of partitions by device path, for the location screen (`None` while reading);
    /// forgotten when a new job flow starts (a job may have changed it).
    pub free: std::collections::BTreeMap<std::path::PathBuf, Option<Result<u64, String>>>,
    /// The "restore files" browser.
    pub browse: Browse,
    /// Where restored files go: the destination screen's state and, once chosen, the folder
    /// as the engine's DEST argument.
    pub dest_loc: Location,
    pub dest: Option<String>,
    /// The passphrase step's state.
    pub pass: PassEntry,
    /// The passphrase the job gets (a new image's, or the one that opened the image); kept
    /// in memory only until the job started.
    pub secret: Option<Masked>,
    /// Network places added in this job flow (with their typed logins: forgotten with the flow).
    pub net_places: Vec<NetPlace>,
    /// The add-a-network-place screen.
    pub net_form: NetForm,
    /// The network settings screen.
    pub net: NetSettings,
}

impl App {
    pub fn new(under_init: bool, id_prefix: String, job_dir: String) -> Self {
        App {
            disks: vec![],
            in_use: Default::default(),
            unsupported: Vec::new(),
            mmc_boot_as_disks: false,
            scan_error: None,
            scanned: false,
            screen: Screen::Disks,
            overlay: Overlay::None,
            disk_sel: 0,
            menu_sel: 0,
            kind: JobKind::Clone,
            source: None,
            target: None,
            pick_sel: 0,
            loc: Location::default(),
            image: None,
            copy_of: None,
            typed: String::new(),
            message: None,
            job: None,
            under_init,
            id_prefix,
            jobs_started: 0,
            job_dir,
            usage: None,
            free: Default::default(),
            browse: Browse::default(),
            dest_loc: Location::default(),
            dest: None,
            pass: PassEntry::default(),
            secret: None,
            net_places: Vec::new(),
            net_form: NetForm::default(),
            net: NetSettings::default(),
        }
    }

    /// The only place state changes.
    pub fn update(&mut self, ev: Event) -> Vec<Command> {
        match ev {
            Event::Disks(Ok(d)) => {
                self.disks = d.into_iter().map(shown_disk).collect();
                self.scan_error = None;
                self.scanned = true;
                self.disk_sel = self.disk_sel.min(self.disks.len().saturating_sub(1));
                // A picked disk that disappeared cannot be used any more.
                for slot in [&mut self.source, &mut self.target] {
                    if let Some(s) = slot {
                        match self
                            .disks
                            .iter()
                            .find(|d| d.name == s.name && d.serial == s.serial)
                        {
                            Some(d) => *s = d.clone(),
                            None => {
                                self.message = Some(format!("{} was removed", s.name));
                                *slot = None;
                            }
                        }
                    }
                }
                if matches!(
                    self.screen,
                    Screen::Target | Screen::Location | Screen::Passphrase | Screen::Confirm
                ) {
                    let lost = (self.kind.needs_source() && self.source.is_none())
                        || (self.screen == Screen::Confirm
                            && self.kind.needs_target()
                            && self.target.is_none());
                    if lost {
                        self.screen = self.kind.steps()[0];
                        self.pick_sel = 0;
                    }
                }
                // A disk plugged in while choosing a location: read its partitions' free space.
                self.location_reads()
            }
            Event::InUse(m) => {
                self.in_use = m;
                vec![]
            }
            Event::Unsupported(u) => {
                self.unsupported = u;
                vec![]
            }
            Event::Disks(Err(e)) => {
                self.scan_error = Some(e);
                self.scanned = true;
                vec![]
            }
            Event::Job(snap) => {
                self.on_job(snap);
                vec![]
            }
            Event::JobStartFailed(e) => {
                self.message = Some(format!("The job did not start: {e}"));
                if self.screen == Screen::Progress {
                    self.screen = Screen::Confirm;
                }
                vec![]
            }
            Event::Usage(path, r) => {
                if let Some((p, slot)) = &mut self.usage {
                    if *p == path {
                        *slot = Some(r);
                    }
                }
                vec![]
            }
            Event::Free(path, r) => {
                if let Some(slot) = self.free.get_mut(&path) {
                    *slot = Some(r);
                }
                vec![]
            }
            Event::ImageOpened(part, r) => self.on_image_opened(part, r),
            Event::Listing(path, r) => {
                self.on_listing(path, r);
                vec![]
            }
            Event::Probed(image, r) => self.on_probed(image, r),
            Event::PassphraseChecked(image, r) => self.on_pass_checked(image, r),
            Event::Key(k) => {
                let mut cmds = self.on_key(k);
                cmds.extend(self.pass_reads());
                cmds
            }
            Event::ShareChecked(url, r) => {
                self.on_share_checked(url, r);
                vec![]
            }
            Event::Nics(n) => {
                self.net.sel = self.net.sel.min(n.len().saturating_sub(1));
                self.net.nics = Some(n);
                vec![]
            }
            Event::NetConfigured(r) => self.on_net_configured(r),
        }
    }

    fn job_running(&self) -> bool {
        self.job.as_ref().is_some_and(|j| j.running)
    }

    fn on_key(&mut self, k: Key) -> Vec<Command> {
        // Overlays take the keyboard first.
        match self.overlay {
            Overlay::Help => {
                if matches!(k, Key::Esc | Key::Enter | Key::Char('?') | Key::Char('q')) {
                    self.overlay = Overlay::None;
                }
                return vec![];
            }
            Overlay::CancelAsk => {
                self.overlay = Overlay::None;
                return if matches!(k, Key::Char('y') | Key::Char('Y')) {
                    self.message =
                        Some("Cancelling: the job stops at the next safe point...".into());
                    vec![Command::CancelJob]
                } else {
                    vec![]
                };
            }
            Overlay::QuitAsk => {
                self.overlay = Overlay::None;
                return if matches!(k, Key::Char('y') | Key::Char('Y')) {
                    vec![Command::Quit]
                } else {
                    vec![]
                };
            }
            Overlay::None => {}
        }
        let typing = self.typing();
        if k == Key::Char('?') && !typing {
            self.overlay = Overlay::Help;
            return vec![];
        }
        if k == Key::Interrupt || (k == Key::Char('q') && !typing && self.screen != Screen::Confirm)
        {
            if self.screen == Screen::Progress && self.job_running() {
                self.message = Some("A job is running: press c to cancel it first.".into());
                return vec![];
            }
            if self.screen == Screen::Disks || k == Key::Interrupt {
                self.overlay = Overlay::QuitAsk;
                return vec![];
            }
            // q elsewhere goes back to the disks screen.
            self.reset_flow();
            self.screen = Screen::Disks;
            return vec![];
        }
        self.message = None;
        match self.screen {
            Screen::Disks => self.key_disks(k),
            Screen::Menu => self.key_menu(k),
            Screen::Source => self.key_source(k),
            Screen::Target => self.key_target(k),
            Screen::Location => self.key_location(k),
            Screen::Passphrase => self.key_passphrase(k),
            Screen::Browse => self.key_browse(k),
            Screen::Dest => self.key_dest(k),
            Screen::Confirm => self.key_confirm(k),
            Screen::Progress => self.key_progress(k),
            Screen::Result => self.key_result(k),
            Screen::NetAdd => self.key_net_add(k),
            Screen::Network => self.key_network(k),
        }
    }

    /// Whether letters go into a text field (so `q`, `?`, `j` are text).
    pub fn typing(&self) -> bool {
        match self.screen {
            Screen::Confirm => self.kind.destructive(),
            Screen::Location => self.loc.field != LocField::Partitions,
            Screen::Dest => self.dest_loc.field != LocField::Partitions,
            Screen::Passphrase => self.pass.field != PassField::Choice,
            Screen::NetAdd => true,
            Screen::Network => self.net.typing,
            _ => false,
        }
    }

    fn reset_flow(&mut self) {
        self.source = None;
        self.target = None;
        self.image = None;
        self.copy_of = None;
        self.typed.clear();
        self.pick_sel = 0;
        self.loc = Location::default();
        self.browse = Browse::default();
        self.dest_loc = Location::default();
        self.dest = None;
        self.pass = PassEntry::default();
        self.secret = None;
        // Typed passwords live for one job flow (the job got its own copy).
        self.net_places.clear();
        self.net_form = NetForm::default();
        // Read afresh for each flow: a job may have changed free space and used blocks.
        self.free.clear();
        self.usage = None;
    }

    /// Goes one step back in the job's flow (to the menu from the first step).
    fn back(&mut self) {
        let steps = self.kind.steps();
        match steps.iter().position(|s| *s == self.screen) {
            Some(0) | None => self.screen = Screen::Menu,
            // The passphrase step of an image that is not encrypted was passed by itself:
            // going back passes it again.
            Some(i)
                if steps[i - 1] == Screen::Passphrase && self.pass_encrypted() == Some(false) =>
            {
                self.screen = steps[i - 2]
            }
            Some(i) => self.screen = steps[i - 1],
        }
        if self.screen == Screen::Passphrase {
            self.pass_enter();
        }
        self.pick_sel = 0;
        self.typed.clear();
    }

    fn forward(&mut self) {
        let steps = self.kind.steps();
        if let Some(i) = steps.iter().position(|s| *s == self.screen) {
            if i + 1 < steps.len() {
                self.enter(steps[i + 1]);
            }
        }
    }

    /// Shows a step of the flow with its starting selection.
    fn enter(&mut self, screen: Screen) {
        self.screen = screen;
        self.pick_sel = 0;
        self.typed.clear();
        match screen {
            // Start on the disk selected on the disks screen.
            Screen::Source => self.pick_sel = self.disk_sel.min(self.disks.len().saturating_sub(1)),
            // Start on the first disk that can be used.
            Screen::Target => {
                self.pick_sel = self
                    .targets()
                    .iter()
                    .position(|(_, r)| r.is_none())
                    .unwrap_or(0);
            }
            Screen::Location => {
                self.loc = Location::default();
                self.loc.path = self.default_image_path();
                self.loc.sel = self
                    .places()
                    .iter()
                    .position(|p| p.refused.is_none())
                    .unwrap_or(0);
            }
            Screen::Dest => self.dest_loc = self.dest_default(),
            Screen::Passphrase => self.pass_enter(),
            _ => {}
        }
    }
}
