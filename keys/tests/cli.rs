//! The `wba` binary, command by command, including its refusals. Every signature it makes is
//! checked with the verifier core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::Output;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wba_filter::agent_url::DIRECTORY_PATH;
use wba_filter::directory::KidRule;
use wba_filter::directory::{
    parse_key_set, verify_directory_response, ProofError, DIRECTORY_MEDIA_TYPE,
};
use wba_filter::policy::Policy;
use wba_filter::request::{HttpRequest, HttpResponse};
use wba_filter::verdict::Verdict;
use wba_filter::verify::verify_request;

use common::*;

const VECTOR_TP: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap()
}

/// The thumbprint of an Ed25519 JWK computed here, without the core (RFC 7638 section 3).
fn independent_thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// What `wba thumbprint <file>` prints, trimmed.
fn thumbprint(dir: &Path, file: &str) -> String {
    ok(run(dir, &["thumbprint", file])).trim().to_string()
}

// ---- generate ----

#[test]
fn generate_writes_three_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["generate", "--out", "agent"]);
    let out = ok(o);
    let mut lines = out.lines();
    let jwk: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let tp = lines
        .next()
        .unwrap()
        .strip_prefix("thumbprint: ")
        .unwrap()
        .to_string();
    assert!(jwk.get("d").is_none(), "printed a private key: {jwk}");
    assert_eq!(jwk["kid"], tp.as_str());
    assert_eq!(independent_thumbprint(jwk["x"].as_str().unwrap()), tp);
    for f in ["agent.jwk", "agent.pem", "agent.pub.jwk"] {
        assert!(dir.path().join(f).is_file(), "{f}");
        // Every file has the same thumbprint.
        assert_eq!(thumbprint(dir.path(), f), tp, "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["agent.jwk", "agent.pem"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    let private: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("agent.jwk")).unwrap())
            .unwrap();
    assert!(private["d"].is_string());
    let public_file = std::fs::read_to_string(dir.path().join("agent.pub.jwk")).unwrap();
    assert!(!public_file.contains("\"d\""));
    assert!(std::fs::read_to_string(dir.path().join("agent.pem"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));

    // Again: refused, nothing changed.
    let before = std::fs::read(dir.path().join("agent.jwk")).unwrap();
    fails(
        run(dir.path(), &["generate", "--out", "agent"]),
        1,
        "already exists: refusing to overwrite",
    );
    assert_eq!(std::fs::read(dir.path().join("agent.jwk")).unwrap(), before);
    // Even when only one of the three files is in the way.
    std::fs::write(dir.path().join("other.pub.jwk"), "x").unwrap();
    fails(
        run(dir.path(), &["generate", "--out", "other"]),
        1,
        "other.pub.jwk already exists",
    );
    assert!(!dir.path().join("other.jwk").exists());
    // Into a directory that does not exist.
    fails(
        run(dir.path(), &["generate", "--out", "no/such/dir/agent"]),
        1,
        "cannot write",
    );
}

// ---- thumbprint ----

#[test]
fn thumbprint_of_every_key_form() {
    let dir = tempfile::tempdir().unwrap();
    let v = vectors();
    let k = &v["keys"]["test-key-ed25519"];
    std::fs::write(dir.path().join("pub.jwk"), k["public_jwk"].to_string()).unwrap();
    std::fs::write(dir.path().join("priv.jwk"), k["private_jwk"].to_string()).unwrap();
    std::fs::write(
        dir.path().join("pub.pem"),
        k["public_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("priv.pem"),
        k["private_pem"].as_str().unwrap(),
    )
    .unwrap();
    for f in ["pub.jwk", "priv.jwk", "pub.pem", "priv.pem"] {
        assert_eq!(thumbprint(dir.path(), f), VECTOR_TP, "{f}");
    }
    // RFC 7638 section 3.1 (RSA) and an EC public key: the core's canonical members. (A public
    // key is fingerprinted as it is; a private JWK must be a usable private key.)
    std::fs::write(dir.path().join("rsa.jwk"), r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
    assert_eq!(
        thumbprint(dir.path(), "rsa.jwk"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    std::fs::write(
        dir.path().join("ec.jwk"),
        r#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#,
    )
    .unwrap();
    let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(
        br#"{"crv":"P-256","kty":"EC","x":"a","y":"b"}"#,
    ));
    assert_eq!(thumbprint(dir.path(), "ec.jwk"), expected);
    // Several files: one line each, named.
    let out = ok(run(dir.path(), &["thumbprint", "pub.jwk", "rsa.jwk"]));
    assert_eq!(out.lines().count(), 2);
    assert!(out.starts_with(&format!("{VECTOR_TP}  pub.jwk\n")), "{out}");
}

#[test]
fn thumbprint_refuses_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("empty.jwk", "", "is empty"),
        ("text.jwk", "hello", "neither a JWK"),
        ("broken.jwk", "{\"kty\":", "not valid JSON"),
        (
            "nocrv.jwk",
            r#"{"kty":"OKP","x":"AAAA"}"#,
            "lacks the \"crv\" member",
        ),
        (
            "short.jwk",
            r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#,
            "32 bytes",
        ),
        ("set.json", r#"{"keys":[]}"#, "key set"),
        (
            "dsa.pem",
            "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n",
            "not supported",
        ),
        (
            "rsa.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "not a PKCS#1 RSA private key",
        ),
        (
            "ec.jwk",
            r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}"#,
            "invalid key",
        ),
    ];
    for (name, text, needle) in cases {
        std::fs::write(dir.path().join(name), text).unwrap();
        fails(run(dir.path(), &["thumbprint", name]), 1, needle);
    }
    fails(
        run(dir.path(), &["thumbprint", "missing.jwk"]),
        1,
        "cannot read missing.jwk",
    );
    // clap: a usage error.
    fails(run(dir.path(), &["thumbprint"]), 2, "required");
}

// ---- directory ----

#[test]
fn directory_lists_public_keys_with_thumbprint_kids() {
    let dir = with_key();
    ok(run(dir.path(), &["generate", "--out", "second"]));
    let out = ok(run(
        dir.path(),
        &["directory", "agent.jwk", "agent.pem", "second.pub.jwk"],
    ));
    assert!(!out.contains("\"d\""), "{out}");
    // Independently: a JWK Set of two Ed25519 keys, each kid its thumbprint.
    let v: Value = serde_json::from_str(&out).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "agent.jwk and agent.pem are one key: {out}");
    for k in keys {
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        let x = k["x"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);
        assert_eq!(k["kid"].as_str().unwrap(), independent_thumbprint(x));
    }
    // And as the core parses a fetched directory.
    assert_eq!(
        parse_key_set(out.trim().as_bytes(), KidRule::Thumbprint, 32)
            .unwrap()
            .keys
            .len(),
        2
    );
    let pretty = ok(run(dir.path(), &["directory", "--pretty", "agent.pub.jwk"]));
    assert!(pretty.contains("\n  \"keys\": ["), "{pretty}");

    std::fs::write(dir.path().join("bad.jwk"), "{}").unwrap();
    fails(
        run(dir.path(), &["directory", "agent.jwk", "bad.jwk"]),
        1,
        "bad.jwk: the JWK lacks the \"kty\" member",
    );
    fails(run(dir.path(), &["directory"]), 2, "required");
}

// ---- serve ----

fn fetch(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut req = agent.get(url).set("User-Agent", "wba-test/1");
    for (n, v) in headers {
        req = req.set(n, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let mut hs = Vec::new();
    for n in resp.headers_names() {
        for v in resp.all(&n) {
            hs.push((n.clone(), v.to_string()));
        }
    }
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    (status, hs, body)
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn proofs(
    authority: &str,
    hs: &[(String, String)],
    body: &[u8],
) -> Vec<Result<String, ProofError>> {
    let request = HttpRequest::from_parts("GET", "https", authority, DIRECTORY_PATH, vec![]);
    let response = HttpResponse {
        status: 200,
        headers: hs.to_vec(),
    };
    let listed = parse_key_set(body, KidRule::Thumbprint, 32).unwrap().keys;
    verify_directory_response(&request, &response, body, &listed, now(), 60)
        .into_iter()
        .map(|c| c.result.map(|()| c.keyid.unwrap_or_default()))
        .collect()
}

#[test]
fn serve_publishes_a_signed_cacheable_directory() {
    let dir = with_key();
    ok(run(dir.path(), &["generate", "--out", "second"]));
    let tp = thumbprint(dir.path(), "agent.jwk");
    let tp2 = thumbprint(dir.path(), "second.pem");
    let server = Served::start(
        dir.path(),
        &[
            "--key",
            "agent.jwk",
            "--key",
            "second.pem",
            "--port",
            "0",
            "--max-age",
            "120",
        ],
    );
    assert!(
        server.authority.starts_with("127.0.0.1:"),
        "loopback by default: {}",
        server.base
    );
    let url = server.url(DIRECTORY_PATH);
    let (status, hs, body) = fetch(&url, &[("Accept", DIRECTORY_MEDIA_TYPE)]);
    assert_eq!(status, 200);
    assert_eq!(header(&hs, "content-type"), Some(DIRECTORY_MEDIA_TYPE));
    assert_eq!(header(&hs, "cache-control"), Some("max-age=120"));
    let etag = header(&hs, "etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(header(&hs, "content-digest")
        .unwrap()
        .starts_with("sha-256=:"));

    // Independently a JWK Set: both keys, kid = thumbprint, no private members.
    let v: Value = serde_json::from_slice(&body).unwrap();
    let kids: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [tp.as_str(), tp2.as_str()]);
    for k in v["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none());
        assert_eq!(
            k["kid"].as_str().unwrap(),
            independent_thumbprint(k["x"].as_str().unwrap())
        );
    }

    // One possession proof per key, each verified by the core, bound to the authority fetched.
    let input = header(&hs, "signature-input").unwrap();
    assert_eq!(
        input
            .matches("tag=\"http-message-signatures-directory\"")
            .count(),
        2,
        "{input}"
    );
    assert!(
        input.contains("(\"@authority\";req \"content-digest\")"),
        "{input}"
    );
    assert_eq!(
        proofs(&server.authority, &hs, &body),
        vec![Ok(tp.clone()), Ok(tp2.clone())]
    );
    assert!(proofs("evil.example", &hs, &body)
        .iter()
        .all(|r| *r == Err(ProofError::BadSignature)));

    // Conditional GET.
    let (status, hs304, body304) = fetch(&url, &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    assert!(body304.is_empty());
    assert_eq!(header(&hs304, "etag"), Some(etag.as_str()));
    let (status, _, _) = fetch(&url, &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(status, 200);

    // Anything else is 404; only GET and HEAD.
    let (status, _, _) = fetch(&server.url("/"), &[]);
    assert_eq!(status, 404);
    let resp = ureq::post(&url).call();
    assert!(matches!(resp, Err(ureq::Error::Status(405, _))));

    let log = server.stop();
    assert!(
        log.contains(&format!(
            "GET {DIRECTORY_PATH} 200 user-agent=\"wba-test/1\""
        )),
        "{log}"
    );
    assert!(log.contains(&format!("GET {DIRECTORY_PATH} 304")), "{log}");
    assert!(log.contains("GET / 404"), "{log}");
}

#[test]
fn serve_a_directory_file_reread_on_every_request() {
    let dir = with_key();
    ok(run(dir.path(), &["generate", "--out", "next"]));
    let tp = thumbprint(dir.path(), "agent.jwk");
    let tp_next = thumbprint(dir.path(), "next.jwk");
    let file = dir.path().join("directory.json");
    std::fs::write(&file, ok(run(dir.path(), &["directory", "agent.pub.jwk"]))).unwrap();
    let server = Served::start(
        dir.path(),
        &[
            "--directory",
            "directory.json",
            "--key",
            "agent.jwk",
            "--bind",
            "127.0.0.1:0",
        ],
    );
    let url = server.url(DIRECTORY_PATH);
    let (status, hs, body) = fetch(&url, &[]);
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(&file).unwrap());
    assert_eq!(proofs(&server.authority, &hs, &body), vec![Ok(tp.clone())]);
    let etag = header(&hs, "etag").unwrap().to_string();

    // Rotate: the file now lists the next key only.
    std::fs::write(&file, ok(run(dir.path(), &["directory", "next.pub.jwk"]))).unwrap();
    let (status, hs, body) = fetch(&url, &[("If-None-Match", &etag)]);
    assert_eq!(status, 200, "the old ETag no longer matches");
    assert_ne!(header(&hs, "etag"), Some(etag.as_str()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["keys"][0]["kid"], tp_next.as_str());
    // The agent key still signs, but the directory no longer lists it.
    assert_eq!(
        proofs(&server.authority, &hs, &body),
        vec![Err(ProofError::UnknownKey(tp))]
    );

    // An unreadable file: 500, and the server keeps going.
    std::fs::remove_file(&file).unwrap();
    let (status, _, body) = fetch(&url, &[]);
    assert_eq!(status, 500);
    assert!(String::from_utf8_lossy(&body).contains("cannot read"));
    std::fs::write(&file, ok(run(dir.path(), &["directory", "next.pub.jwk"]))).unwrap();
    assert_eq!(fetch(&url, &[]).0, 200);
    drop(server);
}

#[test]
fn serve_refusals() {
    let dir = with_key();
    fails(run(dir.path(), &["serve", "--port", "0"]), 2, "required");
    fails(
        run(
            dir.path(),
            &["serve", "--key", "agent.pub.jwk", "--port", "0"],
        ),
        1,
        "holds a public key; signing needs the private key",
    );
    fails(
        run(dir.path(), &["serve", "--key", "nope.jwk", "--port", "0"]),
        1,
        "cannot read nope.jwk",
    );
    fails(
        run(
            dir.path(),
            &[
                "serve",
                "--key",
                "agent.jwk",
                "--bind",
                "127.0.0.1:0",
                "--port",
                "1",
            ],
        ),
        1,
        "already names a port",
    );
    // The port is taken.
    let server = Served::start(dir.path(), &["--key", "agent.jwk", "--port", "0"]);
    let port = server.authority.rsplit(':').next().unwrap().to_string();
    fails(
        run(
            dir.path(),
            &["serve", "--key", "agent.jwk", "--port", &port],
        ),
        1,
        "cannot listen on 127.0.0.1:",
    );
}

// ---- sign ----

const URL: &str = "https://shop.example/items/42?color=blue";

/// `wba sign --key <key> --agent AGENT --url <url> <extra...>`.
fn sign_with(dir: &Path, key: &str, url: &str, extra: &[&str]) -> Output {
    run_with(
        dir,
        &["sign", "--key", key, "--agent", AGENT, "--url", url],
        extra,
    )
}

/// What `wba sign` prints for `URL` with `agent.jwk`.
fn sign(dir: &Path, extra: &[&str]) -> String {
    ok(sign_with(dir, "agent.jwk", URL, extra))
}

fn verify_signed(dir: &Path, method: &str, headers: &[(String, String)]) -> Verdict {
    let req = request_with(method, "shop.example", "/items/42?color=blue", headers);
    verify_request(
        &req,
        &Policy::default(),
        &ring(public_key(dir, "agent.pub.jwk")),
        now(),
    )
}

#[test]
fn sign_output_verifies_with_the_core() {
    let dir = with_key();
    let tp = thumbprint(dir.path(), "agent.jwk");
    let out = sign(dir.path(), &[]);
    let hs = header_lines(&out);
    let names: Vec<&str> = hs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Signature-Agent", "Signature-Input", "Signature"]);
    assert_eq!(hs[0].1, format!("sig1=\"{AGENT}\""));
    assert!(hs[1].1.starts_with(
        "sig1=(\"@authority\" \"@method\" \"@path\" \"signature-agent\";key=\"sig1\");created="
    ));
    match verify_signed(dir.path(), "GET", &hs) {
        Verdict::Verified(v) => {
            assert_eq!(v.key_id, tp);
            assert_eq!(v.agent_url, AGENT);
        }
        other => panic!("{other:?}\n{out}"),
    }
    // The PEM signs the same way.
    let out = ok(sign_with(dir.path(), "agent.pem", URL, &[]));
    assert!(matches!(
        verify_signed(dir.path(), "GET", &header_lines(&out)),
        Verdict::Verified(_)
    ));
    // Signed for GET, sent as POST: refused.
    assert_eq!(
        verify_signed(dir.path(), "POST", &hs)
            .reason()
            .map(|r| r.token()),
        Some("bad_signature")
    );
}

#[test]
fn sign_options() {
    let dir = with_key();
    let t = now();
    let created = t.to_string();
    let expires = (t + 60).to_string();
    let out = sign(
        dir.path(),
        &[
            "--legacy-agent",
            "--method",
            "post",
            "--component",
            "@target-uri",
            "--component",
            "content-type",
            "-H",
            "Content-Type: application/json",
            "--created",
            &created,
            "--expires",
            &expires,
            "--nonce",
            "n-1",
            "--label",
            "bot",
        ],
    );
    let hs = header_lines(&out);
    assert_eq!(hs[0].1, format!("\"{AGENT}\""));
    assert_eq!(
        hs[1].1,
        format!(
            "bot=(\"@target-uri\" \"content-type\" \"signature-agent\");created={created};expires={expires};keyid=\"{}\";alg=\"ed25519\";nonce=\"n-1\";tag=\"web-bot-auth\"",
            thumbprint(dir.path(), "agent.jwk")
        )
    );
    let mut with_ct = hs.clone();
    with_ct.push(("content-type".into(), "application/json".into()));
    assert!(matches!(
        verify_signed(dir.path(), "POST", &with_ct),
        Verdict::Verified(_)
    ));
    // The covered content-type changed: refused.
    with_ct.pop();
    with_ct.push(("content-type".into(), "text/plain".into()));
    assert_eq!(
        verify_signed(dir.path(), "POST", &with_ct)
            .reason()
            .map(|r| r.token()),
        Some("bad_signature")
    );
    // A random nonce differs each time.
    let a = sign(dir.path(), &["--random-nonce"]);
    let b = sign(dir.path(), &["--random-nonce"]);
    assert!(a.contains(";nonce=\""));
    assert_ne!(header_lines(&a)[1], header_lines(&b)[1]);
    // --validity sets expires - created.
    let v = sign(dir.path(), &["--created", "1000", "--validity", "30"]);
    assert!(v.contains("created=1000;expires=1030;"), "{v}");
}

#[test]
fn sign_curl_sends_the_signed_request() {
    let dir = with_key();
    let out = sign(dir.path(), &["--curl", "-H", "Accept: text/html"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("curl 'https://shop.example/items/42?color=blue' \\")
    );
    let hs: Vec<(String, String)> = lines
        .map(|l| {
            let v = l.trim().trim_end_matches(" \\");
            let v = v.strip_prefix("-H '").unwrap().strip_suffix('\'').unwrap();
            let (n, v) = v.split_once(": ").unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(hs[0], ("Accept".to_string(), "text/html".to_string()));
    assert!(matches!(
        verify_signed(dir.path(), "GET", &hs[1..]),
        Verdict::Verified(_)
    ));
    let post = sign(dir.path(), &["--curl", "-X", "DELETE"]);
    assert!(
        post.starts_with("curl -X DELETE 'https://shop.example/"),
        "{post}"
    );
}

#[test]
fn sign_print_base() {
    let dir = with_key();
    let o = sign_with(
        dir.path(),
        "agent.jwk",
        "https://shop.example/x",
        &["--print-base"],
    );
    let err = stderr(&o);
    assert!(
        err.contains("\"@authority\": shop.example\n\"@method\": GET\n\"@path\": /x\n"),
        "{err}"
    );
    ok(o);
}

/// `wba generate --alg` for the two other algorithms; `wba sign` with each key (JWK and PEM)
/// signs with the key's algorithm, and the core verifies.
#[test]
fn generate_and_sign_with_each_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, kty) in [("ecdsa-p256-sha256", "EC"), ("rsa-pss-sha512", "RSA")] {
        let out = ok(run(dir.path(), &["generate", "--out", alg, "--alg", alg]));
        let jwk: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(jwk["kty"], kty, "{out}");
        assert!(jwk.get("d").is_none(), "printed a private key: {jwk}");
        for file in [format!("{alg}.jwk"), format!("{alg}.pem")] {
            let hs = header_lines(&ok(sign_with(dir.path(), &file, URL, &[])));
            assert!(hs[1].1.contains(&format!("alg=\"{alg}\"")), "{hs:?}");
            let req = request_with("GET", "shop.example", "/items/42?color=blue", &hs);
            let public = public_key(dir.path(), &format!("{alg}.pub.jwk"));
            let v = verify_request(&req, &Policy::default(), &ring(public), now());
            assert!(matches!(v, Verdict::Verified(_)), "{alg} {file}: {v:?}");
        }
    }
    fails(
        run(
            dir.path(),
            &["generate", "--out", "x", "--alg", "hmac-sha256"],
        ),
        2,
        "is not one of",
    );
    fails(
        run(
            dir.path(),
            &[
                "generate",
                "--out",
                "y",
                "--alg",
                "rsa-pss-sha512",
                "--bits",
                "1024",
            ],
        ),
        1,
        "--bits 1024",
    );
}

#[test]
fn sign_refusals() {
    let dir = with_key();
    let base = ["sign", "--agent", AGENT, "--url", "https://shop.example/"];
    let with = |extra: &[&str]| run_with(dir.path(), &base, extra);
    fails(
        with(&["--key", "agent.pub.jwk"]),
        1,
        "signing needs the private key",
    );
    fails(
        with(&["--key", "missing.pem"]),
        1,
        "cannot read missing.pem",
    );
    fails(
        with(&["--key", "agent.jwk", "--component", "@bogus"]),
        1,
        "cannot sign the request",
    );
    fails(
        with(&["--key", "agent.jwk", "-H", "no colon here"]),
        1,
        "is not `name: value`",
    );
    fails(
        with(&["--key", "agent.jwk", "--label", "Not A Label"]),
        1,
        "not a valid label",
    );
    fails(
        with(&["--key", "agent.jwk", "--expires", "1", "--validity", "5"]),
        2,
        "cannot be used with",
    );
    fails(
        with(&["--key", "agent.jwk", "--created", "100", "--expires", "50"]),
        1,
        "must be after created",
    );
    let no_agent = [
        "sign",
        "--key",
        "agent.jwk",
        "--url",
        "https://shop.example/",
    ];
    fails(
        run_with(dir.path(), &no_agent, &["--agent", "http://agent.example"]),
        1,
        "--agent \"http://agent.example\": the URL must start with https://",
    );
    fails(
        sign_with(dir.path(), "agent.jwk", "shop.example/x", &[]),
        1,
        "is not a valid URL",
    );
    fails(run(dir.path(), &no_agent), 2, "--agent");
}

// ---- request ----

/// `wba request --key agent.jwk --agent AGENT --url <url> <extra...>`.
fn send(dir: &Path, url: &str, extra: &[&str]) -> Output {
    run_with(
        dir,
        &[
            "request",
            "--key",
            "agent.jwk",
            "--agent",
            AGENT,
            "--url",
            url,
        ],
        extra,
    )
}

/// What the one-shot server received: method, target, headers.
type Received = (String, String, Vec<(String, String)>);

/// A one-request HTTP server that records what it received.
fn one_shot_server() -> (String, std::thread::JoinHandle<Received>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let rq = server
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
            .expect("no request came");
        let method = rq.method().as_str().to_string();
        let url = rq.url().to_string();
        let headers = rq
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str().to_string(), h.value.to_string()))
            .collect();
        let resp = tiny_http::Response::from_string("hello from the origin")
            .with_status_code(201)
            .with_header(tiny_http::Header::from_bytes("X-Origin", "yes").unwrap());
        rq.respond(resp).unwrap();
        (method, url, headers)
    });
    (addr, handle)
}

#[test]
fn request_sends_a_request_the_core_verifies() {
    let dir = with_key();
    let (addr, handle) = one_shot_server();
    let url = format!("http://{addr}/items/42?color=blue");
    let out = ok(send(
        dir.path(),
        &url,
        &[
            "-H",
            "Host: shop.example",
            "-H",
            "X-Trace: 7",
            "--component",
            "@authority",
            "--component",
            "@path",
            "--component",
            "x-trace",
        ],
    ));
    assert!(out.starts_with("HTTP/1.1 201 Created\n"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-origin: yes"), "{out}");
    assert!(out.contains("\n\nhello from the origin"), "{out}");
    let (method, target, headers) = handle.join().unwrap();
    assert_eq!(
        (method.as_str(), target.as_str()),
        ("GET", "/items/42?color=blue")
    );
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .unwrap()
        .1
        .clone();
    assert_eq!(host, "shop.example", "the given Host is sent");
    let req = HttpRequest::from_parts("GET", "https", &host, &target, headers);
    match verify_request(
        &req,
        &Policy::default(),
        &ring(public_key(dir.path(), "agent.pub.jwk")),
        now(),
    ) {
        Verdict::Verified(v) => assert!(v.covered.contains("\"x-trace\""), "{}", v.covered),
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_truncates_the_body_and_reports_failures() {
    let dir = with_key();
    let (addr, handle) = one_shot_server();
    let url = format!("http://{addr}/");
    let out = ok(send(dir.path(), &url, &["--max-body", "5"]));
    assert!(
        out.contains("\n\nhello\n[body truncated after 5 bytes"),
        "{out}"
    );
    let (_, _, headers) = handle.join().unwrap();
    assert!(headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("host") && *v == addr));
    // Nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    fails(
        send(dir.path(), &format!("http://127.0.0.1:{port}/"), &[]),
        1,
        "failed",
    );
}

// ---- explain ----

/// `wba explain --request <request> --key agent.pub.jwk <extra...>`.
fn explain(dir: &Path, request: &str, extra: &[&str]) -> Output {
    run_with(
        dir,
        &["explain", "--request", request, "--key", "agent.pub.jwk"],
        extra,
    )
}

fn signed_request_file(dir: &Path, extra: &[&str]) -> String {
    let headers = sign(dir, extra);
    format!(
        "GET /items/42?color=blue HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n{}\r\n",
        headers.replace('\n', "\r\n")
    )
}

#[test]
fn explain_a_valid_request() {
    let dir = with_key();
    let tp = thumbprint(dir.path(), "agent.jwk");
    std::fs::write(
        dir.path().join("req.txt"),
        signed_request_file(dir.path(), &[]),
    )
    .unwrap();
    let out = ok(explain(dir.path(), "req.txt", &[]));
    assert!(
        out.contains("  ok    [sig1] ed25519 signature: valid\n"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    assert!(
        out.contains(&format!(
            "verdict: verified (agent {AGENT}, key {tp}, label sig1"
        )),
        "{out}"
    );
    assert!(out.contains("signature base [sig1]:\n\"@authority\": shop.example\n\"@method\": GET\n\"@path\": /items/42\n"), "{out}");
    // From stdin, with the directory `wba directory` makes, and a private key file too.
    std::fs::write(
        dir.path().join("dir.json"),
        ok(run(dir.path(), &["directory", "agent.jwk"])),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("req.txt")).unwrap();
    let o = run_stdin(
        dir.path(),
        &["explain", "--request", "-", "--directory", "dir.json"],
        &text,
    );
    assert!(stdout(&o).contains("verdict: verified"), "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(0));
    ok(run(
        dir.path(),
        &[
            "explain",
            "--request",
            "req.txt",
            "--key",
            "agent.jwk",
            "--agent-url",
            AGENT,
        ],
    ));
}

#[test]
fn explain_shows_the_failing_check() {
    let dir = with_key();
    let good = signed_request_file(dir.path(), &[]);
    let cases: &[(&str, String, &[&str], &str, &str)] = &[
        (
            "tampered path",
            good.replace("/items/42", "/items/43"),
            &[],
            "  FAIL  [sig1] ed25519 signature: bad_signature: the signature does not match the signature base\n",
            "verdict: invalid (bad_signature)",
        ),
        (
            "later clock",
            good.clone(),
            &["--now", "99999999999"],
            "  FAIL  [sig1] freshness: expired: ",
            "verdict: invalid (expired)",
        ),
        (
            "another agent",
            good.clone(),
            &["--agent-url", "https://other.example"],
            "  FAIL  [sig1] key lookup (agent, keyid): unknown_agent: ",
            "verdict: unverified (unknown_agent)",
        ),
        (
            "required component",
            good.clone(),
            &["--require-component", "@query"],
            "  FAIL  [sig1] covered components: missing_component: this verifier requires \"@query\" to be covered",
            "verdict: invalid (missing_component)",
        ),
        (
            "unsigned",
            "GET / HTTP/1.1\nHost: shop.example\n".to_string(),
            &[],
            "  FAIL  signature headers present: no Signature-Input or Signature",
            "verdict: unsigned",
        ),
    ];
    for (name, text, extra, check, verdict) in cases {
        std::fs::write(dir.path().join("req.txt"), text).unwrap();
        let o = explain(dir.path(), "req.txt", extra);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {out}");
        assert!(out.contains(check), "{name}: {out}");
        assert!(out.contains(verdict), "{name}: {out}");
    }
    // A key lookup failure still shows the base as it would be checked.
    std::fs::write(dir.path().join("req.txt"), &good).unwrap();
    let out = stdout(&explain(
        dir.path(),
        "req.txt",
        &["--agent-url", "https://other.example"],
    ));
    assert!(out.contains("signature base [sig1] (not checked: verification stopped before the signature):\n\"@authority\": shop.example"), "{out}");
    // Another key entirely.
    ok(run(dir.path(), &["generate", "--out", "other"]));
    let out = stdout(&run(
        dir.path(),
        &["explain", "--request", "req.txt", "--key", "other.pub.jwk"],
    ));
    assert!(out.contains("verdict: unverified (unknown_key)"), "{out}");
}

#[test]
fn explain_headers_only_capture_and_vectors() {
    let dir = with_key();
    // Only the headers `wba sign` printed, plus the URL on the command line.
    std::fs::write(dir.path().join("headers.txt"), sign(dir.path(), &[])).unwrap();
    fails(explain(dir.path(), "headers.txt", &[]), 2, "pass --url");
    ok(explain(dir.path(), "headers.txt", &["--url", URL]));

    // The draft's test vectors, as a capture with pseudo-headers.
    let v = vectors();
    std::fs::write(
        dir.path().join("test.jwk"),
        v["keys"]["test-key-ed25519"]["public_jwk"].to_string(),
    )
    .unwrap();
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if case["profile"] != "web-bot-auth" || case.get("derived_from").is_some() {
            continue;
        }
        let r = &case["request"];
        let mut text = format!(
            ":method: {}\n:scheme: https\n:authority: {}\n:path: {}?{}\n",
            r["method"].as_str().unwrap(),
            r["authority"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["query"].as_str().unwrap()
        );
        for h in r["headers"].as_array().unwrap() {
            text.push_str(&format!(
                "{}: {}\n",
                h[0].as_str().unwrap(),
                h[1].as_str().unwrap()
            ));
        }
        std::fs::write(dir.path().join("vector.txt"), text).unwrap();
        let now = case["now"].as_i64().unwrap().to_string();
        let args = [
            "explain",
            "--request",
            "vector.txt",
            "--key",
            "test.jwk",
            "--now",
            &now,
        ];
        let o = run(dir.path(), &args);
        let expected = case["expected"].as_str().unwrap();
        let out = stdout(&o);
        if expected == "verified" {
            // The published test key is refused unless allowed, and the vector's validity is long.
            assert!(
                out.contains("verdict: invalid (validity_too_long)") || out.contains("(test_key)"),
                "{name}: {out}"
            );
            let mut allowed = args.to_vec();
            allowed.extend(["--allow-test-keys", "--max-validity", "9999999999"]);
            let out = ok(run(dir.path(), &allowed));
            let base = case["expected_signature_base"].as_str().unwrap();
            assert!(
                out.contains(&format!("]:\n{base}\n(end of signature base")),
                "{name}: {out}"
            );
        } else {
            assert_eq!(o.status.code(), Some(1), "{name}: {out}");
        }
    }
}

#[test]
fn explain_refuses_unreadable_input() {
    let dir = with_key();
    let cases: &[(&str, &str)] = &[
        ("", "the request is empty"),
        ("GARBAGE\n", "line 1: \"GARBAGE\" is not a header line"),
        (
            "GET nowhere HTTP/1.1\nHost: x\n",
            "line 1: \"GET nowhere HTTP/1.1\" is not a request line",
        ),
        (
            "GET / HTTP/1.1\nHost x\n",
            "line 2: \"Host x\" is not a header line",
        ),
        (
            "GET / HTTP/1.1\nBad Name: x\n",
            "line 2: \"Bad Name\" is not a valid header name",
        ),
        ("GET / HTTP/1.1\nAccept: x\n", "names no host"),
    ];
    for (text, needle) in cases {
        std::fs::write(dir.path().join("bad.txt"), text).unwrap();
        fails(explain(dir.path(), "bad.txt", &[]), 2, needle);
    }
    std::fs::write(dir.path().join("bin.txt"), [0xff, 0xfe, 0x00]).unwrap();
    fails(explain(dir.path(), "bin.txt", &[]), 2, "is not text");
    fails(
        explain(dir.path(), "missing.txt", &[]),
        2,
        "cannot read missing.txt",
    );
    std::fs::write(dir.path().join("req.txt"), "GET / HTTP/1.1\nHost: x\n").unwrap();
    fails(
        run(dir.path(), &["explain", "--request", "req.txt"]),
        2,
        "--key",
    );
    fails(
        run(
            dir.path(),
            &["explain", "--request", "req.txt", "--key", "nope.jwk"],
        ),
        2,
        "cannot read nope.jwk",
    );
    std::fs::write(
        dir.path().join("notdir.json"),
        "{\"keys\":[{\"kty\":\"OKP\"}]}",
    )
    .unwrap();
    fails(
        run(
            dir.path(),
            &[
                "explain",
                "--request",
                "req.txt",
                "--directory",
                "notdir.json",
            ],
        ),
        2,
        "not a usable key directory",
    );
    fails(
        explain(dir.path(), "req.txt", &["--agent-url", "ftp://x"]),
        2,
        "--agent-url",
    );
}

#[test]
fn sign_and_explain_every_dialect() {
    let dir = with_key();
    let jwks = "https://agent.example/keys/jwks.json?v=2";
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            AGENT,
            &[],
            "signature-agent member sig1 = \"https://agent.example\": dictionary origin; keys at https://agent.example/.well-known/http-message-signatures-directory",
            "https://agent.example",
        ),
        (
            AGENT,
            &["--legacy-agent"],
            "signature-agent (legacy string) = \"https://agent.example\": legacy string;",
            "https://agent.example",
        ),
        (
            jwks,
            &["--label", "g"],
            "signature-agent member g = \"https://agent.example/keys/jwks.json?v=2\": dictionary JWK Set URL (draft -01); keys at https://agent.example/keys/jwks.json",
            "https://agent.example/keys/jwks.json",
        ),
    ];
    for (agent, extra, line, shown) in cases {
        let out = ok(run_with(
            dir.path(),
            &["sign", "--key", "agent.jwk", "--agent", agent, "--url", URL],
            extra,
        ));
        // Sent as given.
        assert!(out.contains(&format!("\"{agent}\"")), "{out}");
        let file = format!(
            "GET /items/42?color=blue HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n{}\r\n",
            out.replace('\n', "\r\n")
        );
        std::fs::write(dir.path().join("req.txt"), file).unwrap();
        let report = ok(explain(dir.path(), "req.txt", &[]));
        assert!(report.contains(line), "{report}");
        assert!(
            report.contains(&format!("verdict: verified (agent {shown}, ")),
            "{report}"
        );
    }
    // A member with parameters is named as ignored, and nothing verifies.
    let out = sign(dir.path(), &[]);
    let typed = out.replace(
        "Signature-Agent: sig1=\"https://agent.example\"",
        "Signature-Agent: sig1=\"https://agent.example\";type=cimd",
    );
    assert_ne!(typed, out);
    let file = format!(
        "GET /items/42?color=blue HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n{}\r\n",
        typed.replace('\n', "\r\n")
    );
    std::fs::write(dir.path().join("req.txt"), file).unwrap();
    let o = explain(dir.path(), "req.txt", &[]);
    let report = stdout(&o);
    assert!(report.contains("signature-agent member sig1 = \"https://agent.example\": ignored member with parameters; ignored: it carries parameters (;type=cimd)"), "{report}");
    assert!(
        report.contains("verdict: unverified (unknown_agent)"),
        "{report}"
    );
}
