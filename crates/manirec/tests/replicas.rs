//! Several `serve` processes on one store (the PostgreSQL pass of
//! `scripts/test` runs this on PostgreSQL, the first pass on one SQLite file):
//! both take events at once, a promotion made elsewhere reaches both without
//! a restart, and `kill -9` of one under load loses nothing it acknowledged
//! while the other keeps answering; the same webhook delivered to both at once
//! lands once, and a scheduled job due on both runs once.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::Server;
use common::DataDir;
use serde_json::{json, Value};

const RELOAD: &[(&str, &str)] = &[("MANIREC_RELOAD_SECONDS", "1")];

/// The load comes from one loopback address standing for a crowd of
/// shoppers: no per-address rate limit (`[limits] rate_per_second = 0`),
/// after `extra` settings.
fn settings(d: &DataDir, extra: &str) {
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        format!("{extra}[limits]\nrate_per_second = 0\n"),
    )
    .unwrap();
}

fn model_version(s: &Server) -> Value {
    let (status, answer) = s.get_json("/v1/recommendations?session_id=a-new-visitor&k=5");
    assert_eq!(status, 200, "{answer}");
    answer["model_version"].clone()
}

/// Posts batches of 20 events until `stop` (or until the server is gone);
/// the event ids it acknowledged.
fn post_until(base: String, tag: &'static str, stop: &AtomicBool) -> BTreeSet<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acknowledged = BTreeSet::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ids: Vec<String> = (0..20).map(|i| format!("{tag}-{n}-{i}")).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"event_id": id, "event_type": "product_view", "product_id": "p1",
                             "device_id": format!("dev-{tag}"), "timestamp": 1_790_000_000_000i64})
            })
            .collect();
        match client.post(format!("{base}/v1/events")).json(&batch).send() {
            Ok(r) if r.status().is_success() => acknowledged.extend(ids),
            Ok(r) if r.status().as_u16() == 429 => std::thread::sleep(Duration::from_millis(50)),
            _ => break,
        }
    }
    acknowledged
}

#[test]
fn two_replicas_ingest_together_see_a_promotion_and_survive_the_loss_of_one() {
    let d = DataDir::new();
    settings(&d, "");
    let demo = d.json(&["demo", "--no-serve", "--seed", "7", "--as-of", "2026-06-30"]);
    let promoted = demo["stages"]["promoted"].clone();
    let mut a = Server::start(&d, RELOAD);
    let b = Server::start(&d, RELOAD);
    assert_eq!(model_version(&a), promoted);
    assert_eq!(model_version(&b), promoted);

    // Another process promotes another version: both replicas answer with it
    // within their reload period, without a restart.
    let versions = d.json(&["models", "list"]);
    let other = versions["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .find(|v| *v != promoted)
        .unwrap();
    d.json(&["models", "promote", other.as_str().unwrap()]);
    let since = Instant::now();
    for s in [&a, &b] {
        while model_version(s) != other {
            assert!(
                since.elapsed() < Duration::from_secs(15),
                "a replica still answers with the old model"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Both take events at once; then one dies under load.
    let stop = AtomicBool::new(false);
    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let (from_a, from_b) = std::thread::scope(|scope| {
        let to_a = scope.spawn(|| post_until(base_a, "a", &stop));
        let to_b = scope.spawn(|| post_until(base_b, "b", &stop));
        std::thread::sleep(Duration::from_millis(1500));
        a.kill9();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (to_a.join().unwrap(), to_b.join().unwrap())
    });
    assert!(!from_a.is_empty() && !from_b.is_empty());
    // The survivor keeps answering.
    assert_eq!(model_version(&b), other);

    let stored: BTreeSet<String> = d
        .db()
        .prepare("SELECT event_id FROM behavior_events WHERE device_id IN ('dev-a', 'dev-b')")
        .unwrap()
        .query_map(&[], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lost: Vec<_> = from_a
        .union(&from_b)
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

fn signed_order(base: &str, client: &reqwest::blocking::Client, n: usize) -> u16 {
    use base64::Engine;
    use hmac::Mac;
    let body = serde_json::to_vec(&json!({"order": {
        "id": format!("11218-{n:08}"), "number": format!("{n:08}"),
        "financial_status": "paid", "status": "opened",
        "created_at": "2026-11-01T09:00:00Z", "placed_at": "2026-11-01T09:02:00Z",
        "updated_at": "2026-11-01T09:03:00Z",
        "customer": {"id": format!("c-{n}"), "email": format!("shopper{n}@example.com")},
        "line_items": [
            {"id": format!("li-{n}"), "product_id": format!("p-{}", n % 7), "variant_id": "v-1",
             "quantity": 1, "price": "16.99"}
        ]
    }}))
    .unwrap();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(common::server::SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    client
        .post(format!("{base}/webhooks/shoplazza"))
        .header("X-Shoplazza-Topic", "orders/paid")
        .header("X-Shoplazza-Deduplication-ID", format!("dedup-{n}"))
        .header("X-Shoplazza-Hmac-Sha256", signature)
        .body(body)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn two_replicas_take_the_same_webhooks_at_once_and_run_a_scheduled_job_once() {
    let d = DataDir::new();
    // Retention due at once and looked at every second; the rest off.
    settings(
        &d,
        "[schedule]\nretrain_minutes = 0\nreport_hours = 0\nretention_hours = 1\n\
         check_seconds = 1\n",
    );
    let a = Server::start(&d, RELOAD);
    let b = Server::start(&d, RELOAD);

    // Shoplazza retries a delivery it thinks failed, and a load balancer may
    // send the retry to the other replica while the first is still at work:
    // every order goes to both at once.
    const ORDERS: usize = 40;
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let sends: Vec<_> = [&a, &b]
            .into_iter()
            .map(|s| {
                let base = s.base.clone();
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    (0..ORDERS)
                        .map(|n| signed_order(&base, &client, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        sends.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let count = |sql: &str| -> i64 { d.db().query_row(sql, &[], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM shop_orders"), ORDERS as i64);
    assert_eq!(
        count("SELECT COUNT(*) FROM webhook_deliveries"),
        ORDERS as i64
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM training_interactions
             WHERE source = 'webhook' AND interaction_type = 'purchase'"
        ),
        ORDERS as i64,
        "one purchase per order, whichever replica applied it"
    );

    // Both schedulers found retention due within the first second; one ran it.
    let since = Instant::now();
    while count("SELECT COUNT(*) FROM job_runs WHERE job = 'retention' AND status = 'ok'") == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "retention never ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count("SELECT COUNT(*) FROM job_runs WHERE job = 'retention'"),
        1,
        "a scheduled job runs once across the replicas"
    );
}
