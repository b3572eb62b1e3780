//! Several `serve` processes on one store (the PostgreSQL pass of
//! `scripts/test` runs this on PostgreSQL, the first pass on one SQLite file):
//! both take events at once, a promotion made elsewhere reaches both without
//! a restart, and `kill -9` of one under load loses nothing it acknowledged
//! while the other keeps answering.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::Server;
use common::DataDir;
use serde_json::{json, Value};

const RELOAD: &[(&str, &str)] = &[("MANIREC_RELOAD_SECONDS", "1")];

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
