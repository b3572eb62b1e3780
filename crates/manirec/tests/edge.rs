//! The server's edge, as an attacker and a fault see it: every malformed request
//! answers the contract's JSON envelope, a half-sent request is cut off, one
//! client cannot flood the public routes, and weak secrets stop the start.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::server::{user_token, Server};
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::Value;

const TOKEN: &str = "edge-admin-token-0123456789";

/// Status, the `error.code` of a JSON envelope (panics when the body is not one).
fn envelope(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().unwrap();
    assert!(
        kind.starts_with("application/json"),
        "{status} answered {kind:?}: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{text}"));
    assert!(v["error"]["message"].as_str().is_some(), "{text}");
    (status, code.to_owned())
}

#[test]
fn every_malformed_request_answers_the_json_envelope() {
    let d = DataDir::new();
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", TOKEN)]);
    let c = Client::new();
    let get = |path: &str| envelope(c.get(s.url(path)).send().unwrap());

    // k: not a number, negative, zero, over 100: all 400 (no silent clamp).
    for path in [
        "/v1/recommendations?session_id=s&k=abc",
        "/v1/recommendations?session_id=s&k=-1",
        "/v1/recommendations?session_id=s&k=0",
        "/v1/recommendations?session_id=s&k=101",
        "/v1/popular?k=abc",
        "/v1/popular?k=1000",
        "/v1/items/x/similar?k=-5",
    ] {
        assert_eq!(get(path).0, 400, "{path}");
    }
    assert_eq!(get("/v1/popular?k=0"), (400, "invalid_k".to_owned()));
    assert_eq!(get("/no/such/route"), (404, "not_found".to_owned()));

    // A method the route does not take: 405, still JSON, with Allow kept.
    let r = c.post(s.url("/v1/recommendations")).send().unwrap();
    assert!(r.headers().get("allow").is_some());
    assert_eq!(envelope(r), (405, "method_not_allowed".to_owned()));
    let r = c.delete(s.url("/v1/events")).send().unwrap();
    assert_eq!(envelope(r).0, 405);

    // Admin JSON routes: no JSON content type 415, broken JSON 400, wrong shape 422.
    let admin = |body: &str, kind: Option<&str>| {
        let mut r = c
            .post(s.url("/admin/experiments"))
            .bearer_auth(TOKEN)
            .body(body.to_owned());
        if let Some(kind) = kind {
            r = r.header("content-type", kind);
        }
        envelope(r.send().unwrap())
    };
    assert_eq!(admin("{}", None).0, 415);
    assert_eq!(admin("{\"control\":", Some("application/json")).0, 400);
    assert_eq!(admin("{\"control\": 7}", Some("application/json")).0, 422);

    // A body over the limit: 413 before it is read.
    // (A raw socket: the server may answer and close while the body is still
    // being sent, which reqwest reports as a broken pipe.)
    let answer = s.post_oversized("/v1/events", "Content-Type: application/json\r\n", 3 << 20);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");

    // An event whose properties are too large is rejected by index; its batch
    // neighbour lands.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let batch = serde_json::json!([
        {"event_id": "e1", "event_type": "product_view", "product_id": "p1", "session_id": "s1",
         "timestamp": now, "properties": {"blob": "x".repeat(5000)}},
        {"event_id": "e2", "event_type": "product_view", "product_id": "p1", "session_id": "s1",
         "timestamp": now, "properties": {"page": "home"}}
    ]);
    let r: Value = c
        .post(s.url("/v1/events"))
        .json(&batch)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(r["rejected"][0]["index"], 0, "{r}");
    assert!(r["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .contains("properties"));
}

#[test]
fn a_half_sent_request_line_is_closed_within_15_seconds() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    let addr = s.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /v1/popu").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // EOF (or a reset) ends the read; a timeout would be an error of kind WouldBlock/TimedOut.
    let outcome = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    if let Err(e) = &outcome {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open after {waited:?}"
        );
    }
    assert!(waited < Duration::from_secs(15), "closed after {waited:?}");
    // The server still answers others.
    let r = Client::new().get(s.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn one_client_over_its_rate_gets_429_json_and_the_refusals_are_counted() {
    let d = DataDir::new();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[limits]\nrate_per_second = 0.5\nrate_burst = 3\n",
    )
    .unwrap();
    let s = Server::start(&d, &[]);
    let c = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = c.get(s.url("/sdk.js")).send().unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            assert_eq!(envelope(r).1, "rate_limited");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // Health and metrics are not public routes: never limited.
    let metrics = c.get(s.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("manirec_refused_requests_total{reason=\"rate_limited\"} 3"),
        "{metrics}"
    );
}

#[test]
fn empty_or_short_secrets_stop_the_start_from_any_source() {
    let d = DataDir::new();
    // An empty secret in the file is not a key anyone can sign with.
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "shoplazza_secret = \"\"\n",
    )
    .unwrap();
    let out = d
        .command(&["serve", "--addr", "127.0.0.1:0"])
        .env_remove("MANIREC_SHOPLAZZA_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shoplazza_secret in manirec.toml"), "{err}");
    assert!(err.contains("at least 16 bytes"), "{err}");

    // A short or empty one in the environment, whatever the file says.
    std::fs::remove_file(d.path().join("data/manirec.toml")).unwrap();
    for (name, value) in [
        ("MANIREC_SHOPLAZZA_SECRET", "short"),
        ("MANIREC_SHOPLAZZA_SECRET", ""),
        ("MANIREC_ADMIN_TOKEN", "fifteen-bytes!!"),
    ] {
        let out = d
            .command(&["serve", "--addr", "127.0.0.1:0"])
            .env(name, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{err}");
    }
}

/// A data dir with a promoted popularity model over a small CSV shop.
fn served_shop() -> DataDir {
    let d = DataDir::new();
    let mut csv = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
    for u in 0..30 {
        for i in 0..5 {
            let item = (u * 7 + i * 3) % 20;
            csv.push_str(&format!(
                "ana{u}@example.com,p{item},5.0,{},purchase\n",
                1_780_000_000 + u * 100 + i
            ));
        }
    }
    let path = d.path().join("shop.csv");
    std::fs::write(&path, csv).unwrap();
    d.json(&["import", "--interactions", path.to_str().unwrap()]);
    d.json(&["dataset", "build"]);
    let trained = d.json(&["train", "--model", "popular"]);
    let version = trained["model_version"].as_str().unwrap().to_owned();
    d.json(&["models", "promote", &version]);
    d
}

#[test]
fn a_user_id_counts_only_with_its_signed_token() {
    let d = served_shop();
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", TOKEN)]);
    let c = Client::new();
    let ask = |query: &str, header: Option<&str>| {
        let mut r = c.get(s.url(&format!("/v1/recommendations?k=3&{query}")));
        if let Some(token) = header {
            r = r.header("X-Manirec-User-Token", token);
        }
        r.send().unwrap()
    };
    let victim = "ana1%40example.com";
    let good = user_token("Ana1@Example.com");

    // No token, a garbage one, an expired one, a tampered one, one for another id.
    assert_eq!(
        envelope(ask(&format!("user_id={victim}"), None)),
        (401, "user_token_required".to_owned())
    );
    let expired = {
        use hmac::Mac;
        let mut m =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(common::server::STOREFRONT.as_bytes())
                .unwrap();
        m.update(b"ana1@example.com|1000");
        format!("1000.{}", hex::encode(m.finalize().into_bytes()))
    };
    let (expiry, sig) = good.split_once('.').unwrap();
    let tampered = format!("{}.{sig}", expiry.parse::<u64>().unwrap() + 1);
    let other = user_token("ana2@example.com");
    for bad in ["garbage", &expired, &tampered, &other] {
        assert_eq!(
            envelope(ask(&format!("user_id={victim}&user_token={bad}"), None)),
            (401, "user_token_invalid".to_owned()),
            "{bad}"
        );
    }
    // The right token, in the query or the header; the admin token passes too.
    let r = ask(&format!("user_id={victim}&user_token={good}"), None);
    assert_eq!(r.status(), 200);
    let r = ask(&format!("user_id={victim}"), Some(&good));
    assert_eq!(r.status(), 200);
    let r = c
        .get(s.url(&format!("/v1/recommendations?k=3&user_id={victim}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Sessions need no token.
    assert_eq!(ask("session_id=s-anon", None).status(), 200);

    // identify without a token links nothing: the events stay anonymous.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let batch = serde_json::json!([
        {"event_id": "x1", "event_type": "product_view", "product_id": "p1",
         "user_id": "ana3@example.com", "session_id": "s-attacker", "timestamp": now},
        {"event_id": "x2", "event_type": "product_view", "product_id": "p1",
         "user_id": "ana3@example.com", "user_token": "1.00", "timestamp": now},
        {"event_id": "x3", "event_type": "product_view", "product_id": "p2",
         "user_id": "ana4@example.com", "user_token": user_token("ana4@example.com"),
         "session_id": "s-ana4", "timestamp": now}
    ]);
    let r: Value = c
        .post(s.url("/v1/events"))
        .json(&batch)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["accepted"], 2, "{r}");
    assert_eq!(r["unsigned_user_ids"], 2, "{r}");
    assert_eq!(r["rejected"][0]["index"], 1, "{r}");
    let users: Vec<Option<String>> = {
        let db = d.db();
        let mut stmt = db
            .prepare("SELECT user_id FROM behavior_events ORDER BY event_id")
            .unwrap();
        stmt.query_map(&[], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(users.len(), 2);
    assert_eq!(users[0], None, "the unsigned identify was kept");
    assert!(users[1].as_deref().unwrap().starts_with("u_"));
}

/// The answer log's budget: answers outside an experiment over it are counted,
/// not logged (a busy shop's log would cost its answers their p99); answers
/// inside an experiment, which attribution reads, are always logged.
#[test]
fn answers_outside_experiments_are_logged_within_their_budget_experiments_always() {
    let d = served_shop();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[limits]\nrate_per_second = 0\nanswers_logged_per_second = 0\n",
    )
    .unwrap();
    let s = Server::start(&d, &[("MANIREC_RELOAD_SECONDS", "1")]);
    for i in 0..10 {
        let (status, _) = s.get_json(&format!("/v1/recommendations?session_id=s{i}&k=3"));
        assert_eq!(status, 200);
    }
    let metrics = Client::new()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("manirec_answers_unlogged_total 10"),
        "{metrics}"
    );

    let trained = d.json(&["train", "--model", "popular"]);
    let treatment = trained["model_version"].as_str().unwrap();
    d.json(&[
        "experiment",
        "start",
        "--control",
        "m1",
        "--treatment",
        treatment,
    ]);
    // Within a reload, answers come from the experiment's arms: the first
    // treatment answer says it serves; then ten more shoppers.
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let (_, answer) = s.get_json(&format!("/v1/recommendations?session_id=x{n}&k=3"));
        if answer["variant"] == "treatment" {
            break;
        }
        assert!(Instant::now() < deadline, "the experiment never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..10 {
        let (status, _) = s.get_json(&format!("/v1/recommendations?session_id=y{i}&k=3"));
        assert_eq!(status, 200);
    }
    let mut s = s;
    assert!(s.stop().success());
    let logged: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM recommendation_log WHERE experiment_id IS NOT NULL",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    let all: i64 = d
        .db()
        .query_row("SELECT COUNT(*) FROM recommendation_log", &[], |r| r.get(0))
        .unwrap();
    assert!(logged >= 11, "{logged} experiment answers logged");
    assert_eq!(all, logged, "an answer outside the experiment was logged");
}
