//! `wba`: Web Bot Auth keys for agent developers. Generate a key, publish its directory, sign
//! requests, and explain verification.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Parser, Subcommand};
use wba_filter::algorithm::Algorithm;
use wba_filter::component::Component;
use wba_filter::jwk::Key;
use wba_filter::policy::Policy;
use wba_filter::verdict::Verdict;
use wba_keys::keyfile::{self, LoadedKey};
use wba_keys::sign::{self, SignArgs};
use wba_keys::{directory, explain, rawrequest, replay_server, request, serve};

#[derive(Parser)]
#[command(
    name = "wba",
    version,
    about = "Web Bot Auth keys: generate, publish, sign, explain",
    long_about = "Web Bot Auth keys for agent developers.\n\n\
        1. wba generate --out agent          (agent.jwk, agent.pem: private; agent.pub.jwk: public)\n\
        2. wba serve --key agent.jwk          (or: wba directory agent.pub.jwk > directory.json)\n\
        3. wba sign --key agent.jwk --agent https://agent.example --url https://site.example/\n\
        4. wba explain --request req.txt --key agent.pub.jwk\n\n\
        For verifiers: wba replay-server --listen 127.0.0.1:8300 --redis redis://127.0.0.1:6379\n\n\
        Exit status: 0 on success; 1 on an error (explain: when the request does not verify);\n\
        2 on a usage error (explain: also when the request file cannot be read)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a key pair: PREFIX.jwk and PREFIX.pem (private, mode 0600) and PREFIX.pub.jwk
    /// (public). Prints the public JWK and its thumbprint.
    Generate {
        /// File name prefix, e.g. `agent` or `keys/agent-2026`.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// The algorithm the key signs with (its type): ed25519 (OKP), ecdsa-p256-sha256 (EC
        /// P-256) or rsa-pss-sha512 (RSA).
        #[arg(long, default_value = "ed25519", value_parser = parse_algorithm)]
        alg: Algorithm,
        /// RSA modulus size (2048 to 8192); only with --alg rsa-pss-sha512.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Print the RFC 7638 JWK thumbprint (the keyid) of a key file: JWK (OKP, EC, RSA; public
    /// or private) or PEM.
    Thumbprint {
        #[arg(value_name = "KEYFILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the key directory {"keys":[...]} for key files (public parts only, kid =
    /// thumbprint), ready to publish at /.well-known/http-message-signatures-directory.
    Directory {
        #[arg(value_name = "KEYFILE", required = true)]
        files: Vec<PathBuf>,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Serve the key directory over HTTP, with a possession proof signed by each --key.
    #[command(group(ArgGroup::new("source").required(true).multiple(true).args(["key", "directory"])))]
    Serve {
        /// Private key that signs the directory response (repeatable). Without --directory,
        /// the directory lists these keys.
        #[arg(long, value_name = "FILE")]
        key: Vec<PathBuf>,
        /// Serve this JWK Set file instead, re-read on every request (rewrite it to rotate).
        #[arg(long, value_name = "FILE")]
        directory: Option<PathBuf>,
        /// Address to listen on: HOST or HOST:PORT. Loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Port, when --bind has none (default 8080; 0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Cache-Control max-age, in seconds.
        #[arg(long, default_value_t = 3600)]
        max_age: u64,
        /// Validity of each response signature (expires - created), in seconds.
        #[arg(long, default_value_t = 3600)]
        proof_validity: i64,
        /// The scheme clients use to reach the directory (it decides which port @authority
        /// leaves out).
        #[arg(long, default_value = "https")]
        scheme: String,
        /// The path to serve the keys at: the well-known directory by default, or another JWK
        /// Set URL's path (served as application/jwk-set+json; agents then send that URL).
        #[arg(long, default_value = wba_filter::agent_url::DIRECTORY_PATH)]
        path: String,
    },
    /// Sign a request and print the Signature-Agent, Signature-Input and Signature headers.
    Sign {
        #[command(flatten)]
        sign: SignArgs,
        /// Print a curl command line that sends the signed request instead.
        #[arg(long)]
        curl: bool,
        /// Also print the signature base to stderr.
        #[arg(long)]
        print_base: bool,
    },
    /// Sign a request, send it, and print the response status, headers and body.
    Request {
        #[command(flatten)]
        sign: SignArgs,
        /// Timeout for the whole request, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Print at most this many bytes of the response body.
        #[arg(long, default_value_t = 4096)]
        max_body: usize,
        /// Also print the signature base to stderr.
        #[arg(long)]
        print_base: bool,
    },
    /// Verify a captured request step by step: each check, the verdict and the signature base.
    /// Exit 0 when it verifies, 1 when it does not, 2 when the input cannot be read.
    #[command(group(ArgGroup::new("keys").required(true).args(["key", "directory"])))]
    Explain {
        /// The request: a raw HTTP/1.1 request, or header lines (then give --url); `-` for stdin.
        #[arg(long, value_name = "FILE")]
        request: String,
        /// The agent's key (public or private; repeatable).
        #[arg(long, value_name = "FILE")]
        key: Vec<PathBuf>,
        /// The agent's key directory (a JWK Set file).
        #[arg(long, value_name = "FILE")]
        directory: Option<PathBuf>,
        /// Trust the keys for this agent URL only (default: whatever Signature-Agent names).
        #[arg(long, value_name = "URL")]
        agent_url: Option<String>,
        /// The verifier's clock (unix seconds). Default: now.
        #[arg(long, value_name = "UNIX")]
        now: Option<i64>,
        /// The scheme the request was received with.
        #[arg(long, default_value = "https")]
        scheme: String,
        /// The request URL, for a capture with headers only.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The method, for a capture with headers only.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Tolerated clock difference, in seconds.
        #[arg(long, default_value_t = wba_filter::config::DEFAULT_CLOCK_SKEW_SECONDS)]
        clock_skew: i64,
        /// Longest accepted expires - created, in seconds.
        #[arg(long, default_value_t = wba_filter::config::DEFAULT_MAX_VALIDITY_SECONDS)]
        max_validity: i64,
        /// Accept the RFC 9421 Appendix B test keys.
        #[arg(long)]
        allow_test_keys: bool,
        /// Refuse signatures without a nonce.
        #[arg(long)]
        require_nonce: bool,
        /// A component every signature must cover (repeatable), e.g. @path.
        #[arg(long = "require-component", value_name = "COMPONENT")]
        require_components: Vec<String>,
    },
    /// Replay protection across a fleet of Envoys: a stateless HTTP service on Redis that the
    /// filter's `replay_store` asks to record each verified signature.
    #[command(
        long_about = "Replay protection across a fleet of Envoys: a stateless HTTP \
        service on Redis that the filter's replay_store asks to record each verified signature.\n\n\
        POST /v1/replay/<id> (32 lowercase hex) with x-wba-until: <unix seconds>, no body:\n\
        \x20 201 fresh | 409 replayed | 400 malformed | 413 body over 1 KiB | 503 Redis unavailable\n\
        GET /healthz: 200 ok when Redis answers PING within the timeout, else 503.\n\n\
        Each record is SET wba:replay:<id> 1 NX EXAT <until> (Redis 6.2 or later; configure\n\
        maxmemory-policy noeviction). Prints `listening on ADDR` first; stops on SIGTERM."
    )]
    ReplayServer {
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Redis URL, e.g. redis://127.0.0.1:6379/0 or redis://:PASSWORD@host:6379. With
        /// --cluster, repeat it for each seed node of the cluster.
        #[arg(long, value_name = "URL", required = true)]
        redis: Vec<String>,
        /// The --redis URLs are seed nodes of a Redis Cluster (records spread over its slots).
        #[arg(long)]
        cluster: bool,
        /// The longest wait for Redis (connecting or answering) before answering 503.
        #[arg(long, value_name = "N", default_value_t = 200)]
        redis_timeout_ms: u64,
        /// Refuse (400) an x-wba-until further ahead than this (default 30 days).
        #[arg(long, value_name = "N", default_value_t = replay_server::protocol::DEFAULT_MAX_TTL_SECONDS)]
        max_ttl_seconds: u64,
        /// Tokio worker threads (default: one per core).
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_explain = matches!(cli.command, Command::Explain { .. });
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(if is_explain { 2 } else { 1 })
        }
    }
}

/// Writes to stdout; a closed pipe (`wba ... | head`) is not an error.
fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Loads the signing key and signs as `args` say, printing the signature base to stderr when
/// asked.
fn prepare(args: &SignArgs, print_base: bool) -> anyhow::Result<sign::Prepared> {
    let key = keyfile::load_signing_key(&args.key)?;
    let p = sign::prepare(args, &key, sign::now())?;
    if print_base {
        eprintln!(
            "signature base:\n{}\n(end of signature base)",
            p.signed.base
        );
    }
    Ok(p)
}

fn load_all(files: &[PathBuf]) -> anyhow::Result<Vec<LoadedKey>> {
    files
        .iter()
        .map(|f| keyfile::load_key(f).map_err(anyhow::Error::from))
        .collect()
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Generate {
            out: prefix,
            alg,
            bits,
        } => {
            let (sk, files) = keyfile::generate_files(&prefix, alg, bits)?;
            let jwk = keyfile::public_jwk(&sk);
            eprintln!(
                "wrote {} and {} (private, mode 0600: keep them secret) and {} (public)",
                files.private_jwk.display(),
                files.private_pem.display(),
                files.public_jwk.display()
            );
            out(&format!(
                "{}\nthumbprint: {}\n",
                jwk.to_json(),
                jwk.kid.unwrap_or_default()
            ))?;
        }
        Command::Thumbprint { files } => {
            let keys = load_all(&files)?;
            let mut s = String::new();
            for k in &keys {
                let tp = k
                    .thumbprint()
                    .with_context(|| k.path.display().to_string())?;
                if keys.len() == 1 {
                    s.push_str(&format!("{tp}\n"));
                } else {
                    s.push_str(&format!("{tp}  {}\n", k.path.display()));
                }
            }
            out(&s)?;
        }
        Command::Directory { files, pretty } => {
            let body = directory::directory_json(&load_all(&files)?)?;
            let body = if pretty {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                serde_json::to_string_pretty(&v)?
            } else {
                body
            };
            out(&format!("{body}\n"))?;
        }
        Command::Serve {
            key,
            directory,
            bind,
            port,
            max_age,
            proof_validity,
            scheme,
            path,
        } => {
            let keys = key
                .iter()
                .map(|k| keyfile::load_signing_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            if proof_validity <= 0 {
                anyhow::bail!("--proof-validity must be positive");
            }
            if !path.starts_with('/') || path.contains(['?', '#']) || path.len() < 2 {
                anyhow::bail!("--path {path:?} must be a path such as /keys/jwks.json");
            }
            let cfg = serve::ServeConfig {
                keys,
                directory_file: directory,
                max_age,
                proof_validity,
                scheme,
                default_authority: String::new(),
                path,
            };
            cfg.body().context("nothing to serve")?;
            let addr = serve::bind_address(&bind, port)?;
            let server = serve::DirectoryServer::bind(&addr, cfg.clone())?;
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            if !server.addr().ip().is_loopback() {
                eprintln!(
                    "warning: listening on {}, reachable from other machines",
                    server.addr()
                );
            }
            for k in &cfg.keys {
                let tp = keyfile::public_jwk(k).kid.unwrap_or_default();
                eprintln!(
                    "signing directory responses with {tp} ({})",
                    wba_filter::sign::SignatureKey::algorithm(k)
                );
            }
            eprintln!(
                "{}: http://{}{}",
                if cfg.is_directory() {
                    "directory"
                } else {
                    "JWK Set"
                },
                server.addr(),
                cfg.path
            );
            out(&format!("listening on http://{}\n", server.addr()))?;
            server.run();
        }
        Command::Sign {
            sign: args,
            curl,
            print_base,
        } => {
            let p = prepare(&args, print_base)?;
            out(&if curl { p.curl() } else { p.header_lines() })?;
        }
        Command::Request {
            sign: args,
            timeout,
            max_body,
            print_base,
        } => {
            let p = prepare(&args, print_base)?;
            eprintln!("> {} {}", p.method, p.url);
            for (n, v) in p.send_headers() {
                eprintln!("> {n}: {v}");
            }
            let answer = request::send(&p, Duration::from_secs(timeout.max(1)), max_body)?;
            out(&answer.render())?;
        }
        Command::Explain {
            request,
            key,
            directory,
            agent_url,
            now,
            scheme,
            url,
            method,
            clock_skew,
            max_validity,
            allow_test_keys,
            require_nonce,
            require_components,
        } => {
            let text = read_request(&request)?;
            let raw = rawrequest::parse(&text)
                .with_context(|| format!("cannot read the request in {request}"))?;
            let req = raw
                .to_http_request(&scheme, url.as_deref(), &method)
                .with_context(|| format!("cannot read the request in {request}"))?;
            let keys: Vec<Key> = match &directory {
                Some(d) => {
                    let set = directory::load_directory_file(d)?.1;
                    for s in &set.skipped {
                        eprintln!(
                            "warning: {}: {s}: a verifier would skip this key",
                            d.display()
                        );
                    }
                    set.keys
                }
                None => load_all(&key)?
                    .iter()
                    .map(|k| {
                        k.public_jwk
                            .to_key()
                            .with_context(|| k.path.display().to_string())
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            let required_components = require_components
                .iter()
                .map(|c| {
                    Component::parse(c)
                        .map_err(|e| anyhow::anyhow!("--require-component {c:?}: {e}"))
                })
                .collect::<anyhow::Result<_>>()?;
            let policy = Policy {
                clock_skew_seconds: clock_skew,
                max_validity_seconds: max_validity,
                required_components,
                allow_test_keys,
                require_nonce,
                ..Policy::default()
            };
            let e = explain::explain(
                &req,
                &keys,
                agent_url.as_deref(),
                &policy,
                now.unwrap_or_else(sign::now),
            )?;
            out(&e.report)?;
            return Ok(match e.verdict {
                Verdict::Verified(_) => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            });
        }
        Command::ReplayServer {
            listen,
            redis,
            cluster,
            redis_timeout_ms,
            max_ttl_seconds,
            threads,
        } => replay_server::run(replay_server::Config {
            listen,
            redis,
            cluster,
            redis_timeout: Duration::from_millis(redis_timeout_ms),
            max_ttl_seconds,
            threads,
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--alg`: an RFC 9421 algorithm name.
fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(name)
        .ok_or_else(|| format!("{name:?} is not one of ed25519, ecdsa-p256-sha256, rsa-pss-sha512"))
}

fn read_request(spec: &str) -> anyhow::Result<String> {
    let bytes = if spec == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("cannot read the request from stdin")?;
        b
    } else {
        std::fs::read(Path::new(spec)).with_context(|| format!("cannot read {spec}"))?
    };
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("{spec} is not text: expected a raw HTTP request or header lines")
    })
}
