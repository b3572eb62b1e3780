//! The live catalogue and categories by name, against the real server: a
//! category is asked by id or by name (`Mugs`, `mugs`), an unknown name is a 400
//! that lists close matches, and a signed `products/create` webhook makes a new
//! design recommendable (similar, its category's answers) without a retrain.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::server::{item_ids, Server, SECRET};
use common::{textbook_shop, DataDir};
use hmac::{Hmac, Mac};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha2::Sha256;

fn signed(s: &Server, topic: &str, dedup: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let r = Client::new()
        .post(s.url("/webhooks/shoplazza"))
        .header("X-Shoplazza-Topic", topic)
        .header("X-Shoplazza-Deduplication-ID", dedup)
        .header("X-Shoplazza-Hmac-Sha256", sig)
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// The textbook shop with its categories table, imported, extracted, and a
/// popularity model trained and promoted.
fn shop() -> DataDir {
    let d = DataDir::new();
    let shop = textbook_shop()
        .sql("CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT);")
        .sql("INSERT INTO categories VALUES (7, 'T-shirts'), (8, 'Mugs'), (9, 'Posters');")
        .write_sqlite(&d.path().join("shop.db"));
    let imported = d.json(&["import", "--store", shop.to_str().unwrap()]);
    assert_eq!(imported["tables"]["categories"], 3, "{imported}");
    d.json(&["extract"]);
    d.json(&["dataset", "build"]);
    let trained = d.json(&["train", "--model", "popular"]);
    d.json(&[
        "models",
        "promote",
        trained["model_version"].as_str().unwrap(),
    ]);
    d
}

#[test]
fn categories_are_asked_by_name_or_id_and_unknown_names_list_close_matches() {
    let d = shop();
    // The command line: the README's own example.
    let by_name = d.json(&["recommend", "--session", "s1", "--category", "mugs"]);
    let by_id = d.json(&["recommend", "--session", "s1", "--category", "8"]);
    assert!(!item_ids(&by_name).is_empty(), "{by_name}");
    assert_eq!(item_ids(&by_name), item_ids(&by_id));
    for item in item_ids(&by_name) {
        assert!(["e-m", "10", "11"].contains(&item.as_str()), "{by_name}");
    }
    let out = d.fails(&["recommend", "--session", "s1", "--category", "Mugz"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown category") && err.contains("Mugs (8)"),
        "{err}"
    );

    let s = Server::start(&d, &[]);
    let (status, by_name) = s.get_json("/v1/popular?category=Mugs");
    assert_eq!(status, 200, "{by_name}");
    let (_, by_id) = s.get_json("/v1/popular?category=8");
    assert!(!item_ids(&by_name).is_empty());
    assert_eq!(item_ids(&by_name), item_ids(&by_id));
    let (status, recs) = s.get_json("/v1/recommendations?session_id=s1&category=T-Shirt");
    assert_eq!(status, 200, "{recs}");
    for item in item_ids(&recs) {
        assert!(!["e-m", "10", "11"].contains(&item.as_str()), "{recs}");
    }
    let (status, err) = s.get_json("/v1/popular?category=Mgus");
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "unknown_category");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("Mugs (8)"), "{message}");
    assert!(!message.contains("Posters"), "{message}");
    let (status, _) = s.get_json("/v1/recommendations?session_id=x&category=nothing-like-it");
    assert_eq!(status, 400);
}

#[test]
fn a_new_design_by_webhook_is_recommended_without_a_retrain() {
    let d = shop();
    let s = Server::start(&d, &[]);
    let (_, before) = s.get_json("/v1/popular?category=Mugs");
    assert!(!item_ids(&before).contains(&"e-new".to_owned()));

    // Shoplazza's product object, wrapped, with the designer as vendor (designer 2
    // made the cat mug e-m) and the category by its name.
    let product = json!({"product": {
        "id": "e-new", "title": "Cat mug, the sequel", "handle": "cat-mug-sequel",
        "product_type": "Mugs", "vendor": "2", "tags": "cats, mugs",
        "published_at": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T08:00:00Z",
        "images": [{"src": "https://cdn.example.com/cat-mug-2.png"}],
        "variants": [{"id": "v1", "price": "13.50"}]
    }});
    let (status, answer) = signed(&s, "products/create", "p-1", &product);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(answer["detail"]["new_product"], true, "{answer}");
    // The mirror and the delivery record, together.
    let (category, price, deliveries): (String, f64, i64) = d
        .db()
        .query_row(
            "SELECT category_id, price, (SELECT COUNT(*) FROM webhook_deliveries
                     WHERE delivery_id = 'p-1' AND outcome = 'applied')
             FROM shop_end_products WHERE id = 'e-new'",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((category.as_str(), price, deliveries), ("8", 13.5, 1));
    // A redelivery changes nothing.
    let (_, again) = signed(&s, "products/create", "p-1", &product);
    assert_eq!(again["status"], "duplicate");

    // Serving's catalogue is rebuilt within half a minute: the design shows up
    // beside its designer's other mug, in its category, and has likes of its own.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (_, similar) = s.get_json("/v1/items/e-m/similar?k=5");
        if item_ids(&similar).contains(&"e-new".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "e-new never appeared beside e-m: {similar}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, mugs) = s.get_json("/v1/popular?category=mugs&k=4");
    assert!(item_ids(&mugs).contains(&"e-new".to_owned()), "{mugs}");
    assert!(item_ids(&mugs).len() <= 4);
    let (_, recs) = s.get_json("/v1/recommendations?session_id=new-visitor&category=Mugs");
    assert!(item_ids(&recs).contains(&"e-new".to_owned()), "{recs}");
    let (_, own) = s.get_json("/v1/items/e-new/similar?k=5");
    assert!(item_ids(&own).contains(&"e-m".to_owned()), "{own}");
    assert!(!item_ids(&own).contains(&"e-new".to_owned()), "{own}");

    // An older state arriving late is recorded, not applied.
    let mut old = product.clone();
    old["product"]["updated_at"] = json!("2026-11-19T08:00:00Z");
    old["product"]["title"] = json!("stale title");
    let (_, stale) = signed(&s, "products/update", "p-0", &old);
    assert_eq!(stale["status"], "stale", "{stale}");
    // Unpublished (published_at null), then a deleted product: never shown.
    let mut hidden = product.clone();
    hidden["product"]["updated_at"] = json!("2026-11-21T08:00:00Z");
    hidden["product"]["published_at"] = Value::Null;
    let (_, updated) = signed(&s, "products/update", "p-2", &hidden);
    assert_eq!(updated["detail"]["changed_product"], true, "{updated}");
    let (_, deleted) = signed(&s, "products/delete", "p-3", &json!({"id": "e-b"}));
    assert_eq!(deleted["detail"]["removed"], true, "{deleted}");
    let rules = d.json(&["rule", "list"]);
    let hidden: Vec<&str> = rules["hidden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hidden, ["e-b", "e-new"], "{rules}");
    let title: String = d
        .db()
        .query_row(
            "SELECT title FROM shop_end_products WHERE id = 'e-new'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(title, "Cat mug, the sequel");
}
