//! The progress and result screens (drawn by `view::job`): following the job whichever console
//! started it, cancelling it, dismissing its result, and from an image job's result starting
//! the second copy of its image.
use super::super::keys::Key;
use super::{App, Command, Overlay, Screen};
use crate::jobs::jobdir::JobSnapshot;

impl App {
    pub(super) fn on_job(&mut self, snap: Option<JobSnapshot>) {
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

    pub(super) fn key_progress(&mut self, k: Key) -> Vec<Command> {
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

    /// The image of the finished job shown, when it was an image job that leaves a good image
    /// behind (created, restored from, verified, copied): what "make the second copy" copies.
    pub fn result_image(&self) -> Option<String> {
        use crate::cli::{parse_argv, Cmd};
        use crate::image::ImageCmd;
        let j = self.job.as_ref().filter(|j| !j.running)?;
        // Done, or done with unreadable sectors recorded (the image is complete either way).
        if j.outcome().is_none_or(|r| !matches!(r.exit_code, 0 | 3)) {
            return None;
        }
        match parse_argv(&j.spec.args)? {
            Cmd::Image(ImageCmd::Create { image, .. })
            | Cmd::Image(ImageCmd::Restore { image, .. })
            | Cmd::Image(ImageCmd::Verify { image, .. }) => Some(image),
            // A copy's own copy is made from the copy.
            Cmd::Image(ImageCmd::Copy { dest, .. }) => Some(dest),
            _ => None,
        }
    }

    pub(super) fn key_result(&mut self, k: Key) -> Vec<Command> {
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
            Key::Char('c') => match self.result_image() {
                Some(img) => {
                    self.reset_flow();
                    self.kind = super::JobKind::Copy;
                    self.copy_of = Some(img);
                    self.enter(Screen::Location);
                    vec![Command::AckResult]
                }
                None => vec![],
            },
            Key::Char('p') if self.under_init => vec![Command::PowerOff],
            Key::Char('r') if self.under_init => vec![Command::Reboot],
            _ => vec![],
        }
    }
}
