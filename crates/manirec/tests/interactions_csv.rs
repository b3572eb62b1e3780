//! `import --interactions`: the seed's CSV and the MovieLens shapes.

mod common;

use common::DataDir;

#[test]
fn the_seeds_csv_imports_with_duplicates_and_bad_rows_counted() {
    let d = DataDir::new();
    let csv = d.path().join("seed.csv");
    std::fs::write(
        &csv,
        "user_id,item_id,rating,timestamp,interaction_type\n\
         Ana@Example.com,p1,5.0,1700000000,purchase\n\
         ana@example.com ,p1,3.0,1699999000,view\n\
         s-42,p2,1,1700000100,product_view\n\
         s-42,p2,1,1700000100,product_view\n\
         s-42,p3,lots,1700000200,product_view\n\
         s-42,,1,1700000200,product_view\n\
         s-43,p3,1,next week,product_view\n\
         s-44,p4,2,2025-01-01T00:00:00Z\n",
    )
    .unwrap();
    let r = d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    assert_eq!(r["rows"], 8);
    assert_eq!(r["inserted"], 4);
    assert_eq!(r["duplicates"], 1);
    assert_eq!(r["rejected"], 3);
    let reasons = &r["problems"]["reasons"];
    assert_eq!(reasons["rating is not a number"], 1);
    assert_eq!(reasons["item_id is missing"], 1);
    assert_eq!(reasons["timestamp is not a time"], 1);
    let lines: Vec<&str> = r["problems"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 6", "line 7", "line 8"]);

    let rows = d.interactions();
    assert!(
        rows.iter().all(|r| !r.0.contains('@')),
        "emails are hashed on the way in"
    );
    let ana: std::collections::BTreeSet<_> =
        rows.iter().filter(|r| r.1 == "p1").map(|r| &r.0).collect();
    assert_eq!(ana.len(), 1);
    let no_type = rows.iter().find(|r| r.1 == "p4").unwrap();
    assert_eq!((no_type.4.as_str(), no_type.3), ("rating", 1_735_689_600));

    let again = d.json(&["import", "--interactions", csv.to_str().unwrap()]);
    assert_eq!(
        (again["inserted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(5))
    );
}

#[test]
fn movielens_files_import_as_public_data() {
    let d = DataDir::new();
    // ratings.csv shape (header with camelCase names) and u.data shape (tabs, no header).
    let ratings = d.path().join("ratings.csv");
    std::fs::write(&ratings, "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n2,10,4.0,835355493\n").unwrap();
    let udata = d.path().join("u.data");
    std::fs::write(&udata, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n").unwrap();
    let r = d.json(&[
        "import",
        "--interactions",
        ratings.to_str().unwrap(),
        "--source",
        "public",
    ]);
    assert_eq!(
        (r["inserted"].as_u64(), r["rejected"].as_u64()),
        (Some(3), Some(0))
    );
    // MovieLens' licence is said on every MovieLens import.
    assert!(r["warning"].as_str().unwrap().contains("GroupLens"), "{r}");
    let r = d.json(&[
        "import",
        "--interactions",
        udata.to_str().unwrap(),
        "--source",
        "public",
    ]);
    assert_eq!(
        (r["inserted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(r["warning"].as_str().unwrap().contains("commercial use"));
    let rows = d.interactions();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.5 == "public" && r.4 == "rating"));
    assert!(rows
        .iter()
        .any(|r| r.0 == "196" && r.1 == "242" && r.2 == 3.0 && r.3 == 881_250_949));
}

#[test]
fn public_data_stays_out_of_the_shops_datasets_and_exports_unless_asked() {
    let d = DataDir::new();
    let udata = d.path().join("u.data");
    std::fs::write(&udata, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n").unwrap();
    d.json(&[
        "import",
        "--interactions",
        udata.to_str().unwrap(),
        "--source",
        "public",
    ]);
    let shop = d.path().join("shop.csv");
    let mut text = String::new();
    for u in 0..5 {
        for i in 0..4 {
            text.push_str(&format!("u{u},p{i},1,{}\n", 1_790_000_000 + u * 100 + i));
        }
    }
    std::fs::write(&shop, text).unwrap();
    d.json(&["import", "--interactions", shop.to_str().unwrap()]);

    let built = d.json(&["dataset", "build"]);
    assert_eq!(built["counts"]["excluded_public"], 2, "{built}");
    assert_eq!(built["counts"]["input_rows"], 20, "{built}");
    assert_eq!(built["counts"]["by_source"].get("public"), None, "{built}");
    let exported = d.json(&["export", "--format", "csv"]);
    assert_eq!(exported["rows"], 20, "{exported}");

    // Asked for: a new version with them.
    let with = d.json(&["dataset", "build", "--include-public"]);
    assert_eq!(with["created"], true, "{with}");
    assert_eq!(with["counts"]["excluded_public"], 0, "{with}");
    assert_eq!(with["counts"]["by_source"]["public"], 2, "{with}");
}

#[test]
fn an_unknown_source_or_a_headerless_mess_is_refused_clearly() {
    let d = DataDir::new();
    let csv = d.path().join("x.csv");
    std::fs::write(&csv, "who,what,when\na,b,c\n").unwrap();
    let err = String::from_utf8(
        d.fails(&["import", "--interactions", csv.to_str().unwrap()])
            .stderr,
    )
    .unwrap();
    assert!(
        err.contains("lacks user_id, item_id, rating or timestamp"),
        "{err}"
    );
    let err = String::from_utf8(
        d.fails(&[
            "import",
            "--interactions",
            csv.to_str().unwrap(),
            "--source",
            "gossip",
        ])
        .stderr,
    )
    .unwrap();
    assert!(err.contains("unknown source"), "{err}");
}
