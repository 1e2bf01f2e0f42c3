//! The dashboard's API types are generated from `web/openapi.json`; this test keeps that
//! copy equal to the document the server builds, so the UI and the API cannot drift.

use std::path::PathBuf;

const REGENERATE: &str = "UPDATE_WEB_OPENAPI=1 cargo test -p atelier-server --test openapi_web \
                          && (cd web && npm run gen:api)";

fn committed_copy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/openapi.json")
}

#[test]
fn the_dashboard_openapi_copy_matches_the_live_document() {
    let live = atelier_server::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    let path = committed_copy();
    if std::env::var_os("UPDATE_WEB_OPENAPI").is_some() {
        std::fs::write(&path, format!("{live}\n")).expect("write web/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; regenerate it with: {REGENERATE}",
            path.display()
        )
    });
    let live_value: serde_json::Value = serde_json::from_str(&live).expect("live document is JSON");
    let committed_value: serde_json::Value = serde_json::from_str(&committed).unwrap_or_else(|e| {
        panic!("web/openapi.json is not JSON ({e}); regenerate it with: {REGENERATE}")
    });
    if live_value != committed_value {
        let first_difference = first_difference(&live_value, &committed_value, "");
        panic!(
            "web/openapi.json differs from the API the server serves (first difference at {first_difference}).\n\
             Regenerate the copy and the dashboard's types with:\n    {REGENERATE}"
        );
    }
}

/// A JSON pointer to the first place where two documents differ, to make the failure readable.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) if p != q => return first_difference(p, q, &here),
                    (Some(_), None) => return format!("{here} (only in the live document)"),
                    (None, Some(_)) => return format!("{here} (only in web/openapi.json)"),
                    _ => {}
                }
            }
            at.to_owned()
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if p != q {
                    return first_difference(p, q, &format!("{at}/{i}"));
                }
            }
            format!("{at} (lengths {} and {})", x.len(), y.len())
        }
        _ => format!("{at} ({a} vs {b})"),
    }
}
