//! Keys as the console's state machine sees them: a small enum independent of crossterm, so
//! `update` and its tests never touch a terminal.
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    /// Ctrl-C (asks before quitting, like `q`).
    Interrupt,
    Char(char),
}

impl Key {
    /// Translates a crossterm key event; None for releases and keys the console does not use.
    pub fn from_crossterm(k: KeyEvent) -> Option<Key> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        Some(match k.code {
            KeyCode::Char('c') if ctrl => Key::Interrupt,
            KeyCode::Char(_) if ctrl => return None,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Left => Key::Left,
            KeyCode::Right => Key::Right,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Tab => Key::Tab,
            KeyCode::BackTab => Key::BackTab,
            KeyCode::Backspace => Key::Backspace,
            _ => return None,
        })
    }

    /// Movement in a list: arrows and vi keys. Returns the signed step.
    pub fn list_step(self) -> Option<isize> {
        match self {
            Key::Up | Key::Char('k') => Some(-1),
            Key::Down | Key::Char('j') => Some(1),
            Key::PageUp => Some(-10),
            Key::PageDown => Some(10),
            Key::Home | Key::Char('g') => Some(isize::MIN / 2),
            Key::End | Key::Char('G') => Some(isize::MAX / 2),
            _ => None,
        }
    }
}

/// Moves a selection index by `step` within `0..len`, clamping at the ends.
pub fn step_index(cur: usize, step: isize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let n = cur as isize + step;
    n.clamp(0, len as isize - 1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vi_keys_and_arrows_move() {
        assert_eq!(Key::Char('j').list_step(), Some(1));
        assert_eq!(Key::Up.list_step(), Some(-1));
        assert_eq!(Key::Char('x').list_step(), None);
        assert_eq!(step_index(0, -1, 3), 0);
        assert_eq!(step_index(2, 1, 3), 2);
        assert_eq!(step_index(1, isize::MAX / 2, 3), 2);
        assert_eq!(step_index(5, 1, 0), 0);
    }

    #[test]
    fn ctrl_c_is_interrupt() {
        let k = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(Key::from_crossterm(k), Some(Key::Interrupt));
        let k = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE);
        assert_eq!(Key::from_crossterm(k), Some(Key::Char('c')));
    }
}
