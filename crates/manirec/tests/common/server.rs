//! `manirec serve` for real, on a free loopback port, and a tiny recorded-response
//! HTTP server for what manirec calls out to (the shop's API, the notifier).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::DataDir;

pub const SECRET: &str = "test-app-secret-0123456789";
/// The storefront secret every test server signs shoppers' tokens with.
pub const STOREFRONT: &str = "test-storefront-secret-0123456789";

/// A user token for `user_id`, valid for a day (what the shop's theme makes).
pub fn user_token(user_id: &str) -> String {
    use hmac::Mac;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let id = user_id.trim();
    let id = if id.contains('@') {
        id.to_lowercase()
    } else {
        id.to_owned()
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(STOREFRONT.as_bytes()).unwrap();
    mac.update(format!("{id}|{expiry}").as_bytes());
    format!("{expiry}.{}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `manirec serve` on `d` with the test secret, plus `env` (an
    /// empty value removes the variable: secrets may not be empty).
    pub fn start(d: &DataDir, env: &[(&str, &str)]) -> Server {
        let mut cmd = d.command(&["serve", "--addr", "127.0.0.1:0"]);
        cmd.env("MANIREC_SHOPLAZZA_SECRET", SECRET)
            .env("MANIREC_STOREFRONT_SECRET", STOREFRONT)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited before listening"
            );
            if let Some(rest) = line.trim().strip_prefix("manirec listening on ") {
                break rest.to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Server { child, base }
    }

    /// GET `path`: the answer's status and its JSON body.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .get(self.url(path))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// POSTs a body declared as `length` bytes to `path` (with `headers`, each
    /// line ending in `\r\n`) over a raw socket and returns the raw answer. At
    /// most 1 MiB of the body is sent: the server may answer 413 and close at
    /// any point, which a regular client reports as a broken pipe instead.
    pub fn post_oversized(&self, path: &str, headers: &str, length: usize) -> String {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {length}\r\n\r\n"
        )
        .unwrap();
        let _ = stream.write_all(&vec![b' '; length.min(1 << 20)]);
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        // Read until the server closes (or the timeout): the answer may come in pieces.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the graceful exit; a server still running after
    /// 20 s is killed and the test fails (a hang must not hang the suite).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe_sigterm(self.child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!("serve did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves `respond(request) -> (status, body)` on a loopback port, recording requests.
pub struct Stub {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    pub fn start(respond: impl Fn(&Seen) -> (u16, String) + Send + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = request_line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0usize);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let seen = Seen {
                    method,
                    target,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let (status, reply) = respond(&seen);
                log.lock().unwrap().push(seen);
                let kind = if reply.starts_with('<') {
                    "text/html"
                } else {
                    "application/json"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Stub { base, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The `item_id`s of an answer's `items`, in order.
pub fn item_ids(answer: &serde_json::Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {answer}"))
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}
