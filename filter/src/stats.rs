//! The filter's counters and their Envoy stat names.

use crate::verdict::{Outcome, Reason};

/// Prefix of every stat name (Envoy shows proxy-wasm metrics under `wasmcustom.`).
pub const PREFIX: &str = "web_bot_auth";

/// A counter the filter increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Outcome(Outcome),
    Reason(Reason),
    Rejected,
}

impl Counter {
    /// Every counter, so the root context can define them once at start.
    pub fn all() -> Vec<Counter> {
        let mut v: Vec<Counter> = Outcome::ALL.iter().map(|o| Counter::Outcome(*o)).collect();
        v.extend(Reason::ALL.iter().map(|r| Counter::Reason(*r)));
        v.push(Counter::Rejected);
        v
    }

    /// The stat name, e.g. `web_bot_auth.outcome.verified`, `web_bot_auth.reason.expired`.
    pub fn name(self) -> String {
        match self {
            Counter::Outcome(o) => format!("{PREFIX}.outcome.{}", o.token()),
            Counter::Reason(r) => format!("{PREFIX}.reason.{}", r.token()),
            Counter::Rejected => format!("{PREFIX}.rejected"),
        }
    }

    /// A dense index, for metric id tables.
    pub fn index(self) -> usize {
        match self {
            Counter::Outcome(o) => Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0),
            Counter::Reason(r) => {
                Outcome::ALL.len() + Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
            }
            Counter::Rejected => Outcome::ALL.len() + Reason::ALL.len(),
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
    }
}
