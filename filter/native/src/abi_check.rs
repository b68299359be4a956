//! Refuses any Envoy whose dynamic-module ABI is not 1.40.0's. Envoy itself only warns when
//! a module's ABI version string differs, and a module built for one Envoy can misbehave in
//! another (a callback's meaning may have changed), so the module compares the callbacks the
//! running executable exports with those Envoy 1.40.0 exports (`abi/envoy-1.40.0-callbacks.txt`,
//! from `nm -D --defined-only envoy | awk '{print $3}' | grep '^envoy_dynamic_module_callback_'
//! | LC_ALL=C sort`). Any name missing or extra refuses the load, with one line on stderr.
//! Patch releases of 1.40 keep the set (Envoy freezes a released ABI).

use std::collections::BTreeSet;
use std::fmt;

use crate::elf::{self, ElfError};

/// Every callback Envoy 1.40.0 exports, one per line, sorted.
const ENVOY_1_40_0: &str = include_str!("../abi/envoy-1.40.0-callbacks.txt");
/// Prefix of the callbacks' names.
pub const CALLBACK_PREFIX: &str = "envoy_dynamic_module_callback_";
/// How many differing names the refusal line names.
const NAMED: usize = 3;

/// The expected names (with the test build's bogus one, which no Envoy exports).
fn expected() -> impl Iterator<Item = &'static str> {
    let bogus: &[&str] = if cfg!(feature = "abi-mismatch-test") {
        &["envoy_dynamic_module_callback_wba_abi_mismatch_test"]
    } else {
        &[]
    };
    ENVOY_1_40_0
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .chain(bogus.iter().copied())
}

/// Why the running Envoy is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbiError {
    /// Its executable could not be read.
    Unreadable(ElfError),
    /// Its callbacks differ from 1.40.0's: expected ones it lacks, and ones 1.40.0 lacks.
    Mismatch {
        missing: Vec<String>,
        unknown: Vec<String>,
    },
}

/// Up to [`NAMED`] names, then how many more.
fn some_of(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED {
        s.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    s
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("web_bot_auth: this libweb_bot_auth.so is built for Envoy 1.40 (dynamic modules ABI v0.2.0); ")?;
        match self {
            AbiError::Unreadable(e) => {
                write!(f, "cannot check this Envoy's ABI ({e})")?;
            }
            AbiError::Mismatch { missing, unknown } => {
                write!(
                    f,
                    "this Envoy's ABI differs ({} missing: {}; {} unknown: {})",
                    missing.len(),
                    if missing.is_empty() {
                        "-".to_string()
                    } else {
                        some_of(missing)
                    },
                    unknown.len(),
                    if unknown.is_empty() {
                        "-".to_string()
                    } else {
                        some_of(unknown)
                    },
                )?;
            }
        }
        f.write_str(
            " -- refusing to load: use the module built for this Envoy version, or the wasm module",
        )
    }
}

impl std::error::Error for AbiError {}

/// Compares the expected callback names with those an executable exports.
pub fn compare<'a>(
    expected: impl IntoIterator<Item = &'a str>,
    exported: &BTreeSet<String>,
) -> Result<(), AbiError> {
    let expected: BTreeSet<&str> = expected.into_iter().collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|n| !exported.contains(**n))
        .map(|n| n.to_string())
        .collect();
    let unknown: Vec<String> = exported
        .iter()
        .filter(|n| !expected.contains(n.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        Ok(())
    } else {
        Err(AbiError::Mismatch { missing, unknown })
    }
}

/// Checks the executable of this process (Envoy) against 1.40.0's callbacks.
pub fn check_running_envoy() -> Result<(), AbiError> {
    check_executable(std::path::Path::new("/proc/self/exe"))
}

/// Checks an executable against 1.40.0's callbacks.
pub fn check_executable(path: &std::path::Path) -> Result<(), AbiError> {
    let exported =
        elf::defined_dynamic_symbols(path, CALLBACK_PREFIX).map_err(AbiError::Unreadable)?;
    compare(expected(), &exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_sets_pass() {
        assert_eq!(compare(["a", "b"], &set(&["b", "a"])), Ok(()));
    }

    #[test]
    fn missing_and_unknown_are_named_with_counts() {
        let err = compare(["a", "b", "c", "d", "e"], &set(&["a", "x"])).unwrap_err();
        assert_eq!(
            err,
            AbiError::Mismatch {
                missing: vec!["b".into(), "c".into(), "d".into(), "e".into()],
                unknown: vec!["x".into()],
            }
        );
        let line = err.to_string();
        assert!(
            line.contains("4 missing: b, c, d and 1 more; 1 unknown: x"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let newer = compare(["a"], &set(&["a", "z"])).unwrap_err().to_string();
        assert!(newer.contains("0 missing: -; 1 unknown: z"), "{newer}");
    }

    #[test]
    fn the_embedded_list_is_1_40_0s() {
        let names: Vec<&str> = ENVOY_1_40_0.lines().collect();
        assert_eq!(names.len(), 781);
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        assert!(names.iter().all(|n| n.starts_with(CALLBACK_PREFIX)));
        // Every callback the module resolves is in it.
        for used in crate::abi::USED_CALLBACKS {
            let used = used.to_str().unwrap();
            assert!(names.contains(&used), "{used}");
        }
    }

    /// The real Envoy 1.40.0 binary of the project's venv, when installed.
    #[test]
    fn the_installed_envoy_passes() {
        let envoy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.venv/lib/python3.11/site-packages/envoy/_bin/envoy");
        if !envoy.exists() {
            eprintln!("skipped: no Envoy at {}", envoy.display());
            return;
        }
        let r = check_executable(&envoy);
        if cfg!(feature = "abi-mismatch-test") {
            assert!(r.is_err());
        } else {
            assert_eq!(r, Ok(()));
        }
    }

    #[test]
    fn this_test_binary_is_refused() {
        // Not Envoy: exports none of the callbacks.
        let err = check_running_envoy().unwrap_err().to_string();
        assert!(
            err.contains("781 missing") || err.contains("782 missing"),
            "{err}"
        );
    }
}
