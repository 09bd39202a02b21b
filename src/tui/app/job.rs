//! The progress and result screens (drawn by `view::job`): following the job whichever console
//! started it, cancelling it, dismissing its result.
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
            Key::Char('p') if self.under_init => vec![Command::PowerOff],
            Key::Char('r') if self.under_init => vec![Command::Reboot],
            _ => vec![],
        }
    }
}
