//! The whole loop on a real data dir, driven the way a shop drives it: data
//! arrives → the trigger fires → a candidate is trained and compared offline →
//! an A/B test starts → shoppers' impressions, clicks and purchases come back →
//! the loop promotes the winner. And a training that fails leaves the active
//! model serving.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::server::{item_ids, Server};
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const TOKEN: &str = "admin-test-token";

fn admin(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = Client::new()
        .request(method, s.url(path))
        .bearer_auth(TOKEN)
        .timeout(std::time::Duration::from_secs(300));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn get(s: &Server, path: &str) -> Value {
    let r = Client::new().get(s.url(path)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().unwrap()
}

fn post_events(s: &Server, events: &[Value]) {
    for chunk in events.chunks(500) {
        let r = Client::new()
            .post(s.url("/v1/events"))
            .json(&chunk)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().unwrap();
        assert_eq!(
            body["accepted"].as_u64().unwrap(),
            chunk.len() as u64,
            "{body}"
        );
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn step_names(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn data_arrives_a_candidate_is_ab_tested_and_the_winner_promoted() {
    let d = DataDir::new();
    let demo = d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    let first = demo["stages"]["promoted"].as_str().unwrap().to_owned();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[trigger]\nmin_new_interactions = 300\n\
         [retrain]\nmodel = \"ease\"\ntolerance = 0.5\n\
         [experiments]\nmin_exposures = 40\n\
         [schedule]\nretrain_minutes = 0\nreport_hours = 0\nretention_hours = 0\n\
         [limits]\nrate_per_second = 0\n", // a crowd of shoppers, all on loopback
    )
    .unwrap();
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", TOKEN)]);

    // The admin API wants the token.
    let r = Client::new().get(s.url("/admin/models")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = Client::new()
        .get(s.url("/admin/models"))
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Nothing new yet: the loop has nothing to do, and says so.
    let (status, run) = admin(&s, reqwest::Method::POST, "/admin/retrain", None);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "skipped", "{run}");

    // Data arrives: new shoppers browse and buy the popular items.
    let popular = item_ids(&get(&s, "/v1/popular?k=30"));
    let t0 = now_ms() - 3_600_000;
    let mut events = Vec::new();
    for shopper in 0..120 {
        for j in 0..4 {
            let item = &popular[(shopper * 7 + j * 3) % popular.len()];
            events.push(json!({"event_id": format!("new-{shopper}-{j}"), "event_type": if j == 3 { "purchase" } else { "product_view" },
                "product_id": item, "session_id": format!("new-s{shopper}"), "timestamp": t0 + (shopper * 10 + j) as i64 * 1000}));
        }
    }
    post_events(&s, &events);

    // The loop: sync, trigger, export, dataset, candidate, comparison, A/B test.
    let (status, run) = admin(&s, reqwest::Method::POST, "/admin/retrain", None);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "ok", "{run}");
    assert_eq!(
        step_names(&run),
        [
            "trigger",
            "export",
            "dataset",
            "train",
            "compare",
            "experiment_started"
        ],
        "{run}"
    );
    let candidate = run["candidate"].as_str().unwrap().to_owned();
    let experiment = run["experiment_id"].as_i64().unwrap();
    assert_eq!(run["active"], first.as_str());

    // Shoppers land in both arms, each always in the same one, served by the arm's model.
    let mut arm_of: BTreeMap<String, String> = BTreeMap::new();
    let mut shown: Vec<(String, String, Vec<String>, String)> = Vec::new();
    for shopper in 0..160 {
        let session = format!("ab-{shopper}");
        let recs = get(&s, &format!("/v1/recommendations?session_id={session}&k=5"));
        let variant = recs["variant"].as_str().unwrap().to_owned();
        let expected = if variant == "treatment" {
            &candidate
        } else {
            &first
        };
        assert_eq!(recs["model_version"], expected.as_str());
        let again = get(&s, &format!("/v1/recommendations?session_id={session}&k=5"));
        assert_eq!(again["variant"], variant.as_str(), "a shopper changed arm");
        arm_of.insert(session.clone(), variant.clone());
        shown.push((
            session,
            recs["request_id"].as_str().unwrap().to_owned(),
            item_ids(&recs),
            variant,
        ));
    }
    let treated = arm_of.values().filter(|v| *v == "treatment").count();
    assert!((40..=120).contains(&treated), "{treated} of 160 treated");

    // Feedback: every item shown is an impression; the treatment's shoppers
    // click far more, and some buy what they clicked.
    let mut feedback = Vec::new();
    let mut expected: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for (n, (session, request, recs, variant)) in shown.iter().enumerate() {
        let e = expected.entry(variant.as_str()).or_default();
        e[0] += 2; // two requests per shopper
        for (pos, item) in recs.iter().enumerate() {
            feedback.push(json!({"event_id": format!("imp-{n}-{pos}"), "event_type": "rec_impression",
                "product_id": item, "session_id": session, "request_id": request, "timestamp": now_ms()}));
            e[1] += 1;
        }
        let clicks = if variant == "treatment" {
            2
        } else {
            usize::from(n % 5 == 0)
        };
        for (pos, item) in recs.iter().take(clicks).enumerate() {
            feedback.push(json!({"event_id": format!("clk-{n}-{pos}"), "event_type": "rec_click",
                "product_id": item, "session_id": session, "request_id": request, "timestamp": now_ms()}));
            e[2] += 1;
        }
        if clicks > 0 && n % 2 == 0 {
            // A storefront `purchase` event is a claim, not an order: it never
            // counts for an arm (verified orders do).
            feedback.push(
                json!({"event_id": format!("buy-{n}"), "event_type": "purchase",
                "product_id": recs[0], "session_id": session, "timestamp": now_ms() + 1000}),
            );
        }
        if clicks > 0 && n < 2 {
            // Forgeries: 100 clicks on an item this answer did not contain, and
            // 100 repeats of the real click: they add nothing.
            for k in 0..100 {
                feedback.push(json!({"event_id": format!("forged-{n}-{k}"), "event_type": "rec_click",
                    "product_id": "not-in-the-answer", "session_id": session, "request_id": request, "timestamp": now_ms()}));
                feedback.push(json!({"event_id": format!("repeat-{n}-{k}"), "event_type": "rec_click",
                    "product_id": recs[0], "session_id": session, "request_id": request, "timestamp": now_ms()}));
            }
        }
    }
    post_events(&s, &feedback);

    // The arms count exactly what was sent (the log is flushed within a second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, st) = admin(
        &s,
        reqwest::Method::GET,
        &format!("/admin/experiments/{experiment}"),
        None,
    );
    assert_eq!(status, 200, "{st}");
    for (arm, [requests, impressions, clicks, purchases]) in &expected {
        let a = &st["arms"][arm];
        assert_eq!(a["requests"], *requests, "{arm}: {st}");
        assert_eq!(a["impressions"], *impressions, "{arm}: {st}");
        assert_eq!(a["clicks"], *clicks, "{arm}: {st}");
        assert_eq!(a["purchases"], *purchases, "{arm}: {st}");
    }
    assert_eq!(st["metric"], "ctr");
    assert!(st["lift"].as_f64().unwrap() > 1.0, "{st}");
    assert!(st["p_value"].as_f64().unwrap() < 0.001, "{st}");
    assert_eq!(st["decision"], "promote", "{st}");
    // The command line reports the same numbers.
    let cli = d.json(&["experiment", "status"]);
    assert_eq!(cli["arms"], st["arms"]);

    // The next run of the loop settles the test: the winner is promoted and serves everyone.
    let (_, run) = admin(&s, reqwest::Method::POST, "/admin/retrain", None);
    assert_eq!(run["status"], "ok", "{run}");
    assert_eq!(
        step_names(&run),
        ["experiment", "experiment_stopped"],
        "{run}"
    );
    assert_eq!(run["active"], candidate.as_str());
    let recs = get(&s, "/v1/recommendations?session_id=ab-1&k=5");
    assert_eq!(recs["model_version"], candidate.as_str());
    assert_eq!(recs["variant"], "control");
    let (_, models) = admin(&s, reqwest::Method::GET, "/admin/models", None);
    let status_of: BTreeMap<&str, &str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(status_of[candidate.as_str()], "active");
    assert_eq!(status_of[first.as_str()], "retired");

    // A candidate that does worse offline than the active model is retired, not tested.
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[retrain]\nmodel = \"popular\"\ntolerance = -1.0\n",
    )
    .unwrap();
    let run = d.json(&["retrain", "--run", "--force"]);
    assert_eq!(
        step_names(&run),
        ["trigger", "export", "dataset", "train", "compare"],
        "{run}"
    );
    assert!(
        run["outcome"].as_str().unwrap().contains("worse offline"),
        "{run}"
    );
    let loser = run["candidate"].as_str().unwrap();
    assert_eq!(run["active"], candidate.as_str());
    let models = d.json(&["models", "list"]);
    let loser_status = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == loser)
        .unwrap()["status"]
        .clone();
    assert_eq!(loser_status, "retired");

    // A training that fails (its dataset's files damaged in the object store)
    // leaves the active model serving and says why.
    d.json(&["sync"]);
    let latest = d.json(&["dataset", "build"])["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = d.path().join(format!("data/objects/datasets/{latest}"));
    let mut damaged = HashSet::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.to_string_lossy().contains("train") {
            std::fs::write(&path, b"not parquet any more").unwrap();
            damaged.insert(path);
        }
    }
    assert!(!damaged.is_empty());
    let out = d.fails(&["retrain", "--run", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("active model keeps serving"), "{stderr}");
    let runs = d.json(&["runs", "--job", "retrain", "--limit", "1"]);
    let failed = &runs["runs"][0];
    assert_eq!(failed["status"], "failed", "{runs}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("does not match the manifest"),
        "{runs}"
    );
    let recs = get(&s, "/v1/recommendations?session_id=ab-1&k=5");
    assert_eq!(recs["model_version"], candidate.as_str());
    let (_, models) = admin(&s, reqwest::Method::GET, "/admin/models", None);
    let active: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "active")
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(active, [candidate.as_str()]);
}
