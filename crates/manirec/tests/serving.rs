//! Recommendations from the active model, over loopback and from the command line.

mod common;

use std::collections::{HashMap, HashSet};

use common::server::{item_ids, user_token, Server};
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::Value;

const TOKEN: &str = "serving-admin-token-0123";

#[test]
fn customers_get_unbought_items_strangers_get_popular_ones() {
    // Before any promotion there is nothing to serve, and the server says what to do.
    let empty = DataDir::new();
    let s = Server::start(&empty, &[]);
    let (status, err) = s.get_json("/v1/recommendations?user_id=x@example.com");
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
    let encoded = format!(
        "{}&user_token={}",
        email.trim().replace('@', "%40").replace('+', "%2B"),
        user_token(&email)
    );
    let (status, recs) = s.get_json(&format!("/v1/recommendations?user_id={encoded}&k=20"));
    assert_eq!(status, 200, "{recs}");
    assert_eq!(recs["model_version"], active.as_str());
    assert_eq!(recs["variant"], "control");
    assert!(recs["request_id"].as_str().unwrap().len() > 10);
    let recommended = item_ids(&recs);
    assert_eq!(recommended.len(), 20);
    assert!(
        recommended.iter().all(|i| !bought.contains(i)),
        "bought items come back"
    );

    // exclude= leaves items out; the same request id is never given twice.
    let first = recommended[0].clone();
    let (_, again) = s.get_json(&format!(
        "/v1/recommendations?user_id={encoded}&k=20&exclude={first}"
    ));
    assert!(!item_ids(&again).contains(&first));
    assert_ne!(again["request_id"], recs["request_id"]);

    // A stranger gets the popular items; similar items are others than the item.
    let (_, stranger) = s.get_json(&format!(
        "/v1/recommendations?user_id=nobody%40example.com&user_token={}&k=5",
        user_token("nobody@example.com")
    ));
    let (_, popular) = s.get_json("/v1/popular?k=5");
    assert_eq!(item_ids(&stranger), item_ids(&popular));
    let (_, similar) = s.get_json(&format!("/v1/items/{first}/similar?k=5"));
    let similar = item_ids(&similar);
    assert_eq!(similar.len(), 5);
    assert!(!similar.contains(&first));

    // The command line answers the same.
    let cli = d.json(&["recommend", "--user", &email, "--k", "20"]);
    assert_eq!(item_ids(&cli), recommended);

    // SIGTERM stops the server promptly, and the answers given just before are
    // in the log (written on the way out), with the shopper's hashed id only.
    let (_, last) = s.get_json(&format!("/v1/recommendations?user_id={encoded}&k=3"));
    let mut s = s;
    assert!(s.stop().success());
    let logged: (String, String) = d
        .db()
        .query_row(
            "SELECT user_id, items FROM recommendation_log WHERE request_id = ?1",
            &[last["request_id"].clone()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(logged.0.starts_with("u_"), "{logged:?}");
    assert!(!logged.0.contains('@'));
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&logged.1).unwrap(),
        item_ids(&last)
    );
    let answers: i64 = d
        .db()
        .query_row("SELECT COUNT(*) FROM recommendation_log", &[], |r| r.get(0))
        .unwrap();
    assert!(answers >= 6, "{answers} answers logged");
}

/// The demo shop's designers and categories, from the shop's own file.
fn catalogue(d: &DataDir) -> (HashMap<String, String>, HashMap<String, String>) {
    let shop = rusqlite::Connection::open(d.path().join("data/demo/shop.db")).unwrap();
    let mut stmt = shop
        .prepare(
            "SELECT CAST(e.id AS TEXT), CAST(e.designer_id AS TEXT), CAST(b.category_id AS TEXT) FROM end_products e
             JOIN base_products b ON b.id = e.base_product_id",
        )
        .unwrap();
    let mut designer = HashMap::new();
    let mut category = HashMap::new();
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
    {
        let (id, d, c) = row.unwrap();
        designer.insert(id.clone(), d);
        category.insert(id, c);
    }
    (designer, category)
}

#[test]
fn a_visitor_who_viewed_a_design_gets_related_designs_and_the_shops_rules_hold() {
    let d = DataDir::new();
    d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    let (designer, category) = catalogue(&d);
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", TOKEN)]);
    let popular = item_ids(&s.get_json("/v1/popular?k=40").1);
    let designs: Vec<&String> = popular
        .iter()
        .filter(|i| designer.contains_key(*i))
        .take(15)
        .collect();
    assert!(designs.len() >= 10);
    let share = |list: &[String], x: &str, m: &HashMap<String, String>| {
        list.iter().filter(|i| m.get(*i) == m.get(x)).count() as f64 / list.len().max(1) as f64
    };
    let (mut session_related, mut similar_related, mut popular_related) = (0.0, 0.0, 0.0);
    for (n, x) in designs.iter().enumerate() {
        // A new visitor views one design; sync has not run: the view counts at once.
        let session = format!("visitor-{n}");
        let r = Client::new()
            .post(s.url("/v1/events"))
            .json(
                &serde_json::json!([{"event_id": format!("v-{n}"), "event_type": "product_view",
                "product_id": x, "session_id": session, "timestamp": 1_790_000_000_000i64}]),
            )
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let recs = item_ids(
            &s.get_json(&format!("/v1/recommendations?session_id={session}&k=10"))
                .1,
        );
        assert_eq!(recs.len(), 10);
        assert!(!recs.contains(x), "the design just viewed comes back");
        let similar = item_ids(&s.get_json(&format!("/v1/items/{x}/similar?k=10")).1);
        let others: Vec<String> = popular
            .iter()
            .filter(|p| p != x)
            .take(10)
            .cloned()
            .collect();
        let related = |list: &[String]| share(list, x, &designer).max(share(list, x, &category));
        session_related += related(&recs);
        similar_related += related(&similar);
        popular_related += related(&others);
    }
    let n = designs.len() as f64;
    let (session_related, similar_related, popular_related) = (
        session_related / n,
        similar_related / n,
        popular_related / n,
    );
    // Same designer or category dominates, far above what popularity shows.
    assert!(similar_related > 0.6, "similar: {similar_related:.2}");
    assert!(session_related > 0.5, "session: {session_related:.2}");
    assert!(
        session_related > popular_related + 0.2,
        "session {session_related:.2} vs popular {popular_related:.2}"
    );

    // The shop's rules: a hidden item never shows, a pinned one takes its place.
    let admin = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        let r = Client::new()
            .request(method, s.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    };
    let (hidden, pinned) = (popular[0].clone(), popular[25].clone());
    admin(
        reqwest::Method::PUT,
        &format!("/admin/rules/{hidden}"),
        serde_json::json!({"rule": "hide"}),
    );
    admin(
        reqwest::Method::PUT,
        &format!("/admin/rules/{pinned}"),
        serde_json::json!({"rule": "pin", "value": 2}),
    );
    let top = item_ids(&s.get_json("/v1/popular?k=10").1);
    assert!(!top.contains(&hidden));
    assert_eq!(top[1], pinned);
    let stranger = item_ids(
        &s.get_json(&format!(
            "/v1/recommendations?user_id=new%40example.com&user_token={}&k=10",
            user_token("new@example.com")
        ))
        .1,
    );
    assert!(!stranger.contains(&hidden));
    assert_eq!(stranger[1], pinned);
    let similar = item_ids(
        &s.get_json(&format!("/v1/items/{}/similar?k=20", popular[1]))
            .1,
    );
    assert!(!similar.contains(&hidden));
    // A bad rule is refused with a reason.
    let r = Client::new()
        .put(s.url(&format!("/admin/rules/{pinned}")))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"rule": "pin", "value": 0}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn a_customers_first_visit_goes_to_the_model_whose_accounts_measured_to_win() {
    let d = DataDir::new();
    let demo = d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    let version_of = |kind: &str| {
        demo["stages"]["train"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == kind)
            .unwrap()["model_version"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let als = version_of("als");
    d.json(&["models", "promote", &als]);
    let trained = d.json(&["train", "--model", "two-tower", "--accounts"]);
    let first = trained["model_version"].as_str().unwrap().to_owned();
    let report = &trained["first_visit"];
    assert!(report["users_evaluated"].as_u64().unwrap() > 0, "{report}");
    // The shop's own measurement decides; here it is made to say the accounts win.
    let metrics: String = d
        .db()
        .query_row(
            "SELECT metrics FROM model_versions WHERE version = ?1",
            &[Value::from(first.clone())],
            |r| r.get(0),
        )
        .unwrap();
    let mut metrics: Value = serde_json::from_str(&metrics).unwrap();
    metrics["first_visit"]["beats_baseline"] = Value::from(true);
    metrics["first_visit"]["metrics"]["ndcg@10"] = Value::from(0.9);
    d.db()
        .execute(
            "UPDATE model_versions SET metrics = ?1 WHERE version = ?2",
            &[Value::from(metrics.to_string()), Value::from(first.clone())],
        )
        .unwrap();

    // Customers with an account and no order, and one with orders.
    let shop = rusqlite::Connection::open(d.path().join("data/demo/shop.db")).unwrap();
    let emails = |sql: &str| -> Vec<String> {
        let mut stmt = shop.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let without_orders = emails(
        "SELECT email FROM accounts WHERE role = 'customer' AND lower(trim(email)) NOT IN
           (SELECT lower(trim(email)) FROM orders) ORDER BY id LIMIT 40",
    );
    let buyer = &emails(
        "SELECT email FROM orders WHERE financial_status = 'paid' GROUP BY lower(trim(email))
           ORDER BY COUNT(*) DESC LIMIT 1",
    )[0];
    assert!(without_orders.len() >= 10);

    let s = Server::start(&d, &[]);
    let ask = |email: &str| {
        let (status, recs) = s.get_json(&format!(
            "/v1/recommendations?user_id={}&user_token={}&k=10",
            email.trim().replace('@', "%40").replace('+', "%2B"),
            user_token(email)
        ));
        assert_eq!(status, 200, "{recs}");
        recs
    };
    assert_eq!(
        ask(buyer)["model_version"],
        als.as_str(),
        "ALS knows a buyer"
    );
    let (_, popular) = s.get_json("/v1/popular?k=10");
    let mut routed = 0i64;
    for email in &without_orders {
        let recs = ask(email);
        if recs["model_version"] == first.as_str() {
            routed += 1;
            assert_ne!(item_ids(&recs), item_ids(&popular), "the account answers");
        } else {
            assert_eq!(recs["model_version"], als.as_str());
        }
    }
    assert!(
        routed > 0,
        "no first visit among {} customers",
        without_orders.len()
    );
    // `manirec recommend` routes as the server does: the same version, the
    // same items, for a buyer, customers known only by their account, and an
    // anonymous session.
    let session: String = d
        .db()
        .query_row(
            "SELECT substr(user_id, 9) FROM training_interactions
              WHERE user_id LIKE 'session:%' ORDER BY id LIMIT 1",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    let (status, by_http) = s.get_json(&format!("/v1/recommendations?session_id={session}&k=10"));
    assert_eq!(status, 200, "{by_http}");
    let by_cli = d.json(&["recommend", "--session", &session, "--k", "10"]);
    assert_eq!(by_cli["model_version"], by_http["model_version"]);
    assert_eq!(item_ids(&by_cli), item_ids(&by_http));
    // Answers of the server logged again below.
    let mut asked_again = i64::from(by_http["model_version"] == first.as_str());
    let mut answered_by = std::collections::BTreeSet::new();
    for email in std::iter::once(buyer).chain(&without_orders).take(12) {
        let by_http = ask(email);
        asked_again += i64::from(by_http["model_version"] == first.as_str());
        let by_cli = d.json(&["recommend", "--user", email, "--k", "10"]);
        assert_eq!(by_cli["model_version"], by_http["model_version"], "{email}");
        assert_eq!(item_ids(&by_cli), item_ids(&by_http), "{email}");
        answered_by.insert(by_cli["model_version"].as_str().unwrap().to_owned());
    }
    assert!(answered_by.contains(&first), "{answered_by:?}");
    // Only customers of whom nothing was known went to it (the log is written
    // on the way out).
    let mut s = s;
    assert!(s.stop().success());
    let logged: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM recommendation_log WHERE model_version = ?1",
            &[Value::from(first.clone())],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, routed + asked_again);
    let histories: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM recommendation_log l WHERE l.model_version = ?1 AND (
                EXISTS (SELECT 1 FROM training_interactions t WHERE t.user_id = l.user_id)
                OR EXISTS (SELECT 1 FROM behavior_events e WHERE e.user_id = l.user_id))",
            &[Value::from(first.clone())],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(histories, 0);
}
