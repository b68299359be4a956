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
    /// A live replay record evicted because its bucket was full.
    ReplayEvicted,
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
        v.push(Counter::Proof(Proof::Valid));
        v.push(Counter::Proof(Proof::Absent));
        v.push(Counter::Waited);
        v.push(Counter::ReplayEvicted);
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
            Counter::ReplayEvicted => format!("{PREFIX}.replay.evicted"),
        }
    }

    /// A dense index, for metric id tables.
    pub fn index(self) -> usize {
        let base = Outcome::ALL.len() + Reason::ALL.len();
        let kinds = FailureKind::ALL.len();
        match self {
            Counter::Outcome(o) => Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0),
            Counter::Reason(r) => {
                Outcome::ALL.len() + Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
            }
            Counter::Rejected => base,
            Counter::FetchOk => base + 1,
            Counter::FetchFailed(k) => {
                base + 2 + FailureKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
            }
            Counter::Proof(Proof::Valid) => base + 2 + kinds,
            Counter::Proof(Proof::Absent) => base + 3 + kinds,
            Counter::Waited => base + 4 + kinds,
            Counter::ReplayEvicted => base + 5 + kinds,
        }
    }
}

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
