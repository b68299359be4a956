//! `wba sign` output checked by independent implementations: the npm `web-bot-auth` package
//! (`tests/interop/node/verify.mjs`) and the PyPI `http-message-signatures` package
//! (`tests/interop/python/wba_verify.py`).
//!
//! Without `tests/interop/node/node_modules` (run `npm ci --prefix tests/interop/node`), or a
//! Python that imports the package (`WBA_PYTHON`, else `.venv/bin/python`, else `python3`), the
//! tests skip with a message, unless `WBA_REQUIRE_INTEROP=1`, which makes them fail.
//!
//! The npm package (0.1.3) signs and verifies the whole `Signature-Agent` field for a component
//! with the `key` parameter, against RFC 9421 section 2.1.2 (pinned in
//! `filter/core/tests/interop_node.rs`), so with node only the legacy form (`--legacy-agent`)
//! interoperates. The Python package follows the RFC: both forms are checked with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../filter/core/tests/common/interop.rs"]
mod reference;

use std::path::Path;

use serde_json::{json, Value};

use common::*;
use reference::{node_available, python_available, run_node, run_python};

const URL: &str = "https://shop.example/items/42?color=blue";

/// `wba sign` output for `URL` as a verifier job.
fn job(dir: &Path, extra: &[&str]) -> Value {
    let signed = ok(run_with(
        dir,
        &["sign", "--key", "agent.jwk", "--agent", AGENT, "--url", URL],
        extra,
    ));
    let mut headers = serde_json::Map::new();
    headers.insert("host".into(), json!("shop.example"));
    for (n, v) in header_lines(&signed) {
        headers.insert(n.to_ascii_lowercase(), json!(v));
    }
    let jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("agent.pub.jwk")).unwrap()).unwrap();
    json!({"method": "GET", "url": URL, "headers": headers, "jwk": jwk})
}

fn node_verify(job: &Value) -> Value {
    run_node("verify.mjs", job)
}

fn python_verify(job: &Value) -> Value {
    run_python(&["wba_verify.py"], Some(job))
}

#[test]
fn node_verifies_wba_sign_legacy_output() {
    if !node_available() {
        return;
    }
    let dir = with_key();
    for extra in [
        &["--legacy-agent"][..],
        &[
            "--legacy-agent",
            "--component",
            "@authority",
            "--component",
            "@target-uri",
            "--random-nonce",
        ],
    ] {
        let j = job(dir.path(), extra);
        assert_eq!(node_verify(&j)["ok"], true, "{extra:?}: {j}");
        // One byte off in the path: refused.
        let mut t = j.clone();
        t["url"] = json!("https://shop.example/items/43?color=blue");
        assert_eq!(node_verify(&t)["ok"], false, "{extra:?}");
    }
}

#[test]
fn python_verifies_wba_sign_output_in_both_agent_forms() {
    if !python_available() {
        return;
    }
    let dir = with_key();
    for extra in [
        &[][..],
        &["--legacy-agent"],
        &[
            "--component",
            "@target-uri",
            "--component",
            "@query",
            "--nonce",
            "abc",
        ],
    ] {
        let j = job(dir.path(), extra);
        let out = python_verify(&j);
        assert_eq!(out["ok"], true, "{extra:?}: {out}");
        let mut t = j.clone();
        t["url"] = json!("https://shop.example/items/42?color=red");
        let covers_query = extra.contains(&"@query");
        if covers_query {
            assert_eq!(python_verify(&t)["ok"], false, "{extra:?}");
        }
        t["url"] = json!("https://shoq.example/items/42?color=blue");
        assert_eq!(python_verify(&t)["ok"], false, "{extra:?}");
    }
}
