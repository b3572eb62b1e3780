//! One retention: what `serve`'s scheduled retention leaves and what
//! `manirec cleanup` leaves are the same rows, on two identical stores, and
//! both runs are journaled alike.

mod common;

use std::time::{Duration, Instant};

use common::server::Server;
use common::DataDir;
use serde_json::Value;

const DAY_S: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The same store in `d`: interactions, behaviour events and logged answers,
/// some past a 200-day retention and some inside it.
fn seed(d: &DataDir, now: i64) {
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    // Every periodic job but retention off; retention looked at every second.
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[schedule]\nretrain_minutes = 0\nreport_hours = 0\nretention_hours = 1\n\
         retention_days = 200\ncheck_seconds = 1\n",
    )
    .unwrap();
    let mut rows = String::from("user_id,item_id,rating,timestamp,interaction_type,synthetic\n");
    for (i, age) in [400, 300, 201, 150, 10].iter().enumerate() {
        rows.push_str(&format!("u{i},p{i},1,{},view,0\n", now - age * DAY_S));
    }
    let file = d.path().join("rows.csv");
    std::fs::write(&file, rows).unwrap();
    d.json(&[
        "import",
        "--interactions",
        file.to_str().unwrap(),
        "--source",
        "realtime",
    ]);
    let db = d.db();
    for (i, age) in [365, 250, 100, 1].iter().enumerate() {
        let at = (now - age * DAY_S) * 1000;
        db.execute(
            "INSERT INTO behavior_events (event_id, event_type, product_id, user_id, session_id,
                 timestamp_ms, received_at) VALUES (?1, 'product_view', 'p1', 'u1', 's1', ?2, ?2)",
            &[format!("e{i}").into(), at.into()],
        )
        .unwrap();
        db.execute(
            "INSERT INTO recommendation_log (request_id, created_at, user_id, endpoint,
                 model_version, experiment_id, variant, items)
             VALUES (?1, ?2, 'u1', 'recommendations', 'm1', NULL, 'control', '[]')",
            &[format!("r{i}").into(), at.into()],
        )
        .unwrap();
    }
}

/// What is left, table by table, in a comparable form.
fn left(d: &DataDir) -> Vec<Vec<String>> {
    let db = d.db();
    [
        "SELECT user_id || '|' || item_id || '|' || timestamp FROM training_interactions ORDER BY 1",
        "SELECT event_id || '|' || timestamp_ms FROM behavior_events ORDER BY 1",
        "SELECT request_id || '|' || created_at FROM recommendation_log ORDER BY 1",
    ]
    .iter()
    .map(|sql| {
        let mut stmt = db.prepare(sql).unwrap();
        stmt.query_map(&[], |r| r.get::<String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
    .collect()
}

/// The last retention run's status, who started it and what its step deleted.
fn last_retention(d: &DataDir) -> Option<(String, String, Value)> {
    let db = d.db();
    db.query_row(
        "SELECT status, started_by, steps FROM job_runs WHERE job = 'retention'
         ORDER BY id DESC LIMIT 1",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?, r.get::<String>(2)?)),
    )
    .ok()
    .map(|(status, by, steps): (String, String, String)| {
        let steps: Value = serde_json::from_str(&steps).unwrap();
        (status, by, steps[0]["detail"]["deleted"].clone())
    })
}

#[test]
fn scheduled_retention_and_cleanup_leave_the_same_rows() {
    let now = now();
    let scheduled = DataDir::new();
    let by_hand = DataDir::new();
    seed(&scheduled, now);
    seed(&by_hand, now);
    assert_eq!(left(&scheduled), left(&by_hand));

    let mut s = Server::start(&scheduled, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        match last_retention(&scheduled) {
            Some(run) if run.0 != "running" => break run,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled retention within a minute"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    s.stop();
    assert_eq!(run.0, "ok", "{run:?}");
    assert_eq!(run.1, "schedule");

    // `cleanup` without --older-than: [schedule] retention_days.
    let cleaned = by_hand.json(&["cleanup"]);
    assert_eq!(cleaned["older_than_days"], 200);
    let by_hand_run = last_retention(&by_hand).expect("cleanup is journaled");
    assert_eq!(by_hand_run.0, "ok");
    assert_eq!(by_hand_run.1, "cli");

    assert_eq!(run.2, cleaned["deleted"]);
    assert_eq!(by_hand_run.2, cleaned["deleted"]);
    assert_eq!(cleaned["deleted"]["training_interactions"], 3);
    assert_eq!(cleaned["deleted"]["behavior_events"], 2);
    assert_eq!(cleaned["deleted"]["recommendation_log"], 2);
    let kept = left(&by_hand);
    assert_eq!(left(&scheduled), kept);
    assert_eq!(kept.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
}
