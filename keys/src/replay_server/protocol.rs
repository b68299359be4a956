//! The replay server's HTTP protocol, as pure functions (no I/O, no Redis): what a request
//! asks for, or why it is refused.
//!
//! - `POST /v1/replay/<id>` with `x-wba-until: <unix seconds>` and no body: record `<id>` (32
//!   lowercase hex characters, the filter's 16-byte hash of a signature's identity) until
//!   `until`. `201 fresh`, `409 replayed`. A request carrying several signatures records them
//!   all at once: `POST /v1/replay/<id>,<id>...` (at most [`MAX_IDS`]), `201` when every one
//!   was fresh, else `409` (and the ones this request recorded are removed again).
//! - `GET /healthz`: `200 ok` when Redis answers.
//! - `400` for anything else malformed, `413` for a body over [`MAX_BODY_BYTES`], `503` when
//!   Redis does not answer in time.

/// The largest request body accepted (the protocol has none; a small one is read and ignored).
pub const MAX_BODY_BYTES: usize = 1024;
/// The largest request head (request line and header fields), in bytes: hyper answers 431 past
/// it (a long path included).
pub const MAX_HEADER_BYTES: usize = 8192;
/// The most header fields a request may carry (hyper answers 431 past it).
pub const MAX_HEADERS: usize = 32;
/// Length of an id: 16 bytes in lowercase hex.
pub const ID_HEX_LEN: usize = 32;
/// Ids one request may record: the filter's bound on labels per request.
pub const MAX_IDS: usize = 64;
/// The header carrying the record's lifetime end (unix seconds).
pub const UNTIL_HEADER: &str = "x-wba-until";
/// The path prefix of a record request.
pub const REPLAY_PATH: &str = "/v1/replay/";
/// The health check path.
pub const HEALTH_PATH: &str = "/healthz";
/// Prefix of every Redis key. No hash tag (`{...}`): in a Redis Cluster each key hashes on its
/// own, so records spread over every slot and every master.
pub const KEY_PREFIX: &str = "wba:replay:";
/// Default of `--max-ttl-seconds`: how far ahead `until` may be (30 days). A signature's
/// validity is at most the filter's `max_validity_seconds` (1 day by default) plus the skew;
/// this only stops a buggy caller (e.g. milliseconds for seconds) from pinning keys forever.
pub const DEFAULT_MAX_TTL_SECONDS: u64 = 30 * 86_400;

/// A request the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Record `id` until `until` (unix seconds), atomically, unless already recorded.
    Record(Record),
    /// Answer whether Redis answers.
    Health,
}

/// A validated record request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Each of 32 lowercase hex characters; one or more, each once.
    pub ids: Vec<String>,
    /// Unix seconds; the records live until then.
    pub until: u64,
}

impl Record {
    /// The Redis keys: `wba:replay:<id>`, in order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.ids.iter().map(|id| redis_key(id))
    }
}

/// The Redis key of an id.
pub fn redis_key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// An answer the server gives without asking Redis, or after asking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Text, ending in a newline.
    pub body: String,
    /// Ask the client to close the connection (a body left unread).
    pub close: bool,
}

impl Answer {
    /// `status` with `msg` and a newline as its body.
    pub fn text(status: u16, msg: impl std::fmt::Display) -> Self {
        Answer {
            status,
            body: format!("{msg}\n"),
            close: false,
        }
    }

    pub fn fresh() -> Self {
        Answer::text(201, "fresh")
    }

    pub fn replayed() -> Self {
        Answer::text(409, "replayed")
    }

    pub fn ok() -> Self {
        Answer::text(200, "ok")
    }

    fn bad(msg: impl std::fmt::Display) -> Self {
        Answer::text(400, msg)
    }

    /// 413: the body is larger than [`MAX_BODY_BYTES`].
    pub fn too_large() -> Self {
        Answer {
            close: true,
            ..Answer::text(
                413,
                format!("request body too large: at most {MAX_BODY_BYTES} bytes"),
            )
        }
    }

    /// 503 naming the problem.
    pub fn unavailable(problem: impl std::fmt::Display) -> Self {
        Answer::text(503, format!("redis unavailable: {problem}"))
    }
}

/// What the server needs of a request's head.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Every value of `x-wba-until`, in order.
    pub until: &'a [&'a [u8]],
}

/// Checks a `Content-Length` value before the body is read: `Err(413)` when it announces more
/// than [`MAX_BODY_BYTES`]. (hyper has already refused an unparsable one with 400.)
pub fn check_content_length(value: Option<&[u8]>) -> Result<(), Answer> {
    let Some(v) = value else { return Ok(()) };
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(n) if n <= MAX_BODY_BYTES as u64 => Ok(()),
        Some(_) => Err(Answer::too_large()),
        None => Err(Answer::bad("invalid content-length")),
    }
}

/// Whether `id` is exactly 32 lowercase hex characters.
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses `x-wba-until`: exactly one value of ASCII digits (no sign, no spaces, no leading
/// zero unless `0`), not before `now` and at most `max_ttl` seconds after it.
pub fn parse_until(values: &[&[u8]], now: u64, max_ttl: u64) -> Result<u64, Answer> {
    let v = match values {
        [] => return Err(Answer::bad("missing x-wba-until (unix seconds)")),
        [v] => *v,
        _ => return Err(Answer::bad("more than one x-wba-until")),
    };
    let digits = v.iter().all(u8::is_ascii_digit);
    let canonical = !v.is_empty() && (v.len() == 1 || v[0] != b'0');
    let until = std::str::from_utf8(v)
        .ok()
        .filter(|_| digits && canonical && v.len() <= 19)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Answer::bad("invalid x-wba-until: expected unix seconds (digits only)"))?;
    if until < now {
        return Err(Answer::bad(format!(
            "x-wba-until {until} is in the past (now {now})"
        )));
    }
    if until - now > max_ttl {
        return Err(Answer::bad(format!(
            "x-wba-until {until} is more than {max_ttl} s ahead (now {now})"
        )));
    }
    Ok(until)
}

/// What `head` asks for at `now` (unix seconds), or why it is refused (always 400 here: the
/// protocol answers a wrong method or path with 400 too).
pub fn route(head: &Head<'_>, now: u64, max_ttl: u64) -> Result<Route, Answer> {
    if head.query.is_some() {
        return Err(Answer::bad("unexpected query string"));
    }
    if head.path == HEALTH_PATH {
        return match head.method {
            "GET" | "HEAD" => Ok(Route::Health),
            m => Err(Answer::bad(format!("{HEALTH_PATH}: use GET, not {m}"))),
        };
    }
    let Some(ids) = head.path.strip_prefix(REPLAY_PATH) else {
        return Err(Answer::bad(format!(
            "unknown path: POST {REPLAY_PATH}<id> or GET {HEALTH_PATH}"
        )));
    };
    if head.method != "POST" {
        return Err(Answer::bad(format!(
            "{REPLAY_PATH}<id>: use POST, not {}",
            head.method
        )));
    }
    let ids: Vec<String> = ids.split(',').map(str::to_string).collect();
    if !ids.iter().all(|id| valid_id(id)) {
        return Err(Answer::bad(
            "invalid id: expected 32 lowercase hex characters (several joined by ',')",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(Answer::bad(format!("more than {MAX_IDS} ids")));
    }
    let mut seen = std::collections::HashSet::new();
    if !ids.iter().all(|id| seen.insert(id.as_str())) {
        return Err(Answer::bad("an id repeated"));
    }
    let until = parse_until(head.until, now, max_ttl)?;
    Ok(Route::Record(Record { ids, until }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn head<'a>(method: &'a str, path: &'a str, until: &'a [&'a [u8]]) -> Head<'a> {
        Head {
            method,
            path,
            query: None,
            until,
        }
    }

    fn status(r: Result<Route, Answer>) -> u16 {
        match r {
            Ok(_) => 0,
            Err(a) => a.status,
        }
    }

    #[test]
    fn a_valid_record_request() {
        let path = format!("{REPLAY_PATH}{ID}");
        let until = (NOW + 120).to_string();
        let r = route(&head("POST", &path, &[until.as_bytes()]), NOW, 3600).unwrap();
        let Route::Record(rec) = r else {
            panic!("{r:?}")
        };
        assert_eq!(rec.until, NOW + 120);
        assert_eq!(rec.keys().collect::<Vec<_>>(), [format!("wba:replay:{ID}")]);
        // Now itself is not in the past; the maximum is allowed.
        let now = NOW.to_string();
        assert!(route(&head("POST", &path, &[now.as_bytes()]), NOW, 3600).is_ok());
        let max = (NOW + 3600).to_string();
        assert!(route(&head("POST", &path, &[max.as_bytes()]), NOW, 3600).is_ok());
    }

    #[test]
    fn several_ids_in_one_request() {
        let other = "f".repeat(32);
        let until = (NOW + 120).to_string();
        let path = format!("{REPLAY_PATH}{ID},{other}");
        let r = route(&head("POST", &path, &[until.as_bytes()]), NOW, 3600).unwrap();
        let Route::Record(rec) = r else {
            panic!("{r:?}")
        };
        assert_eq!(rec.ids, [ID.to_string(), other.clone()]);
        for bad in [
            format!("{REPLAY_PATH}{ID},"),
            format!("{REPLAY_PATH},{ID}"),
            format!("{REPLAY_PATH}{ID},{ID}"),
            format!("{REPLAY_PATH}{ID};{other}"),
            format!("{REPLAY_PATH}{}", vec![ID; MAX_IDS + 1].join(",")),
        ] {
            assert_eq!(
                status(route(&head("POST", &bad, &[until.as_bytes()]), NOW, 3600)),
                400,
                "{bad}"
            );
        }
        let many: Vec<String> = (0..MAX_IDS).map(|i| format!("{i:032x}")).collect();
        let path = format!("{REPLAY_PATH}{}", many.join(","));
        assert!(route(&head("POST", &path, &[until.as_bytes()]), NOW, 3600).is_ok());
    }

    #[test]
    fn ids() {
        assert!(valid_id(ID));
        assert!(valid_id(&"f".repeat(32)));
        for bad in [
            "",
            &ID[..31],
            &format!("{ID}0"),
            &ID.to_uppercase(),
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcde ",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef0123456789abcd\u{e9}",
            "%30123456789abcdef0123456789abcd",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
            let path = format!("{REPLAY_PATH}{bad}");
            let until = (NOW + 60).to_string();
            let a = route(&head("POST", &path, &[until.as_bytes()]), NOW, 3600).unwrap_err();
            assert_eq!(a.status, 400, "{bad:?}");
        }
    }

    #[test]
    fn until_values() {
        let ok = |v: &str| parse_until(&[v.as_bytes()], NOW, 3600);
        assert_eq!(ok("1800000060").unwrap(), NOW + 60);
        for bad in [
            "",
            " 1800000060",
            "1800000060 ",
            "+1800000060",
            "-1",
            "01800000060",
            "1800000060.5",
            "1.8e9",
            "0x6b49d200",
            "99999999999999999999",
            "18446744073709551616",
        ] {
            let a = ok(bad).unwrap_err();
            assert_eq!(a.status, 400, "{bad:?}");
        }
        // In the past, or further ahead than allowed (e.g. milliseconds sent for seconds).
        assert!(ok("1799999999").unwrap_err().body.contains("in the past"));
        assert!(ok("0").unwrap_err().body.contains("in the past"));
        assert!(ok("1800003601").unwrap_err().body.contains("ahead"));
        assert!(ok("1800000060000").unwrap_err().body.contains("ahead"));
        // Missing, or repeated.
        assert!(parse_until(&[], NOW, 3600)
            .unwrap_err()
            .body
            .contains("missing"));
        assert!(parse_until(&[b"1800000060", b"1800000060"], NOW, 3600)
            .unwrap_err()
            .body
            .contains("more than one"));
        // Not UTF-8.
        assert_eq!(
            parse_until(&[b"18000\xff0060"], NOW, 3600)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn methods_paths_and_queries() {
        let until = (NOW + 60).to_string();
        let u: &[&[u8]] = &[until.as_bytes()];
        let path = format!("{REPLAY_PATH}{ID}");
        for m in ["GET", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "post"] {
            assert_eq!(status(route(&head(m, &path, u), NOW, 3600)), 400, "{m}");
        }
        for p in [
            "/",
            "/v1/replay",
            "/v1/replay/",
            &format!("/v1/replay//{ID}"),
            &format!("/v1/replay/{ID}/"),
            &format!("/v2/replay/{ID}"),
            &format!("/V1/replay/{ID}"),
            &format!("//v1/replay/{ID}"),
            "/healthz/",
        ] {
            assert_eq!(status(route(&head("POST", p, u), NOW, 3600)), 400, "{p}");
        }
        let mut q = head("POST", &path, u);
        q.query = Some("x=1");
        assert_eq!(status(route(&q, NOW, 3600)), 400);
        q.query = Some("");
        assert_eq!(status(route(&q, NOW, 3600)), 400);
        assert_eq!(
            route(&head("GET", HEALTH_PATH, &[]), NOW, 3600).unwrap(),
            Route::Health
        );
        assert_eq!(
            route(&head("HEAD", HEALTH_PATH, &[]), NOW, 3600).unwrap(),
            Route::Health
        );
        assert_eq!(
            status(route(&head("POST", HEALTH_PATH, &[]), NOW, 3600)),
            400
        );
        // A record request without until.
        assert_eq!(status(route(&head("POST", &path, &[]), NOW, 3600)), 400);
    }

    #[test]
    fn sizes() {
        assert!(check_content_length(None).is_ok());
        assert!(check_content_length(Some(b"0")).is_ok());
        assert!(check_content_length(Some(b"1024")).is_ok());
        let big = check_content_length(Some(b"1025")).unwrap_err();
        assert_eq!(big.status, 413);
        assert!(big.close);
        assert_eq!(
            check_content_length(Some(b"99999999999999999999999"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(check_content_length(Some(b"x")).unwrap_err().status, 400);
        // The path limit is the header limit: an id is a tiny part of it.
        assert!(REPLAY_PATH.len() + ID_HEX_LEN < MAX_HEADER_BYTES);
    }

    #[test]
    fn keys_spread_over_cluster_slots() {
        // No hash tag: Redis Cluster hashes the whole key (CRC16/XMODEM mod 16384), so records
        // spread over slots. Checked with an independent CRC16 over 3 masters' slot ranges.
        fn crc16(data: &[u8]) -> u16 {
            let mut crc: u16 = 0;
            for &b in data {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        // The reference value from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert!(!KEY_PREFIX.contains(['{', '}']));
        let mut per_master = [0usize; 3];
        let mut slots = std::collections::HashSet::new();
        for i in 0u32..3000 {
            let digest = sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                i.to_be_bytes(),
            ));
            let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            let key = redis_key(&id);
            assert!(!key.contains('{'));
            let slot = crc16(key.as_bytes()) % 16384;
            slots.insert(slot);
            per_master[usize::from(slot) * 3 / 16384] += 1;
        }
        assert!(slots.len() > 2000, "{} distinct slots", slots.len());
        for n in per_master {
            assert!((800..1200).contains(&n), "{per_master:?}");
        }
    }
}
