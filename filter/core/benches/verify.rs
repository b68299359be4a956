//! `make bench`, part 1: verification of one typical Web Bot Auth request, natively.
//!
//! - `ours`: our core, `verify_request` (parse Signature-Input, Signature and Signature-Agent,
//!   check the profile, look the key up, build the signature base, ed25519 `verify_strict`);
//! - `web_bot_auth_crate`: the crates.io `web-bot-auth` crate (the reference implementation),
//!   `WebBotAuthVerifier::parse` then `verify`, on the same request, with the component values
//!   handed to it by a small adapter (as in tests/interop.rs);
//! - `ed25519_floor`: a bare `ed25519-dalek` `verify_strict` of the same signature base bytes
//!   with an already decoded key: no implementation can do less;
//! - `ours_ecdsa_p256`, `ours_rsa_pss_2048`: our core on the same request signed with a P-256
//!   key (ecdsa-p256-sha256) and a 2048-bit RSA key (rsa-pss-sha512), and their floors
//!   `ecdsa_p256_floor`, `rsa_pss_2048_floor`: the key's check of the base alone.
//!
//! The request covers `@authority`, `@method`, `@path` and the agent's `Signature-Agent` member
//! and carries a nonce, like the requests of the end-to-end benchmark. Medians are read from
//! `target/criterion/verify/*/new/estimates.json` by bench/run.sh.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so
//! that other work on the machine (a 2-core machine, other builds) does not inflate the figures;
//! the end-to-end benchmark measures CPU time per request too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signature, SigningKey};
use web_bot_auth::keyring::{KeyRing as TheirKeyRing, Thumbprintable};
use web_bot_auth::WebBotAuthVerifier;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/theirs.rs"]
mod theirs;

use common::now;
use theirs::Theirs;
use wba_filter::agent_url::AgentId;
use wba_filter::jwk::Jwk;
use wba_filter::jwk::Key;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::private_key::PrivateKey;
use wba_filter::request::HttpRequest;
use wba_filter::sign::{sign_request, SignOptions, SignatureKey};
use wba_filter::verdict::Outcome;
use wba_filter::verify::verify_request;

const AGENT: &str = "https://agent.example";
const SEED: [u8; 32] = [
    0x51, 0x0e, 0x9c, 0x27, 0xb4, 0x63, 0xf8, 0x1d, 0x8a, 0x3c, 0xd5, 0x70, 0x06, 0xe9, 0x42, 0xbb,
    0x2f, 0x94, 0x61, 0xc8, 0x1a, 0x7d, 0xe3, 0x55, 0x0c, 0xa6, 0x39, 0xf2, 0x84, 0x4b, 0xd0, 0x17,
];

/// A typical signed request: what a crawler sends, as the filter sees it.
fn signed_request<K: SignatureKey>(key: &K, now: i64) -> (HttpRequest, String) {
    let mut req = HttpRequest::from_parts(
        "GET",
        "https",
        "shop.example",
        "/items/42?color=blue",
        vec![
            ("host".into(), "shop.example".into()),
            (
                "user-agent".into(),
                "ExampleBot/1.0 (+https://agent.example/bot)".into(),
            ),
            ("accept".into(), "text/html,application/xhtml+xml".into()),
            ("accept-encoding".into(), "gzip, br".into()),
        ],
    );
    let mut opts = SignOptions::web_bot_auth(AGENT, now, 3600);
    opts.nonce = Some("ZXhhbXBsZS1ub25jZS0wMDAwMDAwMDAwMDAwMQ".into());
    let h = sign_request(&req, key, &opts).unwrap();
    for (n, v) in h.pairs() {
        req.add_header(&n, &v);
    }
    (req, h.base)
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpu;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on 64-bit Linux) into `t`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Elsewhere: wall time.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn bench(c: &mut Criterion<ThreadCpu>) {
    let key = SigningKey::from_bytes(&SEED);
    let now = now();
    let (req, base) = signed_request(&key, now);

    let mut ring = KeyRing::default();
    ring.add(
        "Bench Agent",
        AgentId::parse(AGENT).unwrap(),
        vec![Jwk::from_ed25519(key.verifying_key().as_bytes())
            .to_key()
            .unwrap()],
    );
    let policy = Policy::default();
    assert_eq!(
        verify_request(&req, &policy, &ring, now).outcome(),
        Outcome::Verified
    );

    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let mut theirs = TheirKeyRing::default();
    theirs
        .try_import_jwk(&Thumbprintable::OKP {
            crv: "Ed25519".into(),
            x,
        })
        .unwrap();
    let their_verify = |req: &HttpRequest| {
        let msg = Theirs::verifying(req);
        let v = WebBotAuthVerifier::parse(&msg).map_err(|e| e.to_string())?;
        v.verify(&theirs, None).map_err(|e| e.to_string())
    };
    their_verify(&req).expect("the web-bot-auth crate verifies the bench request");

    let vk = key.verifying_key();
    let sig_header = req.header("signature").unwrap();
    let sig_b64 = sig_header
        .split_once('=')
        .unwrap()
        .1
        .trim_matches(':')
        .to_string();
    let sig = Signature::from_slice(&STANDARD.decode(sig_b64).unwrap()).unwrap();
    vk.verify_strict(base.as_bytes(), &sig).unwrap();

    let mut g = c.benchmark_group("verify");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(60);
    g.bench_function("ours", |b| {
        b.iter(|| verify_request(black_box(&req), &policy, &ring, now))
    });
    g.bench_function("web_bot_auth_crate", |b| {
        b.iter(|| their_verify(black_box(&req)))
    });
    g.bench_function("ed25519_floor", |b| {
        b.iter(|| vk.verify_strict(black_box(base.as_bytes()), black_box(&sig)))
    });

    // The other two algorithms: the same request, the same checks, another key.
    let rsa_jwk: serde_json::Value =
        serde_json::from_str(include_str!("../tests/data/rsa_test_keys.json")).unwrap();
    let others = [
        (
            "ecdsa_p256",
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&SEED).unwrap()),
        ),
        (
            "rsa_pss_2048",
            PrivateKey::from_jwk(&rsa_jwk["rsa2048"]).unwrap(),
        ),
    ];
    for (name, private) in &others {
        let (req, base) = signed_request(private, now);
        let public = Key::from_jwk_json(&private.public_jwk().to_json()).unwrap();
        let mut ring = KeyRing::default();
        ring.add(
            "Bench Agent",
            AgentId::parse(AGENT).unwrap(),
            vec![public.clone()],
        );
        assert_eq!(
            verify_request(&req, &policy, &ring, now).outcome(),
            Outcome::Verified
        );
        let sig = private.sign_message(base.as_bytes()).unwrap();
        public.verify(base.as_bytes(), &sig).unwrap();
        g.bench_function(format!("ours_{name}"), |b| {
            b.iter(|| verify_request(black_box(&req), &policy, &ring, now))
        });
        g.bench_function(format!("{name}_floor"), |b| {
            b.iter(|| public.verify(black_box(base.as_bytes()), black_box(&sig)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench
}
criterion_main!(benches);
