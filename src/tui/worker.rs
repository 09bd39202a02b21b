//! Worker threads that do the console's I/O off the UI thread and send events: the disk
//! inventory (polled every 2 s, so hot-plugged disks appear) and the job directory (every 0.5 s).
use super::app::Event;
use super::jobdir;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Duration;

pub fn spawn_disk_scanner(tx: Sender<Event>) {
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            // scan_system marks the disk Lifeboat booted from (`boot_media`).
            let r = crate::devices::scan_system().map_err(|e| e.to_string());
            let usage: std::collections::BTreeMap<String, Vec<String>> = r
                .as_ref()
                .map(|disks| {
                    disks
                        .iter()
                        .map(|d| (d.name.clone(), crate::devices::in_use(&d.name)))
                        .collect()
                })
                .unwrap_or_default();
            if last.as_ref() != Some(&(r.clone(), usage.clone())) {
                last = Some((r.clone(), usage.clone()));
                if tx.send(Event::InUse(usage)).is_err() || tx.send(Event::Disks(r)).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

pub fn spawn_job_watcher(tx: Sender<Event>, dir: PathBuf) {
    std::thread::spawn(move || {
        let mut last = None;
        let mut first = true;
        loop {
            let s = jobdir::snapshot(&dir);
            if first || last != s {
                first = false;
                last = s.clone();
                if tx.send(Event::Job(s)).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}
