//! `export`, `report`, `cleanup` and `forget` end to end, on real SQLite files.

mod common;

use std::process::Command;

use common::{textbook_shop, DataDir};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn import_csv(d: &DataDir, name: &str, source: &str, body: &str) -> Value {
    let file = d.path().join(name);
    std::fs::write(
        &file,
        format!("user_id,item_id,rating,timestamp,interaction_type,synthetic\n{body}"),
    )
    .unwrap();
    d.json(&[
        "import",
        "--interactions",
        file.to_str().unwrap(),
        "--source",
        source,
    ])
}

fn object(d: &DataDir, key: &str) -> Vec<u8> {
    std::fs::read(d.path().join("data/objects").join(key))
        .unwrap_or_else(|e| panic!("object {key}: {e}"))
}

fn pyarrow_rows(path: &std::path::Path) -> u64 {
    let out = Command::new("python3")
        .args([
            "-c",
            // os._exit: pyarrow's thread pools can abort the interpreter's teardown under load.
            "import os, sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1]).num_rows, flush=True); os._exit(0)",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed to read Parquet with pyarrow; see .ci/run");
    assert!(
        out.status.success(),
        "pyarrow could not read {} (installed? `python3 -m pip install pyarrow`): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn insert_event(d: &DataDir, id: &str, user: Option<&str>, session: &str, ts_ms: i64) {
    d.db()
        .execute(
            "INSERT INTO behavior_events (event_id, event_type, product_id, user_id, session_id,
                 timestamp_ms, received_at) VALUES (?1, 'product_view', 'p1', ?2, ?3, ?4, ?4)",
            &[json!(id), json!(user), json!(session), json!(ts_ms)],
        )
        .unwrap();
}

fn count(d: &DataDir, sql: &str) -> i64 {
    d.db().query_row(sql, &[], |r| r.get(0)).unwrap()
}

#[test]
fn export_writes_full_then_incremental_files_with_sidecars() {
    let d = DataDir::new();
    let t = now() - 86_400;
    import_csv(
        &d,
        "a.csv",
        "realtime",
        &format!(
            "a,p1,1,{t},view,0\nb,p2,5,{},purchase,0\nc,p3,3,{},view,1\n",
            t + 1,
            t + 2
        ),
    );

    let full = d.json(&["export", "--format", "parquet"]);
    assert_eq!(full["type"], "full");
    assert_eq!(full["rows"], 3);
    let key = full["key"].as_str().unwrap();
    assert!(key.starts_with("training-data/interactions-") && key.ends_with(".parquet"));
    let bytes = object(&d, key);
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        full["sha256"].as_str().unwrap()
    );
    assert_eq!(pyarrow_rows(&d.path().join("data/objects").join(key)), 3);
    let meta: Value = serde_json::from_slice(&object(&d, &format!("{key}.meta.json"))).unwrap();
    assert_eq!(meta["type"], "full");
    assert_eq!(meta["count"], 3);
    assert_eq!(meta["sha256"], full["sha256"]);
    assert_eq!(meta["since"], Value::Null);
    let full_created = meta["created_at"].clone();

    // Nothing new since: an empty increment, that says since when.
    let none = d.json(&["export", "--incremental"]);
    assert_eq!(
        (none["type"].as_str(), none["rows"].as_u64()),
        (Some("incremental"), Some(0))
    );
    assert!(none["since"].as_str().unwrap().ends_with('Z'));
    // ... and writes no 0-row file.
    assert_eq!(none["written"], false);
    let objects = d.path().join("data/objects");
    assert!(!objects.join(none["key"].as_str().unwrap()).exists());
    assert!(!objects.join(none["meta_key"].as_str().unwrap()).exists());

    import_csv(
        &d,
        "b.csv",
        "webhook",
        &format!("d,p4,5,{},purchase,0\n", t + 3),
    );
    let inc = d.json(&["export", "--incremental", "--format", "csv"]);
    assert_eq!(inc["rows"], 1);
    let key = inc["key"].as_str().unwrap();
    assert!(key.starts_with("training-data/incremental-") && key.ends_with(".csv"));
    let text = String::from_utf8(object(&d, key)).unwrap();
    assert_eq!(
        text,
        format!(
            "user_id,item_id,rating,timestamp,interaction_type,synthetic\nd,p4,5.0,{},purchase,0\n",
            t + 3
        )
    );
    let meta: Value = serde_json::from_slice(&object(&d, &format!("{key}.meta.json"))).unwrap();
    assert_eq!(
        (meta["type"].as_str(), meta["count"].as_u64()),
        (Some("incremental"), Some(1))
    );
    // Since the previous export that wrote a file (the empty one moved nothing).
    assert_eq!(meta["since"], full_created, "since the previous export");
    assert_eq!(
        hex::encode(Sha256::digest(text.as_bytes())),
        meta["sha256"].as_str().unwrap()
    );
}

#[test]
fn the_report_counts_users_once_across_sources_and_says_what_is_new() {
    let d = DataDir::new();
    let t = now() - 3_600;
    import_csv(
        &d,
        "existing.csv",
        "existing_data",
        &format!(
            "a,p1,5,{t},purchase,0\na,p2,3,{t},view,1\nb,p1,5,{t},purchase,0\nanonymous:image:7,p3,1,{t},image_view,0\n"
        ),
    );
    import_csv(
        &d,
        "live.csv",
        "realtime",
        &format!(
            "a,p1,1,{},product_view,0\nc,p4,1,{t},product_view,0\n",
            t + 1
        ),
    );
    insert_event(&d, "e1", Some("a"), "s1", t * 1000);

    let r = d.json(&["report"]);
    let existing = &r["by_source"]["existing_data"];
    assert_eq!(
        (
            existing["count"].as_i64(),
            existing["users"].as_i64(),
            existing["items"].as_i64()
        ),
        (Some(4), Some(2), Some(3))
    );
    assert_eq!(existing["synthetic"], 1);
    assert_eq!(existing["synthetic_share"], 0.25);
    assert_eq!(existing["anonymous"], 1);
    assert_eq!(r["by_source"]["realtime"]["users"], 2);
    // a is in both sources: 3 people, not 2 + 2.
    assert_eq!(r["total"]["users"], 3);
    assert_eq!(r["total"]["items"], 4);
    assert_eq!(r["total"]["count"], 6);
    assert_eq!(r["total"]["new"], 6);
    assert_eq!(r["events"]["stored"], 1);
    assert_eq!(r["events"]["rejected_total"], 0);
    assert_eq!(r["previous"], Value::Null);
    let key = r["key"].as_str().unwrap();
    assert_eq!(
        key,
        format!("reports/data-quality-{}.json", r["date"].as_str().unwrap())
    );
    let stored: Value = serde_json::from_slice(&object(&d, key)).unwrap();
    assert_eq!(stored, r, "the object store holds what was printed");

    import_csv(
        &d,
        "more.csv",
        "realtime",
        &format!("e,p5,1,{},product_view,0\n", t + 2),
    );
    insert_event(&d, "e2", None, "s2", t * 1000);
    let next = d.json(&["report"]);
    assert_eq!(next["total"]["new"], 1);
    assert_eq!(next["by_source"]["realtime"]["new"], 1);
    assert_eq!(next["by_source"]["existing_data"]["new"], 0);
    assert_eq!(
        (
            next["events"]["stored"].as_i64(),
            next["events"]["new"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(next["previous"]["created_at"], r["created_at"]);
    assert_eq!(count(&d, "SELECT COUNT(*) FROM quality_reports"), 2);
}

#[test]
fn cleanup_deletes_interactions_and_events_past_retention_only() {
    let d = DataDir::new();
    let old = now() - 400 * 86_400;
    let recent = now() - 10 * 86_400;
    import_csv(
        &d,
        "rows.csv",
        "realtime",
        &format!(
            "a,p1,1,{old},view,0\nb,p1,1,{},view,0\na,p2,1,{recent},view,0\n",
            old + 60
        ),
    );
    insert_event(&d, "old", Some("a"), "s1", old * 1000);
    insert_event(&d, "new", Some("a"), "s1", recent * 1000);

    let c = d.json(&["cleanup"]);
    assert_eq!(c["older_than_days"], 365);
    assert_eq!(c["deleted"]["training_interactions"], 2);
    assert_eq!(c["deleted"]["behavior_events"], 1);
    assert_eq!(count(&d, "SELECT COUNT(*) FROM training_interactions"), 1);
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM behavior_events WHERE event_id = 'new'"
        ),
        1
    );

    let again = d.json(&["cleanup"]);
    assert_eq!(again["deleted"]["training_interactions"], 0);
    let short = d.json(&["cleanup", "--older-than", "7"]);
    assert_eq!(short["deleted"]["training_interactions"], 1);
    assert_eq!(short["deleted"]["behavior_events"], 1);
    let b = d.json(&["dataset", "build"]);
    assert_eq!(b["rows"], 0);
}

#[test]
fn forget_deletes_one_customer_everywhere_and_nothing_else() {
    let d = DataDir::new();
    let shop = d.path().join("shop.db");
    textbook_shop().write_sqlite(&shop);
    d.json(&["import", "--store", shop.to_str().unwrap()]);
    d.json(&["extract"]);
    let ana: String = d
        .db()
        .query_row(
            "SELECT user_id FROM training_interactions WHERE origin = 'order:11218-00000001' LIMIT 1",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    let ana_rows = count(
        &d,
        &format!("SELECT COUNT(*) FROM training_interactions WHERE user_id = '{ana}'"),
    );
    assert!(ana_rows >= 3);
    // Ana browses logged in as account 1 with session s-ana, and before login
    // in the same session; someone else browses in s-other.
    insert_event(&d, "e1", Some("1"), "s-ana", 1_000);
    insert_event(&d, "e2", None, "s-ana", 2_000);
    insert_event(&d, "e3", None, "s-other", 3_000);
    import_csv(
        &d,
        "sess.csv",
        "realtime",
        "s-ana,p1,1,1700000000,product_view,0\ns-other,p1,1,1700000000,product_view,0\n",
    );
    let before = count(&d, "SELECT COUNT(*) FROM training_interactions");

    let f = d.json(&["forget", "--user", " ANA@example.com"]);
    assert_eq!(f["user_id"], ana.as_str());
    let del = &f["deleted"];
    assert_eq!(
        del["training_interactions"],
        ana_rows + 1,
        "her rows and her session's"
    );
    assert_eq!(del["behavior_events"], 2);
    assert_eq!(del["shop_orders"], 2);
    assert_eq!(del["shop_order_items"], 4);
    assert_eq!(del["shop_accounts"], 1);
    assert_eq!(
        count(&d, "SELECT COUNT(*) FROM training_interactions"),
        before - ana_rows - 1
    );
    assert_eq!(
        count(
            &d,
            &format!(
                "SELECT COUNT(*) FROM training_interactions WHERE user_id IN ('{ana}', 's-ana')"
            )
        ),
        0
    );
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM shop_orders WHERE lower(trim(email)) = 'ana@example.com'"
        ),
        0
    );
    assert_eq!(
        count(&d, "SELECT COUNT(*) FROM shop_accounts WHERE id = '2'"),
        1,
        "Ben stays"
    );
    assert_eq!(count(&d, "SELECT COUNT(*) FROM behavior_events"), 1);

    // Later datasets no longer hold her.
    d.json(&["dataset", "build", "--csv"]);
    let manifest: Value =
        serde_json::from_slice(&object(&d, "datasets/v1.0/manifest.json")).unwrap();
    for f in manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["format"] == "csv")
    {
        let bytes = object(&d, f["key"].as_str().unwrap());
        assert!(!bytes.windows(ana.len()).any(|w| w == ana.as_bytes()));
    }

    let again = d.json(&["forget", "--user", "ana@example.com"]);
    assert!(again["deleted"]
        .as_object()
        .unwrap()
        .values()
        .all(|n| n == 0));

    // The shop still has her old orders and account: importing them again
    // leaves her out (and says so), so extracting finds nothing of hers.
    let imported = d.json(&["import", "--store", shop.to_str().unwrap()]);
    let why = "the customer asked to be forgotten";
    assert_eq!(imported["rejected"]["orders"]["reasons"][why], 2);
    assert_eq!(imported["rejected"]["accounts"]["reasons"][why], 1);
    d.json(&["extract"]);
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM shop_orders WHERE lower(trim(email)) = 'ana@example.com'"
        ),
        0
    );
    assert_eq!(
        count(
            &d,
            &format!("SELECT COUNT(*) FROM training_interactions WHERE user_id = '{ana}'")
        ),
        0
    );
}

#[test]
fn what_cleanup_deleted_is_not_extracted_again() {
    let d = DataDir::new();
    let shop = d.path().join("shop.db");
    textbook_shop().write_sqlite(&shop);
    d.json(&["import", "--store", shop.to_str().unwrap()]);
    let first = d.json(&["extract"]);
    assert!(first["inserted"].as_u64().unwrap() > 0);
    // The textbook shop's orders and images are from 2025: a 30-day retention deletes them all.
    let cleaned = d.json(&["cleanup", "--older-than", "30"]);
    assert_eq!(
        cleaned["deleted"]["training_interactions"].as_u64(),
        first["inserted"].as_u64()
    );
    let again = d.json(&["extract"]);
    assert_eq!(again["inserted"], 0);
    assert_eq!(
        again["skipped"]["reasons"]["older than the retention cut (cleanup)"],
        3 + 4,
        "3 paid orders, 4 viewed design images"
    );
    assert_eq!(count(&d, "SELECT COUNT(*) FROM training_interactions"), 0);
}
