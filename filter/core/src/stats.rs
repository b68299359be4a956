//! The filter's counters and their Envoy stat names.

use crate::fetch::{FailureKind, Proof};
use crate::verdict::{Outcome, Reason};

/// Prefix of every stat name (Envoy shows proxy-wasm metrics under `wasmcustom.`).
pub const PREFIX: &str = "web_bot_auth";

/// A counter the filter increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Outcome(Outcome),
    Reason(Reason),
    Rejected,
    /// A key fetch whose key set was accepted.
    FetchOk,
    FetchFailed(FailureKind),
    /// An accepted key set, by possession proof.
    Proof(Proof),
    /// A request paused to wait for its agent's keys.
    Waited,
    /// A verified signature refused because its replay bucket was full of live records.
    ReplayFull,
    /// A request refused because the host could not hand over its headers.
    HostError,
    /// A key in a fetched directory that was skipped (unusable), the rest of the set kept.
    KeySkipped,
    /// A fetched key set that was a bare JWK, read as a one-key set.
    BareJwk,
    /// Web Bot Auth signatures of a request left unverified: more than `max_signatures`.
    SignaturesOverLimit,
    /// Answers of the fleet's replay store, by kind.
    StoreFresh,
    StoreReplayed,
    StoreError,
    /// A verified request passed although the store failed (`on_error: accept`).
    StoreAcceptedOnError,
}

/// The gauge of keys held (pinned and fetched), per VM's view.
pub const KEYS_GAUGE: &str = "web_bot_auth.directory.keys";

impl Counter {
    /// Every counter, so the root context can define them once at start.
    pub fn all() -> Vec<Counter> {
        let mut v: Vec<Counter> = Outcome::ALL.iter().map(|o| Counter::Outcome(*o)).collect();
        v.extend(Reason::ALL.iter().map(|r| Counter::Reason(*r)));
        v.push(Counter::Rejected);
        v.push(Counter::FetchOk);
        v.extend(FailureKind::ALL.iter().map(|k| Counter::FetchFailed(*k)));
        v.extend(Proof::ALL.iter().map(|p| Counter::Proof(*p)));
        v.extend(TAIL);
        v
    }

    /// The stat name, e.g. `web_bot_auth.outcome.verified`, `web_bot_auth.reason.expired`.
    pub fn name(self) -> String {
        match self {
            Counter::Outcome(o) => format!("{PREFIX}.outcome.{}", o.token()),
            Counter::Reason(r) => format!("{PREFIX}.reason.{}", r.token()),
            Counter::Rejected => format!("{PREFIX}.rejected"),
            Counter::FetchOk => format!("{PREFIX}.directory.fetch_ok"),
            Counter::FetchFailed(k) => format!("{PREFIX}.directory.fetch_failed.{}", k.token()),
            Counter::Proof(p) => format!("{PREFIX}.directory.proof.{}", p.token()),
            Counter::Waited => format!("{PREFIX}.directory.request_waited"),
            Counter::ReplayFull => format!("{PREFIX}.replay.full"),
            Counter::HostError => format!("{PREFIX}.host_error"),
            Counter::KeySkipped => format!("{PREFIX}.directory.key_skipped"),
            Counter::BareJwk => format!("{PREFIX}.directory.bare_jwk"),
            Counter::SignaturesOverLimit => format!("{PREFIX}.signatures_over_limit"),
            Counter::StoreFresh => format!("{PREFIX}.replay.store.fresh"),
            Counter::StoreReplayed => format!("{PREFIX}.replay.store.replayed"),
            Counter::StoreError => format!("{PREFIX}.replay.store.error"),
            Counter::StoreAcceptedOnError => format!("{PREFIX}.replay.store.accepted_on_error"),
        }
    }

    /// A dense index, for metric id tables: the position in [`Counter::all`].
    pub fn index(self) -> usize {
        let position = |list: &[Self], c: Self| list.iter().position(|x| *x == c).unwrap_or(0);
        let reasons = Outcome::ALL.len();
        let kinds = reasons + Reason::ALL.len() + 2;
        let proofs = kinds + FailureKind::ALL.len();
        let tail = proofs + Proof::ALL.len();
        match self {
            Counter::Outcome(o) => Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0),
            Counter::Reason(r) => reasons + Reason::ALL.iter().position(|x| *x == r).unwrap_or(0),
            Counter::Rejected => kinds - 2,
            Counter::FetchOk => kinds - 1,
            Counter::FetchFailed(k) => {
                kinds + FailureKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
            }
            Counter::Proof(p) => proofs + Proof::ALL.iter().position(|x| *x == p).unwrap_or(0),
            other => tail + position(&TAIL, other),
        }
    }
}

/// The counters after the per-kind groups, in [`Counter::all`] order.
const TAIL: [Counter; 10] = [
    Counter::Waited,
    Counter::ReplayFull,
    Counter::HostError,
    Counter::KeySkipped,
    Counter::SignaturesOverLimit,
    Counter::StoreFresh,
    Counter::StoreReplayed,
    Counter::StoreError,
    Counter::StoreAcceptedOnError,
    Counter::BareJwk,
];

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_and_indexes_are_unique() {
        let all = Counter::all();
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(
            Counter::Reason(Reason::BadSignature).name(),
            "web_bot_auth.reason.bad_signature"
        );
        assert_eq!(
            Counter::Outcome(Outcome::Unsigned).name(),
            "web_bot_auth.outcome.unsigned"
        );
        assert_eq!(
            Counter::FetchFailed(FailureKind::MediaType).name(),
            "web_bot_auth.directory.fetch_failed.media_type"
        );
        let mut names: Vec<String> = all.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
