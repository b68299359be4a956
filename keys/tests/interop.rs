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
//! `filter/tests/interop_node.rs`), so with node only the legacy form (`--legacy-agent`)
//! interoperates. The Python package follows the RFC: both forms are checked with it.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use common::*;

const URL: &str = "https://shop.example/items/42?color=blue";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required() -> bool {
    std::env::var("WBA_REQUIRE_INTEROP").as_deref() == Ok("1")
}

fn skip(msg: &str) -> bool {
    if required() {
        panic!("WBA_REQUIRE_INTEROP=1: {msg}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    false
}

fn node_available() -> bool {
    if repo()
        .join("tests/interop/node/node_modules/web-bot-auth")
        .is_dir()
    {
        return true;
    }
    skip("tests/interop/node has no node_modules/web-bot-auth: run `npm ci --prefix tests/interop/node`")
}

fn python() -> String {
    if let Ok(p) = std::env::var("WBA_PYTHON") {
        return p;
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

fn python_available() -> bool {
    let py = python();
    match Command::new(&py)
        .args(["-c", "import http_message_signatures, http_sf, cryptography"])
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => skip(&format!(
            "{py} cannot import http_message_signatures ({}): `.venv/bin/pip install -r tests/interop/python/requirements.txt` or set WBA_PYTHON",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => skip(&format!("cannot run {py}: {e}")),
    }
}

/// Runs a verifier script with a JSON job on stdin and returns its JSON answer.
fn verifier(program: &str, script: &str, cwd: &Path, job: &Value) -> Value {
    let mut child = Command::new(program)
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `wba sign` output for `URL` as a verifier job.
fn job(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["sign", "--key", "agent.jwk", "--agent", AGENT, "--url", URL];
    args.extend_from_slice(extra);
    let mut headers = serde_json::Map::new();
    headers.insert("host".into(), json!("shop.example"));
    for (n, v) in header_lines(&ok(run(dir, &args))) {
        headers.insert(n.to_ascii_lowercase(), json!(v));
    }
    let jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("agent.pub.jwk")).unwrap()).unwrap();
    json!({"method": "GET", "url": URL, "headers": headers, "jwk": jwk})
}

fn node_verify(job: &Value) -> Value {
    let node = std::env::var("WBA_NODE").unwrap_or_else(|_| "node".into());
    verifier(&node, "verify.mjs", &repo().join("tests/interop/node"), job)
}

fn python_verify(job: &Value) -> Value {
    verifier(
        &python(),
        "wba_verify.py",
        &repo().join("tests/interop/python"),
        job,
    )
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
