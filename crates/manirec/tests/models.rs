//! `train`, `evaluate`, `models list|promote` on a shop whose customers have
//! real taste structure: the registry, artifacts that load back to the same
//! recommendations, the dump, and personalised models beating popularity.

mod common;

use common::DataDir;
use serde_json::Value;

/// Seeded draws in `0..n` (xorshift): the same shop on every run.
fn draws(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// 400 customers in 8 taste groups of 25 items each; every customer buys about
/// a dozen items of their group and two of anyone's, spread over 60 days.
fn structured_csv(d: &DataDir) -> std::path::PathBuf {
    let mut next = draws(0x2545_f491_4f6c_dd1d);
    let start = 1_780_000_000i64;
    let mut out = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
    for u in 0..400u64 {
        let group = u % 8;
        for _ in 0..12 {
            let item = group * 25 + next(25);
            let ts = start + next(60 * 86_400) as i64;
            out.push_str(&format!("u{u},p{item},5.0,{ts},purchase\n"));
        }
        for _ in 0..2 {
            let item = next(200);
            let ts = start + next(60 * 86_400) as i64;
            out.push_str(&format!("u{u},p{item},5.0,{ts},purchase\n"));
        }
    }
    let path = d.path().join("structured.csv");
    std::fs::write(&path, out).unwrap();
    path
}

/// A two-tower model small and quick enough for a test.
const SMALL_TWO_TOWER: [&str; 8] = [
    "--dim",
    "16",
    "--epochs",
    "4",
    "--batch-size",
    "128",
    "--seed",
    "3",
];

fn ndcg(v: &Value) -> f64 {
    v["metrics"]["ndcg@10"].as_f64().unwrap()
}

#[test]
fn train_register_promote_evaluate_and_dump() {
    let d = DataDir::new();
    let csv = structured_csv(&d);
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    let built = d.json(&["dataset", "build"]);
    let dataset = built["version"].as_str().unwrap().to_owned();

    let popular = d.json(&["train", "--model", "popular"]);
    let als = d.json(&[
        "train",
        "--model",
        "als",
        "--factors",
        "16",
        "--iterations",
        "8",
        "--seed",
        "7",
    ]);
    let ease = d.json(&["train", "--model", "ease", "--lambda", "200"]);
    for (t, kind, v) in [
        (&popular, "popular", "m1"),
        (&als, "als", "m2"),
        (&ease, "ease", "m3"),
    ] {
        assert_eq!(t["model"], kind);
        assert_eq!(t["model_version"], v);
        assert_eq!(t["dataset"], dataset.as_str());
        assert!(t["train_seconds"].as_f64().unwrap() >= 0.0);
        for k in [
            "recall@10",
            "ndcg@10",
            "hit_rate@10",
            "map@10",
            "recall@20",
            "ndcg@20",
            "coverage@20",
        ] {
            assert!(t["metrics"][k].is_number(), "{kind} {k}");
        }
        assert!(t["users_evaluated"].as_u64().unwrap() > 100);
    }
    // Taste structure: both personalised models beat popularity, with an interval.
    assert!(ndcg(&ease) > 1.5 * ndcg(&popular), "{ease} vs {popular}");
    assert!(ndcg(&als) > ndcg(&popular), "{als} vs {popular}");
    assert_eq!(ease["beats_baseline"], true);
    assert!(ease["warning"].is_null());

    // The registry: three candidates, then promotions retire the previous active.
    let list = d.json(&["models", "list"]);
    let statuses = |l: &Value| -> Vec<String> {
        l["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(statuses(&list), ["candidate", "candidate", "candidate"]);
    assert_eq!(
        list["models"][2]["metrics"]["ndcg@10"],
        ease["metrics"]["ndcg@10"]
    );
    d.json(&["models", "promote", "m2"]);
    let p = d.json(&["models", "promote", "m3"]);
    assert_eq!(p["retired"], "m2");
    assert_eq!(
        statuses(&d.json(&["models", "list"])),
        ["candidate", "retired", "active"]
    );
    d.fails(&["models", "promote", "m42"]);

    // The artifact loads back to the same recommendations: evaluating the active
    // version (m3) gives the numbers training reported, twice.
    let dump = d.path().join("ranked.jsonl");
    let e1 = d.json(&["evaluate", "--dump", dump.to_str().unwrap()]);
    let e2 = d.json(&["evaluate", "--model-version", "m3"]);
    assert_eq!(e1["model_version"], "m3");
    assert_eq!(e1["metrics"], ease["metrics"]);
    assert_eq!(e1["metrics"], e2["metrics"]);
    assert_eq!(e1["metrics_ci"], e2["metrics_ci"]);
    assert_eq!(e1["baseline"], popular["metrics"]);
    let lines: Vec<Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, e1["users_evaluated"].as_u64().unwrap());
    for l in &lines {
        assert!(l["user_id"].is_string());
        let items = l["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 20);
        assert!(l.get("context").is_none_or(|c| c.is_null()));
    }

    // The session protocol: the context comes with each dumped list.
    let session_dump = d.path().join("session.jsonl");
    let s = d.json(&[
        "evaluate",
        "--model-version",
        "m2",
        "--protocol",
        "session",
        "--dump",
        session_dump.to_str().unwrap(),
    ]);
    assert_eq!(s["model_version"], "m2");
    for l in std::fs::read_to_string(&session_dump).unwrap().lines() {
        let l: Value = serde_json::from_str(l).unwrap();
        assert!(l["context"].is_array());
    }

    // Warm start needs an active ALS model, then starts from it.
    let out = d.fails(&["train", "--model", "als", "--warm-start"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("active ALS"));
    d.json(&["models", "promote", "m2"]);
    let promoted_at = |d: &DataDir| -> String {
        d.db()
            .query_row(
                "SELECT value FROM state WHERE key = 'training.last_at'",
                &[],
                |r| r.get(0),
            )
            .unwrap()
    };
    // Promoting restarts the retrain trigger's clock.
    let last = promoted_at(&d);
    assert!(last.parse::<i64>().unwrap() > 0);
    // The factors come from the model warm-started from (m2 has 16; the
    // default is 64): no need to repeat them.
    let warm = d.json(&[
        "train",
        "--model",
        "als",
        "--warm-start",
        "--iterations",
        "2",
    ]);
    assert_eq!(warm["warm_started_from"], "m2");
    assert_eq!(warm["model_version"], "m4");
    assert_eq!(warm["params"]["als"]["factors"], 16);

    // A candidate that is never promoted leaves the trigger's clock alone; the
    // trigger sees the active model's quality on the latest dataset.
    assert_eq!(promoted_at(&d), last);
    let check = d.json(&["retrain", "--check"]);
    assert_eq!(check["new_interactions"], 0);
    assert!(
        check["quality_drop"].as_f64().unwrap().abs() < 1e-9,
        "{check}"
    );

    // Tastes move on: every customer now buys from the next group. On the new
    // dataset version the active model's NDCG@10 drops, and the trigger says so.
    let mut shifted = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
    for u in 0..400u64 {
        for j in 0..10u64 {
            let item = ((u % 8 + 1) % 8) * 25 + (u * 7 + j * 3) % 25;
            let ts = 1_780_000_000 + 61 * 86_400 + ((u * 31 + j * 7919) % (30 * 86_400)) as i64;
            shifted.push_str(&format!("u{u},p{item},5.0,{ts},purchase\n"));
        }
    }
    let path = d.path().join("shifted.csv");
    std::fs::write(&path, shifted).unwrap();
    d.json(&["import", "--interactions", path.to_str().unwrap()]);
    assert_eq!(d.json(&["dataset", "build"])["version"], "v1.1");
    let check = d.json(&["retrain", "--check"]);
    assert!(check["quality_drop"].as_f64().unwrap() > 0.1, "{check}");
    assert!(
        check["reasons"].to_string().contains("quality dropped"),
        "{check}"
    );
}

#[test]
fn the_loop_runs_no_ab_test_between_models_that_score_the_same() {
    let d = DataDir::new();
    let csv = structured_csv(&d);
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    // The loop's first run trains EASE and promotes it (nothing was active).
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[retrain]\nmodel = \"ease\"\n",
    )
    .unwrap();
    let first = d.json(&["retrain", "--run"]);
    assert_eq!(first["active"], "m1", "{first}");
    // Forced again on the same data: the same parameters give the same model,
    // whose offline score is exactly the active one's. No A/B test of equals.
    let again = d.json(&["retrain", "--run", "--force"]);
    assert_eq!(again["status"], "ok", "{again}");
    assert_eq!(again["candidate"], "m2", "{again}");
    assert_eq!(again["experiment_id"], Value::Null, "{again}");
    assert!(
        again["outcome"]
            .as_str()
            .unwrap()
            .contains("scores exactly"),
        "{again}"
    );
    assert_eq!(again["active"], "m1");
    assert_eq!(
        d.json(&["experiment", "list"])["experiments"],
        serde_json::json!([])
    );
}

#[test]
fn train_without_a_dataset_says_what_to_do() {
    let d = DataDir::new();
    let out = d.fails(&["train", "--model", "ease"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset build"));
    let out = d.fails(&["evaluate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("train"));
    assert_eq!(d.json(&["models", "list"])["models"], serde_json::json!([]));
}

#[test]
fn two_tower_trains_warm_starts_and_answers() {
    let d = DataDir::new();
    let csv = structured_csv(&d);
    d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    d.json(&["dataset", "build"]);
    let args = SMALL_TWO_TOWER;
    let tt = d.json(&[&["train", "--model", "two-tower"][..], &args[..]].concat());
    assert_eq!(tt["model"], "two-tower");
    assert_eq!(tt["model_version"], "m1");
    assert_eq!(tt["params"]["two_tower"]["dim"], 16);
    assert!(tt["metrics"]["ndcg@10"].is_number(), "{tt}");
    assert!(tt["users_evaluated"].as_u64().unwrap() > 100);

    // Warm start needs an active two-tower model, then starts from it.
    let out = d.fails(&["train", "--model", "two-tower", "--warm-start"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("active two-tower"));
    d.json(&["models", "promote", "m1"]);
    let warm = d.json(&["train", "--model", "two-tower", "--warm-start"]);
    assert_eq!(warm["warm_started_from"], "m1");
    // The previous model's dimension, one epoch.
    assert_eq!(warm["params"]["two_tower"]["dim"], 16);
    assert_eq!(warm["params"]["two_tower"]["epochs"], 1);

    // The active two-tower model answers, from the artifact it was saved as.
    let recs = d.json(&["recommend", "--user", "u3", "--k", "5"]);
    assert_eq!(recs["items"].as_array().unwrap().len(), 5, "{recs}");
    let evaluated = d.json(&["evaluate", "--model-version", "m1"]);
    assert_eq!(evaluated["metrics"]["ndcg@10"], tt["metrics"]["ndcg@10"]);
}

/// A shop of 200 designs (8 categories of 25, designers of 5) whose own
/// customers are few, and a sister shop's public interactions with its items'
/// features: the same categories and designers on other item ids.
#[test]
fn pretraining_on_public_data_carries_shared_features_and_is_measured() {
    let d = DataDir::new();
    let mut shop = common::ShopSql::new()
        .sql("CREATE TABLE base_products (id INTEGER PRIMARY KEY, title TEXT, category_id INTEGER, price REAL);")
        .sql("CREATE TABLE end_products (id TEXT PRIMARY KEY, base_product_id INTEGER, designer_id INTEGER, title TEXT);");
    for g in 0..8 {
        shop = shop.sql(&format!(
            "INSERT INTO base_products VALUES ({}, 'Base {g}', {}, {});",
            g + 1,
            g + 1,
            10 + g
        ));
    }
    for n in 0..200 {
        shop = shop.sql(&format!(
            "INSERT INTO end_products VALUES ('p{n}', {}, {}, 'Design {n}');",
            n / 25 + 1,
            n / 5
        ));
    }
    let shop = shop.write_sqlite(&d.path().join("shop.db"));
    d.json(&["import", "--store", shop.to_str().unwrap()]);

    let mut next = draws(0x9e37_79b9_7f4a_7c15);
    let start = 1_780_000_000i64;
    let mut csv = |users: u64, per_user: u64, prefix: &str| {
        let mut out = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
        for u in 0..users {
            for _ in 0..per_user {
                let item = (u % 8) * 25 + next(25);
                let ts = start + next(60 * 86_400) as i64;
                out.push_str(&format!("{prefix}u{u},{prefix}{item},5.0,{ts},purchase\n"));
            }
        }
        let path = d.path().join(format!("{prefix}.csv"));
        std::fs::write(&path, out).unwrap();
        path
    };
    let own = csv(160, 5, "p");
    let public = csv(600, 12, "q");
    let features = d.path().join("features.csv");
    let mut f = String::from("item_id,category,designer\n");
    for n in 0..200 {
        f.push_str(&format!("q{n},{},{}\n", n / 25 + 1, n / 5));
    }
    std::fs::write(&features, f).unwrap();

    d.json(&["import", "--interactions", own.to_str().unwrap()]);
    let built = d.json(&["dataset", "build"]);
    let args = SMALL_TWO_TOWER;
    let train = |extra: &[&str]| {
        d.command(
            &[
                &["--json", "train", "--model", "two-tower"][..],
                &args[..],
                extra,
            ]
            .concat(),
        )
        .output()
        .unwrap()
    };
    // Nothing public yet: a clear refusal.
    let out = train(&["--pretrain", "public"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--source public"), "{err}");

    let imported = d.json(&[
        "import",
        "--interactions",
        public.to_str().unwrap(),
        "--source",
        "public",
    ]);
    assert_eq!(imported["inserted"], 7200, "{imported}");
    // Public rows stay out of the shop's datasets.
    let rebuilt = d.json(&["dataset", "build", "--full"]);
    assert_eq!(rebuilt["rows"], built["rows"], "{rebuilt}");

    let pre = d.json(
        &[
            &["train", "--model", "two-tower"][..],
            &args[..],
            &[
                "--pretrain",
                "public",
                "--pretrain-features",
                features.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let p = &pre["pretrain"];
    assert_eq!(p["source"], "public", "{pre}");
    assert_eq!(p["rows"], 7200, "{pre}");
    assert_eq!(p["users"], 600, "{pre}");
    assert_eq!(p["items"], 200, "{pre}");
    // 8 categories and 40 designers: what the shop's items and the public
    // ones name alike (the public items' ids, bases and price bands are not).
    assert_eq!(p["features_shared"], 48, "{pre}");
    let alone = p["shop_alone"]["ndcg@10"].as_f64().unwrap();
    let gain = p["ndcg10_gain_ci"].as_array().unwrap();
    let (lo, hi) = (gain[0].as_f64().unwrap(), gain[1].as_f64().unwrap());
    assert!(
        lo <= ndcg(&pre) - alone && ndcg(&pre) - alone <= hi,
        "{pre}"
    );
    assert_eq!(p["helped"], lo > 0.0);
    // Without the public items' features, nothing carries over, and it says so.
    let out = train(&["--pretrain", "public"]);
    assert!(out.status.success());
    let bare: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bare["pretrain"]["features_shared"], 0, "{bare}");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("shares no feature"), "{warned}");

    // Only two-tower, and not with a warm start.
    let out = d.fails(&["train", "--model", "als", "--pretrain", "public"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("two-tower only"));
    d.json(&["models", "promote", pre["model_version"].as_str().unwrap()]);
    let out = train(&["--pretrain", "public", "--warm-start"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pick one"));
    // The fine-tuned model serves the shop's items only.
    let recs = d.json(&["recommend", "--user", "pu3", "--k", "10"]);
    for item in recs["items"].as_array().unwrap() {
        assert!(item["item_id"].as_str().unwrap().starts_with('p'), "{recs}");
    }
}
