//! Replay protection across a fleet: after this Envoy's own table, a verified signature's
//! identity is recorded by `wba replay-server` (Redis behind it), reached through an Envoy
//! cluster, so that a signature used at one Envoy is refused at every other.
//!
//! The protocol: `POST /v1/replay/<32 hex digits>` with `x-wba-until: <unix seconds>` (the
//! signature's `expires` plus the clock skew); `201` fresh (recorded now), `409` replayed. A
//! request carrying several Web Bot Auth signatures records them all in one question:
//! `POST /v1/replay/<id>,<id>...`, `201` only when every one was fresh.
//! Anything else, Envoy's own 503/504 for an unreachable or slow store included, is a failure,
//! handled as `on_error` says.

use std::fmt;

use serde::Deserialize;

use crate::fetch::FetchRequest;
use crate::replay::ReplayId;
use crate::verdict::Verified;

/// What a verified request gets when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refused: `unverified` / `replay_store_unavailable`, 503 (fails closed).
    #[default]
    Reject,
    /// Passed as verified, counted (`replay.store.accepted_on_error`).
    Accept,
}

/// The `replay_store` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStoreSettings {
    /// The Envoy cluster that reaches the replay servers.
    pub cluster: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_error: OnError,
}

fn default_timeout_ms() -> u64 {
    crate::config::DEFAULT_REPLAY_STORE_TIMEOUT_MS
}

/// A verified request waiting for the store's answer: nothing is annotated or forwarded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreQuery {
    pub(crate) verified: Verified,
    /// The directory proof status of the key that verified, for the access log.
    pub(crate) proof: Option<String>,
    /// The identities of the request's signatures ([`ReplayId::all`]): the verified one's
    /// first. One question records them all.
    ids: Vec<ReplayId>,
    /// Until when the store keeps them: the latest of their lives.
    until: i64,
}

impl StoreQuery {
    pub(crate) fn new(
        verified: Verified,
        proof: Option<String>,
        ids: Vec<(ReplayId, i64)>,
    ) -> Self {
        let until = ids
            .iter()
            .map(|(_, u)| *u)
            .max()
            .unwrap_or(verified.expires);
        StoreQuery {
            verified,
            proof,
            ids: ids.into_iter().map(|(id, _)| id).collect(),
            until,
        }
    }

    /// The identities asked about, the verified signature's first (each recorded in this
    /// Envoy's table before the question).
    pub fn ids(&self) -> &[ReplayId] {
        &self.ids
    }

    /// The call to dispatch to the replay servers.
    pub fn request(&self, settings: &ReplayStoreSettings) -> FetchRequest {
        let h = |n: &str, v: String| (n.to_string(), v);
        FetchRequest {
            cluster: settings.cluster.clone(),
            headers: vec![
                h(":method", "POST".into()),
                h(":path", format!("/v1/replay/{}", self.path_ids())),
                h(":authority", "wba-replay".into()),
                h(":scheme", "http".into()),
                h("x-wba-until", self.until.to_string()),
                h("content-length", "0".into()),
            ],
            timeout_ms: settings.timeout_ms,
        }
    }
}

impl StoreQuery {
    /// The ids in the path: one, or several joined by `,` (fresh only if all of them are).
    fn path_ids(&self) -> String {
        let hex: Vec<String> = self.ids.iter().map(ReplayId::to_hex).collect();
        hex.join(",")
    }
}

/// The store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAnswer {
    /// First use anywhere: recorded.
    Fresh,
    /// Used before, at this or another Envoy.
    Replayed,
    /// No usable answer (status, reset, timeout): what happened.
    Failed(String),
}

impl StoreAnswer {
    /// The answer a response means: `status` is `None` when there was none (reset).
    pub fn from_response(status: Option<u16>, body: &[u8]) -> Self {
        match status {
            Some(201) => StoreAnswer::Fresh,
            Some(409) => StoreAnswer::Replayed,
            Some(s) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
                StoreAnswer::Failed(format!("the replay store answered {s}: {}", text.trim()))
            }
            None => StoreAnswer::Failed("the replay store did not answer".into()),
        }
    }
}

impl fmt::Display for StoreAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAnswer::Fresh => f.write_str("fresh"),
            StoreAnswer::Replayed => f.write_str("replayed"),
            StoreAnswer::Failed(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn verified() -> Verified {
        Verified {
            agent_url: "https://a.example".into(),
            agent_name: "A".into(),
            key_id: "k".into(),
            label: "sig1".into(),
            covered: String::new(),
            covers_content_digest: false,
            created: 1_800_000_000,
            expires: 1_800_000_060,
            replay_key: crate::verdict::ReplayKey::Nonce("n".into()),
            others: Vec::new(),
        }
    }

    #[test]
    fn the_request_names_the_identity_hash_and_its_life() {
        let v = verified();
        let q = StoreQuery::new(v.clone(), None, ReplayId::all(&v, 60));
        let settings = ReplayStoreSettings {
            cluster: "wba_replay".into(),
            timeout_ms: 250,
            on_error: OnError::Reject,
        };
        let r = q.request(&settings);
        assert_eq!(r.cluster, "wba_replay");
        assert_eq!(r.timeout_ms, 250);
        let path = &r.headers.iter().find(|(n, _)| n == ":path").unwrap().1;
        let hex = path.strip_prefix("/v1/replay/").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // A hash, never the nonce or the signature itself.
        assert!(!path.contains("/n") && !r.headers.iter().any(|(_, v)| v == "n"));
        assert!(r
            .headers
            .contains(&("x-wba-until".into(), "1800000120".into())));
    }

    #[test]
    fn one_question_records_every_signature_of_the_request() {
        let mut v = verified();
        let mut other = verified();
        other.replay_key = crate::verdict::ReplayKey::Nonce("m".into());
        other.expires = 1_800_000_300;
        v.others = vec![other];
        let ids = ReplayId::all(&v, 60);
        let q = StoreQuery::new(v, None, ids.clone());
        let settings = ReplayStoreSettings {
            cluster: "wba_replay".into(),
            timeout_ms: 250,
            on_error: OnError::Reject,
        };
        let r = q.request(&settings);
        let path = &r.headers.iter().find(|(n, _)| n == ":path").unwrap().1;
        assert_eq!(
            path,
            &format!("/v1/replay/{},{}", ids[0].0.to_hex(), ids[1].0.to_hex())
        );
        // Kept as long as the longest-lived of them.
        assert!(r
            .headers
            .contains(&("x-wba-until".into(), "1800000360".into())));
    }

    #[test]
    fn answers() {
        assert_eq!(
            StoreAnswer::from_response(Some(201), b"fresh\n"),
            StoreAnswer::Fresh
        );
        assert_eq!(
            StoreAnswer::from_response(Some(409), b"replayed\n"),
            StoreAnswer::Replayed
        );
        for status in [Some(200), Some(400), Some(503), Some(504), None] {
            assert!(matches!(
                StoreAnswer::from_response(status, b"upstream request timeout"),
                StoreAnswer::Failed(_)
            ));
        }
    }

    #[test]
    fn settings_defaults_and_refusals() {
        let s: ReplayStoreSettings = serde_json::from_str(r#"{"cluster":"c"}"#).unwrap();
        assert_eq!((s.timeout_ms, s.on_error), (250, OnError::Reject));
        let s: ReplayStoreSettings =
            serde_json::from_str(r#"{"cluster":"c","on_error":"accept","timeout_ms":9}"#).unwrap();
        assert_eq!((s.timeout_ms, s.on_error), (9, OnError::Accept));
        assert!(serde_json::from_str::<ReplayStoreSettings>(r#"{"cluster":"c","x":1}"#).is_err());
        assert!(serde_json::from_str::<ReplayStoreSettings>(r#"{"on_error":"accept"}"#).is_err());
    }
}
