//! `/openapi.json`: served by the real server, valid OpenAPI 3.1 (checked with
//! `openapi-spec-validator`, which `scripts/test` installs), and listing exactly
//! the routes the router declares (read from the server crate's source, so a
//! route added without its description fails here), each of which answers.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::server::Server;
use common::DataDir;
use reqwest::blocking::Client;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `(path, method)` of every `.route("path", get(..).post(..))` in `source`.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = &source[at + ".route(".len()..];
        let open = rest.find('"').unwrap();
        let close = open + 1 + rest[open + 1..].find('"').unwrap();
        let path = &rest[open + 1..close];
        // The handlers: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut end = close + 1;
        for (i, c) in rest[close + 1..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = close + 1 + i;
                break;
            }
        }
        let handlers = &rest[close + 1..end];
        for m in METHODS {
            let call = format!("{m}(");
            if handlers
                .match_indices(&call)
                .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric())
            {
                out.insert((path.to_owned(), m.to_owned()));
            }
        }
    }
    out
}

#[test]
fn the_description_is_valid_openapi_3_1_and_lists_every_route_the_server_answers() {
    let d = DataDir::new();
    let s = Server::start(&d, &[("MANIREC_ADMIN_TOKEN", "openapi-admin-token-0123")]);
    let r = Client::new().get(s.url("/openapi.json")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Exactly the router's routes.
    let routes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/routes");
    let mut declared = BTreeSet::new();
    for file in ["mod.rs", "admin.rs"] {
        declared.extend(routes_in(
            &std::fs::read_to_string(routes.join(file)).unwrap(),
        ));
    }
    assert!(declared.len() > 20, "{declared:?}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: {method} is not a method"
            );
            assert!(op["responses"].is_object(), "{method} {path}: no responses");
            // Every `{param}` of the path is declared as a path parameter.
            for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(
                    params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true),
                    "{method} {path}: path parameter {name} is not declared"
                );
            }
            documented.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(
        documented, declared,
        "the description and the router disagree"
    );

    // Each one answers (a route, not the fallback's 404 nor a 405). Admin routes
    // are asked without the token: 401, nothing runs.
    let client = Client::new();
    for (path, method) in &documented {
        let concrete = path
            .replace("{id}", "1")
            .replace("{version}", "m1")
            .replace("{item}", "p1");
        let request = match method.as_str() {
            "get" => client.get(s.url(&concrete)),
            "post" => client.post(s.url(&concrete)),
            "put" => client.put(s.url(&concrete)),
            "delete" => client.delete(s.url(&concrete)),
            other => panic!("{other}"),
        };
        let status = request.send().unwrap().status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{method} {concrete}: {status}"
        );
        if concrete.starts_with("/admin/") {
            assert_eq!(status, 401, "{method} {concrete}");
        }
    }

    // The field's validator agrees.
    let file = d.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python3 is needed to validate the OpenAPI document; see scripts/test");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
