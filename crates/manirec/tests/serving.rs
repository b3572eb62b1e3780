//! Recommendations from the active model, over loopback and from the command line.

mod common;

use std::collections::HashSet;

use common::server::Server;
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::Value;

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = Client::new().get(s.url(path)).send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn items(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn customers_get_unbought_items_strangers_get_popular_ones() {
    // Before any promotion there is nothing to serve, and the server says what to do.
    let empty = DataDir::new();
    let s = Server::start(&empty, &[]);
    let (status, err) = get(&s, "/v1/recommendations?user_id=x@example.com");
    assert_eq!(status, 503);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("models promote"));
    drop(s);

    // The demo trains three models and promotes the best.
    let d = DataDir::new();
    let demo = d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    let active = demo["stages"]["promoted"].as_str().unwrap().to_owned();
    let models = d.json(&["models", "list"]);
    let statuses: Vec<(&str, &str)> = models["models"]
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
    assert!(
        statuses.contains(&(active.as_str(), "active")),
        "{statuses:?}"
    );

    // The customer with the most paid orders, as the shop knows them (an email).
    let shop = rusqlite::Connection::open(d.path().join("data/demo/shop.db")).unwrap();
    let email: String = shop
        .query_row(
            "SELECT email FROM orders WHERE financial_status = 'paid' GROUP BY lower(trim(email)) ORDER BY COUNT(*) DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let bought: HashSet<String> = {
        let mut stmt = shop
            .prepare("SELECT line_items FROM orders WHERE financial_status = 'paid' AND lower(trim(email)) = lower(trim(?1))")
            .unwrap();
        let lines: Vec<String> = stmt
            .query_map([&email], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        lines
            .iter()
            .flat_map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|i| i["product_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!bought.is_empty());

    let s = Server::start(&d, &[]);
    let encoded = email.trim().replace('@', "%40").replace('+', "%2B");
    let (status, recs) = get(&s, &format!("/v1/recommendations?user_id={encoded}&k=20"));
    assert_eq!(status, 200, "{recs}");
    assert_eq!(recs["model_version"], active.as_str());
    assert_eq!(recs["variant"], "control");
    assert!(recs["request_id"].as_str().unwrap().len() > 10);
    let recommended = items(&recs);
    assert_eq!(recommended.len(), 20);
    assert!(
        recommended.iter().all(|i| !bought.contains(i)),
        "bought items come back"
    );

    // exclude= leaves items out; the same request id is never given twice.
    let first = recommended[0].clone();
    let (_, again) = get(
        &s,
        &format!("/v1/recommendations?user_id={encoded}&k=20&exclude={first}"),
    );
    assert!(!items(&again).contains(&first));
    assert_ne!(again["request_id"], recs["request_id"]);

    // A stranger gets the popular items; similar items are others than the item.
    let (_, stranger) = get(&s, "/v1/recommendations?user_id=nobody%40example.com&k=5");
    let (_, popular) = get(&s, "/v1/popular?k=5");
    assert_eq!(items(&stranger), items(&popular));
    let (_, similar) = get(&s, &format!("/v1/items/{first}/similar?k=5"));
    let similar = items(&similar);
    assert_eq!(similar.len(), 5);
    assert!(!similar.contains(&first));

    // The command line answers the same.
    let cli = d.json(&["recommend", "--user", &email, "--k", "20"]);
    assert_eq!(items(&cli), recommended);
}
