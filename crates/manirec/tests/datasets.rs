//! `dataset build` / `dataset list` end to end: planted exact and near duplicates,
//! the 80/20 temporal split, checksums and row counts checked by pyarrow, rebuilds,
//! versions, refunded orders.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{textbook_shop, DataDir};
use serde_json::Value;

/// Runs `tests/support/verify_dataset.py` (pyarrow) on a local dataset version.
pub fn verify(d: &DataDir, manifest_key: &str) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/verify_dataset.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg("--root")
        .arg(d.path().join("data/objects"))
        .arg(manifest_key)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed to check datasets with pyarrow ({e}); see .ci/run")
        });
    assert!(
        out.status.success(),
        "verify_dataset.py failed (pyarrow installed? `python3 -m pip install pyarrow`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

type Planted = (&'static str, String, i64, &'static str);

fn rows_of(v: &Value) -> Vec<Planted> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let user: &'static str = r[0].as_str().unwrap().to_owned().leak();
            let kind: &'static str = r[3].as_str().unwrap().to_owned().leak();
            (
                user,
                r[1].as_str().unwrap().to_owned(),
                r[2].as_i64().unwrap(),
                kind,
            )
        })
        .collect()
}

/// A window boundary: 1_700_000_100 = 5_666_667 × 300.
const T: i64 = 1_700_000_100;

/// The planted file, and the rows the dataset must hold, in time order.
fn planted() -> (String, Vec<Planted>, usize) {
    let mut csv = String::from("user_id,item_id,rating,timestamp,interaction_type,synthetic\n");
    let mut line = |u: &str, i: &str, r: f64, ts: i64, k: &str, s: u8| {
        csv.push_str(&format!("{u},{i},{r},{ts},{k},{s}\n"));
    };
    line("a", "p1", 1.0, T + 10, "view", 0); // near duplicate of the purchase below: dropped
    line("a", "p1", 1.0, T + 10, "view", 0); // exact duplicate line: never stored
    line("a", "p1", 5.0, T + 200, "purchase", 0); // same window, later: kept
    line("a", "p2", 1.0, T - 1, "view", 0); // one second apart, but two windows:
    line("a", "p2", 1.0, T, "view", 0); //    both kept (pandas floor semantics)
    line("b", "p1", 1.0, T + 50, "view", 0); // same second as the next, written first: dropped
    line("b", "p1", 4.0, T + 50, "add_to_cart", 0); // kept
    line("c", "p1", 1.0, T + 299, "view", 0); // last second of the window: kept
    line("c", "p1", 1.0, T + 300, "view", 0); // next window: kept
    for k in 1..=12i64 {
        let synthetic = u8::from(k == 12 || k == 2);
        line(
            &format!("u{k}"),
            &format!("q{k}"),
            1.0,
            T + 1000 * k,
            "view",
            synthetic,
        );
        if k % 2 == 0 {
            // A near duplicate 30 s later wins over the view.
            line(
                &format!("u{k}"),
                &format!("q{k}"),
                5.0,
                T + 1000 * k + 30,
                "purchase",
                synthetic,
            );
        }
    }
    let mut expected: Vec<Planted> = vec![
        ("a", "p2".into(), T - 1, "view"),
        ("a", "p2".into(), T, "view"),
        ("b", "p1".into(), T + 50, "add_to_cart"),
        ("a", "p1".into(), T + 200, "purchase"),
        ("c", "p1".into(), T + 299, "view"),
        ("c", "p1".into(), T + 300, "view"),
    ];
    for k in 1..=12i64 {
        let user: &'static str = format!("u{k}").leak();
        if k % 2 == 0 {
            expected.push((user, format!("q{k}"), T + 1000 * k + 30, "purchase"));
        } else {
            expected.push((user, format!("q{k}"), T + 1000 * k, "view"));
        }
    }
    // 18 rows: 14 train; the last 4 are the test period, k = 12 is synthetic.
    (csv, expected, 14)
}

#[test]
fn planted_duplicates_give_exactly_the_expected_rows_split_80_20() {
    let d = DataDir::new();
    let (csv, expected, cut) = planted();
    let file = d.path().join("planted.csv");
    std::fs::write(&file, csv).unwrap();
    let import = d.json(&[
        "import",
        "--interactions",
        file.to_str().unwrap(),
        "--source",
        "realtime",
    ]);
    assert_eq!(import["duplicates"], 1);
    assert_eq!(import["inserted"], 26);

    let b = d.json(&["dataset", "build", "--csv"]);
    assert_eq!(b["version"], "v1.0");
    assert_eq!(b["created"], true);
    assert_eq!(b["rows"], 18);
    assert_eq!(b["deduplicated"], 8);
    assert_eq!(b["train_rows"], 14);
    assert_eq!(b["test_rows"], 3);
    assert_eq!(b["counts"]["test_synthetic_dropped"], 1);
    assert_eq!(b["split_timestamp"], T + 9000);
    assert_eq!(b["manifest"], "datasets/v1.0/manifest.json");

    let v = verify(&d, "datasets/v1.0/manifest.json");
    let train = rows_of(&v["train"]);
    let test = rows_of(&v["test"]);
    assert_eq!(train, expected[..cut]);
    let real_test: Vec<Planted> = expected[cut..]
        .iter()
        .filter(|r| r.0 != "u12")
        .cloned()
        .collect();
    assert_eq!(test, real_test);
    let last_train = train.iter().map(|r| r.2).max().unwrap();
    let first_test = test.iter().map(|r| r.2).min().unwrap();
    assert!(
        last_train <= first_test,
        "no train row later than a test row"
    );

    let m = &v["manifest"];
    assert_eq!(m["version"], "v1.0");
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["rows"], 18);
    assert_eq!(m["split_timestamp"], T + 9000);
    // train and test as Parquet and CSV, and the dropped simulated test rows.
    assert_eq!(m["files"].as_array().unwrap().len(), 5);
    assert_eq!(m["counts"]["test_synthetic_dropped"], 1, "k = 12");
    assert_eq!(v["dropped"].as_array().unwrap().len(), 1);
    assert_eq!(v["dropped"][0][1], "q12");
    for f in m["files"].as_array().unwrap() {
        let key = f["key"].as_str().unwrap();
        assert!(key.contains(f["part"].as_str().unwrap()), "{key}");
    }
    assert_eq!(m["counts"]["by_source"]["realtime"], 17);
    assert_eq!(m["counts"]["by_type"]["purchase"], 6);
    assert_eq!(m["counts"]["synthetic"], 1, "k = 2 stays in train");
}

#[test]
fn rebuilding_gives_the_same_and_versions_follow_the_design() {
    let d = DataDir::new();
    let (csv, _, _) = planted();
    let file = d.path().join("planted.csv");
    std::fs::write(&file, csv).unwrap();
    d.json(&["import", "--interactions", file.to_str().unwrap()]);
    assert_eq!(
        d.json(&["dataset", "list"])["versions"],
        Value::Array(vec![])
    );

    let first = d.json(&["dataset", "build"]);
    assert_eq!(
        (first["version"].as_str(), first["kind"].as_str()),
        (Some("v1.0"), Some("full"))
    );
    let sums = |b: &Value| -> BTreeMap<String, String> {
        b["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["part"].as_str().unwrap().to_owned(),
                    f["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    // Nothing new: no new version, the same files.
    let again = d.json(&["dataset", "build"]);
    assert_eq!(again["version"], "v1.0");
    assert_eq!(again["created"], false);
    assert_eq!(sums(&again), sums(&first));

    // A full rebuild is v2.0, byte for byte the same data.
    let full = d.json(&["dataset", "build", "--full"]);
    assert_eq!(
        (full["version"].as_str(), full["kind"].as_str()),
        (Some("v2.0"), Some("full"))
    );
    assert_eq!(sums(&full), sums(&first));
    verify(&d, "datasets/v2.0/manifest.json");

    // New data: an increment, v2.1 after v2.0.
    let more = d.path().join("more.csv");
    std::fs::write(
        &more,
        format!("user_id,item_id,rating,timestamp\nz,p9,1,{}\n", T + 50_000),
    )
    .unwrap();
    d.json(&["import", "--interactions", more.to_str().unwrap()]);
    let inc = d.json(&["dataset", "build"]);
    assert_eq!(inc["version"], "v2.1");
    assert_eq!(inc["kind"], "increment");
    assert_eq!(inc["parent"], "v2.0");
    assert_eq!(inc["rows"], 19);
    assert_eq!(inc["counts"]["new_since_parent"], 1);
    let v = verify(&d, "datasets/v2.1/manifest.json");
    assert_eq!(v["manifest"]["parent"], "v2.0");

    let list = d.json(&["dataset", "list"]);
    let names: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v1.0", "v2.0", "v2.1"]);
    assert!(list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["status"] == "ready"));

    // The register lives in the database, the manifests in the object store.
    let n: i64 = d
        .db()
        .query_row(
            "SELECT COUNT(*) FROM dataset_versions WHERE status = 'ready'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn refunded_cancelled_and_voided_orders_leave_the_dataset_partial_refunds_stay() {
    let d = DataDir::new();
    let shop = d.path().join("shop.db");
    textbook_shop().write_sqlite(&shop);
    d.json(&["import", "--store", shop.to_str().unwrap()]);
    d.json(&["extract", "--no-simulated"]);
    let before = d.json(&["dataset", "build"]);
    assert_eq!(before["counts"]["excluded_refunded"], 0);
    let purchases = before["counts"]["by_type"]["purchase"].as_u64().unwrap();
    assert_eq!(
        purchases, 4,
        "order 1: e-a, e-m; order 2: e-b; order 3: product 2"
    );

    // The shop refunds order 1 (two products) and partially refunds order 2.
    let conn = rusqlite::Connection::open(&shop).unwrap();
    conn.execute_batch(
        "UPDATE orders SET financial_status = 'refunded' WHERE id = 1;
         UPDATE orders SET financial_status = 'partially_refunded' WHERE id = 2;",
    )
    .unwrap();
    drop(conn);
    d.json(&["import", "--store", shop.to_str().unwrap()]);
    // The refund changes no interaction: the change log says which periods to read.
    let after = increment_equals_full(&d, "a refund");
    assert_eq!(after["version"], "v1.1");
    assert_eq!(after["counts"]["excluded_refunded"], 2);
    assert_eq!(after["counts"]["by_type"]["purchase"], 2);
}

#[test]
fn an_empty_store_builds_an_empty_readable_version() {
    let d = DataDir::new();
    let b = d.json(&["dataset", "build"]);
    assert_eq!(
        (b["rows"].as_u64(), b["train_rows"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(b["split_timestamp"], Value::Null);
    let v = verify(&d, "datasets/v1.0/manifest.json");
    assert_eq!(v["train"].as_array().unwrap().len(), 0);
}

/// The files' checksums and the manifest's counts and periods: what must not
/// differ between an increment and a full build of the same data.
fn content(d: &DataDir, build: &Value) -> Value {
    let key = build["manifest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("data/objects").join(key)).unwrap())
            .unwrap();
    let mut counts = manifest["counts"].clone();
    counts["new_since_parent"] = Value::Null;
    serde_json::json!({
        "files": manifest["files"].as_array().unwrap().iter()
            .map(|f| (f["part"].clone(), f["rows"].clone(), f["sha256"].clone()))
            .map(|(p, r, s)| serde_json::json!([p, r, s]))
            .collect::<Vec<_>>(),
        "rows": manifest["rows"], "train_rows": manifest["train_rows"],
        "test_rows": manifest["test_rows"], "split_timestamp": manifest["split_timestamp"],
        "counts": counts, "periods": manifest["periods"],
    })
}

/// Builds an increment, then a full version of the same data: both must hold
/// the same bytes. Returns the increment's answer.
fn increment_equals_full(d: &DataDir, what: &str) -> Value {
    let inc = d.json(&["dataset", "build"]);
    assert_eq!(inc["kind"], "increment", "{what}: {inc}");
    assert_eq!(inc["read"]["strategy"], "changes", "{what}: {inc}");
    let full = d.json(&["dataset", "build", "--full"]);
    assert_eq!(full["read"]["strategy"], "everything");
    assert_eq!(content(d, &inc), content(d, &full), "{what}");
    verify(d, inc["manifest"].as_str().unwrap());
    inc
}

#[test]
fn an_increment_reads_only_what_changed_and_equals_a_full_build() {
    let d = DataDir::new();
    // Ten weeks of a shop's interactions (ten periods or more), with
    // duplicates inside windows and simulated views.
    let day = 86_400;
    let start = 1_767_225_600; // 2026-01-01
    let mut csv = String::from("user_id,item_id,rating,timestamp,interaction_type,synthetic\n");
    let mut n = 0u64;
    let mut next = || {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        n >> 33
    };
    for i in 0..3_000i64 {
        let ts = start + i * 70 * day / 3_000 + (next() % 600) as i64;
        let (user, item) = (next() % 120, next() % 80);
        let (kind, rating) =
            [("view", 1.0), ("add_to_cart", 3.0), ("purchase", 5.0)][(next() % 3) as usize];
        let synthetic = u8::from(kind == "view" && next() % 4 == 0);
        csv.push_str(&format!(
            "u{user},p{item},{rating},{ts},{kind},{synthetic}\n"
        ));
        if next() % 10 == 0 {
            // The same user and item again a moment later: a near duplicate.
            let ts = ts + 30;
            csv.push_str(&format!("u{user},p{item},1,{ts},view,0\n"));
        }
    }
    let file = d.path().join("shop.csv");
    std::fs::write(&file, csv).unwrap();
    d.json(&["import", "--interactions", file.to_str().unwrap()]);
    let first = d.json(&["dataset", "build"]);
    assert_eq!(first["read"]["strategy"], "everything");
    let periods = first["read"]["periods_from_store"].as_u64().unwrap();
    assert!(
        periods >= 10,
        "ten weeks make at least ten periods: {first}"
    );

    // A week's new rows after the last: the last periods and the cut are read,
    // the older periods' row groups are copied.
    let more = d.path().join("more.csv");
    let mut csv = String::from("user_id,item_id,rating,timestamp,interaction_type\n");
    for i in 0..40i64 {
        let ts = start + 70 * day + i * 3_600;
        csv.push_str(&format!("u{},p{},1,{ts},view\n", i % 7, i % 11));
    }
    std::fs::write(&more, csv).unwrap();
    d.json(&["import", "--interactions", more.to_str().unwrap()]);
    let inc = increment_equals_full(&d, "new rows at the end");
    assert!(
        inc["read"]["periods_reused"].as_u64().unwrap() >= periods - 4,
        "{inc}"
    );
    assert_eq!(inc["counts"]["new_since_parent"], 40);

    // Increments follow increments, with a change logged (and pruned) between:
    // the log's watermark survives its pruning.
    for round in 0..4i64 {
        let next = d.path().join(format!("next-{round}.csv"));
        let ts = start + 72 * day + round * 3_600;
        std::fs::write(
            &next,
            format!("user_id,item_id,rating,timestamp\nn{round},p2,1,{ts}\n"),
        )
        .unwrap();
        d.json(&["import", "--interactions", next.to_str().unwrap()]);
        if round == 1 {
            d.db()
                .execute(
                    "UPDATE training_interactions SET rating = 2 WHERE user_id = 'n0'",
                    &[],
                )
                .unwrap();
        }
        let b = d.json(&["dataset", "build"]);
        assert_eq!(b["kind"], "increment", "round {round}: {b}");
        assert_eq!(b["read"]["strategy"], "changes", "round {round}: {b}");
    }

    // A late row in the first week, changing that week alone.
    let late = d.path().join("late.csv");
    std::fs::write(
        &late,
        format!(
            "user_id,item_id,rating,timestamp\nlate,p1,5,{}\n",
            start + 3_600
        ),
    )
    .unwrap();
    d.json(&["import", "--interactions", late.to_str().unwrap()]);
    increment_equals_full(&d, "a late row in an old period");

    // Rows deleted (a customer erased) and rows rewritten in place: what the
    // change log is for, as new ids never show them.
    d.json(&["forget", "--user", "u3"]);
    d.db()
        .execute(
            "UPDATE training_interactions SET rating = 9, synthetic = 0
              WHERE user_id = 'u5' AND interaction_type = 'view'",
            &[],
        )
        .unwrap();
    d.db()
        .execute(
            "UPDATE training_interactions SET timestamp = timestamp - 40 * 86400
              WHERE user_id = 'u6'",
            &[],
        )
        .unwrap();
    let inc = increment_equals_full(&d, "erased and rewritten rows");
    assert!(
        inc["read"]["periods_from_store"].as_u64().unwrap() > 0,
        "the change log sends the erased and rewritten periods to the store: {inc}"
    );

    // Nothing changed: no new version.
    let again = d.json(&["dataset", "build"]);
    assert_eq!(again["created"], false);
}
