//! Property tests of what reads the outside world's bytes: the webhook order
//! and product parsers, the interactions CSV importer and the D1 dump reader.
//! Whatever arrives, they answer (a value or a reason) and never panic, and
//! what they answer holds together. CI runs proptest's default number of
//! cases; `scripts/fuzz` runs a million of each.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::identity::UserKey;
use crate::import::interactions_csv::{import_interactions, CsvImportOptions};
use crate::shoplazza::{parse_order, parse_product};
use crate::NoProgress;

/// Keys the parsers look for, and some they do not, so that generated
/// objects reach deep into the parsers rather than failing at the first field.
const KEYS: &[&str] = &[
    "order",
    "product",
    "id",
    "number",
    "email",
    "customer",
    "shipping_address",
    "billing_address",
    "financial_status",
    "status",
    "created_at",
    "placed_at",
    "updated_at",
    "line_items",
    "product_id",
    "variant_id",
    "quantity",
    "price",
    "title",
    "variants",
    "images",
    "src",
    "tags",
    "vendor",
    "product_type",
    "published_at",
    "published",
    "category_id",
    "designer_id",
    "base_product_id",
    "handle",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Any JSON value, three levels deep, of the shapes a payload has.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[0-9]{1,12}".prop_map(Value::from),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z".prop_map(Value::from),
        "[a-zA-Z0-9@._ -]{0,16}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..10)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "orders/create",
                "orders/paid",
                "orders/updated",
                "orders/cancelled",
                "orders/refunded"
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,16}",
    ]
}

proptest! {
    #[test]
    fn an_order_payload_is_parsed_or_refused_never_a_panic(
        payload in json(),
        topic in topic(),
    ) {
        if let Ok(parsed) = parse_order(&payload, &topic, "webhook") {
            prop_assert!(!parsed.order.order_id.is_empty());
            prop_assert!(parsed.order.lines.iter().all(|l| l.quantity > 0 && !l.product_id.is_empty()));
        }
        // Wrapped, the same order parses the same way.
        let wrapped = serde_json::json!({"order": payload.clone()});
        if payload.is_object() && payload.get("order").is_none() {
            prop_assert_eq!(
                parse_order(&payload, &topic, "webhook").ok().map(|p| p.order),
                parse_order(&wrapped, &topic, "webhook").ok().map(|p| p.order)
            );
        }
    }

    #[test]
    fn a_product_payload_is_parsed_or_refused_never_a_panic(payload in json()) {
        if let Ok(parsed) = parse_product(&payload) {
            prop_assert!(!parsed.product.id.is_empty());
        }
    }

    #[test]
    fn a_dump_is_replayed_or_its_statements_reported_never_a_panic(dump in dump_text()) {
        let (conn, problems) = crate::import::dump::load(&dump).unwrap();
        // Nothing but the scratch database: no file was attached.
        let databases: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_database_list", [], |r| r.get(0))
            .unwrap();
        prop_assert_eq!(databases, 1);
        prop_assert!(problems.count <= dump.matches(';').count() as u64 + 1);
    }
}

/// Statements of the kinds a dump holds, good, bad and hostile, with some
/// noise between them.
fn dump_text() -> impl Strategy<Value = String> {
    let statement = prop_oneof![
        Just("PRAGMA defer_foreign_keys=TRUE;".to_owned()),
        Just("CREATE TABLE orders (id TEXT PRIMARY KEY, email TEXT, total REAL);".to_owned()),
        Just("CREATE INDEX orders_email ON orders(email);".to_owned()),
        ("[a-z0-9']{0,8}", any::<f64>())
            .prop_map(|(id, t)| format!("INSERT INTO orders VALUES('{id}', 'a@b.c', {t});")),
        Just("INSERT INTO \"orders\" VALUES('x;y', NULL, 1);".to_owned()),
        Just("ATTACH DATABASE '/tmp/manirec-fuzz-attach.db' AS x;".to_owned()),
        Just("VACUUM INTO '/tmp/manirec-fuzz-vacuum.db';".to_owned()),
        Just("CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM orders; END;".to_owned()),
        Just("DELETE FROM sqlite_sequence;".to_owned()),
        Just("BEGIN TRANSACTION;".to_owned()),
        Just("COMMIT;".to_owned()),
        Just("-- a comment; with a semicolon\n".to_owned()),
        Just("/* a block; comment */".to_owned()),
        "[ -~\n]{0,40}",
    ];
    prop::collection::vec(statement, 0..12).prop_map(|s| s.join("\n"))
}

/// A line of an interactions file: fields of the kinds such files hold.
fn csv_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        "[a-z0-9@._-]{0,10}",
        any::<i64>().prop_map(|n| n.to_string()),
        (0.0f64..10.0).prop_map(|r| r.to_string()),
        "(17|19)[0-9]{8}",
        prop::sample::select(&["view", "click", "cart", "purchase", "", "1", "0", "true"][..])
            .prop_map(str::to_owned),
        "\"[^\"]{0,6}\"",
        "[ -~]{0,8}",
    ];
    let line = prop::collection::vec(field, 0..8).prop_map(|f| f.join(","));
    let header = prop::sample::select(
        &[
            "",
            "user_id,item_id,rating,timestamp\n",
            "user_id,item_id,rating,timestamp,interaction_type,synthetic\n",
            "userId\tmovieId\trating\ttimestamp\n",
        ][..],
    );
    (header, prop::collection::vec(line, 0..10))
        .prop_map(|(header, lines)| format!("{header}{}", lines.join("\n")))
}

/// Every row of an interactions file is counted once: inserted, a duplicate
/// or rejected with a reason. One store and one file serve every case (a
/// fresh store per case would measure SQLite's schema setup, not the reader).
#[test]
fn every_row_of_an_interactions_file_is_counted_once_never_a_panic() {
    let store = std::cell::RefCell::new(manirec_store::Store::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interactions.csv");
    let key = UserKey::from_bytes([3; 32]);
    let options = CsvImportOptions::default();
    let mut runner = TestRunner::new(Config::default());
    runner
        .run(&csv_text(), |text| {
            std::fs::write(&path, &text).unwrap();
            let report = match import_interactions(
                &mut store.borrow_mut(),
                &path,
                &key,
                &options,
                &NoProgress,
            ) {
                Ok(report) => report,
                // A first line that is neither data nor a usable header: refused whole.
                Err(crate::Error::Input { .. }) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            prop_assert_eq!(
                report.rows,
                report.inserted + report.duplicates + report.rejected,
                "{:?}",
                report
            );
            prop_assert_eq!(report.rejected, report.problems.count);
            Ok(())
        })
        .unwrap();
}
