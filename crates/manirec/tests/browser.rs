//! The storefront SDK in a real browser: headless Chromium (Debian's `chromium`,
//! installed by .ci/run) loads a shop page from one origin and `/sdk.js` from
//! manirec on another, as a real storefront does. The page's clicks must arrive
//! as events, and leaving the page must flush the batch that was still queued.

mod common;

use std::time::{Duration, Instant};

use common::browser::chromium;
use common::server::{Server, Stub};
use common::DataDir;

/// `(event_type, product_id, request_id, session_id, device_id)` of a stored event.
type Seen = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[test]
fn page_clicks_arrive_and_leaving_the_page_flushes_the_last_batch() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    let manirec = s.base.clone();
    // Nothing reaches the batch size (20) or the 5 s timer: only the page-hide flush can send them.
    let page = format!(
        r#"<!doctype html><html><body>
        <div data-manirec-view="p-viewed"></div>
        <button id="plain" data-manirec-product="p-clicked">Cat tee</button>
        <button id="rec" data-manirec-product="p-recommended" data-manirec-request="req-42">Space mug</button>
        <script src="{manirec}/sdk.js" data-endpoint="{manirec}"></script>
        <script>
          manirec.config.flushMs = 3600000; // no timer flush: only leaving the page may send
          document.getElementById("plain").click();
          document.getElementById("rec").click();
          manirec.track("add_to_cart", "p-carted");
          setTimeout(function () {{ location.href = "about:blank"; }}, 300);
        </script></body></html>"#
    );
    let shop = Stub::start(move |_| (200, page.clone()));
    let profile = tempfile::tempdir().unwrap();
    // Headless Chromium keeps running after the page; it is killed once the events are in.
    let mut browser = chromium(profile.path())
        .arg(format!("{}/product.html", shop.base))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let expected = [
        ("product_view", "p-viewed", None),
        ("product_click", "p-clicked", None),
        ("rec_click", "p-recommended", Some("req-42".to_owned())),
        ("add_to_cart", "p-carted", None),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events: Vec<Seen> = d
            .db()
            .prepare("SELECT event_type, product_id, request_id, session_id, device_id FROM behavior_events ORDER BY seq")
            .unwrap()
            .query_map(&[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if events.len() >= expected.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = browser.kill();
    let _ = browser.wait();
    // The view is tracked at DOMContentLoaded, after the inline clicks: compare as sets.
    let mut got: Vec<(&str, &str, Option<String>)> = events
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str(), e.2.clone()))
        .collect();
    got.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(got, expected);
    // One visitor: one session and one device id on every event.
    assert!(events
        .iter()
        .all(|e| e.3.is_some() && e.3 == events[0].3 && e.4.is_some() && e.4 == events[0].4));
}

#[test]
fn the_dashboard_shows_serving_models_and_job_runs() {
    let d = DataDir::new();
    let demo = d.json(&["demo", "--no-serve", "--seed", "3", "--as-of", "2026-06-30"]);
    let active = demo["stages"]["promoted"].as_str().unwrap().to_owned();
    d.json(&["retrain", "--run"]);
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", "dash-token-0123456789")]);
    for _ in 0..3 {
        let popular = reqwest::blocking::get(s.url("/v1/popular?k=5")).unwrap();
        assert_eq!(popular.status(), 200);
    }
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path())
        .args(["--virtual-time-budget=8000", "--dump-dom"])
        .arg(s.url("/dashboard#token=dash-token-0123456789"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    // The page fetched /admin/overview with the token and rendered it.
    assert!(dom.contains("updated "), "no overview rendered: {dom}");
    assert!(dom.contains(&format!("<td>{active}</td>")), "{dom}");
    assert!(
        dom.contains(r#"<span class="pill active">active</span>"#),
        "{dom}"
    );
    assert!(dom.contains("retrain"), "the job journal is missing: {dom}");
    assert!(dom.contains("v1.0"), "datasets are missing: {dom}");
    // Latency per route, read off the /metrics histograms.
    assert!(
        dom.contains("<td>GET /v1/popular</td><td class=\"num\">3</td>"),
        "no latency table: {dom}"
    );
}
