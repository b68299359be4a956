//! Interoperability with the PyPI `http-message-signatures` package (pinned in
//! `tests/interop/python/requirements.txt`), through `tests/interop/python/wba_sign.py` (the
//! signer the end-to-end tests use) and `wba_verify.py`.
//!
//! The interpreter is `WBA_PYTHON`, else `<repo>/.venv/bin/python` when present, else `python3`.
//! When it cannot import the package the tests skip with a message, unless
//! `WBA_REQUIRE_INTEROP=1`, which makes them fail.
//!
//! The package implements the `key` parameter per RFC 9421 section 2.1.2, so both
//! `Signature-Agent` forms interoperate both ways.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use wba_filter::agent_url::AgentType;
use wba_filter::jwk::Jwk;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::sign::{sign_request, SignOptions};
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

const AGENT: &str = "https://agent.example";
const SEED: [u8; 32] = [
    0x5c, 0x0f, 0xa3, 0x71, 0xe8, 0x26, 0x9d, 0x44, 0xbb, 0x12, 0x6e, 0xf5, 0x30, 0x87, 0xc9, 0x1a,
    0x62, 0xd4, 0x0b, 0x9e, 0x37, 0xa8, 0x55, 0xf0, 0x2c, 0x81, 0x4b, 0xe6, 0x19, 0x7d, 0xc3, 0x08,
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script_dir() -> PathBuf {
    repo_root().join("tests/interop/python")
}

fn python() -> String {
    if let Ok(p) = std::env::var("WBA_PYTHON") {
        return p;
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

/// Whether the Python tests can run; panics when they must and cannot.
fn available() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let py = python();
        match Command::new(&py)
            .args([
                "-c",
                "import http_message_signatures, http_sf, cryptography",
            ])
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{py} cannot import http_message_signatures: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {py}: {e}")),
        }
    });
    match probe {
        Ok(()) => true,
        Err(e) => {
            let msg = format!(
                "{e}; create it with `python3 -m venv .venv && .venv/bin/pip install -r tests/interop/python/requirements.txt` or set WBA_PYTHON"
            );
            if std::env::var("WBA_REQUIRE_INTEROP").as_deref() == Ok("1") {
                panic!("WBA_REQUIRE_INTEROP=1: {msg}");
            }
            skip_notice(&format!("SKIPPED python interop tests: {msg}"));
            false
        }
    }
}

/// Says why a test is skipped, once per test binary, on the real stderr (the test harness
/// captures `eprintln!` of passing tests, which would hide it).
fn skip_notice(msg: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "{msg}");
    });
}

fn run(args: &[&str], stdin: Option<&Value>) -> Value {
    let py = python();
    let mut child = Command::new(&py)
        .args(args)
        .current_dir(script_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(v) = stdin {
        input.write_all(v.to_string().as_bytes()).unwrap();
    }
    drop(input);
    let out: Output = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{py} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

fn public_jwk() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key().verifying_key().as_bytes())})
}

/// A private JWK file for `wba_sign.py --jwk`.
fn jwk_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut j = public_jwk();
        j["d"] = json!(URL_SAFE_NO_PAD.encode(SEED));
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("interop-python-{}.jwk", std::process::id()));
        std::fs::write(&p, j.to_string()).unwrap();
        p
    })
    .clone()
}

fn thumbprint() -> String {
    Jwk::from_ed25519(key().verifying_key().as_bytes())
        .thumbprint()
        .unwrap()
}

fn ring() -> KeyRing {
    let k = Jwk::from_ed25519(key().verifying_key().as_bytes())
        .to_key()
        .unwrap();
    let mut r = KeyRing::default();
    r.add("Python Agent", AgentType::Directory, AGENT, vec![k]);
    r
}

fn request() -> HttpRequest {
    HttpRequest::from_parts(
        "GET",
        "https",
        "shop.example",
        "/items/42?color=blue",
        vec![
            ("host".into(), "shop.example".into()),
            ("accept".into(), "text/html".into()),
        ],
    )
}

fn set(req: &mut HttpRequest, name: &str, value: &str) {
    req.remove_header(name);
    req.add_header(name, value);
}

/// Signs `request()` with `wba_sign.py` through its CLI, with extra CLI arguments.
fn python_signed(extra: &[&str]) -> HttpRequest {
    let mut req = request();
    let url = req.target_uri();
    let jwk = jwk_file();
    let mut args = vec![
        "wba_sign.py",
        "--method",
        "GET",
        "--url",
        &url,
        "--jwk",
        jwk.to_str().unwrap(),
        "--agent",
        AGENT,
        "--header",
        "Accept: text/html",
    ];
    args.extend_from_slice(extra);
    let out = run(&args, None);
    for name in ["Signature-Agent", "Signature-Input", "Signature"] {
        let v = out[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}: {out}"));
        set(&mut req, &name.to_ascii_lowercase(), v);
    }
    let input = req.header("signature-input").unwrap();
    assert!(
        input.contains(&format!("keyid=\"{}\"", thumbprint())),
        "wba_sign.py computed another thumbprint: {input}"
    );
    assert!(input.contains("tag=\"web-bot-auth\""), "{input}");
    req
}

fn python_verifies(req: &HttpRequest) -> Result<Value, String> {
    let headers: serde_json::Map<String, Value> = req
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    let out = run(
        &["wba_verify.py"],
        Some(
            &json!({"method": req.method, "url": req.target_uri(), "headers": headers, "jwk": public_jwk()}),
        ),
    );
    match out["ok"].as_bool() {
        Some(true) => Ok(out),
        Some(false) => Err(out["error"].as_str().unwrap_or("?").to_string()),
        None => panic!("wba_verify.py: {out}"),
    }
}

fn our_signed(legacy: bool) -> HttpRequest {
    let mut req = request();
    let mut o = SignOptions::web_bot_auth(AGENT, now(), 300);
    o.legacy_agent = legacy;
    let h = sign_request(&req, &key(), &o).unwrap();
    for (n, v) in h.pairs() {
        set(&mut req, &n, &v);
    }
    req
}

fn ours(req: &HttpRequest) -> Verdict {
    verify_request(req, &Policy::default(), &ring(), now())
}

fn verdict_token(v: &Verdict) -> (Outcome, Option<&'static str>) {
    (v.outcome(), v.reason().map(|r| r.token()))
}

fn assert_ours_verified(req: &HttpRequest, label: &str, covered: &str) {
    match ours(req) {
        Verdict::Verified(v) => {
            assert_eq!(v.agent_url, AGENT);
            assert_eq!(v.key_id, thumbprint());
            assert_eq!(v.label, label);
            assert_eq!(v.covered, covered);
        }
        other => panic!("our core refused wba_sign.py's signature: {other:?}"),
    }
}

/// A named one-byte change to a signed request.
type Tamper = (&'static str, fn(&mut HttpRequest));

fn tampers() -> Vec<Tamper> {
    vec![
        ("path", |r| r.path = r.path.replacen("42", "43", 1)),
        ("authority", |r| {
            r.authority = r.authority.replacen("shop", "shoq", 1)
        }),
        ("method", |r| r.method = "PUT".into()),
        ("signature", |r| {
            let sig = r.header("signature").unwrap();
            let (label, rest) = sig.split_once('=').unwrap();
            let mut bytes = STANDARD.decode(rest.trim_matches(':')).unwrap();
            bytes[33] ^= 0x80;
            set(
                r,
                "signature",
                &format!("{label}=:{}:", STANDARD.encode(bytes)),
            );
        }),
    ]
}

#[test]
fn python_dictionary_form_verifies_in_our_core() {
    if !available() {
        return;
    }
    let req = python_signed(&[]);
    assert_eq!(
        req.header("signature-agent").as_deref(),
        Some("sig1=\"https://agent.example\"")
    );
    python_verifies(&req).unwrap();
    assert_ours_verified(
        &req,
        "sig1",
        r#"("@authority" "@method" "@path" "signature-agent";key="sig1")"#,
    );
}

#[test]
fn python_legacy_form_verifies_in_our_core() {
    if !available() {
        return;
    }
    let req = python_signed(&["--legacy", "--components", "@authority"]);
    assert_eq!(
        req.header("signature-agent").as_deref(),
        Some("\"https://agent.example\"")
    );
    python_verifies(&req).unwrap();
    assert_ours_verified(&req, "sig1", r#"("@authority" "signature-agent")"#);
}

#[test]
fn python_explicit_times_label_nonce_and_field() {
    if !available() {
        return;
    }
    let created = (now() - 5).to_string();
    let expires = (now() + 60).to_string();
    let req = python_signed(&[
        "--label",
        "bot-a",
        "--created",
        &created,
        "--expires",
        &expires,
        "--nonce",
        "bm9uY2UtMQ",
        "--components",
        "@authority,@target-uri,accept",
    ]);
    python_verifies(&req).unwrap();
    match ours(&req) {
        Verdict::Verified(v) => {
            assert_eq!(v.label, "bot-a");
            assert_eq!(v.created.to_string(), created);
            assert_eq!(v.expires.to_string(), expires);
            assert_eq!(v.nonce.as_deref(), Some("bm9uY2UtMQ"));
        }
        other => panic!("{other:?}"),
    }
    // A covered ordinary field, one byte changed.
    let mut t = req.clone();
    set(&mut t, "accept", "text/htmm");
    assert!(python_verifies(&t).is_err());
    assert_eq!(
        verdict_token(&ours(&t)),
        (Outcome::Invalid, Some("bad_signature"))
    );
}

#[test]
fn our_signatures_verify_with_python() {
    if !available() {
        return;
    }
    let req = our_signed(false);
    let out = python_verifies(&req).unwrap();
    assert_eq!(
        out["covered"],
        json!([
            "\"@authority\"",
            "\"@method\"",
            "\"@path\"",
            "\"signature-agent\";key=\"sig1\""
        ])
    );
    assert_eq!(out["parameters"]["keyid"], json!(thumbprint()));
    let req = our_signed(true);
    python_verifies(&req).unwrap();
}

#[test]
fn one_byte_tampers_fail_in_both() {
    if !available() {
        return;
    }
    for (origin, req) in [
        ("python/dictionary", python_signed(&[])),
        (
            "python/legacy",
            python_signed(&["--legacy", "--components", "@authority,@method,@path"]),
        ),
        ("ours/dictionary", our_signed(false)),
        ("ours/legacy", our_signed(true)),
    ] {
        python_verifies(&req).unwrap_or_else(|e| panic!("{origin}: untampered: {e}"));
        assert_eq!(ours(&req).outcome(), Outcome::Verified, "{origin}");
        for (what, tamper) in tampers() {
            let mut t = req.clone();
            tamper(&mut t);
            assert!(
                python_verifies(&t).is_err(),
                "{origin}/{what}: the package accepted it"
            );
            assert_eq!(
                verdict_token(&ours(&t)),
                (Outcome::Invalid, Some("bad_signature")),
                "{origin}/{what}"
            );
        }
        let mut t = req.clone();
        let agent = t.header("signature-agent").unwrap();
        set(
            &mut t,
            "signature-agent",
            &agent.replacen("agent.", "agenu.", 1),
        );
        assert!(python_verifies(&t).is_err(), "{origin}/agent");
        assert_ne!(ours(&t).outcome(), Outcome::Verified, "{origin}/agent");
    }
}
