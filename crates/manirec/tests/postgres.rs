//! The same shop on PostgreSQL and on the embedded SQLite file: the same
//! rows, the same datasets, the same models; and `store copy` moving a shop
//! from one to the other. Needs the test PostgreSQL server (`scripts/test`
//! starts one and sets MANIREC_TEST_POSTGRES_URL).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::DataDir;
use serde_json::Value;
use sha2::{Digest, Sha256};

const DEMO: &[&str] = &["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"];

/// `text` with every run of 13 digits (a millisecond timestamp, in export
/// names and manifests) as `<ms>`.
fn without_ms(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits.len() == 13 { "<ms>" } else { &digits });
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// Every file of a data dir's object store, by key, as its SHA-256 (files
/// that record when they were written, manifests and model metadata, as
/// their text without the times).
fn objects(d: &DataDir) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let key = without_ms(&path.strip_prefix(root).unwrap().display().to_string());
                let bytes = std::fs::read(&path).unwrap();
                let value = if key.ends_with(".json") {
                    settled(serde_json::from_slice(&bytes).unwrap()).to_string()
                } else {
                    hex::encode(Sha256::digest(&bytes))
                };
                out.insert(key, without_ms(&value));
            }
        }
    }
    let root = d.path().join("data/objects");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// A command's JSON without what differs from run to run (times, paths).
fn settled(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| {
                    !(k.ends_with("seconds")
                        || k.ends_with("_ms")
                        || k == "data_dir"
                        || k == "shop_file"
                        || k == "created_at"
                        || k == "generated_at")
                });
                map.values_mut().for_each(strip);
            }
            Value::String(s) => *s = without_ms(s),
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn the_demo_on_postgres_gives_the_same_rows_datasets_and_models_as_on_sqlite() {
    let lite = DataDir::new();
    let pg = DataDir::on_postgres();
    let on_lite = settled(lite.json(DEMO));
    let on_pg = settled(pg.json(DEMO));
    for stage in [
        "import", "extract", "events", "sync", "dataset", "train", "promoted",
    ] {
        assert_eq!(
            on_lite["stages"][stage], on_pg["stages"][stage],
            "stage {stage} differs between SQLite and PostgreSQL"
        );
    }
    assert_eq!(
        lite.store().row_counts().unwrap(),
        pg.store().row_counts().unwrap()
    );
    // Same datasets and models, byte for byte.
    let (a, b) = (objects(&lite), objects(&pg));
    assert!(a.keys().any(|k| k.starts_with("models/")), "{a:?}");
    assert_eq!(a, b);

    // The rest of the pipeline, on both.
    for d in [&lite, &pg] {
        let forgot = d.json(&["forget", "--user", "nobody@example.com"]);
        assert!(forgot["deleted"].is_object(), "{forgot}");
    }
    let report = |d: &DataDir| settled(d.json(&["report"]));
    let (report_lite, report_pg) = (report(&lite), report(&pg));
    assert_eq!(
        report_lite["sources"], report_pg["sources"],
        "{report_lite}"
    );
    let cleaned = |d: &DataDir| d.json(&["cleanup", "--older-than", "60"])["deleted"].clone();
    assert_eq!(cleaned(&lite), cleaned(&pg));
    assert_eq!(
        lite.store().row_counts().unwrap(),
        pg.store().row_counts().unwrap()
    );
}

#[test]
fn store_copy_moves_a_demo_shop_into_postgres_and_the_model_trained_there_is_the_same() {
    let lite = DataDir::new();
    lite.json(DEMO);
    let target = DataDir::on_postgres();
    let url = target.database_url();

    let copied = lite.json(&["store", "copy", "--to", &url]);
    let tables = copied["tables"].as_array().unwrap();
    assert!(tables.len() >= 20, "{copied}");
    for t in tables {
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
    }
    let counts = lite.store().row_counts().unwrap();
    assert!(counts["training_interactions"] > 1000, "{counts:?}");
    assert_eq!(target.store().row_counts().unwrap(), counts);

    // Again: idempotent, nothing doubles.
    let again = lite.json(&["store", "copy", "--to", &url]);
    assert_eq!(again["tables"], copied["tables"]);
    assert_eq!(target.store().row_counts().unwrap(), counts);

    // The moved shop, with the same object store, builds the same dataset and
    // trains the same model, byte for byte.
    copy_dir(&lite.path().join("data"), &target.path().join("data"));
    let build = |d: &DataDir| settled(d.json(&["dataset", "build", "--full"]));
    let (built_lite, built_pg) = (build(&lite), build(&target));
    assert_eq!(built_lite, built_pg);
    let version = built_lite["version"].as_str().unwrap().to_string();
    let train = |d: &DataDir| settled(d.json(&["train", "--model", "als", "--dataset", &version]));
    let (model_lite, model_pg) = (train(&lite), train(&target));
    assert_eq!(model_lite["model_version"], model_pg["model_version"]);
    assert_eq!(model_lite["metrics"], model_pg["metrics"]);
    assert_eq!(objects(&lite), objects(&target));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("manirec.db")
        {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
