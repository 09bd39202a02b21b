//! The other side of `scripts/bench-s3`: uploads or downloads 1 MiB pieces with the rust-s3
//! crate (blocking), THREADS at a time, like the bench's `curl` loop does, so that Lifeboat's
//! own S3 client can be measured against a maintained S3 crate on the same server.
//!
//!   s3crate-bench put ENDPOINT BUCKET PREFIX PIECES_DIR THREADS
//!   s3crate-bench get ENDPOINT BUCKET PREFIX PIECES_DIR OUT THREADS
//!
//! `put` stores every file of PIECES_DIR as PREFIX/NAME; `get` fetches PREFIX/NAME for every
//! file name there and writes it into OUT at (the number in NAME) MiB. Keys from
//! AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; region us-east-1; path-style requests.
use s3::creds::Credentials;
use s3::{Bucket, Region};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn die(msg: &str) -> ! {
    eprintln!("s3crate-bench: {msg}");
    std::process::exit(1);
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (mode, endpoint, bucket, prefix, dir) = match a.as_slice() {
        [m, e, b, p, d, ..] => (
            m.as_str(),
            e.clone(),
            b.clone(),
            p.clone(),
            PathBuf::from(d),
        ),
        _ => die("usage: put|get ENDPOINT BUCKET PREFIX PIECES_DIR [OUT] THREADS"),
    };
    let (out, threads) = match (mode, &a[5..]) {
        ("put", [t]) => (None, t),
        ("get", [o, t]) => (Some(PathBuf::from(o)), t),
        _ => die("usage: put|get ENDPOINT BUCKET PREFIX PIECES_DIR [OUT] THREADS"),
    };
    let threads: usize = threads
        .parse()
        .unwrap_or_else(|_| die("THREADS is a number"));
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| die(&format!("{k} is not set")));
    let creds = Credentials::new(
        Some(&env("AWS_ACCESS_KEY_ID")),
        Some(&env("AWS_SECRET_ACCESS_KEY")),
        None,
        None,
        None,
    )
    .unwrap_or_else(|e| die(&format!("credentials: {e}")));
    let region = Region::Custom {
        region: "us-east-1".into(),
        endpoint,
    };
    let bucket = Bucket::new(&bucket, region, creds)
        .unwrap_or_else(|e| die(&format!("bucket: {e}")))
        .with_path_style();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let out = out.map(|p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap_or_else(|e| die(&format!("{}: {e}", p.display())))
    });
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { return };
                let key = format!("{prefix}/{name}");
                match &out {
                    None => {
                        let body = std::fs::read(dir.join(name)).unwrap();
                        let r = bucket
                            .put_object(&key, &body)
                            .unwrap_or_else(|e| die(&format!("PUT {key}: {e}")));
                        if r.status_code() != 200 {
                            die(&format!("PUT {key}: HTTP {}", r.status_code()));
                        }
                    }
                    Some(f) => {
                        let r = bucket
                            .get_object(&key)
                            .unwrap_or_else(|e| die(&format!("GET {key}: {e}")));
                        if r.status_code() != 200 {
                            die(&format!("GET {key}: HTTP {}", r.status_code()));
                        }
                        let n: u64 = name
                            .trim_start_matches(|c: char| !c.is_ascii_digit())
                            .parse()
                            .unwrap_or_else(|_| die(&format!("{name}: no piece number")));
                        f.write_all_at(r.as_slice(), n << 20).unwrap();
                    }
                }
            });
        }
    });
    if let Some(f) = out {
        f.sync_all().unwrap();
    }
}
