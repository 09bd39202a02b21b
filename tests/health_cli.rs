//! `lifeboat health` and the `health` object of `list --json` on the host: a disk-image file is
//! refused (exit 2, it has no drive health), an unknown selector is a usage error, a loop device
//! reports `unknown` with its reason (never `ok`), and every listed disk carries a health object
//! with one of the four statuses. (Real SMART/NVMe drives are exercised in the QEMU test
//! `qemu-tests/tests/health.rs`.)
mod common;
use common::{assert_exit, json, lifeboat, s, stderr, zero_file, Loop, TempDir};

#[test]
fn a_file_and_a_bad_selector_are_refused() {
    let t = TempDir::new("health-cli");
    let img = t.p("disk.img");
    zero_file(&img, 1 << 20);
    let o = lifeboat(&["health", s(&img)]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("disk-image file"), "{}", stderr(&o));
    let o = lifeboat(&["health", "no-such-disk-xyz", "--json"]);
    assert_exit(&o, 2);
    assert_eq!(json(&o)["ok"], false);
}

#[test]
fn list_json_has_health_for_every_disk_and_a_loop_device_is_unknown() {
    let t = TempDir::new("health-loop");
    let img = t.p("loop.img");
    zero_file(&img, 4 << 20);
    let lo = Loop::attach(&img);
    let o = lifeboat(&["list", "--json"]);
    assert_exit(&o, 0);
    let v = json(&o);
    for d in v["devices"].as_array().unwrap() {
        let st = d["health"]["status"].as_str().unwrap_or("missing");
        assert!(
            ["ok", "worn", "failing", "unknown"].contains(&st),
            "{}: health {}",
            d["name"],
            d["health"]
        );
        if st != "ok" {
            assert!(
                !d["health"]["reasons"].as_array().unwrap().is_empty(),
                "{}: a non-ok status without a reason: {}",
                d["name"],
                d["health"]
            );
        }
        assert!(d["health"].get("attributes").is_none());
    }
    let Some(lo) = lo else { return };
    let name = lo.dev.trim_start_matches("/dev/");
    let d = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {v}"));
    assert_eq!(d["health"]["status"], "unknown", "{}", d["health"]);
    assert!(d["health"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("loop device"));
    let o = lifeboat(&["health", &lo.dev, "--json"]);
    assert_exit(&o, 0);
    let h = json(&o);
    assert_eq!(h["name"], name);
    assert_eq!(h["health"]["status"], "unknown");
    assert_eq!(h["health"]["protocol"], serde_json::Value::Null);
    let o = lifeboat(&["health", &lo.dev]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("health: UNKNOWN"), "{out}");
    assert!(out.contains("not a clean bill of health"), "{out}");
}
