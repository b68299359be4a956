//! The reference implementations under `tests/interop`: the npm `web-bot-auth` package (node
//! scripts in `tests/interop/node`) and the PyPI `http-message-signatures` package (Python
//! scripts in `tests/interop/python`). Finds them, skips (or, with `WBA_REQUIRE_INTEROP=1`,
//! fails) when they are missing, and runs their scripts with JSON in and out.
//!
//! Needs only `std` and `serde_json`: `keys/tests/interop.rs` includes this file by path.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};

use serde_json::Value;

/// The repository root: the first folder above the including crate (filter/core or keys,
/// at different depths) that holds the workspace's Cargo.lock.
pub fn repo_root() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map_or(crate_dir.clone(), Path::to_path_buf)
}

pub fn node_dir() -> PathBuf {
    repo_root().join("tests/interop/node")
}

pub fn python_dir() -> PathBuf {
    repo_root().join("tests/interop/python")
}

/// `WBA_NODE`, else `node`.
pub fn node() -> String {
    std::env::var("WBA_NODE").unwrap_or_else(|_| "node".into())
}

/// `WBA_PYTHON`, else `<repo>/.venv/bin/python` when present, else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("WBA_PYTHON") {
        return p;
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

/// Whether the node tests can run (`npm ci` has installed the package); panics when they
/// must and cannot.
pub fn node_available() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    static NOTICE: Once = Once::new();
    let probe = PROBE.get_or_init(|| {
        if node_dir().join("node_modules/web-bot-auth").is_dir() {
            Ok(())
        } else {
            Err("tests/interop/node has no node_modules/web-bot-auth: run `npm ci --prefix tests/interop/node`".into())
        }
    });
    usable("node", probe, &NOTICE)
}

/// Whether the Python tests can run (the interpreter imports the package); panics when they
/// must and cannot.
pub fn python_available() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    static NOTICE: Once = Once::new();
    let probe = PROBE.get_or_init(|| {
        let py = python();
        let e = match Command::new(&py)
            .args([
                "-c",
                "import http_message_signatures, http_sf, cryptography",
            ])
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => format!(
                "{py} cannot import http_message_signatures: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run {py}: {e}"),
        };
        Err(format!(
            "{e}; create it with `python3 -m venv .venv && .venv/bin/pip install -r tests/interop/python/requirements.txt` or set WBA_PYTHON"
        ))
    });
    usable("python", probe, &NOTICE)
}

/// `true` when the probe succeeded. Otherwise panics under `WBA_REQUIRE_INTEROP=1`, or says why
/// the `suite` tests skip, once per test binary, on the real stderr (the test harness captures
/// `eprintln!` of passing tests, which would hide it), and returns `false`.
fn usable(suite: &str, probe: &Result<(), String>, notice: &Once) -> bool {
    let Err(msg) = probe else {
        return true;
    };
    if std::env::var("WBA_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!("WBA_REQUIRE_INTEROP=1: {msg}");
    }
    notice.call_once(|| {
        let _ = writeln!(std::io::stderr(), "SKIPPED {suite} interop tests: {msg}");
    });
    false
}

/// Runs `program args...` in `dir`, with `stdin` (JSON) on its standard input, and returns the
/// JSON it prints; panics when it fails or prints no JSON.
pub fn run_json(program: &str, args: &[&str], dir: &Path, stdin: Option<&Value>) -> Value {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(v) = stdin {
        input.write_all(v.to_string().as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs a node script of `tests/interop/node` with `job` on stdin.
pub fn run_node(script: &str, job: &Value) -> Value {
    run_json(&node(), &[script], &node_dir(), Some(job))
}

/// Runs a Python script of `tests/interop/python` (`args[0]`), with `stdin` if any.
pub fn run_python(args: &[&str], stdin: Option<&Value>) -> Value {
    run_json(&python(), args, &python_dir(), stdin)
}

/// A verifier script's answer `{"ok": true, ...}` or `{"ok": false, "error": ...}`: the answer,
/// or the error.
pub fn verifier_answer(script: &str, out: Value) -> Result<Value, String> {
    match out["ok"].as_bool() {
        Some(true) => Ok(out),
        Some(false) => Err(out["error"].as_str().unwrap_or("?").to_string()),
        None => panic!("{script}: {out}"),
    }
}
