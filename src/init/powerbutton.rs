//! The power button: PID 1 watches the input devices that can send KEY_POWER (the ACPI power
//! button, a keyboard's power key) and powers off cleanly — processes stopped, filesystems
//! unmounted, disks synced — when it is pressed, as a PC's owner expects.
use super::console;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Linux input event type and key code (linux/input-event-codes.h).
const EV_KEY: u16 = 1;
pub const KEY_POWER: u32 = 116;

/// Whether an input device's `capabilities/key` bitmap (hex words, most significant first,
/// each one `unsigned long` = 64 bits on x86-64) has `code` set.
pub fn has_key(caps: &str, code: u32) -> bool {
    let words: Vec<&str> = caps.split_whitespace().collect();
    let idx = (code / 64) as usize;
    if idx >= words.len() {
        return false;
    }
    let w = words[words.len() - 1 - idx];
    u64::from_str_radix(w, 16)
        .map(|v| v >> (code % 64) & 1 == 1)
        .unwrap_or(false)
}

/// The `/dev/input/eventN` devices (from `sys_class_input`) that can send KEY_POWER.
pub fn power_key_devices(sys_class_input: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys_class_input) else {
        return out;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names.into_iter().filter(|n| n.starts_with("event")) {
        let dev = sys_class_input.join(&n).join("device");
        let caps = std::fs::read_to_string(dev.join("capabilities/key")).unwrap_or_default();
        if has_key(&caps, KEY_POWER) {
            let name = std::fs::read_to_string(dev.join("name"))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push((Path::new("/dev/input").join(&n), name));
        }
    }
    out
}

/// Decodes one `struct input_event` (x86-64: 16-byte timeval, u16 type, u16 code, i32 value).
pub fn decode(ev: &[u8; 24]) -> (u16, u16, i32) {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    (ty, code, value)
}

/// Starts one watcher thread per power-key device; returns their names.
pub fn start() -> crate::Result<String> {
    // evdev has no device alias: nothing else loads it.
    if let Err(e) = super::modules::load_by_name("evdev") {
        console::kmsg(4, &format!("evdev: {e}"));
    }
    let devs = power_key_devices(Path::new("/sys/class/input"));
    if devs.is_empty() {
        return Ok("no power button found".into());
    }
    let mut names = Vec::new();
    for (path, name) in devs {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                console::kmsg(4, &format!("{}: {e}", path.display()));
                continue;
            }
        };
        names.push(format!("{name} ({})", path.display()));
        let label = name.clone();
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || {
                let mut ev = [0u8; 24];
                while f.read_exact(&mut ev).is_ok() {
                    let (ty, code, value) = decode(&ev);
                    if ty == EV_KEY && u32::from(code) == KEY_POWER && value == 1 {
                        super::power::shutdown(
                            super::power::Action::PowerOff,
                            &format!("power button pressed ({label})"),
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            console::kmsg(4, &format!("power button thread: {e}"));
        }
    }
    Ok(names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bitmaps() {
        // The ACPI power button: only KEY_POWER (116 = word 1, bit 52).
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("0", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        // A keyboard with many keys, KEY_POWER among them.
        let kbd = "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe";
        assert!(has_key(kbd, KEY_POWER));
        assert!(has_key(kbd, 1), "KEY_ESC");
        assert!(!has_key(kbd, 0));
        assert!(!has_key("zz 0", KEY_POWER));
    }

    #[test]
    fn finds_devices_in_a_fixture_tree() {
        let t = std::env::temp_dir().join(format!("lb-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        for (ev, name, caps) in [
            ("event0", "Power Button", "10000000000000 0"),
            ("event1", "QEMU Mouse", "1f0000 0 0 0 0"),
        ] {
            let d = t.join(ev).join("device/capabilities");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("key"), format!("{caps}\n")).unwrap();
            std::fs::write(t.join(ev).join("device/name"), format!("{name}\n")).unwrap();
        }
        std::fs::create_dir_all(t.join("input0")).unwrap();
        let v = power_key_devices(&t);
        assert_eq!(
            v,
            [(
                PathBuf::from("/dev/input/event0"),
                "Power Button".to_string()
            )]
        );
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn decodes_events() {
        let mut ev = [0u8; 24];
        ev[16..18].copy_from_slice(&1u16.to_ne_bytes());
        ev[18..20].copy_from_slice(&116u16.to_ne_bytes());
        ev[20..24].copy_from_slice(&1i32.to_ne_bytes());
        assert_eq!(decode(&ev), (1, 116, 1));
    }
}
