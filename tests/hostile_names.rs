//! The adversary names things: file names, filesystem labels, a USB device's model, vendor and
//! serial, all chosen to hold terminal controls (`ESC [ 2 J` clears the screen, `ESC ] 0 ; … BEL`
//! retitles the window, `\r` overwrites the line, U+009B is CSI on the Linux console, U+202E
//! turns the rest of the line around). The human-readable outputs (stdout and stderr without
//! `--json`) show them as visible escapes and never pass a control to the terminal; the
//! `--json` outputs keep every name exact (C1, DEL and bidi controls written as `\uXXXX`).
mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// The controls a hostile name carries (each must come out escaped).
const HOSTILE: &str = "\x1b[2J\x1b]0;pwned\x07\r\u{9b}31m\u{7f}\u{202e}";
/// How [`HOSTILE`] is shown to a person.
const SHOWN: &str = "\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\u{9b}31m\\x7f\\u{202e}";

/// The characters of `s` that would reach the terminal as controls: every C0 control but the
/// line break (and the tab), DEL, C1 controls, bidi embeddings, overrides and isolates.
fn controls(s: &str) -> Vec<char> {
    s.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect()
}

/// `stderr` without the progress line's own `\r ESC[K` redraws (written by Lifeboat itself).
fn stderr_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).replace("\r\x1b[K", "\n")
}

/// Every string in `v`.
fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
        serde_json::Value::Object(m) => m.values().flat_map(strings).collect(),
        _ => vec![],
    }
}

fn assert_clean(what: &str, s: &str) {
    let c = controls(s);
    assert!(
        c.is_empty(),
        "{what}: controls {c:?} reached the terminal:\n{s:?}"
    );
}

/// `image create` of a source file whose name is hostile, then `image info`: the messages and
/// the info show the name escaped; `info --json` names it exactly. The source is unchanged.
#[test]
fn a_hostile_source_name_in_create_and_info() {
    let dir = TempDir::new("hostile-create");
    let src = dir.p(&format!("s{HOSTILE}.img"));
    data_file(&src, 3 * MIB, 7);
    let before = sha256(&src);
    let img = dir.p("a.lbi");
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--no-verify"]);
    assert_exit(&o, 0);
    assert_clean("image create (stdout)", &String::from_utf8_lossy(&o.stdout));
    assert_clean("image create (stderr)", &stderr_text(&o));
    let o = lifeboat(&["image", "info", s(&img)]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_clean("image info", &out);
    assert!(out.contains(SHOWN), "the name is not shown escaped: {out}");
    let o = lifeboat(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 0);
    // serde_json writes C0 controls as \u escapes, Lifeboat C1, DEL and bidi controls: no
    // control reaches the terminal even here, and the values parse back exactly.
    assert_clean("image info --json", &String::from_utf8_lossy(&o.stdout));
    let v = json(&o);
    assert!(
        strings(&v).iter().any(|x| x.contains(HOSTILE)),
        "the JSON does not keep the name exactly: {v}"
    );
    assert_eq!(sha256(&src), before);
}

/// An error naming a hostile path (stderr) shows it escaped; the `--json` error keeps it exact.
#[test]
fn a_hostile_name_in_an_error() {
    let dir = TempDir::new("hostile-error");
    let missing = dir.p(&format!("gone{HOSTILE}.lbi"));
    let o = lifeboat(&["image", "info", s(&missing)]);
    assert_ne!(o.status.code(), Some(0));
    let e = stderr_text(&o);
    assert_clean("the error", &e);
    assert!(e.contains(SHOWN), "the name is not shown escaped: {e}");
    let o = lifeboat(&["image", "info", s(&missing), "--json"]);
    assert_clean("the --json error", &String::from_utf8_lossy(&o.stdout));
    let v = json(&o);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(HOSTILE),
        "the JSON error lost the name: {msg:?}"
    );
}

/// A loop device over a file with a hostile name, holding ext4 with a hostile label:
/// `list` and `health` show both escaped, on their own line; `list --json` keeps them exact.
/// Needs root and loop devices (skips otherwise).
#[test]
fn list_and_health_of_a_device_with_a_hostile_label() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("hostile-list");
    let f = dir.p(&format!("f\n{HOSTILE}.img"));
    zero_file(&f, 16 * MIB);
    // An ext4 label is at most 16 bytes.
    let label = "L\x1b[7m\r\u{202e}";
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .arg(&f));
    let before = sha256(&f);
    let Some(l) = Loop::attach(&f) else { return };
    let o = lifeboat(&["list"]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_clean("list", &out);
    let name = l.dev.trim_start_matches("/dev/");
    let line = out
        .lines()
        .find(|x| x.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not listed: {out}"));
    assert!(line.contains("L\\x1b[7m\\x0d\\u{202e}"), "label: {line}");
    assert!(line.contains(&format!("f\\x0a{SHOWN}.img")), "file: {line}");
    let o = lifeboat(&["list", "--json"]);
    assert_exit(&o, 0);
    assert_clean("list --json", &String::from_utf8_lossy(&o.stdout));
    let v = json(&o);
    let d = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()
        .clone();
    assert_eq!(d["label"].as_str(), Some(label));
    assert_eq!(d["backing_file"].as_str(), Some(s(&f)));
    let o = lifeboat(&["health", &l.dev]);
    assert_clean("health (stdout)", &String::from_utf8_lossy(&o.stdout));
    assert_clean("health (stderr)", &stderr_text(&o));
    drop(l);
    assert_eq!(sha256(&f), before);
}

/// A USB stick that reports a hostile vendor, model and serial (sysfs passes any bytes on):
/// the inventory table shows them escaped, the stick on one row.
#[test]
fn a_hostile_usb_model_in_the_table() {
    let t = TempDir::new("hostile-usb");
    let sys = t.path().join("sys");
    let dev = t.path().join("dev");
    fs::create_dir_all(&dev).unwrap();
    let devpath = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
    let dir = sys.join("devices").join(devpath).join("block/sdx");
    let w = |p: &Path, v: &[u8]| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, v).unwrap();
    };
    fs::create_dir_all(dir.join("holders")).unwrap();
    w(&dir.join("size"), b"2097152\n");
    w(&dir.join("dev"), b"8:96\n");
    w(&dir.join("removable"), b"1\n");
    w(&dir.join("ro"), b"0\n");
    w(&dir.join("queue/logical_block_size"), b"512\n");
    w(&dir.join("queue/physical_block_size"), b"512\n");
    w(&dir.join("queue/rotational"), b"0\n");
    symlink("../..", dir.join("device")).unwrap();
    let d = sys.join("devices").join(devpath);
    w(&d.join("model"), format!("Stick{HOSTILE}\n").as_bytes());
    w(&d.join("vendor"), b"V\x1b[8m\n");
    let serial = format!("S\n{HOSTILE}");
    let mut pg80 = vec![0u8, 0x80, 0, serial.len() as u8];
    pg80.extend_from_slice(serial.as_bytes());
    w(&d.join("vpd_pg80"), &pg80);
    fs::create_dir_all(sys.join("block")).unwrap();
    symlink(
        format!("../devices/{devpath}/block/sdx"),
        sys.join("block/sdx"),
    )
    .unwrap();
    let disks = lifeboat::devices::scan(&sys, &dev).unwrap();
    let sdx = disks.iter().find(|d| d.name == "sdx").expect("sdx found");
    assert!(
        sdx.model.as_deref().unwrap_or_default().contains('\x1b'),
        "the model is kept exact for --json: {:?}",
        sdx.model
    );
    let table = lifeboat::devices::table(&disks);
    assert_clean("the table", &table);
    assert_eq!(table.lines().count(), 2, "one row for the stick: {table}");
    assert!(table.contains(&format!("Stick{SHOWN}")), "{table}");
    assert!(table.contains("V\\x1b[8m"), "{table}");
    // The JSON keeps the strings; serde_json escapes the C0 controls.
    let j = lifeboat::devices::list_json_string(&disks);
    assert!(!j.contains('\x1b'), "a raw ESC in the JSON: {j}");
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["devices"][0]["model"].as_str(), sdx.model.as_deref());
}

/// A source whose name adds a line of its own ("Unreadable   0 B in 0 ranges", to hide the
/// real one): `image info` keeps it on the Source line, escaped; one Unreadable line.
#[test]
fn a_source_name_cannot_add_a_line_to_info() {
    let dir = TempDir::new("hostile-info-line");
    let src = dir.p("s\nUnreadable   0 B in 0 ranges\n.img");
    data_file(&src, 2 * MIB, 9);
    let img = dir.p("a.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&img), "--no-verify"]),
        0,
    );
    let o = lifeboat(&["image", "info", s(&img)]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let n = out.lines().filter(|l| l.starts_with("Unreadable")).count();
    assert_eq!(n, 1, "{out}");
    assert!(
        out.contains("s\\x0aUnreadable   0 B in 0 ranges\\x0a.img"),
        "{out}"
    );
}
