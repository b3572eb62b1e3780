//! Storefront events over loopback, then sync: validated one by one, durable
//! before the answer, synced exactly once, anonymous history stitched to the
//! customer, nothing acknowledged lost to a `kill -9`.

mod common;

use std::collections::BTreeSet;

use common::server::{user_token, Server};
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::{json, Value};

fn post(s: &Server, body: &Value) -> (u16, Value) {
    let r = Client::new()
        .post(s.url("/v1/events"))
        .header("Content-Type", "text/plain") // what sendBeacon sends
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn event(id: &str, kind: &str, product: &str, ids: Value) -> Value {
    let mut e = json!({"event_id": id, "event_type": kind, "product_id": product, "timestamp": 1_790_000_000_000i64});
    e.as_object_mut()
        .unwrap()
        .extend(ids.as_object().unwrap().clone());
    e
}

#[test]
fn a_batch_keeps_its_valid_members_and_names_the_invalid_ones() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    let batch = json!([
        event("e1", "product_view", "p1", json!({"session_id": "s1"})),
        {"event_type": "product_view", "product_id": "p1", "session_id": "s1", "timestamp": 1},
        event("e3", "add_to_cart", "p2", json!({"device_id": "d1"})),
        event("e4", "product_view", "p3", json!({})),
        {"event_id": "e5", "event_type": "product_view", "product_id": "p1", "session_id": "s1", "timestamp": "yesterday"},
        "not an event",
        event("e7", "rec_click", "p1", json!({"session_id": "s1"})),
        event("e8", "wishlist_share", "p4", json!({"user_id": "Ana@Example.com", "user_token": user_token("Ana@Example.com"), "session_id": "s1"})),
        event("e1", "product_view", "p1", json!({"session_id": "s1"})),
        {"event_id": "e10", "event_type": "product_view", "product_id": 77, "session_id": "s2", "timestamp": "2026-09-21T10:00:00Z"}
    ]);
    let (status, answer) = post(&s, &batch);
    assert_eq!(status, 200);
    let rejected: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, [1, 3, 4, 5, 6]);
    assert_eq!(answer["rejected"][0]["error"], "event_id is required");
    assert_eq!(
        answer["rejected"][1]["error"],
        "one of user_id, session_id, device_id is required"
    );
    assert!(answer["rejected"][4]["error"]
        .as_str()
        .unwrap()
        .contains("request_id"));
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(4), Some(1))
    );

    let (_, again) = post(&s, &batch);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(5))
    );

    let (status, err) = post(&s, &json!({"not": "a batch"}));
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
    let r = Client::new()
        .post(s.url("/v1/events"))
        .body("{oops")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // The daily report counts the members refused, twice five.
    let report = d.json(&["report"]);
    assert_eq!(report["events"]["rejected_total"], 10, "{report}");

    // No email reaches the event store; unknown types are kept.
    let users: Vec<Option<String>> = d
        .db()
        .prepare("SELECT user_id FROM behavior_events")
        .unwrap()
        .query_map(&[], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(users
        .iter()
        .flatten()
        .all(|u| !u.contains('@') && u.starts_with("u_")));
    let kinds: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM behavior_events WHERE event_type = 'wishlist_share'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kinds, 1);
}

#[test]
fn sync_moves_every_event_exactly_once_and_stitches_anonymous_history() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    // An anonymous visitor browses (session s9 on device d9) ...
    let browsing: Vec<Value> = (0..30)
        .map(|i| {
            event(
                &format!("b{i}"),
                if i % 3 == 0 {
                    "product_click"
                } else {
                    "product_view"
                },
                &format!("p{i}"),
                json!({"session_id": "s9", "device_id": "d9"}),
            )
        })
        .collect();
    assert_eq!(post(&s, &Value::Array(browsing)).1["accepted"], 30);
    // ... plus impressions (not a preference) from another session.
    let shown = json!([{"event_id": "i1", "event_type": "rec_impression", "product_id": "p1", "session_id": "s8", "request_id": "r1", "timestamp": 1_790_000_000_000i64}]);
    assert_eq!(post(&s, &shown).1["accepted"], 1);

    let first = d.json(&["sync"]);
    assert_eq!(first["synced"], 31);
    assert_eq!(first["inserted"], 30);
    assert_eq!(first["skipped"], 1);
    let anonymous: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM training_interactions WHERE user_id = 'session:s9'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(anonymous, 30);

    // Nothing new: nothing synced.
    let again = d.json(&["sync"]);
    assert_eq!(
        (again["synced"].as_u64(), again["inserted"].as_u64()),
        (Some(0), Some(0))
    );

    // The visitor logs in: their history joins the customer, once.
    let login = json!([event(
        "l1",
        "add_to_cart",
        "p3",
        json!({"user_id": "ana@example.com", "user_token": user_token("ana@example.com"), "session_id": "s9", "device_id": "d9"})
    )]);
    assert_eq!(post(&s, &login).1["accepted"], 1);
    let later = json!([event(
        "l2",
        "product_view",
        "p40",
        json!({"device_id": "d9"})
    )]);
    assert_eq!(post(&s, &later).1["accepted"], 1);
    let stitched = d.json(&["sync"]);
    assert_eq!(stitched["synced"], 2);
    assert_eq!(stitched["stitched"]["links"], 2, "session and device");
    assert_eq!(stitched["stitched"]["moved"], 30);
    let by_user: Vec<(String, i64)> = d
        .db()
        .prepare("SELECT user_id, COUNT(*) FROM training_interactions GROUP BY 1 ORDER BY 1")
        .unwrap()
        .query_map(&[], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(by_user.len(), 1, "{by_user:?}");
    assert!(by_user[0].0.starts_with("u_"));
    assert_eq!(by_user[0].1, 32);
    let repeat = d.json(&["sync"]);
    assert_eq!(repeat["stitched"]["links"], 0);
    assert_eq!(repeat["stitched"]["moved"], 0);

    // Events arriving with clocks all over the place still sync: the watermark is arrival order.
    let skewed = json!([
        {"event_id": "k1", "event_type": "product_view", "product_id": "q1", "session_id": "z", "timestamp": 1_000_000_000_000i64},
        {"event_id": "k2", "event_type": "product_view", "product_id": "q2", "session_id": "z", "timestamp": 1_790_000_000_000i64}
    ]);
    post(&s, &skewed);
    assert_eq!(d.json(&["sync"])["inserted"], 2);
}

#[test]
fn kill_9_under_concurrent_load_loses_no_acknowledged_event() {
    let d = DataDir::new();
    let mut s = Server::start(&d, &[]);
    let base = s.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (base, stop) = (base.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = Client::new();
                let mut acknowledged = Vec::new();
                for b in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let ids: Vec<String> = (0..50).map(|i| format!("c{c}-b{b}-{i}")).collect();
                    let batch: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"event_id": id, "event_type": "product_view", "product_id": "p", "device_id": format!("d{c}"), "timestamp": 1_790_000_000_000i64}))
                        .collect();
                    match client.post(format!("{base}/v1/events")).json(&batch).send() {
                        Ok(r) if r.status().is_success() => acknowledged.extend(ids),
                        _ => break, // the server is gone
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged: BTreeSet<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        acknowledged.len() >= 1000,
        "the load never got going: {}",
        acknowledged.len()
    );

    let stored: BTreeSet<String> = d
        .db()
        .prepare("SELECT event_id FROM behavior_events")
        .unwrap()
        .query_map(&[], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lost: Vec<_> = acknowledged.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {lost:?}",
        acknowledged.difference(&stored).count()
    );
    // And the restarted store syncs all of them exactly once.
    let synced = d.json(&["sync"]);
    assert_eq!(synced["synced"].as_u64().unwrap(), stored.len() as u64);
}
