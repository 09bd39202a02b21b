//! The S3 image store (`s3://BUCKET/DIR/NAME`, `store gc`) against a real S3-compatible server
//! on loopback: moto's server (PyPI `moto[server]`, installed by scripts/setup in the venv
//! /opt/lifeboat-moto), with request authentication on (`INITIAL_NO_AUTH_ACTION_COUNT`), so
//! moto checks every SigV4 signature against the IAM user's secret like AWS does. Referee for
//! what is in the bucket: boto3 (the AWS SDK for Python, from the same venv). Skipped with a
//! printed message when the venv is missing.
//!
//! Every test that reads a source checks its sha256 is unchanged.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const VENV: &str = "/opt/lifeboat-moto/bin";

/// boto3 helpers: `setup PORT BUCKET` (an IAM user with full rights, its keys, the bucket;
/// prints `ACCESS SECRET`), `objects PORT ACCESS SECRET BUCKET PREFIX DIR` (prints one JSON
/// line: key -> size, and writes every object's bytes under DIR when DIR is not `-`).
const PY: &str = r#"
import boto3, json, os, sys
cmd, port = sys.argv[1], sys.argv[2]
# A server behind TLS: MOTO_CA is its CA's certificate (boto3 checks the server against it).
ca = os.environ.get('MOTO_CA')
url = '%s://127.0.0.1:%s' % ('https' if ca else 'http', port)
if cmd == 'setup':
    kw = dict(endpoint_url=url, aws_access_key_id='bootstrap', aws_secret_access_key='bootstrap', region_name='us-east-1', verify=ca or None)
    iam = boto3.client('iam', **kw)
    iam.create_user(UserName='lifeboat')
    k = iam.create_access_key(UserName='lifeboat')['AccessKey']
    iam.put_user_policy(UserName='lifeboat', PolicyName='all', PolicyDocument=json.dumps(
        {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))
    s3 = boto3.client('s3', endpoint_url=url, aws_access_key_id=k['AccessKeyId'],
                      aws_secret_access_key=k['SecretAccessKey'], region_name='us-east-1', verify=ca or None)
    s3.create_bucket(Bucket=sys.argv[3])
    print(k['AccessKeyId'], k['SecretAccessKey'])
elif cmd == 'objects':
    access, secret, bucket, prefix, out = sys.argv[3:8]
    s3 = boto3.client('s3', endpoint_url=url, aws_access_key_id=access,
                      aws_secret_access_key=secret, region_name='us-east-1', verify=ca or None)
    sizes = {}
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get('Contents', []):
            sizes[o['Key']] = o['Size']
            if out != '-':
                p = os.path.join(out, o['Key'].replace('/', '__'))
                open(p, 'wb').write(s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read())
    print(json.dumps(sizes))
elif cmd == 'put':
    access, secret, bucket, key, path = sys.argv[3:8]
    s3 = boto3.client('s3', endpoint_url=url, aws_access_key_id=access,
                      aws_secret_access_key=secret, region_name='us-east-1', verify=ca or None)
    s3.put_object(Bucket=bucket, Key=key, Body=open(path, 'rb').read())
"#;

/// A moto server on a free loopback port with one bucket `lab`, killed on drop.
struct Moto {
    child: Child,
    port: u16,
    access: String,
    secret: String,
    dir: TempDir,
    /// Behind TLS: the CA's certificate (PEM) the server's certificate is signed by.
    ca: Option<PathBuf>,
}

/// Makes with `openssl` a CA (`NAME.pem`, `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let pem = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=Lifeboat test {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        s(&key),
        "-out",
        s(&pem),
    ]));
    pem
}

/// A certificate for 127.0.0.1 signed by the CA `ca` made by [`make_ca`]: `(cert, key)`.
fn make_server_cert(dir: &Path, ca: &Path) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.ext"),
    );
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        s(&key),
        "-out",
        s(&csr),
    ]));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(ca),
        "-CAkey",
        s(&ca.with_extension("key")),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        s(&ext),
        "-out",
        s(&cert),
    ]));
    (cert, key)
}

impl Moto {
    fn start(tag: &str) -> Option<Moto> {
        Moto::start_with(tag, false)
    }

    /// `tls`: the server speaks HTTPS with a certificate from a CA made here (`self.ca`), and
    /// the credentials file names that CA with `s3_ca_file`.
    fn start_with(tag: &str, tls: bool) -> Option<Moto> {
        let server = Path::new(VENV).join("moto_server");
        if !server.exists() {
            eprintln!(
                "SKIP: {} is missing (scripts/setup installs moto[server] there)",
                server.display()
            );
            return None;
        }
        let dir = TempDir::new(tag);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ca = tls.then(|| make_ca(dir.path(), "ca"));
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(ca) = &ca {
            let (cert, key) = make_server_cert(dir.path(), ca);
            cmd.args(["-c", s(&cert), "-k", s(&key)]);
        }
        let child = cmd
            // The first 4 requests (the IAM user, its key and policy, the bucket) need no
            // signature; every later one is authenticated.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.p("moto.log")).unwrap())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto {
            child,
            port,
            access: String::new(),
            secret: String::new(),
            dir,
            ca,
        };
        // Up when it accepts a connection (generous: a loaded machine starts Python slowly).
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed().as_secs() < 120,
                "moto_server did not start: {}",
                std::fs::read_to_string(m.dir.p("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let out = m.py(&["setup", &port.to_string(), "lab"]);
        let mut it = out.split_whitespace();
        m.access = it.next().unwrap().to_string();
        m.secret = it.next().unwrap().to_string();
        let ca_line = match &m.ca {
            Some(ca) => format!("s3_ca_file = {}\n", ca.display()),
            None => String::new(),
        };
        std::fs::write(
            m.cred(),
            format!(
                "# lifeboat.cred\ns3_endpoint = http{}://127.0.0.1:{port}\ns3_access_key = {}\n\
                 s3_secret_key = {}\n{ca_line}",
                if tls { "s" } else { "" },
                m.access,
                m.secret
            ),
        )
        .unwrap();
        Some(m)
    }

    fn py(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(Path::new(VENV).join("python"));
        cmd.arg("-c").arg(PY).args(args);
        if let Some(ca) = &self.ca {
            cmd.env("MOTO_CA", ca);
        }
        run(&mut cmd)
    }

    fn cred(&self) -> PathBuf {
        self.dir.p("lifeboat.cred")
    }

    /// Every object under `prefix` and its size (boto3's listing).
    fn objects(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        let port = self.port.to_string();
        let out = self.py(&[
            "objects",
            &port,
            &self.access,
            &self.secret,
            "lab",
            prefix,
            "-",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    }

    /// Downloads every object of the bucket into a new directory.
    fn download(&self, into: &Path) {
        std::fs::create_dir_all(into).unwrap();
        let port = self.port.to_string();
        self.py(&[
            "objects",
            &port,
            &self.access,
            &self.secret,
            "lab",
            "",
            s(into),
        ]);
    }

    fn bytes(&self, prefix: &str) -> u64 {
        self.objects(prefix)
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    }

    /// `lifeboat --credentials FILE ARGS`, asserting no output carries either key.
    fn lb(&self, args: &[&str]) -> std::process::Output {
        self.lb_env(args, &[])
    }

    fn lb_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let cred = self.cred();
        let o = lifeboat_cmd()
            .args(["--credentials", s(&cred)])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run lifeboat");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !all.contains(&self.secret) && !all.contains(&self.access),
            "a key of the store appears in the output of {args:?}: {all}"
        );
        o
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deterministic pseudo-random byte stream (xorshift), `seed` picks it.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A disk file of `mib` MiB: noise of `seed`, with MiB 4..8 zeros (zero chunks).
fn disk(path: &Path, mib: usize, seed: u64) -> Vec<u8> {
    let mut d = noise(seed, mib << 20);
    d[4 << 20..8 << 20].fill(0);
    std::fs::write(path, &d).unwrap();
    d
}

#[test]
fn create_verify_restore_round_trip() {
    let Some(m) = Moto::start("s3-round") else {
        return;
    };
    let src = m.dir.p("src.img");
    disk(&src, 24, 1);
    let before = sha256(&src);
    let o = m.lb(&["image", "create", s(&src), "s3://lab/fleet/pc01", "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(sha256(&src), before, "the source changed");
    assert_eq!(r["chunks"], 24);
    assert_eq!(r["zero_chunks"], 4);
    assert_eq!(r["stored_chunks"], 20);
    assert_eq!(r["uploaded_chunks"], 20);
    // The media hash is the one an .lbi image of the same disk has.
    let lbi = m.dir.p("ref.lbi");
    let f = lifeboat(&["image", "create", s(&src), s(&lbi), "--json"]);
    assert_exit(&f, 0);
    assert_eq!(r["media_hash"], json(&f)["media_hash"]);
    // The bucket holds 20 chunk objects, one manifest and the store's settings; no upload
    // record is left.
    let objs = m.objects("fleet/");
    assert_eq!(
        objs.keys()
            .filter(|k| k.starts_with("fleet/chunks/"))
            .count(),
        20
    );
    assert!(objs.contains_key("fleet/images/pc01"));
    assert!(objs.contains_key("fleet/lifeboat-store.json"));
    assert!(!objs.keys().any(|k| k.starts_with("fleet/uploads/")));

    let v = m.lb(&["image", "verify", "s3://lab/fleet/pc01", "--json"]);
    assert_exit(&v, 0);
    assert_eq!(json(&v)["media_hash_ok"], true);
    let i = m.lb(&["image", "info", "s3://lab/fleet/pc01", "--json"]);
    assert_exit(&i, 0);
    assert_eq!(json(&i)["disk_size_bytes"], 24 << 20);

    let out = m.dir.p("out.img");
    zero_file(&out, 24 << 20);
    std::fs::write(&out, noise(99, 24 << 20)).unwrap(); // old contents everywhere
    let rs = m.lb(&[
        "image",
        "restore",
        "s3://lab/fleet/pc01",
        s(&out),
        "--yes",
        "--json",
    ]);
    assert_exit(&rs, 0);
    assert_eq!(
        sha256(&out),
        before,
        "the restored disk differs from the source"
    );
    // The restore's result is in the store too (a file target has no serial: `unknown`).
    let results: Vec<String> = m.objects("fleet/results/").keys().cloned().collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].starts_with("fleet/results/unknown/"),
        "{results:?}"
    );

    // A missing image is "not found" (exit 2), naming the images there.
    let n = m.lb(&["image", "verify", "s3://lab/fleet/pc99"]);
    assert_exit(&n, 2);
    assert!(stderr(&n).contains("pc01"), "{}", stderr(&n));
    let l = m.lb(&["store", "list", "s3://lab/fleet", "--json"]);
    assert_exit(&l, 0);
    assert_eq!(json(&l)["images"][0]["name"], "pc01");

    // One chunk object replaced by another (a valid object, the wrong bytes): verify and
    // restore find it (exit 5), naming the chunk.
    let keys: Vec<&String> = objs
        .keys()
        .filter(|k| k.starts_with("fleet/chunks/"))
        .collect();
    let dl = m.dir.p("bucket");
    m.download(&dl);
    let other = dl.join(keys[1].replace('/', "__"));
    let port = m.port.to_string();
    m.py(&[
        "put",
        &port,
        &m.access,
        &m.secret,
        "lab",
        keys[0],
        s(&other),
    ]);
    let bad = m.lb(&["image", "verify", "s3://lab/fleet/pc01"]);
    assert_exit(&bad, 5);
    assert!(stderr(&bad).contains("chunk"), "{}", stderr(&bad));
    assert_exit(
        &m.lb(&["image", "restore", "s3://lab/fleet/pc01", s(&out), "--yes"]),
        5,
    );
}

#[test]
fn encrypted_image_shows_the_store_no_plaintext() {
    let Some(m) = Moto::start("s3-crypt") else {
        return;
    };
    let src = m.dir.p("src.img");
    let data = disk(&src, 12, 2);
    let before = sha256(&src);
    let pass = m.dir.p("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let o = m.lb_env(
        &[
            "image",
            "create",
            s(&src),
            "s3://lab/secret",
            "--encrypt",
            "--passphrase-file",
            s(&pass),
            "--json",
        ],
        &[("LIFEBOAT_KDF_PARAMS", "8192,1,1")],
    );
    assert_exit(&o, 0);
    assert_eq!(json(&o)["encrypted"], true);
    assert_eq!(sha256(&src), before, "the source changed");
    // No object holds 64 bytes of the disk, a chunk's plain BLAKE3 (hex or raw), or the
    // source's file name.
    let dl = m.dir.p("bucket");
    m.download(&dl);
    let chunk1 = &data[(8 << 20)..(9 << 20)];
    let plain_hash = blake3::hash(chunk1);
    let mut n = 0;
    for e in std::fs::read_dir(&dl).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        n += 1;
        assert!(
            !b.windows(64).any(|w| w == &chunk1[1000..1064]),
            "{} holds plaintext",
            p.display()
        );
        let text = String::from_utf8_lossy(&b);
        assert!(!text.contains(&plain_hash.to_hex().to_string()));
        assert!(!b.windows(32).any(|w| w == plain_hash.as_bytes()));
        assert!(
            !text.contains("src.img"),
            "{} names the source",
            p.display()
        );
    }
    assert!(n >= 10, "only {n} objects downloaded");
    // Restore with the passphrase; a wrong one is exit 5 and writes nothing.
    let out = m.dir.p("out.img");
    zero_file(&out, 12 << 20);
    let wrong = m.dir.p("wrong");
    std::fs::write(&wrong, "not it").unwrap();
    let w = m.lb(&[
        "image",
        "restore",
        "s3://lab/secret",
        s(&out),
        "--yes",
        "--passphrase-file",
        s(&wrong),
    ]);
    assert_exit(&w, 5);
    let z = vec![0u8; 12 << 20];
    assert!(
        std::fs::read(&out).unwrap() == z,
        "a wrong passphrase wrote"
    );
    let r = m.lb(&[
        "image",
        "restore",
        "s3://lab/secret",
        s(&out),
        "--yes",
        "--passphrase-file",
        s(&pass),
    ]);
    assert_exit(&r, 0);
    assert_eq!(sha256(&out), before);
}

#[test]
fn shared_chunks_are_stored_once_and_gc_frees_exactly_the_unique_ones() {
    let Some(m) = Moto::start("s3-dedup") else {
        return;
    };
    // Two 40 MiB disks sharing 36 of their 40 chunks (90%).
    let a = m.dir.p("a.img");
    let da = disk(&a, 40, 3);
    let b = m.dir.p("b.img");
    let mut db = da.clone();
    db[20 << 20..24 << 20].copy_from_slice(&noise(4, 4 << 20));
    std::fs::write(&b, &db).unwrap();
    let (ha, hb) = (sha256(&a), sha256(&b));
    assert_exit(&m.lb(&["image", "create", s(&a), "s3://lab/lab1/pc-a"]), 0);
    let one = m.bytes("");
    let chunks_a: std::collections::BTreeSet<String> =
        m.objects("lab1/chunks/").keys().cloned().collect();
    let o = m.lb(&["image", "create", s(&b), "s3://lab/lab1/pc-b", "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["uploaded_chunks"], 4, "{r}");
    assert_eq!(r["existing_chunks"], 32, "{r}");
    let two = m.bytes("");
    assert!(
        two * 10 <= one * 12,
        "the bucket grew from {one} to {two} bytes: more than 1.2x one image"
    );
    assert_eq!(
        (sha256(&a), sha256(&b)),
        (ha.clone(), hb),
        "a source changed"
    );
    // Delete pc-b: gc frees exactly its 4 unique chunks, and pc-a still restores.
    assert_exit(&m.lb(&["store", "delete", "s3://lab/lab1/pc-b"]), 0);
    let g = m.lb(&["store", "gc", "s3://lab/lab1", "--json"]);
    assert_exit(&g, 0);
    let gr = json(&g);
    assert_eq!(gr["deleted"], 4, "{gr}");
    let after: std::collections::BTreeSet<String> =
        m.objects("lab1/chunks/").keys().cloned().collect();
    assert_eq!(after, chunks_a, "gc did not leave exactly pc-a's chunks");
    let out = m.dir.p("out.img");
    zero_file(&out, 40 << 20);
    assert_exit(
        &m.lb(&["image", "restore", "s3://lab/lab1/pc-a", s(&out), "--yes"]),
        0,
    );
    assert_eq!(sha256(&out), ha);
}

#[test]
fn a_killed_upload_resumes_and_blocks_gc_meanwhile() {
    let Some(m) = Moto::start("s3-kill") else {
        return;
    };
    let src = m.dir.p("src.img");
    disk(&src, 32, 5);
    let before = sha256(&src);
    // SIGKILL after the 10th chunk object (28 to store), the record saved at every tick.
    let o = m.lb_env(
        &["image", "create", s(&src), "s3://lab/k/pc"],
        &[
            ("LIFEBOAT_S3_KILL_AFTER_PUTS", "10"),
            ("LIFEBOAT_S3_SAVE_SECS", "0"),
            ("LIFEBOAT_S3_WORKERS", "2"),
        ],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9),
        "{o:?}"
    );
    assert_eq!(sha256(&src), before, "the source changed");
    let objs = m.objects("k/");
    assert!(!objs.contains_key("k/images/pc"), "a manifest was written");
    assert!(objs.contains_key("k/uploads/pc"), "no upload record");
    let stored = objs.keys().filter(|k| k.starts_with("k/chunks/")).count();
    assert!((10..=11).contains(&stored), "{stored} chunks stored");
    // Meanwhile: the image is incomplete (exit 5), and gc refuses (exit 4) deleting nothing.
    assert_exit(&m.lb(&["image", "verify", "s3://lab/k/pc"]), 5);
    let g = m.lb(&["store", "gc", "s3://lab/k"]);
    assert_exit(&g, 4);
    assert!(stderr(&g).contains("in progress"), "{}", stderr(&g));
    assert_eq!(
        m.objects("k/chunks/").len(),
        stored,
        "gc deleted during an upload"
    );
    // The same command resumes: only the rest is stored.
    let r = m.lb(&["image", "create", s(&src), "s3://lab/k/pc", "--json"]);
    assert_exit(&r, 0);
    let j = json(&r);
    assert_eq!(j["resumed"], true, "{j}");
    assert_eq!(j["uploaded_chunks"], 28 - stored, "{j}");
    assert_eq!(j["existing_chunks"], stored, "{j}");
    let out = m.dir.p("out.img");
    zero_file(&out, 32 << 20);
    assert_exit(
        &m.lb(&["image", "restore", "s3://lab/k/pc", s(&out), "--yes"]),
        0,
    );
    assert_eq!(sha256(&out), before);
    assert_eq!(sha256(&src), before, "the source changed");
    // Now gc runs and finds nothing to free.
    let g = m.lb(&["store", "gc", "s3://lab/k", "--json"]);
    assert_exit(&g, 0);
    assert_eq!(json(&g)["deleted"], 0);
}

#[test]
fn wrong_keys_and_bad_locations_are_clear_errors() {
    let Some(m) = Moto::start("s3-keys") else {
        return;
    };
    let src = m.dir.p("src.img");
    disk(&src, 8, 6);
    let before = sha256(&src);
    let good = std::fs::read_to_string(m.cred()).unwrap();
    std::fs::write(
        m.cred(),
        good.replace(&m.secret, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    )
    .unwrap();
    let o = m.lb(&["image", "create", s(&src), "s3://lab/x/pc", "--json"]);
    assert_exit(&o, 2);
    let e = json(&o);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the keys"),
        "{e}"
    );
    assert!(!stderr(&o).contains("EXAMPLEKEY"));
    std::fs::write(m.cred(), &good).unwrap();
    assert!(m.objects("").is_empty(), "something was written");
    // No such bucket: says so.
    let nb = m.lb(&["image", "create", s(&src), "s3://nolab/x/pc"]);
    assert_exit(&nb, 2);
    assert!(stderr(&nb).contains("no bucket"), "{}", stderr(&nb));
    // Usage errors: no image name; flags of image files.
    assert_exit(&m.lb(&["image", "create", s(&src), "s3://lab/x/"]), 2);
    assert_exit(
        &m.lb(&["image", "create", s(&src), "s3://lab/x/pc", "--split", "1G"]),
        2,
    );
    // Commands that cannot read a store image say so (unsupported: exit 1).
    let ex = m.lb(&["image", "export", "s3://lab/x/pc", s(&m.dir.p("raw"))]);
    assert_ne!(ex.status.code(), Some(0));
    assert!(stderr(&ex).contains("S3 store"), "{}", stderr(&ex));
    assert_eq!(sha256(&src), before, "the source changed");
}

/// Machines creating a new store at once all name their chunks with one key: the store's
/// settings object is written with a conditional PUT (`If-None-Match: *`), so the first write
/// wins and a later one changes nothing.
#[test]
fn a_new_store_made_by_many_machines_at_once_has_one_name_key() {
    use lifeboat::s3::{sigv4::Keys, store, Client, Config};
    let Some(m) = Moto::start("s3-newstore") else {
        return;
    };
    let client = || {
        let keys = Keys {
            access_key: m.access.clone(),
            secret_key: zeroize::Zeroizing::new(m.secret.clone()),
        };
        let cfg = Config::new(&format!("http://127.0.0.1:{}", m.port), "", keys).unwrap();
        Client::new(cfg, "lab")
    };
    // The condition itself: the second write of a key is refused and leaves the first.
    let c = client();
    assert!(c.put_if_absent("cond/one", b"first").unwrap());
    assert!(!c.put_if_absent("cond/one", b"second").unwrap());
    assert_eq!(c.get("cond/one").unwrap().as_deref(), Some(&b"first"[..]));
    // Eight machines opening the same empty store at the same moment.
    let loc = store::Location::store("s3://lab/lab-room").unwrap();
    let barrier = std::sync::Barrier::new(8);
    let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let c = client();
                    barrier.wait();
                    store::name_key(&c, &loc).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(keys.iter().all(|k| *k == keys[0]), "several name keys");
    assert_eq!(store::name_key(&c, &loc).unwrap(), keys[0]);
}

/// An `https://` store with its own CA (moto behind TLS, its certificate signed by a CA made
/// here with openssl): with `s3_ca_file` naming that CA the round trip works; without it
/// (Mozilla's roots only) or naming another CA, the job stops at once with "not trusted",
/// exit 1, nothing uploaded; `s3_ca_file` with a plain-HTTP endpoint or a file that holds no
/// certificate is a usage error.
#[test]
fn https_store_with_its_own_ca() {
    let Some(m) = Moto::start_with("s3-tls", true) else {
        return;
    };
    let src = m.dir.p("src.img");
    disk(&src, 12, 8);
    let before = sha256(&src);
    let o = m.lb(&["image", "create", s(&src), "s3://lab/tls/pc", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["uploaded_chunks"], 8, "{}", json(&o));
    let out = m.dir.p("out.img");
    zero_file(&out, 12 << 20);
    assert_exit(
        &m.lb(&["image", "restore", "s3://lab/tls/pc", s(&out), "--yes"]),
        0,
    );
    assert_eq!(sha256(&out), before, "the restored disk differs");
    let stored = m.objects("");

    let good = std::fs::read_to_string(m.cred()).unwrap();
    let ca_line = good.lines().find(|l| l.starts_with("s3_ca_file")).unwrap();
    let other_ca = make_ca(m.dir.path(), "other-ca");
    let plain_pem = m.dir.p("not-a-cert.pem");
    std::fs::write(&plain_pem, "just text\n").unwrap();
    let untrusted = [
        // Mozilla's roots only: the test CA is not among them.
        good.replace(ca_line, ""),
        // Another CA than the one that signed the store's certificate.
        good.replace(ca_line, &format!("s3_ca_file = {}", other_ca.display())),
    ];
    for cred in &untrusted {
        std::fs::write(m.cred(), cred).unwrap();
        let o = m.lb(&["image", "create", s(&src), "s3://lab/tls2/pc", "--json"]);
        assert_exit(&o, 1);
        let msg = json(&o)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("certificate is not trusted") && msg.contains("s3_ca_file"),
            "{msg}"
        );
    }
    let usage = [
        (
            good.replace(ca_line, &format!("s3_ca_file = {}", plain_pem.display())),
            "PEM",
        ),
        (good.replace("https://", "http://"), "plain http://"),
    ];
    for (cred, says) in &usage {
        std::fs::write(m.cred(), cred).unwrap();
        let o = m.lb(&["image", "create", s(&src), "s3://lab/tls2/pc", "--json"]);
        assert_exit(&o, 2);
        let msg = json(&o)["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{msg}");
    }
    std::fs::write(m.cred(), &good).unwrap();
    assert_eq!(m.objects(""), stored, "a refused job changed the bucket");
    assert_eq!(sha256(&src), before, "the source changed");
}

/// Replaces the cipher byte of the encryption area (`crypt`, hex) of the JSON object `key`
/// in the bucket with `02` (AES-256-GCM), as a hand-edited or foreign manifest would say.
fn claim_aes_gcm(m: &Moto, key: &str) {
    let dl = m.dir.p("dl");
    let _ = std::fs::remove_dir_all(&dl);
    m.download(&dl);
    let file = dl.join(key.replace('/', "__"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let area = v["crypt"].as_str().expect("an encryption area").to_string();
    assert!(area.starts_with("01"), "{area}");
    v["crypt"] = format!("02{}", &area[2..]).into();
    std::fs::write(&file, v.to_string()).unwrap();
    let port = m.port.to_string();
    m.py(&["put", &port, &m.access, &m.secret, "lab", key, s(&file)]);
}

/// The store seals with random nonces, so its images are XChaCha20-Poly1305 only: a manifest
/// or an upload record naming AES-256-GCM (cipher 2) is refused as damaged, naming the
/// cipher, before any key is derived — nothing restored, nothing uploaded.
#[test]
fn a_manifest_or_upload_naming_aes_gcm_is_refused() {
    let Some(m) = Moto::start("s3-gcm") else {
        return;
    };
    let src = m.dir.p("src.img");
    disk(&src, 8, 9);
    let before = sha256(&src);
    let pass = m.dir.p("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let kdf = [("LIFEBOAT_KDF_PARAMS", "8192,1,1")];
    let create = |to: &str, env: &[(&str, &str)]| {
        let mut e = kdf.to_vec();
        e.extend_from_slice(env);
        m.lb_env(
            &[
                "image",
                "create",
                s(&src),
                to,
                "--encrypt",
                "--passphrase-file",
                s(&pass),
                "--json",
            ],
            &e,
        )
    };
    assert_exit(&create("s3://lab/g/pc", &[]), 0);
    claim_aes_gcm(&m, "g/images/pc");
    let says_gcm = |o: &std::process::Output| {
        let msg = json(o)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("aes-256-gcm") && msg.contains("XChaCha20"),
            "{msg}"
        );
    };
    let o = m.lb(&[
        "image",
        "info",
        "s3://lab/g/pc",
        "--passphrase-file",
        s(&pass),
        "--json",
    ]);
    assert_exit(&o, 5);
    says_gcm(&o);
    let out = m.dir.p("out.img");
    zero_file(&out, 8 << 20);
    let o = m.lb(&[
        "image",
        "restore",
        "s3://lab/g/pc",
        s(&out),
        "--yes",
        "--passphrase-file",
        s(&pass),
        "--json",
    ]);
    assert_exit(&o, 5);
    says_gcm(&o);
    assert!(
        std::fs::read(&out).unwrap().iter().all(|&b| b == 0),
        "a refused restore wrote"
    );

    // An upload killed after 2 chunk objects, its record then claiming AES-256-GCM: the rerun
    // refuses before it stores anything.
    let o = create(
        "s3://lab/u/pc",
        &[
            ("LIFEBOAT_S3_KILL_AFTER_PUTS", "2"),
            ("LIFEBOAT_S3_SAVE_SECS", "0"),
            ("LIFEBOAT_S3_WORKERS", "1"),
        ],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9),
        "{o:?}"
    );
    claim_aes_gcm(&m, "u/uploads/pc");
    let objects = m.objects("");
    let o = create("s3://lab/u/pc", &[]);
    assert_exit(&o, 5);
    says_gcm(&o);
    assert_eq!(
        m.objects(""),
        objects,
        "a refused upload changed the bucket"
    );
    assert_eq!(sha256(&src), before, "the source changed");
}
