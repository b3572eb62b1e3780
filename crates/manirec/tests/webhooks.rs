//! `POST /webhooks/shoplazza` over loopback against the real server.

mod common;

use base64::Engine;
use common::server::{Server, SECRET};
use common::DataDir;
use hmac::{Hmac, Mac};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha2::Sha256;

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn deliver(
    s: &Server,
    topic: &str,
    dedup: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, Value) {
    let mut request = Client::new()
        .post(s.url("/webhooks/shoplazza"))
        .header("X-Shoplazza-Topic", topic)
        .header("X-Shoplazza-Deduplication-ID", dedup)
        .header("X-Shoplazza-Shop-Domain", "manidala.myshoplaza.com")
        .body(body.to_vec());
    if let Some(sig) = signature {
        request = request.header("x-shoplazza-hmac-sha256", sig); // header names are case-insensitive
    }
    let r = request.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn signed(s: &Server, topic: &str, dedup: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    deliver(s, topic, dedup, &body, Some(sign(&body)))
}

fn order(status: &str, updated_at: &str) -> Value {
    // Shoplazza's shape: wrapped, string ids, no top-level email, decimal strings.
    json!({"order": {
        "id": "11218-00000042", "number": "00000042",
        "financial_status": status, "status": "opened",
        "created_at": "2026-11-01T09:00:00Z", "placed_at": "2026-11-01T09:02:00Z",
        "updated_at": updated_at,
        "customer": {"id": "4c1f6f1e-0000-4000-8000-000000000001", "email": "Ana@Example.com"},
        "line_items": [
            {"id": "li-1", "product_id": "5e0d4e3c-aaaa-4bbb-8ccc-000000000001", "variant_id": "v-1", "quantity": 1, "price": "16.99"},
            {"id": "li-2", "product_id": "5e0d4e3c-aaaa-4bbb-8ccc-000000000002", "variant_id": "v-2", "quantity": 2, "price": "9.50"}
        ]
    }})
}

fn rows(d: &DataDir) -> Vec<(String, String, String, bool)> {
    d.db()
        .prepare("SELECT user_id, item_id, interaction_type, synthetic FROM training_interactions WHERE source = 'webhook' ORDER BY 1, 2, 3")
        .unwrap()
        .query_map(&[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn signed_paid_orders_land_once_whatever_the_redeliveries_and_topics() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    let (status, body) = signed(
        &s,
        "orders/paid",
        "dedup-1",
        &order("paid", "2026-11-01T09:03:00Z"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "applied");
    let first = rows(&d);
    assert_eq!(first.len(), 4, "2 purchases + 2 simulated views: {first:?}");
    assert_eq!(first.iter().filter(|r| r.3).count(), 2);
    assert!(
        first.iter().all(|r| r.0.starts_with("u_")),
        "emails are hashed"
    );

    // The simulated view sits 5–60 minutes before the payment time.
    let (purchase, view): (i64, i64) = d
        .db()
        .query_row(
            "SELECT p.timestamp, v.timestamp FROM training_interactions p JOIN training_interactions v
               ON v.item_id = p.item_id AND v.interaction_type = 'view'
             WHERE p.interaction_type = 'purchase' LIMIT 1",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(purchase, 1_793_523_720); // placed_at
    assert!((300..=3600).contains(&(purchase - view)));

    // Redelivery: same deduplication id.
    let (status, body) = signed(
        &s,
        "orders/paid",
        "dedup-1",
        &order("paid", "2026-11-01T09:03:00Z"),
    );
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    // The same order under other topics (other deduplication ids).
    for (topic, dedup) in [("orders/update", "dedup-2"), ("orders/create", "dedup-3")] {
        let (status, _) = signed(&s, topic, dedup, &order("paid", "2026-11-01T09:03:00Z"));
        assert_eq!(status, 200);
    }
    assert_eq!(rows(&d), first, "nothing doubled, nothing moved");

    // A refund is recorded on the order; an older state arriving late is ignored.
    let (status, _) = signed(
        &s,
        "orders/update",
        "dedup-4",
        &order("refunded", "2026-11-03T10:00:00Z"),
    );
    assert_eq!(status, 200);
    let (_, late) = signed(
        &s,
        "orders/paid",
        "dedup-5",
        &order("paid", "2026-11-02T10:00:00Z"),
    );
    assert_eq!(late["status"], "stale");
    let status: String = d
        .db()
        .query_row(
            "SELECT financial_status FROM shop_orders WHERE order_id = '11218-00000042'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "refunded");
    let deliveries: i64 = d
        .db()
        .query_row("SELECT COUNT(*) FROM webhook_deliveries", &[], |r| r.get(0))
        .unwrap();
    assert_eq!(deliveries, 5);
}

#[test]
fn forged_missing_tampered_garbage_and_huge_requests_are_refused_precisely() {
    let d = DataDir::new();
    let s = Server::start(&d, &[]);
    let body = serde_json::to_vec(&order("paid", "2026-11-01T09:03:00Z")).unwrap();
    let good = sign(&body);

    let (status, err) = deliver(&s, "orders/paid", "a", &body, None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("missing_signature"))
    );
    let mut forged = Hmac::<Sha256>::new_from_slice(b"not-the-secret").unwrap();
    forged.update(&body);
    let forged = base64::engine::general_purpose::STANDARD.encode(forged.finalize().into_bytes());
    assert_eq!(deliver(&s, "orders/paid", "b", &body, Some(forged)).0, 401);
    assert_eq!(
        deliver(&s, "orders/paid", "c", &body, Some("%%%not base64".into())).0,
        401
    );
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    assert_eq!(
        deliver(&s, "orders/paid", "d", &tampered, Some(good.clone())).0,
        401
    );

    let garbage = b"{\"order\": {\"id\": ";
    let (status, err) = deliver(&s, "orders/paid", "e", garbage, Some(sign(garbage)));
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let not_an_order = br#"{"order": {"financial_status": "paid"}}"#;
    assert_eq!(
        deliver(
            &s,
            "orders/paid",
            "f",
            not_an_order,
            Some(sign(not_an_order))
        )
        .0,
        400
    );

    // A 20 MiB body: refused from its Content-Length, before the server reads it all
    // (a raw client, since HTTP libraries fail the send when the server answers early).
    let answer = s.post_oversized(
        "/webhooks/shoplazza",
        "X-Shoplazza-Topic: orders/paid\r\nX-Shoplazza-Hmac-Sha256: AAAA\r\n",
        20 << 20,
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // Topics we do not use: accepted, recorded, counted.
    let customer = br#"{"id": "c-1", "email": "x@example.com"}"#;
    let (status, body) = deliver(&s, "customers/update", "h", customer, Some(sign(customer)));
    assert_eq!((status, body["status"].as_str()), (200, Some("recorded")));
    // A product without an id is not a product: refused, nothing recorded.
    let no_id = br#"{"product": {"title": "Cat tee"}}"#;
    let (status, _) = deliver(&s, "products/update", "h2", no_id, Some(sign(no_id)));
    assert_eq!(status, 400);

    // The server is still standing, nothing was stored by the refused ones, and it counted them.
    let health = Client::new().get(s.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let orders: i64 = d
        .db()
        .query_row("SELECT COUNT(*) FROM shop_orders", &[], |r| r.get(0))
        .unwrap();
    assert_eq!(orders, 0);
    let metrics = Client::new()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"manirec_webhooks_total{topic="orders/paid",outcome="unauthorized"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"manirec_webhooks_total{topic="other",outcome="recorded"} 1"#));
    // Every delivery is timed under its route's template.
    assert!(
        metrics.contains(
            r#"manirec_request_duration_seconds_count{route="/webhooks/shoplazza",method="POST"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn without_a_secret_webhooks_are_refused_so_shoplazza_retries() {
    let d = DataDir::new();
    let s = Server::start(&d, &[("MANIREC_SHOPLAZZA_SECRET", "")]);
    let body = serde_json::to_vec(&order("paid", "2026-11-01T09:03:00Z")).unwrap();
    let (status, err) = deliver(&s, "orders/paid", "a", &body, Some(sign(&body)));
    assert_eq!(status, 503);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MANIREC_SHOPLAZZA_SECRET"));
}
