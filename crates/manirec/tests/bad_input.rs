//! Real shops are messy: every bad-input case gets a precise answer, the sound
//! rows still land, and nothing panics.

mod common;

use common::{DataDir, ShopSql};
use serde_json::Value;

fn reasons(report: &Value, kind: &str, table: &str) -> Vec<(String, u64)> {
    report[kind][table]["reasons"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn messy_shop() -> ShopSql {
    ShopSql::new()
        // Extra columns, ids as text, a missing optional column (no price), NULLs.
        .sql("CREATE TABLE base_products (id TEXT PRIMARY KEY, title TEXT, category_id TEXT, supplier TEXT, weight_g INTEGER);")
        .sql("INSERT INTO base_products VALUES ('1', 'Tee', 'c1', 'acme', 180), ('2', NULL, 'c1', NULL, NULL), ('3', 'Loose', NULL, 'acme', 90), ('', 'No id', 'c1', NULL, NULL);")
        // Ids as numbers, a duplicate id, views as text, an unreadable time.
        .sql("CREATE TABLE images (id INTEGER, type TEXT, entity_id INTEGER, view_count TEXT, created_at TEXT);")
        .sql("INSERT INTO images VALUES (1, 'Design', 1, '12', '2025-01-01 00:00:00'), (1, 'design', 2, '5', '2025-01-01 00:00:00'), (2, 'design', 2, 'lots', '2025-01-02 00:00:00'), (3, 'design', 3, 4, 'last tuesday');")
        .sql("CREATE TABLE orders (shoplazza_id TEXT, email TEXT, financial_status TEXT, line_items TEXT, created_at TEXT, note TEXT);")
        .sql(r#"INSERT INTO orders VALUES
            ('o-ok', 'a@x.com', 'paid', '[{"product_id": 1, "quantity": "1"}]', '2025-05-01 10:00:00', 'gift'),
            ('o-json', 'b@x.com', 'paid', '[{"product_id": 1, ', '2025-05-01 10:00:00', NULL),
            ('o-obj', 'b@x.com', 'paid', '{"product_id": 1}', '2025-05-01 10:00:00', NULL),
            ('o-null-items', 'b@x.com', 'paid', NULL, '2025-05-01 10:00:00', NULL),
            ('o-status', 'c@x.com', 'Chargeback_Pending', '[{"product_id": 1}]', '2025-05-02 10:00:00', NULL),
            ('o-time', 'c@x.com', 'paid', '[{"product_id": 1}]', 'soon', NULL),
            ('o-noemail', NULL, 'paid', '[{"product_id": 2}]', '2025-05-03 10:00:00', NULL),
            ('o-noproduct', 'd@x.com', 'PAID', '[{"quantity": 1}, {"product_id": "3"}]', 1746266400, NULL),
            (NULL, 'e@x.com', 'paid', '[]', '2025-05-04 10:00:00', NULL);"#)
}

#[test]
fn sound_rows_land_and_every_bad_row_is_counted_with_its_reason() {
    let d = DataDir::new();
    let shop = messy_shop().write_sqlite(&d.path().join("messy.db"));
    let r = d.json(&["import", "--store", shop.to_str().unwrap()]);

    assert_eq!(r["tables"]["base_products"], 3);
    assert_eq!(
        reasons(&r, "rejected", "base_products"),
        [("id is empty".to_owned(), 1)]
    );
    assert_eq!(
        reasons(&r, "warnings", "base_products"),
        [(
            "no category_id (no same-category views for it)".to_owned(),
            1
        )]
    );

    assert_eq!(r["tables"]["images"], 3);
    assert_eq!(
        reasons(&r, "rejected", "images"),
        [(
            "duplicate id in the shop table (first row kept)".to_owned(),
            1
        )]
    );
    let image_warnings = reasons(&r, "warnings", "images");
    assert!(
        image_warnings.contains(&("view_count is not a count (kept as 0)".to_owned(), 1)),
        "{image_warnings:?}"
    );
    assert!(image_warnings.contains(&("unreadable created_at (kept as unknown)".to_owned(), 1)));

    // Orders: o-ok, o-status, o-noemail, o-noproduct land; the rest are rejected.
    assert_eq!(r["tables"]["orders"], 4);
    let rejected = reasons(&r, "rejected", "orders");
    for expected in [
        ("line_items is not valid JSON", 1),
        ("line_items is not a JSON array", 1),
        ("line_items is empty", 1),
        ("created_at is not a time", 1),
        ("shoplazza_id is empty", 1),
    ] {
        assert!(
            rejected.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} not in {rejected:?}"
        );
    }
    let examples = r["rejected"]["orders"]["examples"].as_array().unwrap();
    let json_example = examples
        .iter()
        .find(|e| e["reason"] == "line_items is not valid JSON")
        .unwrap();
    assert_eq!(json_example["row"], "orders row 2 (id \"o-json\")");
    assert!(json_example["detail"].as_str().unwrap().contains("EOF"));
    let warnings = reasons(&r, "warnings", "orders");
    assert!(warnings.contains(&(
        "unknown financial_status \"chargeback_pending\" (kept; not treated as paid)".to_owned(),
        1
    )));
    assert!(warnings.contains(&("line item 1 has no product_id (dropped)".to_owned(), 1)));

    // Extra columns are kept, not lost.
    let attributes: String = d
        .db()
        .query_row(
            "SELECT attributes FROM shop_base_products WHERE id = '1'",
            &[],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attributes, r#"{"supplier":"acme","weight_g":180}"#);

    // Extract: o-ok and o-noproduct (status 'PAID' normalised) give purchases; the
    // paid order without an email is skipped with a reason; the unknown status is not paid.
    let x = d.json(&["extract", "--no-simulated"]);
    assert_eq!(x["purchases"], 2);
    assert_eq!(x["skipped"]["reasons"]["paid order without an email"], 1);
    // Image 1 (type 'Design') counts; image 2's views are unreadable (0); image 3 has no time.
    assert_eq!(x["image_views"], 1);
    assert_eq!(
        x["skipped"]["reasons"]["viewed design image without a created_at"],
        1
    );
}

#[test]
fn missing_tables_and_missing_columns_are_reported_not_fatal() {
    let d = DataDir::new();
    let shop = ShopSql::new()
        .sql("CREATE TABLE orders (id TEXT, email TEXT, financial_status TEXT, created_at TEXT);")
        .sql("INSERT INTO orders VALUES ('1', 'a@x.com', 'paid', '2025-01-01');")
        .sql("CREATE TABLE accounts (id INTEGER, email TEXT);")
        .sql("INSERT INTO accounts VALUES (1, 'a@x.com');")
        .write_sqlite(&d.path().join("partial.db"));
    let r = d.json(&["import", "--store", shop.to_str().unwrap()]);
    assert_eq!(r["tables"]["accounts"], 1);
    assert_eq!(r["tables"]["orders"], 0);
    assert_eq!(
        reasons(&r, "rejected", "orders"),
        [("the table has no line_items column".to_owned(), 1)]
    );
    let missing: Vec<&str> = r["missing_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(missing, ["base_products", "end_products", "images"]);
}

#[test]
fn a_broken_dump_loads_what_it_can_and_names_the_lines() {
    let d = DataDir::new();
    let dump = d.path().join("broken.sql");
    std::fs::write(
        &dump,
        "PRAGMA defer_foreign_keys=TRUE;\n\
         CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT);\n\
         INSERT INTO accounts VALUES(1,'a@x.com');\n\
         INSERT INTO accounts VALUES(1,'again@x.com');\n\
         INSERT INTO acounts VALUES(2,'typo@x.com');\n\
         INSERT INTO accounts VALUES(3,'semi;colon@x.com');\n\
         INSERT INTO accounts VALUES(4,'cut",
    )
    .unwrap();
    let r = d.json(&["import", "--store", dump.to_str().unwrap()]);
    assert_eq!(r["tables"]["accounts"], 2);
    assert_eq!(r["dump_errors"]["count"], 3);
    let lines: Vec<&str> = r["dump_errors"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 4", "line 5", "line 7"]);
}

#[test]
fn files_that_are_not_a_shop_fail_with_one_line_that_says_what_to_do() {
    let d = DataDir::new();
    let missing = d.fails(&["import", "--store", "/nonexistent/shop.db"]);
    let err = String::from_utf8(missing.stderr).unwrap();
    assert!(
        err.contains("/nonexistent/shop.db") && err.contains("cannot read"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
    assert!(missing.stdout.is_empty());

    let binary = d.path().join("random.bin");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01, 0x80]).unwrap();
    let err = String::from_utf8(
        d.fails(&["import", "--store", binary.to_str().unwrap()])
            .stderr,
    )
    .unwrap();
    assert!(
        err.contains("neither a SQLite database nor a UTF-8 SQL dump"),
        "{err}"
    );

    let empty = ShopSql::new()
        .sql("CREATE TABLE unrelated (x INTEGER);")
        .write_sqlite(&d.path().join("other.db"));
    let err = String::from_utf8(
        d.fails(&["import", "--store", empty.to_str().unwrap()])
            .stderr,
    )
    .unwrap();
    assert!(err.contains("no shop tables found"), "{err}");
}
