//! `wba serve`: an agent's key directory at `/.well-known/http-message-signatures-directory`,
//! with caching headers, conditional GET and one possession proof (a response signature tagged
//! `http-message-signatures-directory`) per signing key.
//!
//! [`respond`] is the whole behaviour as a pure function; [`DirectoryServer`] puts it on a
//! socket with `tiny_http`.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sfv::{BareItem, Parameters};
use sha2::{Digest, Sha256};
use wba_filter::agent_url::DIRECTORY_PATH;
use wba_filter::directory::KidRule;
use wba_filter::directory::{
    build_key_set, content_digest, parse_key_set, DIRECTORY_MEDIA_TYPE, DIRECTORY_TAG,
};
use wba_filter::jwk::Jwk;
use wba_filter::private_key::PrivateKey;
use wba_filter::request::{HttpRequest, HttpResponse};
use wba_filter::sign::{sign_response, SignatureKey as _};

/// What the server publishes and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Keys that sign each response (one signature each), of any algorithm.
    pub keys: Vec<PrivateKey>,
    /// A JWK Set file served verbatim, re-read on every request; `None` publishes the public
    /// halves of `keys`.
    pub directory_file: Option<PathBuf>,
    /// `Cache-Control: max-age`.
    pub max_age: u64,
    /// Seconds from a proof's `created` to its `expires`.
    pub proof_validity: i64,
    /// The scheme the directory is reached with (for `@authority`: the default port is
    /// dropped per scheme). `https` unless a client really fetches plain http.
    pub scheme: String,
    /// The authority used when a request carries no `Host` (HTTP/1.0).
    pub default_authority: String,
    /// The path served: the well-known directory ([`DIRECTORY_PATH`]), or another JWK Set URL's
    /// (served as `application/jwk-set+json`, where a verifier reads `kid` as a label).
    pub path: String,
}

impl ServeConfig {
    /// Serving the well-known directory, rather than a JWK Set at another path.
    pub fn is_directory(&self) -> bool {
        self.path == DIRECTORY_PATH
    }

    /// The directory body now.
    pub fn body(&self) -> anyhow::Result<Vec<u8>> {
        match &self.directory_file {
            Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display())),
            None => {
                if self.keys.is_empty() {
                    bail!("nothing to publish: give --key or --directory");
                }
                let jwks: Vec<Jwk> = self.keys.iter().map(|k| k.public_jwk()).collect();
                Ok(build_key_set(&jwks)?.into_bytes())
            }
        }
    }

    /// Startup warnings: a directory file that a verifier would refuse, keys in it that a
    /// verifier would skip, or signing keys it does not list.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let body = match self.body() {
            Ok(b) => b,
            Err(e) => return vec![format!("{e:#}")],
        };
        let kid = if self.is_directory() {
            KidRule::Thumbprint
        } else {
            KidRule::Label
        };
        match parse_key_set(&body, kid, crate::directory::MAX_KEYS) {
            Err(e) => w.push(format!(
                "the directory would be refused by a verifier: {e} (served anyway)"
            )),
            Ok(listed) => {
                for s in &listed.skipped {
                    w.push(format!("{s}: a verifier would skip this key"));
                }
                for k in &self.keys {
                    let tp = k
                        .public_jwk()
                        .thumbprint()
                        .map(String::from)
                        .unwrap_or_default();
                    if !listed.keys.iter().any(|l| l.thumbprint == tp) {
                        w.push(format!(
                            "signing key {tp} is not listed in the directory: its proof will not verify"
                        ));
                    }
                }
            }
        }
        w
    }
}

/// A request as the server sees it.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub method: String,
    /// Path and query, as in the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<String> {
        wba_filter::request::combined(&self.headers, name)
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn text(status: u16, msg: &str) -> Reply {
    Reply {
        status,
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: format!("{msg}\n").into_bytes(),
    }
}

/// The strong entity tag of a body: a quoted base64url SHA-256 prefix.
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// Whether `If-None-Match` matches `tag` (weak comparison, RFC 9110 section 13.1.2).
pub fn none_match(header: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let tag = opaque(tag);
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || opaque(t) == tag)
}

/// The label of the `i`th proof: `binding` alone, `binding1`.. when there are several.
fn label(i: usize, n: usize) -> String {
    if n == 1 {
        "binding".to_string()
    } else {
        format!("binding{}", i + 1)
    }
}

/// Answers one request at time `now`.
pub fn respond(cfg: &ServeConfig, req: &Incoming, now: i64) -> Reply {
    let path = req.target.split('?').next().unwrap_or_default();
    if path != cfg.path {
        return text(404, &format!("not found: the keys are at {}", cfg.path));
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = text(405, "method not allowed: use GET");
        r.headers.push(("Allow".into(), "GET, HEAD".into()));
        return r;
    }
    let body = match cfg.body() {
        Ok(b) => b,
        Err(e) => return text(500, &format!("{e:#}")),
    };
    let tag = etag(&body);
    let cache = format!("max-age={}", cfg.max_age);
    if req
        .header("if-none-match")
        .is_some_and(|h| none_match(&h, &tag))
    {
        return Reply {
            status: 304,
            headers: vec![("ETag".into(), tag), ("Cache-Control".into(), cache)],
            body: Vec::new(),
        };
    }
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            if cfg.is_directory() {
                DIRECTORY_MEDIA_TYPE
            } else {
                "application/jwk-set+json"
            }
            .to_string(),
        ),
        ("Cache-Control".to_string(), cache),
        ("ETag".to_string(), tag),
        ("Content-Digest".to_string(), content_digest(&body)),
    ];
    match sign_proofs(cfg, req, &headers, now) {
        Ok(Some((input, signature))) => {
            headers.push(("Signature-Input".into(), input));
            headers.push(("Signature".into(), signature));
        }
        Ok(None) => {}
        Err(e) => return text(500, &format!("cannot sign the directory: {e:#}")),
    }
    Reply {
        status: 200,
        headers,
        body,
    }
}

/// One signature per key over `"@authority";req` and `content-digest`, combined into one
/// `Signature-Input` and one `Signature` field.
fn sign_proofs(
    cfg: &ServeConfig,
    req: &Incoming,
    headers: &[(String, String)],
    now: i64,
) -> anyhow::Result<Option<(String, String)>> {
    if cfg.keys.is_empty() {
        return Ok(None);
    }
    let authority = req
        .header("host")
        .unwrap_or_else(|| cfg.default_authority.clone());
    let request = HttpRequest::from_parts(
        &req.method,
        &cfg.scheme,
        &authority,
        &req.target,
        req.headers.clone(),
    );
    let response = HttpResponse {
        status: 200,
        headers: headers.to_vec(),
    };
    let components = [
        "\"@authority\";req".to_string(),
        "content-digest".to_string(),
    ];
    let mut inputs = Vec::new();
    let mut sigs = Vec::new();
    for (i, key) in cfg.keys.iter().enumerate() {
        let keyid = key.public_jwk().thumbprint()?;
        let mut params = Parameters::new();
        let int = |v: i64| -> anyhow::Result<BareItem> {
            Ok(BareItem::Integer(
                sfv::Integer::try_from(v).map_err(|_| anyhow::anyhow!("timestamp {v}"))?,
            ))
        };
        let string = |v: &str| -> anyhow::Result<BareItem> {
            Ok(BareItem::String(
                sfv::String::from_string(v.to_string())
                    .map_err(|_| anyhow::anyhow!("string {v:?}"))?,
            ))
        };
        let key_of = |k: &str| {
            sfv::Key::from_string(k.to_string()).map_err(|_| anyhow::anyhow!("parameter {k}"))
        };
        params.insert(key_of("created")?, int(now)?);
        params.insert(
            key_of("expires")?,
            int(now.saturating_add(cfg.proof_validity))?,
        );
        params.insert(key_of("keyid")?, string(&keyid)?);
        params.insert(key_of("alg")?, string(key.algorithm().name())?);
        params.insert(key_of("tag")?, string(DIRECTORY_TAG)?);
        let signed = sign_response(
            &request,
            &response,
            key,
            &label(i, cfg.keys.len()),
            &components,
            params,
        )?;
        inputs.push(signed.signature_input);
        sigs.push(signed.signature);
    }
    Ok(Some((inputs.join(", "), sigs.join(", "))))
}

/// Turns `--bind` and `--port` into a socket address. `bind` is `HOST` or `HOST:PORT`
/// (`[v6]:PORT`); `port` applies when `bind` has none (default 8080).
pub fn bind_address(bind: &str, port: Option<u16>) -> anyhow::Result<String> {
    if let Ok(sa) = bind.parse::<SocketAddr>() {
        if port.is_some() {
            bail!("--bind {bind} already names a port: drop --port or the port in --bind");
        }
        return Ok(sa.to_string());
    }
    let port = port.unwrap_or(8080);
    if let Ok(ip) = bind.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    if bind.is_empty() || bind.contains(['/', ' ']) {
        bail!("--bind {bind:?} is not HOST or HOST:PORT");
    }
    match bind.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => {
            if p.parse::<u16>().is_err() {
                bail!("--bind {bind:?}: {p:?} is not a port number");
            }
            Ok(bind.to_string())
        }
        _ => Ok(format!("{bind}:{port}")),
    }
}

/// The directory on a socket.
pub struct DirectoryServer {
    server: tiny_http::Server,
    addr: SocketAddr,
    cfg: ServeConfig,
}

impl DirectoryServer {
    /// Binds `addr` (see [`bind_address`]).
    pub fn bind(addr: &str, mut cfg: ServeConfig) -> anyhow::Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let Some(bound) = server.server_addr().to_ip() else {
            bail!("cannot listen on {addr}: not an IP socket");
        };
        if cfg.default_authority.is_empty() {
            cfg.default_authority = bound.to_string();
        }
        Ok(DirectoryServer {
            server,
            addr: bound,
            cfg,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends, logging each request to stderr.
    pub fn run(&self) {
        for rq in self.server.incoming_requests() {
            let incoming = Incoming {
                method: rq.method().as_str().to_ascii_uppercase(),
                target: rq.url().to_string(),
                headers: rq
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str().to_string(), h.value.to_string()))
                    .collect(),
            };
            let reply = respond(&self.cfg, &incoming, crate::sign::now());
            let ua = incoming.header("user-agent").unwrap_or_else(|| "-".into());
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "{} {} {} user-agent={ua:?}",
                incoming.method, incoming.target, reply.status
            );
            drop(err);
            let mut response = tiny_http::Response::from_data(reply.body)
                .with_status_code(tiny_http::StatusCode(reply.status));
            for (n, v) in &reply.headers {
                if let Ok(h) = tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()) {
                    response.add_header(h);
                }
            }
            if let Err(e) = rq.respond(response) {
                let _ = writeln!(std::io::stderr(), "cannot send the response: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use wba_filter::directory::verify_directory_response;

    fn ed(seed: u8) -> PrivateKey {
        PrivateKey::Ed25519(SigningKey::from_bytes(&[seed; 32]))
    }

    fn cfg(keys: Vec<PrivateKey>) -> ServeConfig {
        ServeConfig {
            keys,
            directory_file: None,
            max_age: 300,
            proof_validity: 600,
            scheme: "https".into(),
            default_authority: "127.0.0.1:1".into(),
            path: DIRECTORY_PATH.into(),
        }
    }

    #[test]
    fn a_jwk_set_at_another_path() {
        let mut c = cfg(vec![ed(3)]);
        c.path = "/keys/jwks.json".into();
        let r = respond(
            &c,
            &Incoming {
                method: "GET".into(),
                target: "/keys/jwks.json?v=2".into(),
                headers: vec![("host".into(), "agent.example".into())],
            },
            1_000,
        );
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .contains(&("Content-Type".into(), "application/jwk-set+json".into())));
        assert_eq!(
            parse_key_set(&r.body, KidRule::Label, 8)
                .unwrap()
                .keys
                .len(),
            1
        );
        let r = respond(
            &c,
            &Incoming {
                method: "GET".into(),
                target: DIRECTORY_PATH.into(),
                headers: vec![],
            },
            1_000,
        );
        assert_eq!(r.status, 404);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    fn get(headers: &[(&str, &str)]) -> Incoming {
        Incoming {
            method: "GET".into(),
            target: DIRECTORY_PATH.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn proofs_verify_with_the_core() {
        // One key of each algorithm: a mixed directory, each proof with its key's algorithm.
        let rsa: serde_json::Value = serde_json::from_str(include_str!(
            "../../filter/core/tests/data/rsa_test_keys.json"
        ))
        .unwrap();
        let keys = vec![
            ed(1),
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap()),
            PrivateKey::from_jwk(&rsa["rsa2048"]).unwrap(),
        ];
        let c = cfg(keys);
        let r = respond(&c, &get(&[("Host", "agent.example")]), 1000);
        assert_eq!(r.status, 200);
        let resp = HttpResponse {
            status: 200,
            headers: r.headers.clone(),
        };
        let listed = parse_key_set(&r.body, KidRule::Thumbprint, 8).unwrap().keys;
        let request =
            HttpRequest::from_parts("GET", "https", "agent.example", DIRECTORY_PATH, vec![]);
        assert_eq!(listed.len(), 3);
        let results = verify_directory_response(&request, &resp, &r.body, &listed, 1010, 60);
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|c| c.result.is_ok()), "{results:?}");
        let input = r
            .headers
            .iter()
            .find(|(n, _)| n == "Signature-Input")
            .map(|(_, v)| v.clone())
            .unwrap();
        for alg in ["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"] {
            assert!(input.contains(&format!("alg=\"{alg}\"")), "{input}");
        }
        // Bound to the authority it was fetched from.
        let other = HttpRequest::from_parts("GET", "https", "evil.example", DIRECTORY_PATH, vec![]);
        let results = verify_directory_response(&other, &resp, &r.body, &listed, 1010, 60);
        assert!(results.iter().all(|c| c.result.is_err()));
    }

    #[test]
    fn warns_about_keys_a_verifier_would_skip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("directory.json");
        let sk = SigningKey::from_bytes(&[1; 32]);
        let good = Jwk::from_ed25519(sk.verifying_key().as_bytes()).to_json();
        std::fs::write(
            &file,
            format!(r#"{{"keys":[{good},{{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}]}}"#),
        )
        .unwrap();
        let mut c = cfg(vec![PrivateKey::Ed25519(sk)]);
        c.directory_file = Some(file);
        assert_eq!(
            c.warnings(),
            vec!["key 1: invalid key: an Ed25519 key is 32 bytes: a verifier would skip this key"]
        );
    }

    #[test]
    fn caching_and_errors() {
        let c = cfg(vec![ed(1)]);
        let r = respond(&c, &get(&[]), 1000);
        let tag = r
            .headers
            .iter()
            .find(|(n, _)| n == "ETag")
            .map(|(_, v)| v.clone())
            .unwrap();
        let r304 = respond(&c, &get(&[("If-None-Match", &format!("W/{tag}"))]), 1000);
        assert_eq!(r304.status, 304);
        assert!(r304.body.is_empty());
        assert_eq!(
            respond(&c, &get(&[("If-None-Match", "\"x\"")]), 1000).status,
            200
        );
        assert_eq!(
            respond(&c, &get(&[("If-None-Match", "*")]), 1000).status,
            304
        );
        let mut other = get(&[]);
        other.target = "/".into();
        assert_eq!(respond(&c, &other, 1).status, 404);
        let mut post = get(&[]);
        post.method = "POST".into();
        assert_eq!(respond(&c, &post, 1).status, 405);
        let mut missing = cfg(vec![]);
        missing.directory_file = Some("/nonexistent/dir.json".into());
        assert_eq!(respond(&missing, &get(&[]), 1).status, 500);
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(bind_address("127.0.0.1", None).unwrap(), "127.0.0.1:8080");
        assert_eq!(bind_address("127.0.0.1:0", None).unwrap(), "127.0.0.1:0");
        assert_eq!(bind_address("127.0.0.1", Some(0)).unwrap(), "127.0.0.1:0");
        assert_eq!(bind_address("::1", Some(9)).unwrap(), "[::1]:9");
        assert_eq!(bind_address("localhost", Some(9)).unwrap(), "localhost:9");
        assert_eq!(bind_address("localhost:7", None).unwrap(), "localhost:7");
        assert!(bind_address("127.0.0.1:1", Some(2)).is_err());
        assert!(bind_address("localhost:x", None).is_err());
    }
}
