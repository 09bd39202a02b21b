//! Issue 18, S3 image store: a guest images its disk into the host's S3-compatible server (moto
//! on loopback, signatures checked, from the venv scripts/setup makes), reached on QEMU's
//! restricted user network (10.0.2.100:9000 forwarded to moto), with the keys from a
//! credentials file on a FAT disk; the host verifies the image in the store with the same
//! binary; a second boot restores it onto a blank disk, which then equals the source partition
//! by partition. Neither key ever appears on the serial console. Skipped with a message when
//! the moto venv is missing.
use lifeboat_qemu_tests::disks::{run, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, NetSpec, TempDir, Vm};
use serde_json::Value;
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

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn boot(name: &str, cmd: &str, disks: Vec<DiskSpec>, moto: &Moto) -> (Vm, Value) {
    let params = format!(
        "lifeboat.credentials=label=CREDS:/lifeboat.cred {}",
        run_param(cmd)
    );
    let net = NetSpec::restricted().forward(
        SERVER,
        9000,
        &format!(
            "{} 127.0.0.1 {}",
            env!("CARGO_BIN_EXE_tcp-stdio"),
            moto.port
        ),
    );
    let mut vm = Vm::boot_net(name, &params, disks, &net).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if out.contains(&moto.secret) || out.contains(&moto.access) {
        vm.fail("a key of the store appears on the serial console");
    }
    (vm, res)
}

#[test]
fn image_into_the_store_then_restore() {
    let t = TempDir::new("s3-store").unwrap();
    let Some(moto) = Moto::start(&t.join("moto.log")) else {
        return;
    };
    let src = t.join("src.img");
    let built = DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("S3SRC")
                .file("data/noise.bin", noise(6 << 20, 21)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = sha256(&src).unwrap();
    let creds = t.join("creds.img");
    DiskBuilder::new(40, Table::Mbr)
        .part(
            Part::new(32, Fs::Vfat)
                .label("CREDS")
                .file("lifeboat.cred", moto.cred(&format!("http://{SERVER}:9000"))),
        )
        .build(&creds)
        .unwrap_or_else(|e| panic!("{e}"));
    let url = "s3://lab/vm/pc";

    // Boot 1: image the source into the store.
    let (mut vm, res) = boot(
        "s3-create",
        &format!("image create serial=LB-S3-SRC {url} --json"),
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-S3-SRC"),
            DiskSpec::new(&creds, Bus::Virtio, "LB-S3-CREDS"),
        ],
        &moto,
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["image"] != Value::String(url.into()) {
        vm.fail(&format!("image create into the store failed: {res}"));
    }
    if out["uploaded_chunks"].as_u64().unwrap_or(0) == 0 {
        vm.fail(&format!("nothing was uploaded: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source disk changed");
    // The image in the store, checked on the host by the same binary.
    let host_cred = t.join("host.cred");
    std::fs::write(
        &host_cred,
        moto.cred(&format!("http://127.0.0.1:{}", moto.port)),
    )
    .unwrap();
    let bin =
        lifeboat_qemu_tests::repo_root().join("target/x86_64-unknown-linux-musl/release/lifeboat");
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
    .unwrap_or_else(|e| panic!("verify of the image in the store: {e}"));
    let vj: Value = serde_json::from_str(v.trim()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(vj["media_hash_ok"], Value::Bool(true), "{vj}");
    assert_eq!(vj["media_hash"], out["media_hash"], "{vj}");

    // Boot 2: restore from the store onto a blank disk.
    let target = t.join("target.img");
    DiskBuilder::new(48, Table::None)
        .build(&target)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot(
        "s3-restore",
        &format!("image restore {url} serial=LB-S3-TGT --yes --json"),
        vec![
            DiskSpec::new(&target, Bus::Nvme, "LB-S3-TGT"),
            DiskSpec::new(&creds, Bus::Virtio, "LB-S3-CREDS"),
        ],
        &moto,
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["media_hash_ok"] != Value::Bool(true) {
        vm.fail(&format!("restore from the store failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    for p in &built.partitions {
        run(
            "cmp",
            &[
                "-i".into(),
                p.start_bytes.to_string(),
                "-n".into(),
                p.size_bytes.to_string(),
                src.display().to_string(),
                target.display().to_string(),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("partition {} differs after the restore: {e}", p.number));
    }
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source disk changed");
}
