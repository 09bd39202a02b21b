//! `lifeboat image serve` with real NBD clients as referees: `qemu-img compare` of the served
//! disk against `image export`'s raw file (a full image, and the third point of an incremental
//! chain, over a Unix socket and TCP), `qemu-img convert` from it, `qemu-nbd --list`, several
//! clients at once, clients that send garbage or leave in the middle of a read (the server goes
//! on serving), and the writable overlay (`qemu-io` writes land in the overlay, never in the
//! image). Every image's sha256 is checked unchanged afterwards.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod common;
use common::{assert_exit, have_qemu_img, lifeboat, lifeboat_cmd, run, s, sh, sha256, TempDir};

/// A 64 MiB GPT disk: ext4 with files, FAT with files, old random data in free space, a run of
/// zeros.
fn sample_disk(t: &TempDir) -> PathBuf {
    let d = t.p("disk.img");
    let c = t.p("content");
    sh(&format!(
        "mkdir -p {c}/docs && cp -r /usr/share/doc/bash* {c}/docs/ 2>/dev/null; \
         head -c 3000000 /dev/urandom > {c}/random.bin; seq 1 100000 > {c}/numbers.txt; \
         truncate -s 64M {d} && dd if=/dev/urandom of={d} bs=1M count=64 conv=notrunc status=none && \
         dd if=/dev/zero of={d} bs=1M seek=52 count=6 conv=notrunc status=none && \
         sgdisk -n1:2048:+32M -t1:8300 -n2:0:+16M -t2:0700 {d} >/dev/null && \
         mkfs.ext4 -q -F -d {c} -E offset={o1} {d} 32M && \
         dd if=/dev/zero of={t}/fat.img bs=1M count=16 status=none && mkfs.vfat -n LBSERVE {t}/fat.img >/dev/null && \
         mcopy -i {t}/fat.img {c}/numbers.txt {c}/random.bin ::/ && \
         dd if={t}/fat.img of={d} bs=1M seek=33 conv=notrunc status=none && rm {t}/fat.img",
        c = s(&c),
        d = s(&d),
        t = s(t.path()),
        o1 = 2048 * 512,
    ));
    d
}

fn create(src: &Path, img: &Path, parent: Option<&Path>) {
    let mut args = vec!["image", "create", s(src), s(img)];
    if let Some(p) = parent {
        args.extend(["--parent", s(p)]);
    }
    assert_exit(&lifeboat(&args), 0);
}

fn export(img: &Path, out: &Path) {
    assert_exit(&lifeboat(&["image", "export", s(img), s(out)]), 0);
}

/// A running `lifeboat image serve`, stopped with SIGTERM on drop.
struct Server {
    child: Option<Child>,
    uri: String,
    report: serde_json::Value,
}

impl Server {
    fn start(img: &Path, listen: &[&str]) -> Server {
        let mut child = lifeboat_cmd()
            .args(["image", "serve", s(img), "--json"])
            .args(listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lifeboat image serve");
        // The report line comes once the server listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "image serve did not start ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        Server {
            uri: report["uri"].as_str().unwrap().to_string(),
            child: Some(child),
            report,
        }
    }

    fn unix(img: &Path, sock: &Path) -> Server {
        Server::start(img, &["--socket", s(sock)])
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Stops the server (SIGTERM) and returns its output.
    fn stop(mut self) -> Output {
        let child = self.child.take().unwrap();
        run(Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string()));
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img").args(args).output().unwrap()
}

/// `qemu-img compare` of a raw file and the served disk: identical.
#[track_caller]
fn compare_equal(raw: &Path, uri: &str) {
    let o = qemu_img(&["compare", "-f", "raw", "-F", "raw", s(raw), uri]);
    assert_exit(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Images are identical"),
        "{o:?}"
    );
}

#[test]
fn served_full_image_and_third_chain_point_equal_their_exports() {
    if !have_qemu_img() {
        return;
    }
    let t = TempDir::new("serve-chain");
    let disk = sample_disk(&t);
    let full = t.p("full.lbi");
    create(&disk, &full, None);
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=1M seek=2 count=2 conv=notrunc status=none",
        d = s(&disk)
    ));
    let inc1 = t.p("inc1.lbi");
    create(&disk, &inc1, Some(&full));
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=64K seek=700 count=3 conv=notrunc status=none",
        d = s(&disk)
    ));
    let inc2 = t.p("inc2.lbi");
    create(&disk, &inc2, Some(&inc1));
    let sums: Vec<String> = [&full, &inc1, &inc2].iter().map(|p| sha256(p)).collect();

    for (img, tcp) in [(&full, false), (&inc2, true)] {
        let raw = t.p("export.raw");
        let _ = std::fs::remove_file(&raw);
        export(img, &raw);
        let srv = if tcp {
            Server::start(img, &["--listen", "127.0.0.1:0"])
        } else {
            Server::unix(img, &t.p("nbd.sock"))
        };
        assert_eq!(srv.report["size_bytes"], 64 << 20);
        assert_eq!(srv.report["read_only"], true);
        let links = if img == &inc2 { 3 } else { 1 };
        assert_eq!(srv.report["chain"].as_array().unwrap().len(), links);
        assert!(srv
            .uri
            .starts_with(if tcp { "nbd://127.0.0.1:" } else { "nbd+unix:" }));
        compare_equal(&raw, &srv.uri);
        // The third point is not the first: the chain really was resolved.
        if img == &inc2 {
            let first = t.p("first.raw");
            export(&full, &first);
            let o = qemu_img(&["compare", "-f", "raw", "-F", "raw", s(&first), &srv.uri]);
            assert_exit(&o, 1);
            std::fs::remove_file(&first).unwrap();
        }
        let conv = t.p("conv.raw");
        let _ = std::fs::remove_file(&conv);
        run(Command::new("qemu-img").args(["convert", "-O", "raw", &srv.uri, s(&conv)]));
        run(Command::new("cmp").arg(&raw).arg(&conv));
        let o = srv.stop();
        assert_exit(&o, 0);
    }
    // The export lists (qemu-nbd asks with NBD_OPT_LIST and NBD_OPT_INFO).
    let sock = t.p("list.sock");
    let srv = Server::unix(&full, &sock);
    let o = Command::new("qemu-nbd")
        .args(["--list", "-k", s(&sock)])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("export: 'full.lbi'") && out.contains("size:  67108864"),
        "{out}"
    );
    assert_exit(&srv.stop(), 0);
    assert!(
        !sock.exists(),
        "the socket file is removed when the server stops"
    );
    let after: Vec<String> = [&full, &inc1, &inc2].iter().map(|p| sha256(p)).collect();
    assert_eq!(sums, after, "an image changed");
}

/// A minimal NBD client: greeting, client flags, NBD_OPT_GO for the default export.
fn nbd_go(sock: &Path) -> UnixStream {
    let mut c = UnixStream::connect(sock).unwrap();
    let mut g = [0u8; 18];
    c.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    let mut m = 3u32.to_be_bytes().to_vec();
    m.extend_from_slice(b"IHAVEOPT");
    m.extend_from_slice(&7u32.to_be_bytes());
    m.extend_from_slice(&6u32.to_be_bytes());
    m.extend_from_slice(&[0; 6]);
    c.write_all(&m).unwrap();
    loop {
        let mut h = [0u8; 20];
        c.read_exact(&mut h).unwrap();
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        c.read_exact(&mut d).unwrap();
        if kind == 1 {
            return c;
        }
        assert_eq!(kind, 3, "NBD_REP_INFO or ACK");
    }
}

fn nbd_read_request(cookie: u64, off: u64, len: u32) -> Vec<u8> {
    let mut r = 0x2560_9513u32.to_be_bytes().to_vec();
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&cookie.to_be_bytes());
    r.extend_from_slice(&off.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    r
}

/// A damaged chunk fails exactly the reads that touch it, also a read that starts in a good
/// chunk before it (an error reply, no data: the reply must not have started), and the
/// connection stays usable (the kernel's NBD client would otherwise fail every later read).
#[test]
fn a_damaged_chunk_fails_its_reads_and_the_connection_goes_on() {
    let t = TempDir::new("serve-damaged");
    let disk = t.p("noise.img");
    // Incompressible: every chunk is stored raw, on its own.
    sh(&format!("head -c 8388608 /dev/urandom > {}", s(&disk)));
    let img = t.p("full.lbi");
    create(&disk, &img, None);
    let data = std::fs::read(&disk).unwrap();
    let mut bytes = std::fs::read(&img).unwrap();
    let w = &data[(3 << 20) + 8192..(3 << 20) + 12288];
    let at = bytes
        .windows(w.len())
        .position(|x| x == w)
        .expect("chunk 3 is stored raw");
    bytes[at + 7] ^= 0x20;
    std::fs::write(&img, &bytes).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&lifeboat(&["image", "verify", s(&img), "--json"]).stdout).unwrap();
    assert_eq!(v["problem_count"], 1, "exactly chunk 3 is damaged: {v}");
    let sum = sha256(&img);
    let sock = t.p("nbd.sock");
    let mut srv = Server::unix(&img, &sock);
    let mut c = nbd_go(&sock);
    let mut h = [0u8; 16];
    // From the end of chunk 2 into chunk 3; then inside chunk 3 only.
    for (cookie, off) in [(1u64, (3u64 << 20) - 4096), (2, (3 << 20) + 4096)] {
        c.write_all(&nbd_read_request(cookie, off, 8192)).unwrap();
        c.read_exact(&mut h).unwrap();
        assert_eq!(
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            5,
            "EIO for the read at {off}"
        );
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), cookie);
    }
    // The same connection: chunks 2 and 4 read back right.
    for (cookie, off) in [(3u64, (2u64 << 20) + 512), (4, (4 << 20) + 4096)] {
        c.write_all(&nbd_read_request(cookie, off, 8192)).unwrap();
        c.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 0);
        let mut d = vec![0u8; 8192];
        c.read_exact(&mut d).unwrap();
        assert_eq!(&d[..], &data[off as usize..off as usize + 8192]);
    }
    drop(c);
    assert!(srv.alive(), "the server died");
    assert_exit(&srv.stop(), 0);
    assert_eq!(sha256(&img), sum, "the image changed");
}

#[test]
fn garbage_and_vanishing_clients_do_not_stop_the_server() {
    if !have_qemu_img() {
        return;
    }
    let t = TempDir::new("serve-garbage");
    let disk = sample_disk(&t);
    let img = t.p("full.lbi");
    create(&disk, &img, None);
    let sum = sha256(&img);
    let raw = t.p("export.raw");
    export(&img, &raw);
    let sock = t.p("nbd.sock");
    let mut srv = Server::unix(&img, &sock);

    // Garbage instead of client flags; garbage after valid flags; a half option header.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[
            0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ][..],
        &[0, 0, 0, 1, b'I', b'H', b'A'][..],
    ] {
        let mut c = UnixStream::connect(&sock).unwrap();
        let _ = c.write_all(junk);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    // Connect and leave at once.
    drop(UnixStream::connect(&sock).unwrap());
    // Leave in the middle of a 16 MiB read, and after sending half a request.
    let mut c = nbd_go(&sock);
    c.write_all(&nbd_read_request(1, 0, 16 << 20)).unwrap();
    let mut some = [0u8; 4096];
    c.read_exact(&mut some).unwrap();
    drop(c);
    let mut c = nbd_go(&sock);
    c.write_all(&nbd_read_request(2, 0, 4096)[..11]).unwrap();
    drop(c);
    // A request past the end: an error reply, the connection stays usable.
    let mut c = nbd_go(&sock);
    c.write_all(&nbd_read_request(3, (64 << 20) - 512, 1024))
        .unwrap();
    let mut h = [0u8; 16];
    c.read_exact(&mut h).unwrap();
    assert_eq!(
        u32::from_be_bytes(h[4..8].try_into().unwrap()),
        22,
        "EINVAL"
    );
    c.write_all(&nbd_read_request(4, 1 << 20, 512)).unwrap();
    c.read_exact(&mut h).unwrap();
    assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 0);
    let mut d = vec![0u8; 512];
    c.read_exact(&mut d).unwrap();
    let want = std::fs::read(&raw).unwrap();
    assert_eq!(&d[..], &want[1 << 20..(1 << 20) + 512]);
    drop(c);

    assert!(srv.alive(), "the server died");
    // Three clients at once, each comparing the whole disk.
    let uri = srv.uri.clone();
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (raw, uri) = (raw.clone(), uri.clone());
            std::thread::spawn(move || compare_equal(&raw, &uri))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(srv.alive(), "the server died");
    let o = srv.stop();
    assert_exit(&o, 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dropped:"),
        "garbage is logged as dropped: {err}"
    );
    assert_eq!(sha256(&img), sum, "the image changed");
}

#[test]
fn writes_go_to_the_overlay_never_to_the_image() {
    if !have_qemu_img() {
        return;
    }
    let t = TempDir::new("serve-overlay");
    let disk = sample_disk(&t);
    let img = t.p("full.lbi");
    create(&disk, &img, None);
    let sum = sha256(&img);
    let raw = t.p("export.raw");
    export(&img, &raw);
    let sock = t.p("nbd.sock");

    // Read-only: a client that wants to write cannot.
    let srv = Server::unix(&img, &sock);
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 4096", &srv.uri])
        .output()
        .unwrap();
    assert!(
        !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("failed"),
        "a write to a read-only export succeeded: {o:?}"
    );
    drop(srv);

    let ovl = t.p("disk.ovl");
    let srv = Server::start(&img, &["--socket", s(&sock), "--writable-overlay", s(&ovl)]);
    assert_eq!(srv.report["read_only"], false);
    // A sector, a range across chunks (1 MiB), zeros (WRITE_ZEROES), then flush.
    let o = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 512 512",
            "-c",
            "write -P 0xc3 1048000 200000",
            "-c",
            "write -z 8388608 65536",
            "-c",
            "flush",
            &srv.uri,
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let mut want = std::fs::read(&raw).unwrap();
    want[512..1024].fill(0x5a);
    want[1048000..1248000].fill(0xc3);
    want[8388608..8388608 + 65536].fill(0);
    let expected = t.p("expected.raw");
    std::fs::write(&expected, &want).unwrap();
    compare_equal(&expected, &srv.uri);
    assert_exit(&srv.stop(), 0);
    assert_eq!(sha256(&img), sum, "the image changed");

    // Served again with the same overlay: the writes are still there.
    let srv = Server::start(&img, &["--socket", s(&sock), "--writable-overlay", s(&ovl)]);
    compare_equal(&expected, &srv.uri);
    drop(srv);
    // Without it, the image as it was.
    let srv = Server::unix(&img, &sock);
    compare_equal(&raw, &srv.uri);
    drop(srv);
    // The overlay of this image over another image is refused (exit 4), and so is an overlay
    // on the image itself.
    let other = t.p("other.lbi");
    create(&disk, &other, None);
    let o = lifeboat(&[
        "image",
        "serve",
        s(&other),
        "--socket",
        s(&sock),
        "--writable-overlay",
        s(&ovl),
    ]);
    assert_exit(&o, 4);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another image"),
        "{o:?}"
    );
    let o = lifeboat(&[
        "image",
        "serve",
        s(&img),
        "--socket",
        s(&sock),
        "--writable-overlay",
        s(&img),
    ]);
    assert_exit(&o, 4);
    assert_eq!(sha256(&img), sum, "the image changed");
}

/// `image mount` / `umount` on this host: the refusals (the mount itself runs in the QEMU test
/// `image_mount`, under a kernel with the nbd module). Nothing is mounted or changed.
#[test]
fn mount_and_umount_refusals() {
    let t = TempDir::new("serve-mount");
    let disk = sample_disk(&t);
    let img = t.p("full.lbi");
    create(&disk, &img, None);
    let sum = sha256(&img);
    // Not a directory: a usage error.
    let o = lifeboat(&["image", "mount", s(&img), s(&disk)]);
    assert_exit(&o, 2);
    // Nothing mounted there.
    let empty = t.p("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = lifeboat(&["image", "umount", s(&empty)]);
    assert_exit(&o, 2);
    // A mount that is not an image's: refused, left mounted.
    let o = lifeboat(&["image", "umount", "/proc"]);
    assert_exit(&o, 4);
    assert!(Path::new("/proc/self").exists());
    // Without NBD devices (this host's kernel has no nbd module): a clear failure.
    let nbd = Path::new("/sys/block/nbd0").exists()
        || Command::new("modprobe")
            .arg("-n")
            .arg("nbd")
            .status()
            .is_ok_and(|s| s.success());
    if !nbd {
        let o = lifeboat(&["image", "mount", s(&img), s(&empty)]);
        assert_exit(&o, 1);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("NBD") && err.contains("could not be attached"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    }
    assert_eq!(sha256(&img), sum, "the image changed");
}
