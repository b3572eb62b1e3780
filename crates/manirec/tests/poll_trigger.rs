//! The reconciliation poll against a local server serving recorded pages, and
//! the retrain trigger with its export and notification.

mod common;

use common::server::Stub;
use common::DataDir;
use serde_json::{json, Value};

fn shoplazza_order(n: usize, status: &str, updated_at: &str) -> Value {
    json!({
        "id": format!("11218-{n:08}"), "number": format!("{n:08}"),
        "financial_status": status, "created_at": "2026-10-01T08:00:00Z", "updated_at": updated_at,
        "customer": {"id": format!("c-{n}"), "email": format!("buyer{}@example.com", n % 40)},
        "line_items": [{"id": format!("li-{n}"), "product_id": format!("prod-{}", n % 17), "quantity": 1, "price": "12.00"}]
    })
}

#[test]
fn the_poll_pages_through_updated_orders_and_repeats_change_nothing() {
    // Page 1 is full (250 orders), page 2 has 3: the poll must fetch both and stop.
    let stub = Stub::start(|req| {
        if req.target.starts_with("/openapi/2022-01/products") {
            // A token without the products scope: the orders still count.
            return (403, json!({"errors": "forbidden"}).to_string());
        }
        let page = if req.target.contains("page=2") { 2 } else { 1 };
        let orders: Vec<Value> = match page {
            1 => (1..=250)
                .map(|n| {
                    shoplazza_order(
                        n,
                        if n % 10 == 0 { "pending" } else { "paid" },
                        "2026-10-02T00:00:00Z",
                    )
                })
                .collect(),
            _ => (251..=253)
                .map(|n| shoplazza_order(n, "paid", "2026-10-03T12:00:00Z"))
                .collect(),
        };
        (200, json!({"orders": orders, "count": 253}).to_string())
    });
    let d = DataDir::new();
    let env = [
        ("MANIREC_SHOPLAZZA_API", stub.base.as_str()),
        ("MANIREC_SHOPLAZZA_TOKEN", "tok-123"),
    ];
    let mut cmd = d.command(&["--json", "poll"]);
    cmd.envs(env);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["pages"], 2);
    assert_eq!(first["orders"], 253);
    assert_eq!(first["applied"], 253);
    assert!(
        first["products"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{first}"
    );
    let orders_requests = || -> Vec<_> {
        stub.requests()
            .into_iter()
            .filter(|r| r.target.starts_with("/openapi/2022-01/orders"))
            .collect()
    };
    let requests = orders_requests();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r.header("access-token") == Some("tok-123")));
    assert!(requests[0].target.starts_with("/openapi/2022-01/orders?"));
    assert!(
        !requests[0].target.contains("updated_at_min"),
        "the first poll takes everything"
    );

    let purchases: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM training_interactions WHERE interaction_type = 'purchase'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        purchases,
        253 - 25,
        "pending orders are mirrored, not bought"
    );

    let out = d.command(&["--json", "poll"]).envs(env).output().unwrap();
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (second["applied"].as_u64(), second["unchanged"].as_u64()),
        (Some(0), Some(253))
    );
    let since = &orders_requests()[2].target;
    assert!(
        since.contains("updated_at_min=2026-10-03T11%3A50%3A00"),
        "watermark minus overlap: {since}"
    );
}

#[test]
fn the_poll_brings_a_design_whose_webhook_was_lost_into_the_catalogue() {
    let stub = Stub::start(|req| {
        if req.target.starts_with("/openapi/2022-01/products") {
            let product = json!({
                "id": "design-lost-webhook", "title": "Cat astronaut mug", "product_type": "Mugs",
                "vendor": "studio-7", "published_at": "2026-10-01T08:00:00Z",
                "updated_at": "2026-10-02T00:00:00Z",
                "variants": [{"id": "v-1", "price": "14.50"}]
            });
            return (200, json!({"products": [product]}).to_string());
        }
        (200, json!({"orders": []}).to_string())
    });
    let d = DataDir::new();
    let env = [
        ("MANIREC_SHOPLAZZA_API", stub.base.as_str()),
        ("MANIREC_SHOPLAZZA_TOKEN", "tok-123"),
    ];
    let poll = || -> Value {
        let out = d.command(&["--json", "poll"]).envs(env).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = poll();
    assert_eq!(first["products"]["seen"], 1, "{first}");
    assert_eq!(first["products"]["applied"], 1, "{first}");
    let (title, price): (String, f64) = d
        .db()
        .query_row(
            "SELECT title, price FROM shop_end_products WHERE id = 'design-lost-webhook'",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((title.as_str(), price), ("Cat astronaut mug", 14.5));
    // Polled again: known, nothing changes; the watermark moved on.
    let second = poll();
    assert_eq!(second["products"]["unchanged"], 1, "{second}");
    assert!(stub
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/openapi/2022-01/products"))
        .nth(1)
        .is_some_and(|r| r.target.contains("updated_at_min=")));
}

#[test]
fn the_trigger_exports_the_increment_once_and_notifies() {
    let notifier = Stub::start(|_| (200, "{}".into()));
    let d = DataDir::new();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        format!(
            "notify_url = \"{}/hook\"\n[trigger]\nmin_new_interactions = 5\nmax_days = 7\n",
            notifier.base
        ),
    )
    .unwrap();
    let csv = d.path().join("x.csv");
    std::fs::write(
        &csv,
        "u1,a,1,1790000000\nu1,b,1,1790000001\nu2,a,1,1790000002\n",
    )
    .unwrap();
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);

    // Never trained, data present: due.
    let check = d.json(&["retrain", "--check"]);
    assert_eq!(check["should_retrain"], true);
    assert_eq!(check["new_interactions"], 3);
    assert_eq!(check["days_since_last"], Value::Null);
    let key = check["fired"]["key"].as_str().unwrap();
    assert!(key.starts_with("training-data/incremental-") && key.ends_with(".csv"));
    let objects = d.path().join("data/objects");
    let file = std::fs::read(objects.join(key)).unwrap();
    let meta: Value =
        serde_json::from_slice(&std::fs::read(objects.join(format!("{key}.meta.json"))).unwrap())
            .unwrap();
    assert_eq!(meta["type"], "incremental");
    assert_eq!(meta["count"], 3);
    assert_eq!(meta["sha256"].as_str().unwrap(), sha256_hex(&file));
    let hooks = notifier.requests();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].target, "/hook");
    let notice: Value = serde_json::from_str(&hooks[0].body).unwrap();
    assert_eq!(notice["event"], "retrain_triggered");
    assert_eq!(notice["export"]["key"], key);
    // Slack's and Discord's incoming webhooks need a text to show.
    let text = notice["text"].as_str().unwrap();
    assert!(
        text.contains("retrain is due") && text.contains(key),
        "{text}"
    );
    assert_eq!(notice["content"], notice["text"]);

    // Still due, but already fired in this cycle: no second export, no second notice.
    let again = d.json(&["retrain", "--check"]);
    assert_eq!(
        (
            again["should_retrain"].as_bool(),
            again["already_fired"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(again["fired"], Value::Null);
    assert_eq!(notifier.requests().len(), 1);
}

#[test]
fn a_notifier_that_is_down_never_fails_the_check() {
    let d = DataDir::new();
    let csv = d.path().join("x.csv");
    std::fs::write(&csv, "u1,a,1,1790000000\n").unwrap();
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = d.command(&["--json", "retrain", "--check"]);
    cmd.env(
        "MANIREC_NOTIFY_URL",
        format!("http://127.0.0.1:{port}/down"),
    );
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(check["fired"]["key"].is_string());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
