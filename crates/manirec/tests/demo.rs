//! The README's first command, on a temp data dir.

mod common;

use common::DataDir;

#[test]
fn the_demo_runs_every_stage_and_a_rerun_changes_nothing() {
    let d = DataDir::new();
    let first = d.json(&["demo", "--no-serve", "--seed", "3", "--as-of", "2026-06-30"]);
    let gen = &first["stages"]["generate"];
    assert!(gen["base_products"].as_u64().unwrap() >= 2000);
    assert!(gen["orders"].as_u64().unwrap() >= 100);
    assert!(gen["images"].as_u64().unwrap() >= 5000);
    assert_eq!(first["stages"]["import"]["tables"]["orders"], gen["orders"]);
    assert_eq!(first["stages"]["import"]["rejected"], serde_json::json!({}));

    let x = &first["stages"]["extract"];
    assert!(x["purchases"].as_u64().unwrap() > 100);
    assert_eq!(x["purchases"], x["views"]);
    assert!(x["image_views"].as_u64().unwrap() > 1000);

    // The storefront funnel: views >> clicks >> carts >> purchases.
    let by_type = &first["stages"]["events"]["by_type"];
    let n = |t: &str| by_type[t].as_u64().unwrap();
    assert!(n("product_view") > 2 * n("product_click"));
    assert!(n("product_click") > 2 * n("add_to_cart"));
    assert!(n("add_to_cart") > n("purchase"));
    // A dataset version, then popularity, ALS, EASE and two-tower trained and compared on it.
    assert_eq!(first["stages"]["dataset"]["version"], "v1.0");
    let models = first["stages"]["train"]["models"].as_array().unwrap();
    let kinds: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "popular",
            "als",
            "ease",
            "two-tower",
            "item-knn",
            "rp3beta",
            "sr",
            "vsknn",
            "blend"
        ]
    );
    // New designs appear in the test period, and the two-tower model is judged on them.
    let cold = &models[3]["cold_start"];
    assert!(cold["interactions"].as_u64().unwrap() > 0, "{cold}");
    for m in models {
        assert!(m["metrics"]["ndcg@10"].is_number(), "{m}");
        // Both protocols, side by side.
        assert!(m["session"]["users_evaluated"].is_number(), "{m}");
        assert!(m["ndcg10_lift_ci"].is_array(), "{m}");
        assert!(m["train_seconds"].is_number());
    }
    for stage in [
        "generate", "import", "extract", "events", "dataset", "train",
    ] {
        assert!(first["seconds"][stage].is_number(), "{stage} is timed");
    }

    // Returning customers: some hashed users bought in several orders.
    let repeat: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM (SELECT user_id FROM training_interactions
              WHERE interaction_type = 'purchase' GROUP BY user_id HAVING COUNT(DISTINCT origin) > 1) AS repeat_buyers",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert!(repeat >= 10, "only {repeat} returning customers");

    // No raw email anywhere outside the shop mirror.
    let leaks: i64 = d
        .db()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM training_interactions WHERE user_id LIKE '%@%')
                  + (SELECT COUNT(*) FROM behavior_events WHERE user_id LIKE '%@%')",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaks, 0);
    assert!(first["stages"]["sync"]["inserted"].as_u64().unwrap() > 1000);

    let second = d.json(&["demo", "--no-serve", "--seed", "3", "--as-of", "2026-06-30"]);
    assert_eq!(second["stages"]["extract"]["inserted"], 0);
    assert_eq!(second["stages"]["events"]["accepted"], 0);
}
