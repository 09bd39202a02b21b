//! Fuzzes the whole image reader: arbitrary bytes as an `.lbi` file go through open, info,
//! verify and export; any result is fine, a panic, a hang or an unbounded allocation is not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::jobs::{Cancel, NoProgress};
use std::path::PathBuf;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lifeboat-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let img = dir.join("f.lbi");
    if std::fs::write(&img, data).is_err() {
        return;
    }
    let _ = lifeboat::image::info(&img);
    let _ = lifeboat::image::verify(&img, &NoProgress, &Cancel::new());
    let raw = dir.join("out.raw");
    let _ = lifeboat::image::export(&img, &raw, true, &NoProgress, &Cancel::new());
    let _ = std::fs::remove_file(&raw);
});
