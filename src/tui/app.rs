//! The console's state and its only mutator, [`App::update`]: keys, inventory scans and job
//! snapshots come in as [`Event`]s; side effects (start/cancel a job, power off, quit) go out as
//! [`Command`]s that the event loop performs. Views only read an `App`.
use super::jobdir::{JobSnapshot, JobSpec};
use super::keys::{step_index, Key};
use super::safety;
use crate::devices::{Disk, Partition};
use crate::jobs::fmt_bytes;

/// The five jobs of the job menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Clone,
    FullImage,
    Incremental,
    Restore,
    Verify,
}

impl JobKind {
    pub const ALL: [JobKind; 5] = [
        JobKind::Clone,
        JobKind::FullImage,
        JobKind::Incremental,
        JobKind::Restore,
        JobKind::Verify,
    ];

    pub fn title(self) -> &'static str {
        match self {
            JobKind::Clone => "Clone a disk onto another disk",
            JobKind::FullImage => "Back up a disk into a new image file",
            JobKind::Incremental => "Back up a disk as an incremental on an existing image",
            JobKind::Restore => "Restore an image onto a disk",
            JobKind::Verify => "Verify an image file",
        }
    }
    pub fn explain(self) -> &'static str {
        match self {
            JobKind::Clone => "Copies every sector of the SOURCE disk onto the TARGET disk, bad sectors \
                 last (like ddrescue). Everything on the TARGET is destroyed. The source is only read.",
            JobKind::FullImage => "Reads the SOURCE disk into a compressed, verifiable image file on a \
                 partition of another disk. Nothing is erased.",
            JobKind::Incremental => "Stores only what changed since an existing image of the same disk. \
                 Needs the earlier image (the parent). Nothing is erased.",
            JobKind::Restore => "Writes an image back onto a TARGET disk. Everything on the TARGET is \
                 destroyed.",
            JobKind::Verify => "Reads an image file and checks every block against its checksums. \
                 Nothing is written.",
        }
    }
    /// When to pick this job: the plain advice of "cloning vs imaging" (a clone is a carbon copy for
    /// a drive swap; an image is a backup file, kept stored away, with incrementals on top).
    pub fn when(self) -> &'static str {
        match self {
            JobKind::Clone => {
                "replacing or upgrading a drive, or getting everything off a failing \
                 one, with both drives attached. Pick them the right way round: the wrong TARGET \
                 loses everything on it forever."
            }
            JobKind::FullImage => {
                "you want a backup you can keep anywhere and restore later, onto \
                 this disk or a new one. Keep this first full image stored away safely."
            }
            JobKind::Incremental => {
                "you already have a full image and want a newer restore point \
                 quickly. Every point can be restored, so you can roll back to before something \
                 went wrong (a virus, a bad update)."
            }
            JobKind::Restore => {
                "rolling a disk back to a restore point, or putting a backup onto \
                 a new disk."
            }
            JobKind::Verify => {
                "before you rely on a backup, and after moving or copying the image."
            }
        }
    }
    /// The `kind` of the job spec ("clone", "image-create", ...).
    pub fn job_name(self) -> &'static str {
        match self {
            JobKind::Clone => "clone",
            JobKind::FullImage => "image-create",
            JobKind::Incremental => "image-incremental",
            JobKind::Restore => "image-restore",
            JobKind::Verify => "image-verify",
        }
    }
    pub fn needs_source(self) -> bool {
        matches!(
            self,
            JobKind::Clone | JobKind::FullImage | JobKind::Incremental
        )
    }
    pub fn needs_target(self) -> bool {
        matches!(self, JobKind::Clone | JobKind::Restore)
    }
    pub fn needs_image(self) -> bool {
        !matches!(self, JobKind::Clone)
    }
    /// Destroys a disk's contents (confirmation by typing its name).
    pub fn destructive(self) -> bool {
        self.needs_target()
    }
    /// The steps of this job's flow, in order.
    pub fn steps(self) -> &'static [Screen] {
        match self {
            JobKind::Clone => &[Screen::Source, Screen::Target, Screen::Confirm],
            JobKind::FullImage | JobKind::Incremental => {
                &[Screen::Source, Screen::Location, Screen::Confirm]
            }
            JobKind::Restore => &[Screen::Location, Screen::Target, Screen::Confirm],
            JobKind::Verify => &[Screen::Location, Screen::Confirm],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Disks,
    Menu,
    Source,
    Target,
    Location,
    Confirm,
    Progress,
    Result,
}

/// Which field of the image-location screen has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocField {
    Partitions,
    Path,
    Parent,
}

/// A place an image can live: a partition (mounted by the image engine) or, on a host, a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub disk: String,
    pub part: Option<Partition>,
    /// Why it cannot hold this job's image (on the source disk, or the target of a restore).
    pub refused: Option<String>,
}

/// The image-location screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub sel: usize,
    pub field: LocField,
    pub path: String,
    pub parent: String,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            sel: 0,
            field: LocField::Partitions,
            path: String::new(),
            parent: String::new(),
        }
    }
}

/// Side effects `update` asks the event loop to perform.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    StartJob(JobSpec),
    CancelJob,
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
    /// The job directory changed.
    Job(Option<JobSnapshot>),
    /// Starting a job failed (the lock was taken, the runner could not start...).
    JobStartFailed(String),
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
    pub scan_error: Option<String>,
    pub scanned: bool,
    pub screen: Screen,
    pub overlay: Overlay,
    pub disk_sel: usize,
    pub menu_sel: usize,
    pub kind: JobKind,
    pub source: Option<Disk>,
    pub target: Option<Disk>,
    pub pick_sel: usize,
    pub loc: Location,
    /// The image chosen on the location screen, as the engine's IMAGE argument.
    pub image: Option<String>,
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
}

impl App {
    pub fn new(under_init: bool, id_prefix: String, job_dir: String) -> Self {
        App {
            disks: vec![],
            in_use: Default::default(),
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
            typed: String::new(),
            message: None,
            job: None,
            under_init,
            id_prefix,
            jobs_started: 0,
            job_dir,
        }
    }

    /// The only place state changes.
    pub fn update(&mut self, ev: Event) -> Vec<Command> {
        match ev {
            Event::Disks(Ok(d)) => {
                self.disks = d;
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
                    Screen::Target | Screen::Location | Screen::Confirm
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
                vec![]
            }
            Event::InUse(m) => {
                self.in_use = m;
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
            Event::Key(k) => self.on_key(k),
        }
    }

    fn on_job(&mut self, snap: Option<JobSnapshot>) {
        let prev_id = self.job.as_ref().map(|j| j.spec.id.clone());
        self.job = snap;
        let Some(j) = &self.job else {
            if matches!(self.screen, Screen::Progress | Screen::Result) {
                self.screen = Screen::Disks;
            }
            return;
        };
        let new_job = prev_id.as_deref() != Some(j.spec.id.as_str());
        if j.running {
            // Whichever console started it, every console follows a running job.
            if self.screen != Screen::Progress {
                self.screen = Screen::Progress;
                if self.overlay != Overlay::Help {
                    self.overlay = Overlay::None;
                }
            }
        } else {
            if self.overlay == Overlay::CancelAsk {
                self.overlay = Overlay::None;
            }
            if !j.acked
                && (self.screen == Screen::Progress || (new_job && self.screen == Screen::Disks))
            {
                self.screen = Screen::Result;
            } else if j.acked && self.screen == Screen::Progress {
                self.screen = Screen::Disks;
            }
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
            Screen::Confirm => self.key_confirm(k),
            Screen::Progress => self.key_progress(k),
            Screen::Result => self.key_result(k),
        }
    }

    /// Whether letters go into a text field (so `q`, `?`, `j` are text).
    pub fn typing(&self) -> bool {
        match self.screen {
            Screen::Confirm => self.kind.destructive(),
            Screen::Location => self.loc.field != LocField::Partitions,
            _ => false,
        }
    }

    fn reset_flow(&mut self) {
        self.source = None;
        self.target = None;
        self.image = None;
        self.typed.clear();
        self.pick_sel = 0;
        self.loc = Location::default();
    }

    fn key_disks(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.disk_sel = step_index(self.disk_sel, s, self.disks.len());
        } else if matches!(k, Key::Enter | Key::Char('n') | Key::Char('l') | Key::Right) {
            self.screen = Screen::Menu;
        }
        vec![]
    }

    fn key_menu(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.menu_sel = step_index(self.menu_sel, s, JobKind::ALL.len());
        } else if let Key::Char(c @ '1'..='5') = k {
            self.menu_sel = (c as usize) - ('1' as usize);
            return self.key_menu(Key::Enter);
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            self.kind = JobKind::ALL[self.menu_sel];
            self.reset_flow();
            self.enter(self.kind.steps()[0]);
        } else if matches!(k, Key::Esc | Key::Left | Key::Char('h')) {
            self.screen = Screen::Disks;
        }
        vec![]
    }

    /// Goes one step back in the job's flow (to the menu from the first step).
    fn back(&mut self) {
        let steps = self.kind.steps();
        match steps.iter().position(|s| *s == self.screen) {
            Some(0) | None => self.screen = Screen::Menu,
            Some(i) => self.screen = steps[i - 1],
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
            _ => {}
        }
    }

    fn default_image_path(&self) -> String {
        let name = self
            .source
            .as_ref()
            .map(|d| {
                let base = d.serial.clone().unwrap_or_else(|| d.name.clone());
                base.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        match self.kind {
            JobKind::FullImage => format!("/lifeboat/{name}.lbi"),
            JobKind::Incremental => format!("/lifeboat/{name}-incr.lbi"),
            _ => "/lifeboat/".into(),
        }
    }

    fn key_source(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.pick_sel = step_index(self.pick_sel, s, self.disks.len());
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            if let Some(d) = self.disks.get(self.pick_sel) {
                self.source = Some(d.clone());
                self.forward();
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
    fn image_disk(&self) -> Option<String> {
        let places = self.places();
        self.image.as_ref()?;
        places
            .get(self.loc.sel)
            .and_then(|p| p.part.as_ref().map(|_| p.disk.clone()))
    }

    fn key_target(&mut self, k: Key) -> Vec<Command> {
        let t = self.targets();
        if let Some(s) = k.list_step() {
            self.pick_sel = step_index(self.pick_sel, s, t.len());
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            match t.get(self.pick_sel) {
                Some((d, None)) => {
                    self.target = Some(d.clone());
                    self.forward();
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

    /// Partitions with a filesystem the image can be written to / read from, then "a path on
    /// this machine" (for host use: the path as typed).
    pub fn places(&self) -> Vec<Place> {
        let mut v = Vec::new();
        for d in &self.disks {
            for p in &d.partitions {
                if p.fs_type.is_none() {
                    continue;
                }
                let refused = if self.source.as_ref().is_some_and(|s| s.name == d.name) {
                    Some("on the disk being backed up".to_string())
                } else if d.boot_media && self.kind.needs_source() {
                    Some("the Lifeboat boot disk".to_string())
                } else {
                    None
                };
                v.push(Place {
                    disk: d.name.clone(),
                    part: Some(p.clone()),
                    refused,
                });
            }
        }
        v.push(Place {
            disk: String::new(),
            part: None,
            refused: None,
        });
        v
    }

    fn key_location(&mut self, k: Key) -> Vec<Command> {
        let places = self.places();
        let has_parent = self.kind == JobKind::Incremental;
        match k {
            Key::Tab | Key::BackTab => {
                let order: &[LocField] = if has_parent {
                    &[LocField::Partitions, LocField::Parent, LocField::Path]
                } else {
                    &[LocField::Partitions, LocField::Path]
                };
                let i = order.iter().position(|f| *f == self.loc.field).unwrap_or(0);
                let n = order.len();
                self.loc.field = order[if k == Key::Tab {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }];
                return vec![];
            }
            Key::Esc => {
                self.back();
                return vec![];
            }
            Key::Enter => {
                if self.loc.field == LocField::Partitions {
                    if let Some(why) = places.get(self.loc.sel).and_then(|p| p.refused.clone()) {
                        self.message =
                            Some(format!("That partition cannot hold the image: {why}."));
                        return vec![];
                    }
                    self.loc.field = if has_parent {
                        LocField::Parent
                    } else {
                        LocField::Path
                    };
                    return vec![];
                }
                let Some(place) = places.get(self.loc.sel) else {
                    return vec![];
                };
                if let Some(why) = &place.refused {
                    self.message = Some(format!("That partition cannot hold the image: {why}."));
                    return vec![];
                }
                if has_parent && self.loc.parent.trim().is_empty() {
                    self.message =
                        Some("Type the path of the parent image (the earlier backup).".into());
                    self.loc.field = LocField::Parent;
                    return vec![];
                }
                let path = self.loc.path.trim();
                if path.is_empty() || path.ends_with('/') {
                    self.message =
                        Some("Type the image file's name (for example /lifeboat/pc.lbi).".into());
                    self.loc.field = LocField::Path;
                    return vec![];
                }
                self.image = Some(image_arg(place, path));
                self.forward();
                return vec![];
            }
            _ => {}
        }
        match self.loc.field {
            LocField::Partitions => {
                if let Some(s) = k.list_step() {
                    self.loc.sel = step_index(self.loc.sel, s, places.len());
                } else if matches!(k, Key::Left | Key::Char('h')) {
                    self.back();
                }
            }
            LocField::Path | LocField::Parent => {
                let field = if self.loc.field == LocField::Path {
                    &mut self.loc.path
                } else {
                    &mut self.loc.parent
                };
                match k {
                    Key::Char(c) if !c.is_control() && field.len() < 200 => field.push(c),
                    Key::Backspace => {
                        field.pop();
                    }
                    Key::Up | Key::Down => self.loc.field = LocField::Partitions,
                    _ => {}
                }
            }
        }
        vec![]
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
    fn key_confirm(&mut self, k: Key) -> Vec<Command> {
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
        let img = self.image.clone();
        let map = format!("{}/map", self.job_dir.trim_end_matches('/'));
        let (args, title, total): (Vec<String>, String, u64) = match self.kind {
            JobKind::Clone => {
                let (s, t) = (src?, tgt?);
                (
                    vec![
                        "clone".into(),
                        path_str(&s.path),
                        path_str(&t.path),
                        "--yes".into(),
                        "--json".into(),
                        "--map".into(),
                        map,
                    ],
                    format!("Clone {} -> {}", s.name, t.name),
                    s.size_bytes,
                )
            }
            JobKind::FullImage => {
                let s = src?;
                let i = img.clone()?;
                (
                    vec![
                        "image".into(),
                        "create".into(),
                        path_str(&s.path),
                        i.clone(),
                        "--json".into(),
                    ],
                    format!("Image {} -> {}", s.name, i),
                    s.size_bytes,
                )
            }
            JobKind::Incremental => {
                let s = src?;
                let i = img.clone()?;
                let parent = image_arg(self.places().get(self.loc.sel)?, self.loc.parent.trim());
                (
                    vec![
                        "image".into(),
                        "create".into(),
                        path_str(&s.path),
                        i.clone(),
                        "--parent".into(),
                        parent,
                        "--json".into(),
                    ],
                    format!("Incremental {} -> {}", s.name, i),
                    s.size_bytes,
                )
            }
            JobKind::Restore => {
                let t = tgt?;
                let i = img.clone()?;
                (
                    vec![
                        "image".into(),
                        "restore".into(),
                        i.clone(),
                        path_str(&t.path),
                        "--yes".into(),
                        "--json".into(),
                    ],
                    format!("Restore {} -> {}", i, t.name),
                    t.size_bytes,
                )
            }
            JobKind::Verify => {
                let i = img.clone()?;
                (
                    vec!["image".into(), "verify".into(), i.clone(), "--json".into()],
                    format!("Verify {i}"),
                    0,
                )
            }
        };
        let mut details = Vec::new();
        if let Some(s) = src {
            details.push(format!("Source: {}", describe(s)));
        }
        if let Some(t) = tgt {
            details.push(format!("Target: {}", describe(t)));
        }
        if let Some(i) = &img {
            details.push(format!("Image:  {i}"));
        }
        Some(JobSpec {
            id: format!("{}-{}", self.id_prefix, self.jobs_started),
            kind: self.kind.job_name().into(),
            title,
            args,
            details,
            total_bytes: total,
        })
    }

    fn key_progress(&mut self, k: Key) -> Vec<Command> {
        match k {
            Key::Char('c') | Key::Esc if self.job_running() => {
                if self.job.as_ref().is_some_and(|j| j.cancel_requested) {
                    self.message = Some("Cancel was asked already; the job is stopping.".into());
                } else {
                    self.overlay = Overlay::CancelAsk;
                }
            }
            _ => {}
        }
        vec![]
    }

    fn key_result(&mut self, k: Key) -> Vec<Command> {
        match k {
            Key::Char('n') | Key::Enter | Key::Esc => {
                self.reset_flow();
                self.screen = if k == Key::Esc {
                    Screen::Disks
                } else {
                    Screen::Menu
                };
                vec![Command::AckResult]
            }
            Key::Char('p') if self.under_init => vec![Command::PowerOff],
            Key::Char('r') if self.under_init => vec![Command::Reboot],
            _ => vec![],
        }
    }
}

/// The engine's IMAGE argument: `PARTITION:/path`, or the path itself on a host.
pub fn image_arg(place: &Place, path: &str) -> String {
    match &place.part {
        // The kernel name, not /dev/NAME: a PARTITION selector must not start with '/', which the
        // image engine takes as a plain path.
        Some(p) => format!("{}:{}", p.name, path),
        None => path.to_string(),
    }
}

fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
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

/// "sda1 ntfs "Windows" 400.0 GiB" for a partition.
pub fn describe_part(p: &Partition) -> String {
    let mut s = format!("{:<10} {:<6}", p.name, p.fs_type.as_deref().unwrap_or("-"));
    match &p.label {
        Some(l) => s.push_str(&format!(" {:<16}", format!("\"{l}\""))),
        None => s.push_str(&format!(" {:<16}", "")),
    }
    s.push_str(&format!(" {:>10}", fmt_bytes(p.size_bytes)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixtures::machine;

    fn app() -> App {
        let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
        a.update(Event::Disks(Ok(machine())));
        a
    }

    fn keys(a: &mut App, ks: &[Key]) -> Vec<Command> {
        ks.iter().flat_map(|k| a.update(Event::Key(*k))).collect()
    }

    fn typed(a: &mut App, s: &str) -> Vec<Command> {
        s.chars()
            .flat_map(|c| a.update(Event::Key(Key::Char(c))))
            .collect()
    }

    #[test]
    fn clone_flow_removes_source_and_requires_typing_the_target() {
        let mut a = app();
        keys(&mut a, &[Key::Enter]);
        assert_eq!(a.screen, Screen::Menu);
        keys(&mut a, &[Key::Enter]);
        assert_eq!(a.screen, Screen::Source);
        assert_eq!(a.pick_sel, 0);
        keys(&mut a, &[Key::Enter]);
        assert_eq!(a.screen, Screen::Target);
        let t = a.targets();
        assert!(
            t.iter().all(|(d, _)| d.name != "sda"),
            "source removed from targets"
        );
        let names: Vec<_> = t
            .iter()
            .map(|(d, r)| (d.name.as_str(), r.is_some()))
            .collect();
        assert_eq!(
            names,
            vec![("nvme0n1", false), ("sdb", true), ("sdc", true)]
        );
        // The refused USB boot stick cannot be picked.
        keys(&mut a, &[Key::Char('j'), Key::Enter]);
        assert_eq!(a.screen, Screen::Target);
        assert!(a.message.as_ref().unwrap().contains("boot disk"));
        keys(&mut a, &[Key::Char('k'), Key::Enter]);
        assert_eq!(a.screen, Screen::Confirm);
        assert_eq!(a.target.as_ref().unwrap().name, "nvme0n1");
        // Enter without typing, or with a wrong name, does nothing.
        assert!(keys(&mut a, &[Key::Enter]).is_empty());
        typed(&mut a, "nvme0n");
        assert!(keys(&mut a, &[Key::Enter]).is_empty());
        assert!(a.message.as_ref().unwrap().contains("nvme0n1"));
        typed(&mut a, "1");
        let cmds = keys(&mut a, &[Key::Enter]);
        let Command::StartJob(spec) = &cmds[0] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            spec.args,
            [
                "clone",
                "/dev/sda",
                "/dev/nvme0n1",
                "--yes",
                "--json",
                "--map",
                "/run/lifeboat/job/map"
            ]
        );
        assert_eq!(a.screen, Screen::Progress);
    }

    #[test]
    fn q_and_question_mark_are_text_while_typing() {
        let mut a = app();
        keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter, Key::Enter]);
        assert_eq!(a.screen, Screen::Confirm);
        typed(&mut a, "q?");
        assert_eq!(a.typed, "q?");
        assert_eq!(a.overlay, Overlay::None);
        keys(&mut a, &[Key::Backspace, Key::Backspace, Key::Esc]);
        assert_eq!(a.screen, Screen::Target);
        keys(&mut a, &[Key::Esc, Key::Esc]);
        assert_eq!(a.screen, Screen::Menu);
    }

    #[test]
    fn help_and_quit_ask() {
        let mut a = app();
        keys(&mut a, &[Key::Char('?')]);
        assert_eq!(a.overlay, Overlay::Help);
        keys(&mut a, &[Key::Esc]);
        assert_eq!(a.overlay, Overlay::None);
        assert!(keys(&mut a, &[Key::Char('q'), Key::Char('n')]).is_empty());
        assert_eq!(
            keys(&mut a, &[Key::Char('q'), Key::Char('y')]),
            vec![Command::Quit]
        );
    }

    fn snap(running: bool, result: Option<i32>) -> JobSnapshot {
        JobSnapshot {
            spec: JobSpec {
                id: "j1".into(),
                kind: "clone".into(),
                title: "Clone sda -> nvme0n1".into(),
                args: vec![],
                details: vec![],
                total_bytes: 100,
            },
            progress: None,
            result: result.map(|c| super::super::jobdir::JobResult {
                exit_code: c,
                cancelled: false,
                report: None,
                error: None,
                elapsed_secs: 1,
            }),
            running,
            cancel_requested: false,
            acked: false,
            file_map: None,
            log_tail: vec![],
        }
    }

    #[test]
    fn other_console_follows_and_cancel_asks_once() {
        let mut a = app();
        a.update(Event::Job(Some(snap(true, None))));
        assert_eq!(a.screen, Screen::Progress);
        // q does not leave a running job.
        keys(&mut a, &[Key::Char('q')]);
        assert_eq!(a.screen, Screen::Progress);
        assert!(keys(&mut a, &[Key::Char('c'), Key::Char('n')]).is_empty());
        assert_eq!(
            keys(&mut a, &[Key::Char('c'), Key::Char('y')]),
            vec![Command::CancelJob]
        );
        a.update(Event::Job(Some(snap(false, Some(0)))));
        assert_eq!(a.screen, Screen::Result);
        assert!(keys(&mut a, &[Key::Char('x')]).is_empty());
        assert_eq!(keys(&mut a, &[Key::Char('p')]), vec![Command::PowerOff]);
        assert_eq!(keys(&mut a, &[Key::Char('r')]), vec![Command::Reboot]);
        assert_eq!(keys(&mut a, &[Key::Char('n')]), vec![Command::AckResult]);
        assert_eq!(a.screen, Screen::Menu);
    }

    #[test]
    fn restore_flow_uses_partition_image_and_refuses_its_disk() {
        let mut a = app();
        keys(&mut a, &[Key::Enter, Key::Char('4')]);
        assert_eq!(a.screen, Screen::Location);
        let places = a.places();
        // sda1, sda3, sda4, sdb1, sdc1 have filesystems; then the host path entry.
        assert_eq!(places.len(), 6);
        // Pick sdc1 (index 4), type the path.
        keys(&mut a, &[Key::Char('G'), Key::Up, Key::Enter]);
        assert_eq!(a.loc.field, LocField::Path);
        typed(&mut a, "pc.lbi");
        keys(&mut a, &[Key::Enter]);
        assert_eq!(a.screen, Screen::Target);
        assert_eq!(a.image.as_deref(), Some("sdc1:/lifeboat/pc.lbi"));
        let t = a.targets();
        let sdc = t.iter().find(|(d, _)| d.name == "sdc").unwrap();
        assert_eq!(sdc.1.as_deref(), Some("it holds the image"));
        keys(&mut a, &[Key::Home, Key::Enter]);
        assert_eq!(a.target.as_ref().unwrap().name, "sda");
        typed(&mut a, "sda");
        let cmds = keys(&mut a, &[Key::Enter]);
        let Command::StartJob(spec) = &cmds[0] else {
            panic!()
        };
        assert_eq!(
            spec.args,
            [
                "image",
                "restore",
                "sdc1:/lifeboat/pc.lbi",
                "/dev/sda",
                "--yes",
                "--json"
            ]
        );
    }

    #[test]
    fn image_create_refuses_the_source_disk_and_needs_no_typing() {
        let mut a = app();
        keys(&mut a, &[Key::Enter, Key::Char('2'), Key::Enter]);
        assert_eq!(a.screen, Screen::Location);
        let places = a.places();
        assert!(places[0].refused.is_some(), "sda1 is on the source");
        // Selection starts on the first usable place: sdc1 (sdb1 is the boot stick).
        assert_eq!(places[a.loc.sel].part.as_ref().unwrap().name, "sdc1");
        keys(&mut a, &[Key::Enter, Key::Enter]);
        assert_eq!(a.screen, Screen::Confirm);
        let cmds = keys(&mut a, &[Key::Enter]);
        let Command::StartJob(spec) = &cmds[0] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            spec.args,
            [
                "image",
                "create",
                "/dev/sda",
                "sdc1:/lifeboat/WD-WCC2EAK80291.lbi",
                "--json"
            ]
        );
    }

    #[test]
    fn incremental_needs_a_parent() {
        let mut a = app();
        keys(
            &mut a,
            &[Key::Enter, Key::Char('3'), Key::Enter, Key::Enter],
        );
        assert_eq!(a.loc.field, LocField::Parent);
        keys(&mut a, &[Key::Tab, Key::Enter]);
        assert!(a.message.as_ref().unwrap().contains("parent"));
        typed(&mut a, "/lifeboat/full.lbi");
        keys(&mut a, &[Key::Enter]);
        let cmds = keys(&mut a, &[Key::Enter]);
        let Command::StartJob(spec) = &cmds[0] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            spec.args[4..6],
            [
                "--parent".to_string(),
                "sdc1:/lifeboat/full.lbi".to_string()
            ]
        );
    }

    #[test]
    fn in_use_disks_are_refused_targets() {
        let mut a = app();
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "nvme0n1".to_string(),
            vec!["nvme0n1 is used as swap".to_string()],
        );
        a.update(Event::InUse(m));
        keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter]);
        let t = a.targets();
        assert_eq!(t[0].1.as_deref(), Some("nvme0n1 is used as swap"));
        keys(&mut a, &[Key::Home, Key::Enter]);
        assert_eq!(a.screen, Screen::Target);
    }

    #[test]
    fn removed_source_sends_the_flow_back() {
        let mut a = app();
        keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter]);
        assert_eq!(a.screen, Screen::Target);
        let rest: Vec<Disk> = machine().into_iter().filter(|d| d.name != "sda").collect();
        a.update(Event::Disks(Ok(rest)));
        assert_eq!(a.screen, Screen::Source);
        assert!(a.message.as_ref().unwrap().contains("removed"));
    }
}
