//! The storefront widget (`data-manirec-block` in `/sdk.js`) and the answers it
//! reads (`details=1`): a real `manirec serve` on loopback over a popularity
//! model of a small shop whose catalogue has handles and pictures, a shop page
//! served by the test from another origin, and headless Chromium (Debian's
//! `chromium`, as `browser.rs`) rendering it. The page's DOM is read back, its
//! screenshot decoded, and the click's event found in the store.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::server::{item_ids, Server, Stub};
use common::{textbook_shop, DataDir};
use serde_json::Value;

/// The product pages of the test's shop: `{handle}` and `{id}`, percent-encoded.
const PRODUCT_URL: &str = "/p/{handle}?id={id}";

/// A red square, as the catalogue's picture of every end product.
const PICTURE: &str = "data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22 width=%2210%22 height=%2210%22%3E%3Crect width=%2210%22 height=%2210%22 fill=%22%23dd0000%22/%3E%3C/svg%3E";

/// The textbook shop with categories, handles (`e-a` → `cat-tee` …, base 1 →
/// `tee-1` …) and picture URLs kept by the import in each row's attributes;
/// imported, extracted, and a popularity model trained and promoted.
fn shop() -> DataDir {
    let d = DataDir::new();
    let shop = textbook_shop()
        .sql("CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT);")
        .sql("INSERT INTO categories VALUES (7, 'T-shirts'), (8, 'Mugs');")
        .sql("ALTER TABLE end_products ADD COLUMN handle TEXT;")
        .sql("UPDATE end_products SET handle = lower(replace(title, ' ', '-'));")
        .sql("ALTER TABLE base_products ADD COLUMN handle TEXT;")
        .sql("UPDATE base_products SET handle = lower(replace(title, ' ', '-'));")
        .sql("ALTER TABLE images ADD COLUMN url TEXT;")
        .sql(&format!("UPDATE images SET url = '{PICTURE}';"))
        .write_sqlite(&d.path().join("shop.db"));
    d.json(&["import", "--store", shop.to_str().unwrap()]);
    d.json(&["extract"]);
    d.json(&["dataset", "build"]);
    let trained = d.json(&["train", "--model", "popular"]);
    d.json(&[
        "models",
        "promote",
        trained["model_version"].as_str().unwrap(),
    ]);
    d
}

/// Title and handle of every product of the textbook shop.
fn catalogue() -> HashMap<&'static str, (&'static str, &'static str)> {
    HashMap::from([
        ("e-a", ("Cat tee", "cat-tee")),
        ("e-b", ("Space tee", "space-tee")),
        ("e-m", ("Cat mug", "cat-mug")),
        ("1", ("Tee 1", "tee-1")),
        ("2", ("Tee 2", "tee-2")),
        ("3", ("Tee 3", "tee-3")),
        ("10", ("Mug 1", "mug-1")),
        ("11", ("Mug 2", "mug-2")),
    ])
}

fn serve(d: &DataDir) -> Server {
    Server::start(d, &[("MANIREC_STOREFRONT_PRODUCT_URL", PRODUCT_URL)])
}

#[test]
fn details_add_title_image_price_and_link_and_a_bad_value_is_a_400() {
    let d = shop();
    let s = serve(&d);
    let catalogue = catalogue();
    for path in [
        "/v1/popular?k=4",
        "/v1/recommendations?session_id=s-1&k=4",
        "/v1/items/e-a/similar?k=4",
    ] {
        let (status, plain) = s.get_json(path);
        assert_eq!(status, 200, "{path}: {plain}");
        // Without details (or with details=0/false) items are exactly as before.
        for off in ["", "&details=0", "&details=false"] {
            let (_, answer) = s.get_json(&format!("{path}{off}"));
            assert_eq!(item_ids(&answer), item_ids(&plain), "{path}{off}");
            for item in answer["items"].as_array().unwrap() {
                let keys: Vec<&str> = item
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|k| k.as_str())
                    .collect();
                assert_eq!(keys, ["item_id", "score"], "{path}{off}: {item}");
            }
        }
        for on in ["&details=1", "&details=true"] {
            let (status, answer) = s.get_json(&format!("{path}{on}"));
            assert_eq!(status, 200, "{path}{on}: {answer}");
            assert_eq!(item_ids(&answer), item_ids(&plain), "{path}{on}");
            assert!(answer["request_id"].as_str().unwrap().starts_with("r-"));
            let items = answer["items"].as_array().unwrap();
            assert!(!items.is_empty(), "{path}: {answer}");
            for item in items {
                let id = item["item_id"].as_str().unwrap();
                let (title, handle) = catalogue[id];
                assert_eq!(item["title"], title, "{item}");
                assert_eq!(item["url"], format!("/p/{handle}?id={id}"), "{item}");
                assert!(item["price"].as_f64().unwrap() > 0.0, "{item}");
                // End products have pictures; base products have none, and say nothing.
                if id.starts_with("e-") {
                    assert_eq!(item["image"], PICTURE, "{item}");
                } else {
                    assert!(item.get("image").is_none(), "{item}");
                }
            }
        }
        for bad in ["2", "yes", "", "TRUE"] {
            let (status, err) = s.get_json(&format!("{path}&details={bad}"));
            assert_eq!(status, 400, "{path}&details={bad}: {err}");
            assert_eq!(err["error"]["code"], "invalid_details", "{err}");
            assert!(err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("details"));
        }
    }
}

/// Runs headless Chromium on `url` with `extra` flags and returns its stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = common::browser::chromium(profile.path())
        .args([
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=800,600",
            "--virtual-time-budget=10000",
        ])
        .args(extra)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The screenshot of `url` as rows of RGB pixels.
fn screenshot(url: &str) -> Vec<Vec<[u8; 3]>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shot.png");
    chromium(url, &[&format!("--screenshot={}", path.display())]);
    let file = std::fs::File::open(&path).expect("chromium wrote no screenshot");
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let (w, h) = (info.width as usize, info.height as usize);
    assert_eq!((w, h), (800, 600));
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| {
                    let p = &buf[(y * w + x) * channels..];
                    [p[0], p[1], p[2]]
                })
                .collect()
        })
        .collect()
}

/// Pixels of rows `rows` that are not the page's white, and those that are the pictures' red.
fn ink(shot: &[Vec<[u8; 3]>], rows: std::ops::Range<usize>) -> (usize, usize) {
    let mut inked = 0;
    let mut red = 0;
    for row in &shot[rows] {
        for p in row {
            if p.iter().any(|c| *c < 235) {
                inked += 1;
            }
            if p[0] > 180 && p[1] < 60 && p[2] < 60 {
                red += 1;
            }
        }
    }
    (inked, red)
}

/// The shop's page: its own headline (a dark band at the top), a popular block
/// of `k` cards in rows 100–400, and a block whose `k` the server refuses
/// (its own fallback content stays). Errors reaching `window` are written on
/// `<html data-errors>`.
fn page(manirec: &str, k: usize, script: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8">
        <script>
          function note(m) {{ var h = document.documentElement; h.setAttribute("data-errors", (h.getAttribute("data-errors") || "") + m + ";"); }}
          window.addEventListener("error", function (e) {{ note("error " + e.message); }});
          window.addEventListener("unhandledrejection", function (e) {{ note("rejection " + e.reason); }});
        </script>
        <style>
          body {{ margin: 0; background: #fff; font: 16px sans-serif; }}
          #own {{ height: 60px; margin: 0; background: #123; color: #fff; }}
          #recs {{ position: absolute; top: 100px; left: 0; width: 800px; height: 300px; overflow: hidden; }}
          #refused {{ position: absolute; top: 450px; left: 0; }}
        </style></head><body>
        <h1 id="own">Our own shop</h1>
        <div id="recs" data-manirec-block="popular" data-k="{k}"></div>
        <div id="refused" data-manirec-block="popular" data-k="0"><p id="fallback">Bestsellers</p></div>
        <script src="{manirec}/sdk.js" data-endpoint="{manirec}"></script>
        <script>{script}</script>
        </body></html>"#
    )
}

/// `href="…"` values of the cards in a dumped DOM, with their titles.
fn cards(dom: &str) -> Vec<(String, String, String)> {
    dom.split("class=\"manirec-card\"")
        .skip(1)
        .map(|card| {
            let attr = |name: &str| {
                let at = card
                    .find(&format!("{name}=\""))
                    .unwrap_or_else(|| panic!("no {name}: {card}"));
                let rest = &card[at + name.len() + 2..];
                rest[..rest.find('"').unwrap()].replace("&amp;", "&")
            };
            let title = card
                .split("class=\"manirec-card-title\"")
                .nth(1)
                .and_then(|t| t.split('>').nth(1))
                .and_then(|t| t.split('<').next())
                .unwrap_or_default()
                .to_owned();
            (attr("data-manirec-product"), attr("href"), title)
        })
        .collect()
}

#[test]
fn a_block_renders_cards_from_the_catalogue_and_a_click_is_attributed() {
    let d = shop();
    let s = serve(&d);
    let manirec = s.base.clone();
    let k = 3;
    let popular = item_ids(&s.get_json(&format!("/v1/popular?k={k}")).1);
    assert_eq!(popular.len(), k);
    let view = page(&manirec, k, "");
    // After the cards render, the first one is clicked: the SDK records a
    // rec_click and the browser follows the link to the product page, whose
    // page-hide flush sends the batch.
    let click = page(
        &manirec,
        k,
        r##"document.getElementById("recs").addEventListener("manirec:render", function (e) {
             setTimeout(function () { document.querySelector("#recs .manirec-card").click(); }, 300);
           });"##,
    );
    // Cards drawn by the page: the global hook, and a block's own template.
    let hook = format!(
        r##"<!doctype html><html><body>
        <div id="hooked" data-manirec-block="popular" data-k="2"></div>
        <div id="foryou" data-manirec-block="for-you" data-k="2"></div>
        <div id="templated" data-manirec-block="popular" data-k="2"><template data-manirec-card><a class="mine" href="{{{{url}}}}"><b>{{{{title}}}}</b> <i>{{{{price}}}}</i></a></template></div>
        <script src="{manirec}/sdk.js" data-endpoint="{manirec}"></script>
        <script>manirec.renderCard = function (item) {{ return '<p class="hooked">' + item.title.toUpperCase() + '</p>'; }};</script>
        </body></html>"##
    );
    let shop = Stub::start(move |seen| {
        if seen.target.starts_with("/hook") {
            (200, hook.clone())
        } else if seen.target.starts_with("/p/") {
            (200, "<!doctype html><p>a product page</p>".to_owned())
        } else if seen.target.contains("click") {
            (200, click.clone())
        } else {
            (200, view.clone())
        }
    });

    // The DOM: k cards in the popular order, titles and links from the catalogue.
    let dom = chromium(&format!("{}/view.html", shop.base), &["--dump-dom"]);
    assert!(
        !dom.contains("data-errors=\""),
        "errors reached the page: {dom}"
    );
    let catalogue = catalogue();
    let rendered = cards(&dom);
    assert_eq!(rendered.len(), k, "{dom}");
    for ((id, href, title), expected) in rendered.iter().zip(&popular) {
        assert_eq!(id, expected);
        let (t, handle) = catalogue[id.as_str()];
        assert_eq!(title, t, "{dom}");
        assert_eq!(href, &format!("/p/{handle}?id={id}"));
    }
    assert!(dom.contains(r#"data-manirec-state="rendered""#), "{dom}");
    // The refused block (k=0 is a 400) keeps the shop's own content, no card.
    assert!(
        dom.contains(r#"data-manirec-state="failed"><p id="fallback">Bestsellers</p>"#),
        "{dom}"
    );
    assert!(dom.contains("Our own shop"));

    // The page's own cards: the hook's for the plain block, the template's for its block.
    let dom = chromium(&format!("{}/hook.html", shop.base), &["--dump-dom"]);
    let first = popular[0].as_str();
    let upper = catalogue[first].0.to_uppercase();
    assert!(
        dom.contains(&format!(
            r#"<p class="hooked" data-manirec-product="{first}" data-manirec-request="r-"#
        )) && dom.contains(&format!(">{upper}</p>")),
        "{dom}"
    );
    for id in &popular[..2] {
        let (title, handle) = catalogue[id.as_str()];
        assert!(
            dom.contains(&format!(
                r#"<a class="mine" href="/p/{handle}?id={id}" data-manirec-product="{id}""#
            )) && dom.contains(&format!("<b>{title}</b>")),
            "{dom}"
        );
    }
    assert!(dom.contains(r#"<template data-manirec-card="">"#), "{dom}");
    assert!(!dom.contains(r#"class="manirec-card""#), "{dom}");
    // for-you asks with the SDK's session id (a fresh visitor: answered all the
    // same), with details: the hook drew its cards.
    assert!(
        dom.contains(&format!(
            r#"<p class="hooked" data-manirec-product="{first}" data-manirec-request="r-"#
        ))
        .then(|| dom
            .matches(r#"<p class="hooked" data-manirec-product="#)
            .count())
            == Some(4),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<div id="foryou" data-manirec-block="for-you" data-k="2" data-manirec-state="rendered""#),
        "{dom}"
    );

    // The screenshot: the block's region holds ink and the pictures' red.
    let shot = screenshot(&format!("{}/view.html", shop.base));
    let (inked, red) = ink(&shot, 100..400);
    assert!(
        inked > 2_000,
        "the block's region is blank ({inked} inked pixels)"
    );
    assert!(red > 1_000, "no picture rendered ({red} red pixels)");
    let (headline, _) = ink(&shot, 0..60);
    assert!(headline > 20_000, "the page's own headline is missing");

    // A click on a card: a rec_click with the answer's request id, which the
    // server logged (so attribution counts it), beside the block's impressions.
    let profile = tempfile::tempdir().unwrap();
    let mut browser = common::browser::chromium(profile.path())
        .arg("--window-size=800,600")
        .arg(format!("{}/click.html", shop.base))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let events: Vec<(String, String, Option<String>)> = loop {
        let events: Vec<(String, String, Option<String>)> = d
            .db()
            .prepare("SELECT event_type, product_id, request_id FROM behavior_events ORDER BY seq")
            .unwrap()
            .query_map(&[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if events.iter().any(|e| e.0 == "rec_click") || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = browser.kill();
    let _ = browser.wait();
    let clicks: Vec<_> = events.iter().filter(|e| e.0 == "rec_click").collect();
    assert_eq!(clicks.len(), 1, "{events:?}");
    assert_eq!(clicks[0].1, popular[0], "{events:?}");
    let request = clicks[0]
        .2
        .clone()
        .expect("a rec_click carries its request id");
    let mut shown: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "rec_impression" && e.2.as_deref() == Some(&request))
        .map(|e| e.1.as_str())
        .collect();
    shown.sort();
    let mut expected: Vec<&str> = popular.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(shown, expected, "{events:?}");
    // The answer the click belongs to is in the recommendation log (written in batches).
    let deadline = Instant::now() + Duration::from_secs(15);
    let logged = loop {
        let (n, items): (i64, Option<String>) = d
            .db()
            .query_row(
                "SELECT COUNT(*), MAX(items) FROM recommendation_log WHERE request_id = ?1 AND endpoint = 'popular'",
                &[request.clone().into()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if n == 1 || Instant::now() > deadline {
            break (n, items);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(logged.0, 1, "the clicked answer {request} was not logged");
    let items: Value = serde_json::from_str(&logged.1.unwrap()).unwrap();
    assert_eq!(items[0], popular[0].as_str());
}

#[test]
fn with_manirec_down_the_page_keeps_its_own_content_and_shows_no_card() {
    let d = shop();
    let mut s = serve(&d);
    let manirec = s.base.clone();
    s.stop();
    // The SDK itself cannot load either: the page must not care. A second page
    // loads the SDK from a running server whose recommendations then fail.
    let view = page(&manirec, 4, "");
    let shop = Stub::start(move |_| (200, view.clone()));
    let dom = chromium(&format!("{}/view.html", shop.base), &["--dump-dom"]);
    assert!(dom.contains("Our own shop"), "{dom}");
    assert!(dom.contains(r#"<p id="fallback">Bestsellers</p>"#), "{dom}");
    assert!(!dom.contains(r#"class="manirec-card""#), "{dom}");
    assert!(
        !dom.contains("data-errors=\""),
        "errors reached the page: {dom}"
    );
    let shot = screenshot(&format!("{}/view.html", shop.base));
    let (inked, _) = ink(&shot, 100..400);
    assert_eq!(inked, 0, "something rendered where the block is");
    assert!(
        ink(&shot, 0..60).0 > 20_000,
        "the page's own headline is missing"
    );

    // The SDK loaded, then the server goes away before the block asks: the
    // fetch fails inside the SDK, nothing escapes to the page.
    let s2 = serve(&d);
    let sdk = reqwest::blocking::get(s2.url("/sdk.js"))
        .unwrap()
        .text()
        .unwrap();
    drop(s2);
    let inline = page(&manirec, 4, "").replace(
        &format!(r#"<script src="{manirec}/sdk.js" data-endpoint="{manirec}"></script>"#),
        &format!(
            r#"<script data-endpoint="{manirec}">{}</script>"#,
            sdk.replace("</script", "<\\/script")
        ),
    );
    assert!(inline.contains("manirec storefront SDK"));
    let shop = Stub::start(move |_| (200, inline.clone()));
    let dom = chromium(&format!("{}/inline.html", shop.base), &["--dump-dom"]);
    assert!(dom.contains(r#"data-manirec-state="failed""#), "{dom}");
    assert!(!dom.contains(r#"class="manirec-card""#), "{dom}");
    assert!(dom.contains(r#"<p id="fallback">Bestsellers</p>"#), "{dom}");
    assert!(
        !dom.contains("data-errors=\""),
        "errors reached the page: {dom}"
    );
}
