//! Erasure that sticks: after `forget`, no writer brings the customer back (a
//! signed webhook for their order, the reconciliation poll, a re-import of the
//! shop, an event signed with their token), no table holds their email, and
//! recommendations for them are a stranger's.

mod common;

use base64::Engine;
use common::server::{item_ids as items, user_token, Server, Stub, SECRET};
use common::DataDir;
use hmac::Mac;
use serde_json::{json, Value};

#[test]
fn after_forget_no_webhook_poll_import_or_event_brings_a_customer_back() {
    let d = DataDir::new();
    d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    // The customer with the most paid orders, and her account.
    let email: String = d
        .db()
        .query_row(
            "SELECT email FROM shop_orders WHERE email IS NOT NULL AND financial_status = 'paid'
             GROUP BY email ORDER BY COUNT(*) DESC, email LIMIT 1",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    let account: Option<String> = d
        .db()
        .query_row(
            "SELECT MAX(id) FROM shop_accounts WHERE lower(email) = lower(?1)",
            &[email.clone().into()],
            |r| r.get(0),
        )
        .unwrap();
    let customer = account.expect("the demo shop has her account");
    let (order_id, product): (String, String) = d
        .db()
        .query_row(
            "SELECT o.order_id, i.product_id FROM shop_orders o
             JOIN shop_order_items i ON i.order_id = o.order_id
             WHERE o.email = ?1 ORDER BY o.order_id LIMIT 1",
            &[email.clone().into()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();

    let s = Server::start(&d, &[]);
    let token = user_token(&email);
    let for_her = || {
        let (status, answer) = s.get_json(&format!(
            "/v1/recommendations?k=10&user_id={}&user_token={token}",
            urlencode(&email)
        ));
        assert_eq!(status, 200, "{answer}");
        items(&answer)
    };
    let (status, stranger) = s.get_json("/v1/recommendations?k=10");
    assert_eq!(status, 200, "{stranger}");
    let stranger = items(&stranger);
    assert_ne!(for_her(), stranger, "before: her own recommendations");

    let forgot = d.json(&["forget", "--user", &email]);
    let hashed = forgot["user_id"].as_str().unwrap().to_owned();
    assert_eq!(for_her(), stranger, "at once: a stranger's answer");

    // Her order, as Shoplazza would send it again.
    let order = json!({
        "id": order_id, "financial_status": "paid", "status": "opened",
        "created_at": "2026-06-01T09:00:00Z", "updated_at": "2026-07-01T09:00:00Z",
        "customer": {"id": customer, "email": email},
        "line_items": [{"id": "li-again", "product_id": product, "quantity": 1, "price": "16.99"}]
    });
    let body = serde_json::to_vec(&json!({"order": order})).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let answer: Value = reqwest::blocking::Client::new()
        .post(s.url("/webhooks/shoplazza"))
        .header("X-Shoplazza-Topic", "orders/updated")
        .header("X-Shoplazza-Deduplication-ID", "after-forget-1")
        .header(
            "X-Shoplazza-Hmac-Sha256",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
        )
        .body(body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "forgotten", "{answer}");

    // The poll finds the same order.
    let orders_api = Stub::start(move |_| (200, json!({"orders": [order]}).to_string()));
    let mut poll = d.command(&["--json", "poll"]);
    poll.envs([
        ("MANIREC_SHOPLAZZA_API", orders_api.base.as_str()),
        ("MANIREC_SHOPLAZZA_TOKEN", "tok-123"),
    ]);
    let out = poll.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let polled: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(polled["applied"], 0, "{polled}");

    // The shop's database still has her: a re-import leaves her out, and says so.
    let shop = d.path().join("data/demo/shop.db");
    let imported = d.json(&["import", "--store", shop.to_str().unwrap()]);
    let why = "the customer asked to be forgotten";
    assert!(
        imported["rejected"]["orders"]["reasons"][why].as_u64() >= Some(1),
        "{imported}"
    );
    d.json(&["extract"]);

    // She browses, signed in: taken, never stored.
    let answer: Value = reqwest::blocking::Client::new()
        .post(s.url("/v1/events"))
        .json(
            &json!([{"event_id": "after-forget-e1", "event_type": "product_view",
                       "product_id": product, "user_id": email, "user_token": token,
                       "timestamp": 1_790_000_000_000i64}]),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    d.json(&["sync"]);

    // No table holds her email (in any case), and nothing is hers.
    let url = d.database_url();
    let tables = d.store().row_counts().unwrap();
    for table in tables.keys() {
        let rows =
            manirec_store::testing::query(&url, &format!("SELECT * FROM {table}"), &[]).unwrap();
        let text = Value::Array(rows).to_string().to_lowercase();
        assert!(
            !text.contains(&email.to_lowercase()),
            "{table} still holds the email"
        );
    }
    for (table, column) in [
        ("training_interactions", "user_id"),
        ("behavior_events", "user_id"),
        ("shop_orders", "customer_id"),
        ("shop_accounts", "id"),
    ] {
        let n: i64 = d
            .db()
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {column} IN (?1, ?2)"),
                &[hashed.clone().into(), customer.clone().into()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table} has rows of hers");
    }
    assert_eq!(for_her(), stranger, "still a stranger's answer");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
