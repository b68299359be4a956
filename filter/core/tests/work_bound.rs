//! Work per request grows at most linearly with what a request sends: for every parser and for
//! the whole request path, the cost at 8n components (labels, members, parameters, bytes) is at
//! most 12 times the cost at n (issue 17: 8,000 components cost 74 ms of an Envoy worker).
//!
//! Costs are counted, never timed: instructions executed, from valgrind's callgrind, which
//! repeats exactly for the same binary and inputs. [`work_is_bounded`] re-runs this test binary
//! under callgrind, once per workload, with only the ignored [`probe`] test selected and
//! `WBA_WORK_PROBE` naming the workload and its sizes. The probe builds each input outside the
//! measurement and runs it through `wba_work_measured`; callgrind collects only inside that
//! function
//! (`--toggle-collect`) and writes one dump per call (`--dump-after`). The cost of size n is
//! `Ir(n) - Ir(0)`; `n = 0` runs twice, and the difference of those two runs is the noise floor.
//!
//! Each workload has two regimes: sizes within the bounds (a signature that parses, builds a
//! base or verifies, say 8 against 64 components), and sizes past them (1,000 against 8,000
//! components), which must be refused cheaply. The request-path workloads whose signature
//! verifies leave the Ed25519 arithmetic out of the count (the inclusive cost of the calls to
//! `Ed25519Key::verify`, read from the dump, is taken out): its instruction count depends on
//! the signature bytes, which differ between sizes, and it is the same work whatever the size.
//!
//! Without valgrind the test prints why and passes, unless `WBA_REQUIRE_VALGRIND=1` (`make
//! unit` sets it, and installs valgrind). `WBA_WORK_JOBS` sets how many valgrind processes run
//! at once (default: the available cores, at most 4); `WBA_WORK_ONLY=name,name` runs only those
//! workloads. A run at 8n that has spent 13 times the cost at n is stopped there (callgrind
//! dumps periodically, and the test adds the dumps up): a quadratic case fails in seconds, its
//! ratio shown as `>13x`; `WBA_WORK_EXACT=1` lets every run finish.
//!
//! Absolute costs of the request path, for comparing two checkouts (a change must not make
//! signed or unsigned traffic dearer), from the ignored [`request_path_instructions`]:
//!
//! ```text
//! CARGO_PROFILE_NATIVE_STRIP=false cargo test -p wba-filter --profile native \
//!     --test work_bound -- --ignored --exact request_path_instructions --nocapture
//! ```
//!
//! The `native` profile is the native front end's optimization (`--release` with
//! `CARGO_PROFILE_RELEASE_STRIP=false` is the wasm module's, compiled for this machine; without
//! either, the debug build is counted). `strip` must be off so that callgrind can find
//! `wba_work_measured`. It prints `WBA_WORK_COMPARE=signed_ed25519=...,unsigned=...`; given
//! that line in the other checkout, it fails when either count grew by more than 3%.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use wba_filter::base::{signature_base, Message};
use wba_filter::config::Config;
use wba_filter::content_digest;
use wba_filter::directory::{parse_key_set, KidRule};
use wba_filter::header_map::decode_header_map;
use wba_filter::host::RecordingHost;
use wba_filter::jwk::Jwk;
use wba_filter::key_cache::KeyCache;
use wba_filter::replay::ReplayTable;
use wba_filter::request::HttpRequest;
use wba_filter::request_filter::{on_request_headers, request_from_headers, Action};
use wba_filter::shared::MemoryStore;
use wba_filter::sign::{sign_request, SignOptions};
use wba_filter::signature::parse_signature;
use wba_filter::signature_agent::parse_signature_agent;
use wba_filter::signature_input::parse_signature_input;

/// The cost at 8n may be at most this many times the cost at n.
const MAX_RATIO: f64 = 12.0;
/// The environment variable that makes [`probe`] run: `name:n,n,...` (a workload, its sizes).
const PROBE_ENV: &str = "WBA_WORK_PROBE";
const NOW: i64 = 1_800_000_000;
const AGENT: &str = "https://agent.example";
const AUTHORITY: &str = "shop.example";

// ---------------------------------------------------------------------------------------------
// Inputs.

/// The i-th of many distinct lowercase names: "aaa", "aab", ... (issue 17's request).
fn name(i: usize) -> String {
    let mut s = String::new();
    let mut i = i;
    for _ in 0..3 {
        s.insert(0, char::from(b'a' + (i % 26) as u8));
        i /= 26;
    }
    if i > 0 {
        s.insert_str(0, &i.to_string());
    }
    s
}

/// `("aaa" "aab" ...)` with n names.
fn names_list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| format!("\"{}\"", name(i))).collect();
    format!("({})", items.join(" "))
}

/// A dictionary field with n members `kN=N`.
fn dictionary(n: usize) -> String {
    (0..n)
        .map(|i| format!("k{i:04}={i:04}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn request(path: &str, headers: &[(String, String)]) -> HttpRequest {
    HttpRequest::from_parts("GET", "https", AUTHORITY, path, headers.to_vec())
}

fn pseudo(path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":scheme".into(), "https".into()),
        (":authority".into(), AUTHORITY.into()),
        (":path".into(), path.into()),
        ("user-agent".into(), "ExampleBot/1.0".into()),
        ("accept".into(), "text/html".into()),
    ]
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The filter's configuration: one agent, its Ed25519 key pinned.
fn config() -> Config {
    let jwk = Jwk::from_ed25519(signing_key().verifying_key().as_bytes()).to_json();
    Config::from_json(
        format!(r#"{{"mode":"enforce","agents":[{{"name":"A","url":"{AGENT}","keys":[{jwk}]}}]}}"#)
            .as_bytes(),
    )
    .unwrap()
}

/// `headers` (pseudo-headers first) signed over the Web Bot Auth defaults plus `extra`.
fn signed(
    mut headers: Vec<(String, String)>,
    extra: &[String],
    nonce: &str,
) -> Vec<(String, String)> {
    let req = request_from_headers(&headers, "x-web-bot-auth-");
    let mut opts = SignOptions::web_bot_auth(AGENT, NOW, 300);
    opts.components.extend(extra.iter().cloned());
    // "" signs without a nonce (the replay identity is then what was signed).
    opts.nonce = (!nonce.is_empty()).then(|| nonce.to_string());
    let h = sign_request(&req, &signing_key(), &opts).unwrap();
    headers.extend(h.pairs());
    headers
}

/// What the request path needs besides the request: configuration and keys, shared by every
/// request of the process as in the filter (an Ed25519 key's table is built once, on first
/// use), and for each request a fresh shared store and replay table, so that no signature is a
/// replay.
struct Filter {
    config: Config,
    keys: KeyCache,
}

thread_local! {
    static PROTOTYPE: (Config, KeyCache) = {
        let config = config();
        let keys = KeyCache::new(&config);
        (config, keys)
    };
}

impl Filter {
    fn new() -> Self {
        PROTOTYPE.with(|(config, keys)| Filter {
            config: config.clone(),
            keys: keys.clone(),
        })
    }

    /// A request ready to run: the host holding its headers, and a fresh store and table.
    fn prepare(&self, headers: Vec<(String, String)>) -> (RecordingHost, MemoryStore, ReplayTable) {
        let mut store = MemoryStore::default();
        let table = ReplayTable::open(&mut store, 64, [9; 32]).unwrap();
        (RecordingHost::new(headers, NOW), store, table)
    }
}

/// One request through [`on_request_headers`], as a workload.
fn request_path(headers: Vec<(String, String)>) -> Run {
    let mut filter = Filter::new();
    let (mut host, mut store, table) = filter.prepare(headers);
    Box::new(move || {
        let action = on_request_headers(
            &mut host,
            &filter.config,
            &mut filter.keys,
            &mut table.guard(&mut store),
            true,
        );
        std::hint::black_box(action);
    })
}

// ---------------------------------------------------------------------------------------------
// Workloads.

/// A prepared input and what to do with it: called once, inside [`wba_work_measured`].
type Run = Box<dyn FnMut()>;

/// Builds the input of size n of a workload.
type Build = fn(usize) -> Run;

/// How a workload's runs are counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    Everything,
    /// Without the Ed25519 arithmetic (see the module documentation).
    WithoutCrypto,
}

struct Workload {
    name: &'static str,
    /// What n counts.
    unit: &'static str,
    /// (n, 8n) within the bounds, then (n, 8n) past them.
    within: (usize, usize),
    past: (usize, usize),
    count: Count,
    build: Build,
}

fn parse_run<T: 'static>(input: String, f: fn(&str) -> T) -> Run {
    Box::new(move || {
        std::hint::black_box(f(&input));
    })
}

fn workloads() -> Vec<Workload> {
    let w = |name, unit, within, past, build| Workload {
        name,
        unit,
        within,
        past,
        count: Count::Everything,
        build,
    };
    vec![
        // ---- Signature-Input
        w(
            "signature_input_components",
            "components",
            (8, 64),
            (1000, 8000),
            |n| {
                let v = format!("sig1={};tag=\"web-bot-auth\"", names_list(n));
                parse_run(v, parse_signature_input)
            },
        ),
        w(
            "signature_input_labels",
            "labels",
            (8, 64),
            (100, 800),
            |n| {
                let v = (0..n)
                    .map(|i| format!("l{i:04}=(\"@authority\");tag=\"web-bot-auth\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                parse_run(v, parse_signature_input)
            },
        ),
        w(
            "signature_input_member_params",
            "parameters",
            (2, 16),
            (100, 800),
            |n| {
                let params: String = (0..n).map(|i| format!(";p{i:04}={i:04}")).collect();
                let v = format!("sig1=(\"@authority\"){params}");
                parse_run(v, parse_signature_input)
            },
        ),
        w(
            "signature_input_item_params",
            "parameters",
            (2, 16),
            (100, 800),
            |n| {
                // Refused for its uppercase name whatever n, so that n = 0 takes the same path.
                let params: String = (0..n).map(|i| format!(";p{i:04}={i:04}")).collect();
                let v = format!("sig1=(\"X-Upper\"{params})");
                parse_run(v, parse_signature_input)
            },
        ),
        w(
            "signature_input_string",
            "bytes",
            (256, 2048),
            (4096, 32768),
            |n| {
                let v = format!(
                    "sig1=(\"@authority\");keyid=\"{}\";tag=\"web-bot-auth\"",
                    "k".repeat(n)
                );
                parse_run(v, parse_signature_input)
            },
        ),
        w(
            "signature_input_label_bytes",
            "bytes",
            (16, 128),
            (1024, 8192),
            |n| {
                let v = format!("{}=(\"@authority\");tag=\"web-bot-auth\"", "l".repeat(n));
                parse_run(v, parse_signature_input)
            },
        ),
        // ---- Signature
        w("signature_labels", "labels", (8, 64), (100, 800), |n| {
            let v = (0..n)
                .map(|i| format!("l{i:04}=:AA==:"))
                .collect::<Vec<_>>()
                .join(", ");
            parse_run(v, parse_signature)
        }),
        w(
            "signature_bytes",
            "decoded bytes",
            (1024, 8192),
            (9216, 73728),
            |n| {
                let v = format!("sig1=:{}:", STANDARD.encode(vec![0xa5u8; n]));
                parse_run(v, parse_signature)
            },
        ),
        // ---- Signature-Agent
        w(
            "signature_agent_members",
            "members",
            (8, 64),
            (100, 800),
            |n| {
                let v = (0..n)
                    .map(|i| format!("m{i:04}=\"https://m{i:04}.example\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                parse_run(v, parse_signature_agent)
            },
        ),
        w(
            "signature_agent_string",
            "bytes",
            (256, 2048),
            (4096, 32768),
            |n| {
                let v = format!("\"https://agent.example/{}\"", "p".repeat(n));
                parse_run(v, parse_signature_agent)
            },
        ),
        // ---- The signature base (parsed, then built). Past the bounds at 80 -> 640 components
        // rather than 1,000 -> 8,000: the run at n is counted to its end, and on a quadratic base
        // (a key= component re-parsing its field) 80 components already cost 137 million
        // instructions; 80 is past the bound of 64 all the same.
        w(
            "base_dictionary_members",
            "components",
            (8, 64),
            (80, 640),
            |n| {
                // n components `"x-dict";key="kN"` over a dictionary field of n members.
                let covered: Vec<String> = (0..n)
                    .map(|i| format!("\"x-dict\";key=\"k{i:04}\""))
                    .collect();
                let input = format!("sig1=({})", covered.join(" "));
                let req = request("/", &[("x-dict".into(), dictionary(n))]);
                base_run(input, req)
            },
        ),
        w("base_query_params", "components", (8, 64), (80, 640), |n| {
            // n components `"@query-param";name="pN"` over a query of n parameters.
            let covered: Vec<String> = (0..n)
                .map(|i| format!("\"@query-param\";name=\"p{i:04}\""))
                .collect();
            let input = format!("sig1=({})", covered.join(" "));
            let query: Vec<String> = (0..n).map(|i| format!("p{i:04}={i:04}")).collect();
            let req = request(&format!("/search?{}", query.join("&")), &[]);
            base_run(input, req)
        }),
        // ---- Content-Digest
        w(
            "content_digest_members",
            "members",
            (8, 64),
            (1000, 8000),
            |n| {
                let body = b"{\"hello\": \"world\"}".to_vec();
                let mut v = content_digest::sha256(&body);
                for i in 0..n {
                    let _ = write!(v, ", x{i:04}=:AAAA:");
                }
                Box::new(move || {
                    std::hint::black_box(content_digest::check(&v, &body)).ok();
                })
            },
        ),
        // ---- Envoy's serialized header maps (the wasm front end)
        w(
            "header_map_entries",
            "headers of 64 bytes",
            (16, 128),
            (128, 1024),
            |n| {
                let pairs: Vec<(String, String)> = (0..n)
                    .map(|i| (format!("x-header-{i:06}"), format!("{i:0>46}")))
                    .collect();
                let mut bytes = (pairs.len() as u32).to_le_bytes().to_vec();
                for (k, v) in &pairs {
                    bytes.extend((k.len() as u32).to_le_bytes());
                    bytes.extend((v.len() as u32).to_le_bytes());
                }
                for (k, v) in &pairs {
                    bytes.extend(k.as_bytes());
                    bytes.push(0);
                    bytes.extend(v.as_bytes());
                    bytes.push(0);
                }
                Box::new(move || {
                    std::hint::black_box(decode_header_map(&bytes));
                })
            },
        ),
        // ---- Key directories (JSON)
        w("key_directory_keys", "keys", (4, 32), (100, 800), |n| {
            let keys: Vec<String> = (0..n)
                .map(|i| {
                    let mut seed = [7u8; 32];
                    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                    Jwk::from_ed25519(SigningKey::from_bytes(&seed).verifying_key().as_bytes())
                        .to_json()
                })
                .collect();
            let body = format!("{{\"keys\":[{}]}}", keys.join(","));
            Box::new(move || {
                std::hint::black_box(parse_key_set(body.as_bytes(), KidRule::Label, 32)).ok();
            })
        }),
        w(
            "key_directory_bytes",
            "bytes",
            (1024, 8192),
            (8192, 65536),
            |n| {
                let jwk = Jwk::from_ed25519(signing_key().verifying_key().as_bytes()).to_json();
                let jwk = jwk.trim_end_matches('}');
                let body = format!("{{\"keys\":[{jwk},\"note\":\"{}\"}}]}}", "n".repeat(n));
                Box::new(move || {
                    std::hint::black_box(parse_key_set(body.as_bytes(), KidRule::Label, 32)).ok();
                })
            },
        ),
        // ---- The request path (on_request_headers)
        w(
            "request_components",
            "components",
            (8, 64),
            (1000, 8000),
            |n| {
                // Issue 17's request: unsigned, cheap to send, costly to refuse.
                let mut h = pseudo("/");
                h.push((
                    "signature-input".into(),
                    format!("sig1={};tag=\"web-bot-auth\"", names_list(n)),
                ));
                h.push(("signature".into(), "sig1=:AA==:".into()));
                request_path(h)
            },
        ),
        w("request_labels", "labels", (8, 64), (100, 800), |n| {
            // n signatures, each passing the parsers and failing at its key.
            let mut h = pseudo("/");
            let input: Vec<String> = (0..n)
                .map(|i| {
                    let covered = format!("(\"@authority\" \"signature-agent\";key=\"l{i:04}\")");
                    let params = format!("created={NOW};expires={};keyid=\"k\"", NOW + 60);
                    format!("l{i:04}={covered};{params};tag=\"web-bot-auth\"")
                })
                .collect();
            let sig: Vec<String> = (0..n).map(|i| format!("l{i:04}=:AA==:")).collect();
            let agent: Vec<String> = (0..n).map(|i| format!("l{i:04}=\"{AGENT}\"")).collect();
            h.push(("signature-input".into(), input.join(", ")));
            h.push(("signature".into(), sig.join(", ")));
            h.push(("signature-agent".into(), agent.join(", ")));
            request_path(h)
        }),
        Workload {
            // The request at n = 0 verifies (its crypto is the same work at every size that
            // verifies, and none past the bound, which is refused first).
            count: Count::WithoutCrypto,
            ..w(
                "request_agent_members",
                "members",
                (7, 56),
                (100, 800),
                |n| {
                    // A genuine signature, its Signature-Agent member among n others (at most
                    // 64).
                    let mut h = signed(pseudo("/"), &[], "agent-members");
                    let agent = h.iter_mut().find(|(k, _)| k == "signature-agent").unwrap();
                    for i in 0..n {
                        let _ = write!(agent.1, ", m{i:04}=\"https://m{i:04}.example\"");
                    }
                    request_path(h)
                },
            )
        },
        w(
            "request_header_bytes",
            "headers of 64 bytes",
            (16, 128),
            (128, 1024),
            |n| {
                let mut h = pseudo("/");
                h.extend((0..n).map(|i| (format!("x-header-{i:06}"), format!("{i:0>46}"))));
                request_path(h)
            },
        ),
        Workload {
            count: Count::WithoutCrypto,
            ..w(
                "request_signed_dictionary_members",
                "components",
                (7, 56),
                (80, 640),
                |n| {
                    // A signature that verifies, covering n members of a dictionary field besides
                    // the defaults; past the bounds, the same shape with a bogus signature.
                    let mut h = pseudo("/");
                    h.push(("x-dict".into(), dictionary(n)));
                    let covered: Vec<String> = (0..n)
                        .map(|i| format!("\"x-dict\";key=\"k{i:04}\""))
                        .collect();
                    request_path(signed_or_forged(h, &covered))
                },
            )
        },
        Workload {
            count: Count::WithoutCrypto,
            ..w(
                "request_signed_query_params",
                "components",
                (7, 56),
                (80, 640),
                |n| {
                    let query: Vec<String> = (0..n).map(|i| format!("p{i:04}={i:04}")).collect();
                    let h = pseudo(&format!("/search?{}", query.join("&")));
                    let covered: Vec<String> = (0..n)
                        .map(|i| format!("\"@query-param\";name=\"p{i:04}\""))
                        .collect();
                    request_path(signed_or_forged(h, &covered))
                },
            )
        },
    ]
}

/// `headers` signed over the defaults plus `covered` when that is within the bounds of a
/// signature; otherwise the same `Signature-Input` a signer would send (the agent's URL and key
/// thumbprint are public) with a bogus signature: a request that passes the cheap checks, so
/// that the signature base is built, unless the parsers refuse it first.
fn signed_or_forged(headers: Vec<(String, String)>, covered: &[String]) -> Vec<(String, String)> {
    if covered.len() <= 60 {
        return signed(headers, covered, "n");
    }
    let mut h = headers;
    let defaults = ["\"@authority\"", "\"@method\"", "\"@path\""];
    let all: Vec<&str> = defaults
        .iter()
        .copied()
        .chain(covered.iter().map(String::as_str))
        .chain(["\"signature-agent\";key=\"sig1\""])
        .collect();
    h.push(("signature-agent".into(), format!("sig1=\"{AGENT}\"")));
    h.push((
        "signature-input".into(),
        format!(
            "sig1=({});created={NOW};expires={};keyid=\"{}\";nonce=\"n\";tag=\"web-bot-auth\"",
            all.join(" "),
            NOW + 300,
            Jwk::from_ed25519(signing_key().verifying_key().as_bytes())
                .thumbprint()
                .unwrap()
        ),
    ));
    h.push((
        "signature".into(),
        format!("sig1=:{}:", STANDARD.encode([0u8; 64])),
    ));
    h
}

/// Parses the `Signature-Input` `input` and builds each signature's base over `req`.
fn base_run(input: String, req: HttpRequest) -> Run {
    Box::new(move || {
        if let Ok(inputs) = parse_signature_input(&input) {
            for i in &inputs {
                std::hint::black_box(signature_base(Message::Request(&req), i)).ok();
            }
        }
    })
}

/// The request-path costs [`request_path_instructions`] reports.
fn absolute_workloads() -> Vec<(&'static str, Build)> {
    vec![
        ("signed_ed25519", |i| {
            // The Web Bot Auth defaults (@authority, @method, @path, signature-agent), a nonce.
            request_path(signed(
                pseudo(&format!("/items/{i}?ref=bench")),
                &[],
                &format!("nonce-{i}"),
            ))
        }),
        ("signed_ed25519_no_nonce", |i| {
            request_path(signed(pseudo(&format!("/items/{i}?ref=bench")), &[], ""))
        }),
        ("unsigned", |i| {
            request_path(pseudo(&format!("/items/{i}?ref=bench")))
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The probe: runs inside valgrind.

/// Runs one prepared input: the only function callgrind counts (its symbol is unmangled so
/// that `--toggle-collect` names it exactly).
#[inline(never)]
#[no_mangle]
pub fn wba_work_measured(run: &mut dyn FnMut()) {
    run();
}

/// Runs an input outside the count.
#[inline(never)]
fn unmeasured(run: &mut dyn FnMut()) {
    run();
}

#[test]
#[ignore = "run by work_is_bounded and request_path_instructions, under valgrind"]
fn probe() {
    let Ok(spec) = std::env::var(PROBE_ENV) else {
        return;
    };
    let (name, sizes) = spec.split_once(':').unwrap();
    let sizes: Vec<usize> = sizes.split(',').map(|s| s.parse().unwrap()).collect();
    let (build, warm): (Build, usize) = match workloads().iter().find(|w| w.name == name) {
        Some(w) => (w.build, w.within.0),
        None => (
            absolute_workloads()
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1,
            0,
        ),
    };
    // Uncounted first: the lazily built tables (the basepoint's, the key's), the dynamic
    // linker's first calls, the allocator's first pages.
    for n in [0, warm, 0] {
        unmeasured(&mut *build(n));
    }
    for n in sizes {
        let mut run = build(n);
        wba_work_measured(&mut *run);
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: runs the probe under callgrind.

fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether valgrind is here; when it is not, says why, and fails if it must be.
fn valgrind_or_skip(test: &str) -> bool {
    if valgrind_version().is_some() {
        return true;
    }
    let required = std::env::var("WBA_REQUIRE_VALGRIND").is_ok_and(|v| v == "1");
    let why =
        "valgrind is not installed (Debian: apt-get install valgrind; `make unit` installs it)";
    assert!(!required, "{test}: {why}, and WBA_REQUIRE_VALGRIND=1");
    eprintln!("{test}: SKIPPED: {why}");
    false
}

/// A folder for callgrind's files under target/ (next to the test binary's profile folder).
fn scratch_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let dir = target
        .join("work_bound")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One dump of callgrind's: what triggered it, and the instructions counted since the last.
struct Dump {
    after_call: bool,
    instructions: u64,
    /// Of which in calls to [`CRYPTO`] that returned before the dump.
    crypto: u64,
}

/// The dump `file`, once callgrind has finished writing it (`totals:` is its last line).
fn read_dump(file: &Path, count: Count) -> Option<Dump> {
    let text = std::fs::read_to_string(file).ok()?;
    let totals = text.lines().rev().find(|l| l.starts_with("totals:"))?;
    let instructions: u64 = totals.split_whitespace().nth(1)?.parse().ok()?;
    // A call's inclusive cost is the line after its `cfn=` and `calls=` lines.
    let lines: Vec<&str> = text.lines().collect();
    let mut crypto = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.strip_prefix("cfn=") == Some(CRYPTO) {
            let cost = lines.get(i + 2).and_then(|c| c.split_whitespace().last());
            crypto += cost.and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    // Callgrind lists every function it has seen, with or without cost.
    assert!(
        count == Count::Everything
            || crypto > 0
            || instructions == 0
            || !text.contains("fn=curve25519_dalek"),
        "{}: Ed25519 arithmetic outside {CRYPTO}: was it renamed?",
        file.display()
    );
    Some(Dump {
        after_call: text.contains("desc: Trigger: --dump-after="),
        instructions,
        crypto,
    })
}

/// The finished dumps `<out>.1`, `<out>.2`, ... in order, up to the first unfinished one.
fn dumps(out: &Path, count: Count, known: &mut Vec<Dump>) {
    loop {
        let file = PathBuf::from(format!("{}.{}", out.display(), known.len() + 1));
        match read_dump(&file, count) {
            Some(d) => known.push(d),
            None => return,
        }
    }
}

/// One measured call: its instructions as counted, and those of the Ed25519 arithmetic in it.
#[derive(Clone, Copy)]
struct Call {
    instructions: u64,
    crypto: u64,
}

/// What a probe run under callgrind counted.
enum Counted {
    Calls(Vec<Call>),
    /// Stopped once past its budget, at this many instructions.
    OverBudget(u64),
}

/// Runs the probe under callgrind on `spec` (`name:n,n,...`). With a budget (instructions),
/// callgrind also dumps every few million basic blocks, and the run is stopped as soon as the
/// dumps add up to more than the budget: a quadratic case costs its budget, not its square.
fn callgrind(dir: &Path, tag: &str, spec: &str, count: Count, budget: Option<u64>) -> Counted {
    let out = dir.join(format!("{tag}.callgrind"));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--toggle-collect=wba_work_measured")
        .arg("--dump-after=wba_work_measured")
        .arg("--dump-line=no")
        .arg("--compress-strings=no");
    if let Some(budget) = budget {
        // About ten dumps before the budget is spent (a basic block is a few instructions).
        cmd.arg(format!("--dump-every-bb={}", (budget / 50).max(2_000_000)));
    }
    cmd.arg(std::env::current_exe().unwrap())
        .args([
            "probe",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "-q",
        ])
        .env(PROBE_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut seen = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(budget) = budget {
            dumps(&out, count, &mut seen);
            let so_far: u64 = seen.iter().map(|d| d.instructions).sum();
            if so_far > budget {
                let _ = child.kill();
                let _ = child.wait();
                return Counted::OverBudget(so_far);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = log.join().unwrap();
    assert!(
        status.success(),
        "valgrind on {spec} failed: {status}\n{log}"
    );
    dumps(&out, count, &mut seen);
    let mut calls = Vec::new();
    let (mut current, mut parts) = (
        Call {
            instructions: 0,
            crypto: 0,
        },
        0,
    );
    let mut split = false;
    for d in &seen {
        current.instructions += d.instructions;
        current.crypto += d.crypto;
        parts += usize::from(d.instructions > 0);
        if d.after_call {
            calls.push(current);
            split |= parts > 1;
            (current, parts) = (
                Call {
                    instructions: 0,
                    crypto: 0,
                },
                0,
            );
        }
    }
    assert!(
        !calls.is_empty(),
        "{}: no dump after wba_work_measured: did callgrind find the function? (a stripped \
         binary: set CARGO_PROFILE_<PROFILE>_STRIP=false)\n{log}",
        out.display()
    );
    if count == Count::WithoutCrypto {
        // A dump in the middle of a call does not say what its unfinished calls cost: count
        // such a run again, in one piece.
        if split {
            return callgrind(dir, &format!("{tag}-whole"), spec, count, None);
        }
        for c in &mut calls {
            c.instructions -= c.crypto;
        }
    }
    Counted::Calls(calls)
}

/// The function whose instructions [`Count::WithoutCrypto`] leaves out.
const CRYPTO: &str = "wba_filter::ed25519::Ed25519Key::verify";

/// One workload's measurements.
struct Measured {
    name: &'static str,
    unit: &'static str,
    zero: [u64; 2],
    cases: Vec<Case>,
}

struct Case {
    regime: &'static str,
    small: usize,
    big: usize,
    ir_small: u64,
    /// `Err(at)`: stopped past its budget at this many instructions.
    ir_big: Result<u64, u64>,
}

impl Measured {
    fn noise(&self) -> u64 {
        self.zero[0].abs_diff(self.zero[1])
    }

    fn base(&self) -> u64 {
        self.zero[0].min(self.zero[1])
    }

    /// The work of a call of the case: within the bounds, Ir(n) - Ir(0) (the constant part, a
    /// signature that verifies included, taken out); past them, Ir(n) itself: such an input is
    /// refused before the work n = 0 does (a verification, a base), so Ir(0) is no floor to
    /// subtract, and what must not grow is everything the refusal costs.
    fn cost(&self, c: &Case, ir: u64) -> u64 {
        match c.regime {
            "past" => ir,
            _ => ir.saturating_sub(self.base()),
        }
    }

    /// What cost(8n) is divided by: cost(n), or the noise floor if that is more.
    fn reference(&self, c: &Case) -> u64 {
        self.cost(c, c.ir_small).max((self.noise() * 20).max(1000))
    }
}

fn measure(w: &Workload, dir: &Path) -> Measured {
    let spec = |sizes: &[usize]| {
        let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
        format!("{}:{}", w.name, sizes.join(","))
    };
    let calls = |counted| match counted {
        Counted::Calls(c) => c,
        Counted::OverBudget(_) => unreachable!("no budget"),
    };
    let small = calls(callgrind(
        dir,
        &format!("{}-small", w.name),
        &spec(&[0, 0, w.within.0, w.past.0]),
        w.count,
        None,
    ));
    assert_eq!(small.len(), 4, "{}", w.name);
    // A run left in pieces by the budget's dumps has its Ed25519 arithmetic in its count.
    let crypto = small.iter().map(|c| c.crypto).max().unwrap_or(0) * 2;
    let small: Vec<u64> = small.iter().map(|c| c.instructions).collect();
    let mut m = Measured {
        name: w.name,
        unit: w.unit,
        zero: [small[0], small[1]],
        cases: Vec::new(),
    };
    for (regime, (n, big), ir_small) in [("within", w.within, small[2]), ("past", w.past, small[3])]
    {
        let mut case = Case {
            regime,
            small: n,
            big,
            ir_small,
            ir_big: Ok(0),
        };
        // Enough to tell: the run stops once past what the test accepts (and a little more).
        let budget = m.base() + m.reference(&case) * (MAX_RATIO as u64 + 1) + crypto;
        let budget = (!exact()).then_some(budget);
        let ir_big = match callgrind(
            dir,
            &format!("{}-{big}", w.name),
            &spec(&[big]),
            w.count,
            budget,
        ) {
            Counted::Calls(c) => Ok(c[0].instructions),
            Counted::OverBudget(at) => Err(at),
        };
        case.ir_big = ir_big;
        m.cases.push(case);
    }
    m
}

/// `WBA_WORK_EXACT=1`: count every run to its end, however long (for the exact ratios of a
/// quadratic case, instead of "over 13x").
fn exact() -> bool {
    std::env::var("WBA_WORK_EXACT").is_ok_and(|v| v == "1")
}

fn jobs() -> usize {
    std::env::var("WBA_WORK_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2)
        })
        .max(1)
}

/// Runs `f` on every item, `jobs()` at a time; the results in the items' order.
fn parallel<T: Send + 'static, R: Send + 'static>(items: Vec<T>, f: fn(T) -> R) -> Vec<R> {
    let n = items.len();
    let queue = Arc::new(Mutex::new(
        items.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let workers: Vec<_> = (0..jobs().min(n.max(1)))
        .map(|_| {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            std::thread::spawn(move || loop {
                let Some((i, item)) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                let r = f(item);
                results.lock().unwrap().push((i, r));
            })
        })
        .collect();
    for w in workers {
        if let Err(e) = w.join() {
            std::panic::resume_unwind(e);
        }
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn work_is_bounded() {
    if std::env::var_os(PROBE_ENV).is_some() || !valgrind_or_skip("work_is_bounded") {
        return;
    }
    let only: Option<Vec<String>> = std::env::var("WBA_WORK_ONLY")
        .ok()
        .map(|o| o.split(',').map(str::to_string).collect());
    let selected: Vec<&'static str> = workloads()
        .iter()
        .map(|w| w.name)
        .filter(|n| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n)))
        .collect();
    let dir = scratch_dir("ratios");
    let started = Instant::now();
    let measured = parallel(
        selected.into_iter().map(|n| (n, dir.clone())).collect(),
        |(name, dir)| {
            let all = workloads();
            measure(all.iter().find(|w| w.name == name).unwrap(), &dir)
        },
    );
    let mut report = String::new();
    let mut failures = Vec::new();
    let _ = writeln!(
        report,
        "{:<34} {:<6} {:>11} {:>11} {:>14} {:>8}",
        "workload", "regime", "n -> 8n", "cost(n)", "cost(8n)", "ratio"
    );
    for m in &measured {
        for c in &m.cases {
            let reference = m.reference(c) as f64;
            let (cost_big, ratio, ok) = match c.ir_big {
                Ok(ir) => {
                    let ratio = m.cost(c, ir) as f64 / reference;
                    (
                        m.cost(c, ir).to_string(),
                        format!("{ratio:.1}x"),
                        ratio <= MAX_RATIO,
                    )
                }
                Err(at) => {
                    let ratio = m.cost(c, at) as f64 / reference;
                    (
                        format!(">{}", m.cost(c, at)),
                        format!(">{ratio:.0}x"),
                        false,
                    )
                }
            };
            let _ = writeln!(
                report,
                "{:<34} {:<6} {:>11} {:>11} {:>14} {:>8}{}",
                m.name,
                c.regime,
                format!("{}->{}", c.small, c.big),
                m.cost(c, c.ir_small),
                cost_big,
                ratio,
                if ok { "" } else { "  FAIL" }
            );
            if !ok {
                failures.push(format!(
                    "{} ({}): {} -> {} {} costs {ratio} (at most {MAX_RATIO}x)",
                    m.name, c.regime, c.small, c.big, m.unit
                ));
            }
        }
        let _ = writeln!(
            report,
            "{:<34} {:<6} Ir(0) = {} and {}",
            "", "noise", m.zero[0], m.zero[1]
        );
    }
    eprintln!(
        "work per call, in instructions counted by callgrind ({}, {:.0} s; \
         cost(n) = Ir(n) - Ir(0)):\n{report}",
        valgrind_version().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "work grows faster than the input:\n{}",
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Absolute instructions of the request path ([`on_request_headers`]) for an Ed25519-signed
/// request and an unsigned one, crypto included: for comparing two checkouts (see the module
/// documentation). Five requests of each, distinct paths and nonces, the same inputs in every
/// checkout; the median is printed as `name=count`. With `WBA_WORK_COMPARE` set to such a
/// line from the other checkout (`signed_ed25519=500297,unsigned=6061`), fails when a count
/// grew by more than 3%.
#[test]
#[ignore = "prints absolute instruction counts; run on demand (module documentation)"]
fn request_path_instructions() {
    if std::env::var_os(PROBE_ENV).is_some() || !valgrind_or_skip("request_path_instructions") {
        return;
    }
    let before: Vec<(String, u64)> = std::env::var("WBA_WORK_COMPARE")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| {
            let (name, count) = p.split_once('=')?;
            Some((name.trim().to_string(), count.trim().parse().ok()?))
        })
        .collect();
    let dir = scratch_dir("absolute");
    let mut now = Vec::new();
    let mut regressions = Vec::new();
    for (name, _) in absolute_workloads() {
        let Counted::Calls(ir) = callgrind(
            &dir,
            name,
            &format!("{name}:1,2,3,4,5"),
            Count::Everything,
            None,
        ) else {
            unreachable!("no budget")
        };
        let ir: Vec<u64> = ir.iter().map(|c| c.instructions).collect();
        let mut sorted = ir.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let change = before.iter().find(|(n, _)| n == name).map(|(_, was)| {
            let change = (median as f64 / *was as f64 - 1.0) * 100.0;
            if change > 3.0 {
                regressions.push(format!(
                    "{name}: {was} -> {median} instructions ({change:+.1}%)"
                ));
            }
            format!(", {change:+.2}% against {was}")
        });
        println!(
            "request path, {name}: {median} instructions (median of {ir:?}{})",
            change.unwrap_or_default()
        );
        now.push(format!("{name}={median}"));
    }
    println!("WBA_WORK_COMPARE={}", now.join(","));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        regressions.is_empty(),
        "the request path costs more than 3% more:\n{}",
        regressions.join("\n")
    );
}

#[test]
fn workloads_do_what_they_say() {
    // Outside valgrind: every workload runs; the signed ones verify.
    for w in workloads() {
        for n in [0, w.within.0, w.within.1] {
            (w.build)(n)();
        }
    }
    for covered in [0, 56] {
        let mut h = pseudo("/");
        h.push(("x-dict".into(), dictionary(covered)));
        let c: Vec<String> = (0..covered)
            .map(|i| format!("\"x-dict\";key=\"k{i:04}\""))
            .collect();
        let mut filter = Filter::new();
        let (mut host, mut store, table) = filter.prepare(signed_or_forged(h, &c));
        let action = on_request_headers(
            &mut host,
            &filter.config,
            &mut filter.keys,
            &mut table.guard(&mut store),
            true,
        );
        assert_eq!(action, Action::Continue);
        assert_eq!(
            host.header_values("x-web-bot-auth-result"),
            ["verified"],
            "{covered}"
        );
    }
}
