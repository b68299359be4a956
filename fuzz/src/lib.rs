//! Shared input decoding for the fuzz targets.
//!
//! Targets that need a whole request read it as text, so that seeds are readable and
//! mutations stay meaningful:
//!
//! ```text
//! POST https example.com /foo?param=Value
//! host: example.com
//! signature-input: sig1=("@authority");created=1;keyid="k"
//! ```
//!
//! The first line holds method, scheme, authority and path (with its query), separated by single
//! spaces; missing parts are empty. Every further line is one header field line, `name: value`
//! (split at the first `:`; a line without one is a name with an empty value), up to
//! [`MAX_FIELD_LINES`]: the lines after that are appended to the last field's value, joined by
//! `, ` (as a proxy combines field lines), so that a 64 KiB input is a request Envoy could pass
//! on (at most 100 headers by default, `max_headers_count`), its bytes in few, long values
//! rather than in thousands of headers.
//!
//! Every target runs its work on an input through [`bounded`], which makes a slow unit a crash.

use std::sync::OnceLock;
use std::time::Duration;

use wba_filter::request::HttpRequest;

/// How long one unit of work on one input may take, in CPU time of the fuzzing thread, before it
/// is a finding: `FUZZ_SLOW_UNIT_MS` milliseconds (default 10).
///
/// libFuzzer cannot do this itself: `-timeout` is whole seconds, and `-report_slow_units` (also
/// seconds) only prints, saving nothing. A request costing 10 ms of an Envoy worker is already
/// a denial of service (issue 17: 8,000 components cost 74 ms).
pub fn slow_unit_limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let ms = std::env::var("FUZZ_SLOW_UNIT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| *ms > 0.0)
            .unwrap_or(10.0);
        Duration::from_secs_f64(ms / 1000.0)
    })
}

/// CPU time consumed so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`): unlike wall
/// time, it does not count the time the thread waited while other processes ran (the fuzzers
/// share two cores with builds and other sessions).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `unit` (one piece of work on the current input: it must do the same work each time it
/// is called) and returns its result; panics, so that libFuzzer saves the input as a crash,
/// when it takes more than [`slow_unit_limit`] of CPU time. A unit over the limit is run twice
/// more and judged by its fastest run, so that a first run that builds lazily initialized
/// tables, or a cache or page-fault hiccup, is not a finding.
pub fn bounded<R>(what: &str, mut unit: impl FnMut() -> R) -> R {
    let limit = slow_unit_limit();
    let start = thread_cpu_time();
    let result = unit();
    let mut fastest = thread_cpu_time().saturating_sub(start);
    let mut runs = 1;
    while fastest > limit && runs < 3 {
        let start = thread_cpu_time();
        drop(unit());
        fastest = fastest.min(thread_cpu_time().saturating_sub(start));
        runs += 1;
    }
    assert!(
        fastest <= limit,
        "slow unit: {what} took {fastest:?} of CPU time at best of {runs} runs, over the \
         {limit:?} limit (FUZZ_SLOW_UNIT_MS)"
    );
    result
}

/// Decodes bytes as text; invalid UTF-8 is replaced, as a host's header API would refuse it.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The request line's parts: method, scheme, authority, path and query.
pub fn request_line(line: &str) -> (&str, &str, &str, &str) {
    let mut parts = line.splitn(4, ' ');
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next(), next())
}

/// Header field lines after the request line, as Envoy would let them through: 100 headers at
/// most by default, the four pseudo-headers included.
pub const MAX_FIELD_LINES: usize = 96;

/// Header field lines (at most [`MAX_FIELD_LINES`]; the rest joins the last one's value).
pub fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in lines {
        if out.len() == MAX_FIELD_LINES {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(", ");
                value.push_str(l);
            }
            continue;
        }
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        out.push((n.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()));
    }
    out
}

/// A request from its text form (see the module documentation).
pub fn request(text: &str) -> HttpRequest {
    let mut lines = text.split('\n');
    let (method, scheme, authority, path) = request_line(lines.next().unwrap_or_default());
    HttpRequest::from_parts(method, scheme, authority, path, header_lines(lines))
}
