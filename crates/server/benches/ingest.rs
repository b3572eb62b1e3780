//! Ingestion throughput of `POST /v1/events` over loopback HTTP, with durability
//! on (WAL, `synchronous = FULL`, the 2xx sent only after the group commit), for
//! batches of 1, 50 and 500 events; beside its anchor, measured in the same run:
//! the same events written straight into the store through the same group-commit
//! call, without HTTP or JSON.
//!
//! Run: `cargo bench -p manirec-server --bench ingest [-- SECONDS]` (default 5 s per
//! case). Server and clients share the machine's cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manirec_jobs::{Db, JobsConfig};
use manirec_pipeline::identity::UserKey;
use manirec_server::{AppState, ServerConfig};
use manirec_store::{BehaviorEvent, Objects, Store};
use serde_json::{json, Value};

const CLIENTS: usize = 16;

fn batch_json(client: usize, n: u64, size: usize) -> Value {
    Value::Array(
        (0..size)
            .map(|i| {
                json!({"event_id": format!("c{client}-{n}-{i}"), "event_type": "product_view",
                       "product_id": format!("p{}", i % 997), "session_id": format!("s{client}"),
                       "device_id": format!("d{client}"), "timestamp": 1_790_000_000_000i64 + i as i64})
            })
            .collect(),
    )
}

async fn over_http(size: usize, seconds: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("manirec.db")).unwrap();
    let (db, thread) = Db::start(store);
    let objects = Objects::from_url(&format!("file://{}/objects", dir.path().display())).unwrap();
    let state = AppState::new(
        ServerConfig::new(JobsConfig::new(UserKey::from_bytes([7; 32]))),
        db,
        objects,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(manirec_server::serve(state.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, base, accepted, requests) = (
                client.clone(),
                base.clone(),
                accepted.clone(),
                requests.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    let body = batch_json(c, n, size).to_string();
                    n += 1;
                    let r = client
                        .post(format!("{base}/v1/events"))
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    let answer: Value = r.json().await.unwrap();
                    accepted.fetch_add(answer["accepted"].as_u64().unwrap(), Ordering::Relaxed);
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    drop(state);
    thread.join().unwrap();
    (
        accepted.load(Ordering::Relaxed) as f64 / elapsed,
        requests.load(Ordering::Relaxed) as f64 / elapsed,
    )
}

fn direct(size: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("manirec.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let (mut n, mut events) = (0u64, 0u64);
    while Instant::now() < deadline {
        let batch: Vec<BehaviorEvent> = (0..size)
            .map(|i| BehaviorEvent {
                event_id: format!("{n}-{i}"),
                event_type: "product_view".into(),
                product_id: format!("p{}", i % 997),
                user_id: None,
                session_id: Some("s".into()),
                device_id: Some("d".into()),
                timestamp_ms: 1_790_000_000_000 + i as i64,
                request_id: None,
                properties: None,
            })
            .collect();
        n += 1;
        events += store.insert_event_batches(&[&batch]).unwrap()[0].0;
    }
    events as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "ingestion, {seconds} s per case, {CLIENTS} concurrent clients, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>6} {:>14} {:>12} {:>20} {:>8}",
        "batch", "HTTP events/s", "requests/s", "direct store ev/s", "ratio"
    );
    for size in [1, 50, 500] {
        let (events, requests) = runtime.block_on(over_http(size, seconds));
        let anchor = direct(size, seconds);
        println!(
            "{size:>6} {events:>14.0} {requests:>12.0} {anchor:>20.0} {:>8.2}",
            events / anchor
        );
    }
}
