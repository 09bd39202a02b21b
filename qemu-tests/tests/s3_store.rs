//! Issue 18, an S3 image store shared by a fleet, as VMs: one S3-compatible server (moto on the
//! host's loopback, signatures checked, from the venv scripts/setup makes) reached by every
//! guest on its own restricted QEMU user network (10.0.2.100:9000 forwarded to moto), the keys
//! from a credentials file on a FAT disk of each guest.
//!
//! 1. Two VMs at the same time image two disks sharing about 90 % of their chunks into the
//!    same store; the bucket grows by at most 1.2 times one image (measured with boto3, before
//!    and after); the host verifies both images with the same binary.
//! 2. Three VMs at the same time restore one of the images onto their own blank disks: each
//!    target then equals the source (`cmp`), each result is on its console
//!    (`LIFEBOAT-RESULT`) and in the store as `results/<serial>/<time>.json`.
//!
//! Neither key ever appears on a serial console; the sources' sha256 are unchanged. Skipped
//! with a message when the moto venv is missing. No timing is asserted: the guests share the
//! host's cores, so the timeouts are generous.
use lifeboat_qemu_tests::check::{host_lifeboat, noise, Unchanged};
use lifeboat_qemu_tests::disks::{run, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::qemu::{self, SerialMode, VmSpec};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, NetSpec, TempDir, Vm};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const VENV: &str = "/opt/lifeboat-moto/bin";
/// Where the guest finds the store (forwarded to moto on the host's loopback).
const SERVER: &str = "10.0.2.100";

/// moto on a free loopback port with bucket `lab` and an IAM user's keys; killed on drop.
struct Moto {
    child: Child,
    port: u16,
    access: String,
    secret: String,
}

impl Moto {
    fn start(log: &Path) -> Option<Moto> {
        if !Path::new(VENV).join("moto_server").exists() {
            eprintln!("SKIP: {VENV}/moto_server is missing (scripts/setup installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(Path::new(VENV).join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start moto_server");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed().as_secs() < 120, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let script = r#"
import boto3, json, sys
url = 'http://127.0.0.1:%s' % sys.argv[1]
kw = dict(endpoint_url=url, aws_access_key_id='b', aws_secret_access_key='b', region_name='us-east-1')
iam = boto3.client('iam', **kw)
iam.create_user(UserName='vm')
k = iam.create_access_key(UserName='vm')['AccessKey']
iam.put_user_policy(UserName='vm', PolicyName='all', PolicyDocument=json.dumps(
    {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))
boto3.client('s3', endpoint_url=url, aws_access_key_id=k['AccessKeyId'],
             aws_secret_access_key=k['SecretAccessKey'], region_name='us-east-1').create_bucket(Bucket='lab')
print(k['AccessKeyId'], k['SecretAccessKey'])
"#;
        let out = Command::new(Path::new(VENV).join("python"))
            .args(["-c", script, &port.to_string()])
            .output()
            .expect("run the moto setup");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text.split_whitespace();
        Some(Moto {
            child,
            port,
            access: it.next().unwrap().to_string(),
            secret: it.next().unwrap().to_string(),
        })
    }

    /// boto3 on the bucket `lab` as the test's user: `sizes PREFIX` prints one JSON object
    /// (key -> size), `get KEY` prints the object's bytes.
    fn boto(&self, args: &[&str]) -> String {
        let script = r#"
import boto3, json, sys
port, access, secret, cmd, arg = sys.argv[1:6]
s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:%s' % port, aws_access_key_id=access,
                  aws_secret_access_key=secret, region_name='us-east-1')
if cmd == 'sizes':
    out = {}
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='lab', Prefix=arg):
        for o in page.get('Contents', []):
            out[o['Key']] = o['Size']
    print(json.dumps(out))
elif cmd == 'get':
    sys.stdout.buffer.write(s3.get_object(Bucket='lab', Key=arg)['Body'].read())
"#;
        let port = self.port.to_string();
        let mut argv = vec![
            "-c".to_string(),
            script.to_string(),
            port,
            self.access.clone(),
            self.secret.clone(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        run(&format!("{VENV}/python"), &argv, None)
            .unwrap_or_else(|e| panic!("boto3 {args:?}: {e}"))
    }

    /// Every object under `prefix` and its size.
    fn sizes(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let out = self.boto(&["sizes", prefix]);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The bucket's bytes (every object).
    fn bucket_bytes(&self) -> u64 {
        self.sizes("").values().filter_map(Value::as_u64).sum()
    }

    /// An object parsed as JSON.
    fn json(&self, key: &str) -> Value {
        let out = self.boto(&["get", key]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{key}: {e}: {out}"))
    }

    /// The credentials file's text for an endpoint.
    fn cred(&self, endpoint: &str) -> String {
        format!(
            "# lifeboat.cred for the test store\ns3_endpoint = {endpoint}\ns3_access_key = {}\n\
             s3_secret_key = {}\n",
            self.access, self.secret
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MIB: usize = 1 << 20;

/// Boots a guest (1 vCPU: several run at once on the host's cores) that runs `cmd` with the
/// store's keys from its credentials disk; the caller waits for its result.
fn start(name: &str, cmd: &str, disks: Vec<DiskSpec>, moto: &Moto) -> Vm {
    let a = lifeboat_qemu_tests::artefacts().unwrap_or_else(|e| panic!("{e}"));
    let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
    spec.smp = 1;
    spec.append = qemu::default_append(&format!(
        "lifeboat.credentials=label=CREDS:/lifeboat.cred {}",
        run_param(cmd)
    ));
    spec.disks = disks;
    spec.extra = qemu::net_args(&NetSpec::restricted().forward(
        SERVER,
        9000,
        &format!(
            "{} 127.0.0.1 {}",
            env!("CARGO_BIN_EXE_tcp-stdio"),
            moto.port
        ),
    ));
    Vm::start(name, spec).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for a guest's `LIFEBOAT-RESULT` (generous: up to five guests share two cores), checks
/// no key of the store reached its console, and lets it power off.
fn finish(mut vm: Vm, moto: &Moto) -> Value {
    let res = vm.wait_result(Duration::from_secs(900));
    let res = vm.check(res);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if out.contains(&moto.secret) || out.contains(&moto.access) {
        vm.fail("a key of the store appears on the serial console");
    }
    if res["exit_code"].as_i64() != Some(0) {
        vm.fail(&format!("the job failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(120));
    res
}

/// The distinct chunk objects an image's manifest refers to.
fn chunk_names(moto: &Moto, manifest: &str) -> BTreeSet<String> {
    let m = moto.json(manifest);
    m["body"]["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{manifest} has no chunk list: {m}"))
        .iter()
        .filter_map(Value::as_str)
        .filter(|c| c.len() == 64)
        .map(str::to_string)
        .collect()
}

/// Overwrites `n` whole chunks of `disk` that lie inside the file data `data` (located by
/// content: ext4 may split a file around its group metadata) with other noise, so the disk
/// then differs from the original in exactly those chunks. Returns their indices.
fn change_chunks(disk: &mut [u8], data: &[u8], n: usize) -> Vec<usize> {
    let mut changed = Vec::new();
    // Candidates spread over the disk, from its middle on.
    for k in (disk.len() / MIB / 4..disk.len() / MIB).step_by(3) {
        let chunk = &disk[k * MIB..(k + 1) * MIB];
        // File data sits in whole filesystem blocks (1 KiB or more) and the partition starts
        // on a MiB, so a chunk holding only file data starts at a multiple of 1 KiB of it.
        let Some(p) = (0..data.len())
            .step_by(1024)
            .find(|&p| data[p..].starts_with(&chunk[..32]))
        else {
            continue;
        };
        if data.get(p..p + MIB) != Some(chunk) {
            continue;
        }
        disk[k * MIB..(k + 1) * MIB].copy_from_slice(&noise(MIB, 1000 + k as u64));
        changed.push(k);
        if changed.len() == n {
            return changed;
        }
    }
    panic!(
        "only {} chunks of the disk hold nothing but file data",
        changed.len()
    );
}

fn cred_disk(path: &std::path::Path, moto: &Moto) {
    DiskBuilder::new(40, Table::Mbr)
        .part(
            Part::new(32, Fs::Vfat)
                .label("CREDS")
                .file("lifeboat.cred", moto.cred(&format!("http://{SERVER}:9000"))),
        )
        .build(path)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_fleet_images_into_one_store_then_restores_from_it_at_once() {
    let t = TempDir::new("s3-fleet").unwrap();
    let Some(moto) = Moto::start(&t.join("moto.log")) else {
        return;
    };
    // Source A: GPT, one ext4 partition holding 20 MiB of noise. Source B: A with 3 chunks
    // of that noise replaced, so the two share all their other chunks (about 90 %).
    let data = noise(20 * MIB, 21);
    let src_a = t.join("src-a.img");
    DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("FLEETSRC")
                .file("data/noise.bin", data.clone()),
        )
        .build(&src_a)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = std::fs::read(&src_a).unwrap();
    let changed = change_chunks(&mut b, &data, 3);
    let src_b = t.join("src-b.img");
    std::fs::write(&src_b, &b).unwrap();
    drop(b);
    let sha_a = Unchanged::record(&src_a);
    let sha_b = Unchanged::record(&src_b);
    let creds: Vec<_> = (0..3)
        .map(|i| {
            let p = t.join(&format!("creds{i}.img"));
            cred_disk(&p, &moto);
            p
        })
        .collect();
    let (url_a, url_b) = ("s3://lab/fleet/pc-a", "s3://lab/fleet/pc-b");

    // 1. Two machines image their disks into the store at the same time.
    let before = moto.bucket_bytes();
    let vms: Vec<Vm> = [(&src_a, url_a, "LB-FLEET-A"), (&src_b, url_b, "LB-FLEET-B")]
        .iter()
        .zip(&creds)
        .map(|(&(src, url, serial), cred)| {
            start(
                &format!("s3-fleet-create-{}", &serial[9..].to_lowercase()),
                &format!("image create serial={serial} {url} --json"),
                vec![
                    DiskSpec::new(src, Bus::Sata, serial),
                    DiskSpec::new(cred, Bus::Virtio, &format!("{serial}-CR")),
                ],
                &moto,
            )
        })
        .collect();
    let created: Vec<Value> = vms.into_iter().map(|vm| finish(vm, &moto)).collect();
    for (res, url) in created.iter().zip([url_a, url_b]) {
        assert_eq!(res["output"]["image"], Value::String(url.into()), "{res}");
    }
    sha_a.check("source A");
    sha_b.check("source B");
    let after = moto.bucket_bytes();

    // What the store holds: the two images share all but the changed chunks...
    let names_a = chunk_names(&moto, "fleet/images/pc-a");
    let names_b = chunk_names(&moto, "fleet/images/pc-b");
    let only_a = names_a.difference(&names_b).count();
    assert_eq!(
        (only_a, names_b.difference(&names_a).count()),
        (changed.len(), changed.len()),
        "the images should differ in exactly the changed chunks {changed:?}"
    );
    let shared = names_a.intersection(&names_b).count() as f64 / names_a.len() as f64;
    assert!(
        (0.85..0.95).contains(&shared),
        "the sources should share about 90 % of their chunks, not {shared:.2}"
    );
    // ... and one image is its manifest plus its chunk objects.
    let sizes = moto.sizes("fleet/");
    let one_image = sizes["fleet/images/pc-a"].as_u64().unwrap()
        + names_a
            .iter()
            .map(|n| {
                sizes[&format!("fleet/chunks/{}/{n}", &n[..2])]
                    .as_u64()
                    .unwrap()
            })
            .sum::<u64>();
    let growth = after - before;
    eprintln!(
        "s3-fleet: the sources share {:.0} % of their chunks; one image {one_image} bytes, the \
         bucket grew by {growth} bytes ({:.3}x) for both",
        shared * 100.0,
        growth as f64 / one_image as f64
    );
    assert!(
        growth as f64 <= 1.2 * one_image as f64,
        "two 90 %-shared images grew the bucket by {growth} bytes, over 1.2x one image \
         ({one_image} bytes)"
    );
    // Both images check out on the host, read from the store by the same binary.
    let host_cred = t.join("host.cred");
    std::fs::write(
        &host_cred,
        moto.cred(&format!("http://127.0.0.1:{}", moto.port)),
    )
    .unwrap();
    let bin = host_lifeboat();
    for (res, url) in created.iter().zip([url_a, url_b]) {
        let v = run(
            &bin.display().to_string(),
            &[
                "--credentials".into(),
                host_cred.display().to_string(),
                "image".into(),
                "verify".into(),
                url.into(),
                "--json".into(),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("verify of {url}: {e}"));
        let vj: Value = serde_json::from_str(v.trim()).unwrap_or_else(|e| panic!("{e}: {v}"));
        assert_eq!(vj["media_hash_ok"], Value::Bool(true), "{vj}");
        assert_eq!(vj["media_hash"], res["output"]["media_hash"], "{vj}");
    }

    // 2. Three machines restore image A onto their blank disks at the same time.
    let targets: Vec<_> = (1..=3)
        .map(|i| {
            let p = t.join(&format!("target{i}.img"));
            DiskBuilder::new(48, Table::None)
                .build(&p)
                .unwrap_or_else(|e| panic!("{e}"));
            (p, format!("LB-FLEET-T{i}"))
        })
        .collect();
    let vms: Vec<Vm> = targets
        .iter()
        .zip(&creds)
        .map(|((p, serial), cred)| {
            start(
                &format!("s3-fleet-restore-{}", &serial[9..].to_lowercase()),
                &format!("image restore {url_a} serial={serial} --yes --json"),
                vec![
                    DiskSpec::new(p, Bus::Nvme, serial),
                    DiskSpec::new(cred, Bus::Virtio, &format!("{serial}-CR")),
                ],
                &moto,
            )
        })
        .collect();
    let restored: Vec<Value> = vms.into_iter().map(|vm| finish(vm, &moto)).collect();
    for ((p, serial), res) in targets.iter().zip(&restored) {
        let out = &res["output"];
        assert_eq!(out["media_hash_ok"], Value::Bool(true), "{serial}: {res}");
        assert_eq!(
            out["media_hash"], created[0]["output"]["media_hash"],
            "{res}"
        );
        run(
            "cmp",
            &[src_a.display().to_string(), p.display().to_string()],
            None,
        )
        .unwrap_or_else(|e| panic!("the target of {serial} differs from the source: {e}"));
        // Its result in the store: one record under results/SERIAL/, named by the time.
        let recs = moto.sizes(&format!("fleet/results/{serial}/"));
        assert_eq!(recs.len(), 1, "{serial}: {recs:?}");
        let key = recs.keys().next().unwrap();
        let stamp = key.rsplit('/').next().unwrap();
        assert!(
            stamp.len() == 21
                && stamp.ends_with("Z.json")
                && stamp.as_bytes()[8] == b'T'
                && stamp[..8]
                    .bytes()
                    .chain(stamp[9..15].bytes())
                    .all(|c| c.is_ascii_digit()),
            "{key} is not results/<serial>/<YYYYMMDDTHHMMSSZ>.json"
        );
        let rec = moto.json(key);
        assert_eq!(rec["media_hash_ok"], Value::Bool(true), "{key}: {rec}");
        assert_eq!(rec["media_hash"], out["media_hash"], "{key}: {rec}");
        assert_eq!(rec["target"], out["target"], "{key}: {rec}");
    }
    sha_a.check("source A");
    sha_b.check("source B");
}
