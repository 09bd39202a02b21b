//! What `image restore` does where the image holds no used block, on loop devices (root): by
//! default the target keeps its old bytes; `--discard` TRIMs those chunks when the target
//! reports discard support (a loop device punches holes in its backing file: its allocated
//! size shrinks by exactly the discarded bytes) and says so and leaves them alone when it does
//! not (`queue/discard_max_bytes` 0); `--zero-free` zeroes them (BLKZEROOUT on a block device)
//! with the same result as writing zeros into a file; `--discard --zero-free` is a usage error.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod common;
use common::{assert_exit, json, lifeboat as lb, s, sh, sha256, Loop, TempDir, MIB};

const SIZE: u64 = 64 * MIB;

/// A 64 MiB GPT disk pre-filled with random "old data", one ext4 partition with some files.
fn used_disk(t: &TempDir) -> PathBuf {
    let d = t.p("disk.img");
    let c = t.p("content");
    sh(&format!(
        "mkdir -p {c} && head -c 9000000 /dev/urandom > {c}/a.bin && seq 1 200000 > {c}/n.txt && \
         head -c {SIZE} /dev/urandom > {d} && \
         sgdisk -n1:2048:+56M -t1:8300 {d} >/dev/null && \
         mkfs.ext4 -q -F -d {c} -E offset={o} {d} 56M",
        c = s(&c),
        d = s(&d),
        o = 2048 * 512
    ));
    d
}

/// A fully allocated target file of 0x55 bytes.
fn old_target(p: &Path) {
    std::fs::write(p, vec![0x55u8; SIZE as usize]).unwrap();
    sh(&format!("sync {}", s(p)));
}

/// Fills a loop device's backing file with 0x55 again, in place (never truncated under it).
fn refill(p: &Path) {
    sh(&format!(
        "head -c {SIZE} /dev/zero | tr '\\0' 'U' | dd of={} bs=1M conv=notrunc,fsync status=none",
        s(p)
    ));
}

fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

fn loop_name(l: &Loop) -> String {
    l.dev.trim_start_matches("/dev/").to_string()
}

#[test]
fn restore_free_space_keep_discard_zero() {
    let t = TempDir::new("restore-free");
    let disk = used_disk(&t);
    let img = t.p("disk.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&img)]), 0);
    // References on plain files: the default (old bytes stay) and --zero-free.
    let keep = t.p("keep.img");
    old_target(&keep);
    let o = lb(&["image", "restore", s(&img), s(&keep), "--yes", "--json"]);
    assert_exit(&o, 0);
    let unalloc = json(&o)["unallocated_bytes"].as_u64().unwrap();
    assert!(
        unalloc >= 8 * MIB,
        "the sample needs free chunks: {unalloc}"
    );
    let zeroed = t.p("zeroed.img");
    old_target(&zeroed);
    assert_exit(
        &lb(&[
            "image",
            "restore",
            s(&img),
            s(&zeroed),
            "--yes",
            "--zero-free",
        ]),
        0,
    );
    // --discard onto a regular file: not a block device, said so, nothing discarded.
    let f = t.p("file.img");
    old_target(&f);
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&f),
        "--yes",
        "--discard",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["discarded_bytes"], 0);
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .contains("not a block device"),
        "{r}"
    );
    assert_eq!(sha256(&f), sha256(&keep));
    // --discard with --zero-free: a usage error.
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&f),
        "--yes",
        "--discard",
        "--zero-free",
    ]);
    assert_exit(&o, 2);

    let back = t.p("back.img");
    old_target(&back);
    let Some(l) = Loop::attach(&back) else { return };
    let q = format!("/sys/block/{}/queue/discard_max_bytes", loop_name(&l));
    let max: u64 = std::fs::read_to_string(&q).unwrap().trim().parse().unwrap();
    if max == 0 {
        eprintln!("skipped: {} does not support discard here", l.dev);
        return;
    }
    // --discard: the free chunks are TRIMmed (holes in the backing file), the rest as restored.
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        &l.dev,
        "--yes",
        "--discard",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["discarded_bytes"], unalloc, "{r}");
    assert_eq!(r["unallocated_bytes"], unalloc, "{r}");
    let got = std::fs::read(&back).unwrap();
    let want = std::fs::read(&keep).unwrap();
    let mut trimmed = 0;
    for (c, (g, w)) in got
        .chunks(MIB as usize)
        .zip(want.chunks(MIB as usize))
        .enumerate()
    {
        if g != w {
            assert!(
                w.iter().all(|&b| b == 0x55),
                "chunk {c} differs but held used data"
            );
            trimmed += MIB;
        }
    }
    // A loop device punches holes: those read as zeros, and the file's blocks are freed.
    assert_eq!(
        trimmed, unalloc,
        "every free chunk, and only those, discarded"
    );
    assert!(
        allocated(&back) <= SIZE - unalloc + 256 * 1024,
        "backing file still holds {} bytes after discarding {unalloc}",
        allocated(&back)
    );
    // --zero-free on the loop device (BLKZEROOUT): the same bytes as zeros written to a file.
    refill(&back);
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        &l.dev,
        "--yes",
        "--zero-free",
        "--json",
    ]);
    assert_exit(&o, 0);
    sh(&format!("blockdev --flushbufs {}", l.dev));
    assert_eq!(sha256(&back), sha256(&zeroed));
    // A target that reports no discard support: a note, and its free space keeps old bytes.
    refill(&back);
    sh(&format!("blockdev --flushbufs {}", l.dev));
    if std::fs::write(&q, "0").is_err() || std::fs::read_to_string(&q).unwrap().trim() != "0" {
        eprintln!("skipped the no-discard part: cannot set {q} to 0");
        return;
    }
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        &l.dev,
        "--yes",
        "--discard",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["discarded_bytes"], 0);
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .contains("does not support discard"),
        "{r}"
    );
    sh(&format!("blockdev --flushbufs {}", l.dev));
    assert_eq!(sha256(&back), sha256(&keep));
}
