//! The S3 object store path against a real S3-compatible server on loopback:
//! moto's server (`python3 -m moto.server`, from PyPI, installed by .ci/run).
//! The same code path serves AWS S3, Cloudflare R2 and MinIO through
//! `object_store`'s S3 client.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::DataDir;
use serde_json::Value;

const BUCKET: &str = "manirec-test";
const PREFIX: &str = "shop/prod";

/// The moto server, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to run moto's S3 server; see .ci/run");
    let mut moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = moto.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = moto.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "moto's S3 server did not start ({status}); install it with \
                 `python3 -m pip install 'moto[server]'` (.ci/run does): {err}"
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto's S3 server did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Create the bucket (moto accepts unsigned requests).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "bucket not created: {answer}"
    );
    moto
}

fn run_s3(d: &DataDir, moto: &Moto, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = d
        .command(&all)
        .env("MANIREC_OBJECT_STORE", format!("s3://{BUCKET}/{PREFIX}"))
        .env("AWS_ENDPOINT", &moto.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "manirec {args:?} on S3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn datasets_exports_and_reports_go_to_an_s3_compatible_server() {
    let moto = start_moto();
    let d = DataDir::new();
    let csv = d.path().join("rows.csv");
    let mut body = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
    for i in 0..50 {
        body.push_str(&format!(
            "u{},p{},1,{},view\n",
            i % 7,
            i % 5,
            1_700_000_000 + i * 97
        ));
    }
    std::fs::write(&csv, body).unwrap();
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);

    let b = run_s3(&d, &moto, &["dataset", "build", "--csv"]);
    assert_eq!(b["version"], "v1.0");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/verify_dataset.py"
        ))
        .args([
            "--s3",
            &moto.endpoint,
            BUCKET,
            PREFIX,
            "datasets/v1.0/manifest.json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify_dataset.py on S3 failed (pyarrow and boto3 installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["train"].as_array().unwrap().len() as u64,
        b["train_rows"].as_u64().unwrap()
    );
    assert_eq!(v["manifest"]["files"], b["files"]);

    let again = run_s3(&d, &moto, &["dataset", "build"]);
    assert_eq!(again["created"], false);
    let e = run_s3(&d, &moto, &["export", "--format", "parquet"]);
    assert_eq!(e["rows"], 50);
    let r = run_s3(&d, &moto, &["report"]);
    assert_eq!(r["total"]["count"], 50);
    assert!(
        !d.path().join("data/objects").exists(),
        "nothing was written to the local object folder"
    );
}
