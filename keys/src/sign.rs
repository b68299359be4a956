//! Signing a request as an agent: the core's `sign_request` over a request built from a URL,
//! a method and headers, printed as headers or as a curl command line.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use url::Url;
use wba_filter::agent_url::AgentUrl;
use wba_filter::request::HttpRequest;
use wba_filter::sign::{sign_request, SignOptions, SignatureKey, SignedHeaders};

/// The signing options shared by `wba sign` and `wba request`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignArgs {
    /// Private key (Ed25519, P-256 or RSA): JWK with "d", or PEM (from `wba generate`). Its
    /// type decides the algorithm (the `alg` parameter).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Where the agent's keys are: its https origin (which serves
    /// /.well-known/http-message-signatures-directory) or the https URL of its JWK Set. Sent
    /// in Signature-Agent as given.
    #[arg(long, value_name = "URL")]
    pub agent: String,
    /// Request method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// The request URL (http or https).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// A request header, `name: value` (repeatable). A `Host` header sets @authority.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A covered component (repeatable, in order), e.g. @method, @path, @query,
    /// '"@query-param";name="q"', content-type. Default: @authority @method @path.
    /// The Signature-Agent member is always added.
    #[arg(long = "component", value_name = "COMPONENT")]
    pub components: Vec<String>,
    /// The `created` parameter (unix seconds). Default: now.
    #[arg(long, value_name = "UNIX")]
    pub created: Option<i64>,
    /// The `expires` parameter (unix seconds).
    #[arg(long, value_name = "UNIX", conflicts_with = "validity")]
    pub expires: Option<i64>,
    /// Seconds from `created` to `expires`.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub validity: i64,
    /// The `nonce` parameter.
    #[arg(long, conflicts_with = "random_nonce")]
    pub nonce: Option<String>,
    /// Add a random 32-byte nonce (base64).
    #[arg(long)]
    pub random_nonce: bool,
    /// The signature label.
    #[arg(long, default_value = "sig1")]
    pub label: String,
    /// Send Signature-Agent as the legacy bare string ("https://...") covered as plain
    /// "signature-agent", instead of the dictionary form <label>="https://...", keyed by the
    /// signature label.
    #[arg(long)]
    pub legacy_agent: bool,
}

/// A request and the signature headers for it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The URL as it is sent (normalized by the URL parser, as an HTTP client sends it).
    pub url: Url,
    pub method: String,
    /// The headers given on the command line, in order, as given.
    pub headers: Vec<(String, String)>,
    /// The request the signature was computed over.
    pub request: HttpRequest,
    pub signed: SignedHeaders,
}

/// Parses `name: value`.
pub fn parse_header(spec: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = spec.split_once(':') else {
        bail!("header {spec:?} is not `name: value`");
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_tchar) {
        bail!("header {spec:?}: {name:?} is not a valid header name");
    }
    if value.contains(['\r', '\n']) {
        bail!("header {spec:?}: a value cannot contain line breaks");
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses an http(s) URL as a client sends it: the fragment dropped, an empty query removed.
pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let mut u = Url::parse(url).with_context(|| {
        format!("{url:?} is not a valid URL (expected e.g. https://example.com/path)")
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        bail!("{url:?}: only http and https URLs can be requested");
    }
    if u.host_str().is_none_or(str::is_empty) {
        bail!("{url:?} has no host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        bail!("{url:?}: user information in the URL is not supported");
    }
    u.set_fragment(None);
    if u.query() == Some("") {
        u.set_query(None);
    }
    Ok(u)
}

/// `host[:port]` of a URL, the port left out when it is the scheme's default.
pub fn url_authority(u: &Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Current unix time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random nonce: 32 bytes, base64.
pub fn random_nonce() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random nonce: {e}"))?;
    Ok(STANDARD.encode(b))
}

/// Builds the request and signs it.
pub fn prepare<K: SignatureKey + ?Sized>(
    args: &SignArgs,
    key: &K,
    now: i64,
) -> anyhow::Result<Prepared> {
    AgentUrl::parse(&args.agent).map_err(|e| {
        anyhow::anyhow!(
            "--agent {:?}: {e} (give the https origin that serves your key directory, e.g. https://agent.example, or the https URL of your JWK Set)",
            args.agent
        )
    })?;
    let method = args.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(is_tchar) {
        bail!("--method {:?} is not a valid method", args.method);
    }
    let url = parse_url(&args.url)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (n, _) in &headers {
        let lower = n.to_ascii_lowercase();
        if ["signature", "signature-input", "signature-agent"].contains(&lower.as_str()) {
            bail!("-H {n}: the signature headers are computed, not given");
        }
    }
    let authority = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| url_authority(&url));
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut req_headers: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req_headers.push(("host".into(), authority.clone()));
    }
    req_headers.extend(headers.iter().cloned());
    let request = HttpRequest::from_parts(&method, url.scheme(), &authority, &path, req_headers);

    let created = args.created.unwrap_or(now);
    let mut opts = SignOptions::web_bot_auth(&args.agent, created, args.validity);
    if let Some(e) = args.expires {
        opts.expires = e;
    }
    if opts.expires <= created {
        bail!(
            "expires ({}) must be after created ({created})",
            opts.expires
        );
    }
    opts.label = args.label.clone();
    opts.legacy_agent = args.legacy_agent;
    if !args.components.is_empty() {
        opts.components = args.components.clone();
    }
    opts.nonce = match (&args.nonce, args.random_nonce) {
        (Some(n), _) => Some(n.clone()),
        (None, true) => Some(random_nonce()?),
        (None, false) => None,
    };
    let signed = sign_request(&request, key, &opts).context("cannot sign the request")?;
    Ok(Prepared {
        url,
        method,
        headers,
        request,
        signed,
    })
}

/// The canonical capitalization of the signature headers.
fn display_name(name: &str) -> &str {
    match name {
        "signature-agent" => "Signature-Agent",
        "signature-input" => "Signature-Input",
        "signature" => "Signature",
        other => other,
    }
}

impl Prepared {
    /// The signature headers, `Name: value`, one a line.
    pub fn header_lines(&self) -> String {
        let mut out = String::new();
        for (n, v) in self.signed.pairs() {
            out.push_str(display_name(&n));
            out.push_str(": ");
            out.push_str(&v);
            out.push('\n');
        }
        out
    }

    /// Every header to send: the given ones, then the signature headers.
    pub fn send_headers(&self) -> Vec<(String, String)> {
        let mut all = self.headers.clone();
        all.extend(
            self.signed
                .pairs()
                .into_iter()
                .map(|(n, v)| (display_name(&n).to_string(), v)),
        );
        all
    }

    /// A curl command line that sends exactly the signed request.
    pub fn curl(&self) -> String {
        let mut first = "curl".to_string();
        if self.method == "HEAD" {
            first.push_str(" --head");
        } else if self.method != "GET" {
            first.push_str(&format!(" -X {}", shell_quote(&self.method)));
        }
        if self.url.as_str().contains(['[', ']', '{', '}']) {
            // Literal brackets (an IPv6 host, say): no curl URL globbing.
            first.push_str(" --globoff");
        }
        first.push(' ');
        first.push_str(&shell_quote(self.url.as_str()));
        let mut parts = vec![first];
        for (n, v) in self.send_headers() {
            parts.push(format!("-H {}", shell_quote(&format!("{n}: {v}"))));
        }
        parts.join(" \\\n  ") + "\n"
    }
}

/// Quotes a word for POSIX shells.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ed25519_dalek::SigningKey;
    use wba_filter::agent_url::AgentId;
    use wba_filter::jwk::Jwk;
    use wba_filter::keyring::KeyRing;
    use wba_filter::policy::Policy;
    use wba_filter::verdict::Verdict;
    use wba_filter::verify::verify_request;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sign: SignArgs,
    }

    fn args(extra: &[&str]) -> SignArgs {
        let mut argv = vec![
            "t",
            "--key",
            "k",
            "--agent",
            "https://agent.example",
            "--url",
            "https://Shop.example:443/a/./b?x=1#frag",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().sign
    }

    fn verify(p: &Prepared, key: &SigningKey, now: i64) -> Verdict {
        verify_as(p, key, "https://agent.example", now)
    }

    /// Verifies the prepared request with `key` trusted for the agent at `agent`.
    fn verify_as(p: &Prepared, key: &SigningKey, agent: &str, now: i64) -> Verdict {
        let mut req = p.request.clone();
        for (n, v) in p.signed.pairs() {
            req.add_header(&n, &v);
        }
        let mut ring = KeyRing::default();
        let k = Jwk::from_ed25519(key.verifying_key().as_bytes())
            .to_key()
            .unwrap();
        ring.add("a", AgentId::parse(agent).unwrap(), vec![k]);
        verify_request(&req, &Policy::default(), &ring, now)
    }

    #[test]
    fn signs_what_a_client_sends() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let p = prepare(&args(&["-H", "Accept: text/html"]), &key, 1_000_000).unwrap();
        assert_eq!(p.url.as_str(), "https://shop.example/a/b?x=1");
        assert_eq!(p.request.authority, "shop.example");
        assert_eq!(p.request.path, "/a/b");
        assert!(matches!(verify(&p, &key, 1_000_000), Verdict::Verified(_)));
        assert!(p
            .curl()
            .contains("-H 'Signature-Agent: sig1=\"https://agent.example\"'"));
        let lines = p.header_lines();
        assert!(lines.starts_with("Signature-Agent: sig1=\"https://agent.example\"\n"));
    }

    #[test]
    fn options() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let p = prepare(
            &args(&[
                "--legacy-agent",
                "--component",
                "@target-uri",
                "--nonce",
                "abc",
                "--created",
                "100",
                "--expires",
                "160",
                "--label",
                "bot",
                "-H",
                "host: other.example",
            ]),
            &key,
            0,
        )
        .unwrap();
        assert_eq!(
            p.signed.signature_agent.as_deref(),
            Some("\"https://agent.example\"")
        );
        assert!(p
            .signed
            .signature_input
            .starts_with("bot=(\"@target-uri\" \"signature-agent\");created=100;expires=160;"));
        assert!(p.signed.signature_input.contains("nonce=\"abc\""));
        assert_eq!(p.request.authority, "other.example");
        assert!(matches!(verify(&p, &key, 120), Verdict::Verified(_)));
    }

    #[test]
    fn a_jwk_set_url_is_sent_as_given() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let url = "https://Keys.Example/bot/jwks.json?v=2";
        let mut a = args(&["--label", "g"]);
        a.agent = url.into();
        let p = prepare(&a, &key, 1_000_000).unwrap();
        assert_eq!(
            p.signed.signature_agent.as_deref(),
            Some(format!("g=\"{url}\"").as_str())
        );
        assert!(p
            .signed
            .signature_input
            .contains("\"signature-agent\";key=\"g\""));
        let v = verify_as(&p, &key, url, 1_000_000);
        let Verdict::Verified(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.agent_url, "https://keys.example/bot/jwks.json");
    }

    #[test]
    fn refusals() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let cases: &[(&[&str], &str)] = &[
            (&["-H", "nocolon"], "not `name: value`"),
            (&["-H", "bad name: x"], "not a valid header name"),
            (&["-H", "Signature: x"], "computed"),
            (&["--component", "@nope"], "cannot sign"),
            (&["--created", "10", "--expires", "5"], "must be after"),
            (&["--method", "G T"], "not a valid method"),
        ];
        for (extra, expected) in cases {
            let e = format!("{:#}", prepare(&args(extra), &key, 0).unwrap_err());
            assert!(e.contains(expected), "{extra:?}: {e}");
        }
        let mut a = args(&[]);
        a.agent = "http://agent.example".into();
        let e = prepare(&a, &key, 0).unwrap_err().to_string();
        assert!(e.contains("https"), "{e}");
        a = args(&[]);
        a.url = "ftp://x/".into();
        assert!(prepare(&a, &key, 0).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("https://a.example/x"), "https://a.example/x");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
