//! The job menu (drawn by `view::menu`).
use super::super::keys::{step_index, Key};
use super::{App, Command, JobKind, Screen};

impl App {
    pub(super) fn key_menu(&mut self, k: Key) -> Vec<Command> {
        if let Some(s) = k.list_step() {
            self.menu_sel = step_index(self.menu_sel, s, JobKind::ALL.len());
        } else if let Key::Char(c @ '1'..='6') = k {
            self.menu_sel = (c as usize) - ('1' as usize);
            return self.key_menu(Key::Enter);
        } else if matches!(k, Key::Enter | Key::Right | Key::Char('l')) {
            self.kind = JobKind::ALL[self.menu_sel];
            self.reset_flow();
            self.enter(self.kind.steps()[0]);
            return self.location_reads();
        } else if matches!(k, Key::Esc | Key::Left | Key::Char('h')) {
            self.screen = Screen::Disks;
        }
        vec![]
    }
}
