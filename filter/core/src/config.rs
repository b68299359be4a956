//! The filter's configuration (the plugin `configuration` JSON of the contract), validated at
//! load: unknown fields, wrong types and bad values are refused with one clear message.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::agent_url::AgentUrl;
use crate::component::Component;
use crate::header_prefix::HeaderPrefix;
use crate::jwk::{Jwk, Key};
use crate::policy::Policy;
use crate::replay_store::ReplayStoreSettings;

/// What the filter does with a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Never rejects, only annotates.
    Observe,
    /// Rejects `invalid`.
    Enforce,
    /// Rejects everything but `verified`.
    Require,
}

/// What a plugin instance does. The proxy-wasm filter needs two entries to check a signed
/// body: Envoy's Wasm host cannot let one filter read a request's body while it holds back the
/// request's headers (a paused filter receives no body), so the `hold` companion placed right
/// before the `verify` filter hashes the body as it streams past, while the `verify` filter
/// keeps headers and body from the upstream until the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Strip, verify, annotate, enforce (every option applies).
    #[default]
    Verify,
    /// Hash the body of the requests the `verify` filter after it asks for (no other option).
    Hold,
}

/// Bounds on key directory fetches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySettings {
    pub timeout_ms: u64,
    pub max_bytes: u64,
    pub max_keys: u64,
    pub min_refresh_seconds: u64,
    pub max_cache_seconds: u64,
    pub negative_cache_seconds: u64,
    /// Use only keys whose directory response signature (possession proof) is valid.
    pub require_proof: bool,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DEFAULT_DIRECTORY
    }
}

// The default of every option, in one place: parsing (`RawConfig::default`),
// `Policy::default`, `DirectorySettings::default`, `wba verify`'s flags and the test that the
// README's configuration reference shows them all read these.

/// `mode`.
pub const DEFAULT_MODE: Mode = Mode::Enforce;
/// `header_prefix`.
pub const DEFAULT_HEADER_PREFIX: &str = "x-web-bot-auth-";
/// `clock_skew_seconds`: tolerated clock difference, both ways.
pub const DEFAULT_CLOCK_SKEW_SECONDS: i64 = 60;
/// `max_validity_seconds`: longest accepted `expires - created`.
pub const DEFAULT_MAX_VALIDITY_SECONDS: i64 = 86_400;
/// `require_nonce`.
pub const DEFAULT_REQUIRE_NONCE: bool = false;
/// `replay_protection`.
pub const DEFAULT_REPLAY_PROTECTION: bool = true;
/// `allow_test_keys`.
pub const DEFAULT_ALLOW_TEST_KEYS: bool = false;
/// Web Bot Auth signatures verified per request, at most (cheap checks first).
pub const DEFAULT_MAX_SIGNATURES: u64 = 3;
/// Largest body whose `Content-Digest` the filter checks: half of Envoy's default
/// `per_connection_buffer_limit_bytes`, which a held body must stay under (a body held above it
/// stalls the stream instead of reaching its end).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 524_288;
/// Live signatures the replay table holds (in buckets of [`crate::replay::SLOTS`]).
pub const DEFAULT_REPLAY_CAPACITY: u64 = 65_536;
/// `replay_store.timeout_ms`: the longest wait for the fleet's replay store.
pub const DEFAULT_REPLAY_STORE_TIMEOUT_MS: u64 = 250;
/// `directory`.
pub const DEFAULT_DIRECTORY: DirectorySettings = DirectorySettings {
    timeout_ms: 2000,
    max_bytes: 65_536,
    max_keys: 32,
    min_refresh_seconds: 60,
    max_cache_seconds: 86_400,
    negative_cache_seconds: 60,
    require_proof: false,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    url: String,
    /// Gone (an agent is its JWK Set URL): read only to refuse it with what to write instead.
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    keys: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    role: Role,
    mode: Mode,
    header_prefix: String,
    clock_skew_seconds: u64,
    max_validity_seconds: u64,
    require_nonce: bool,
    replay_protection: bool,
    required_components: Vec<String>,
    allow_test_keys: bool,
    max_signatures: u64,
    max_body_bytes: u64,
    replay_capacity: u64,
    replay_store: Option<ReplayStoreSettings>,
    agents: Vec<RawAgent>,
    directory: DirectorySettings,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            role: Role::Verify,
            mode: DEFAULT_MODE,
            header_prefix: DEFAULT_HEADER_PREFIX.into(),
            clock_skew_seconds: DEFAULT_CLOCK_SKEW_SECONDS.unsigned_abs(),
            max_validity_seconds: DEFAULT_MAX_VALIDITY_SECONDS.unsigned_abs(),
            require_nonce: DEFAULT_REQUIRE_NONCE,
            replay_protection: DEFAULT_REPLAY_PROTECTION,
            required_components: Vec::new(),
            allow_test_keys: DEFAULT_ALLOW_TEST_KEYS,
            max_signatures: DEFAULT_MAX_SIGNATURES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            replay_store: None,
            agents: Vec::new(),
            directory: DEFAULT_DIRECTORY,
        }
    }
}

/// A trusted agent as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub name: String,
    /// Its identity (the JWK Set URL, normalized) and where its keys are fetched from.
    pub agent: AgentUrl,
    pub cluster: Option<String>,
    pub keys: Vec<Key>,
}

impl AgentConfig {
    /// The agent as shown in results and logs ([`crate::agent_url::AgentId::shown`]).
    pub fn url(&self) -> &str {
        self.agent.id().shown()
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub role: Role,
    pub mode: Mode,
    pub header_prefix: HeaderPrefix,
    pub policy: Policy,
    pub replay_protection: bool,
    /// Live signatures the replay table holds; a multiple of [`crate::replay::SLOTS`].
    pub replay_capacity: usize,
    /// Largest request body checked against a covered `Content-Digest`.
    pub max_body_bytes: usize,
    /// The fleet's replay store, when replay protection spans several Envoys.
    pub replay_store: Option<ReplayStoreSettings>,
    pub agents: Vec<AgentConfig>,
    pub directory: DirectorySettings,
}

/// A configuration error: the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid web-bot-auth configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Config {
    /// Parses and validates the plugin configuration. An empty configuration means defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?
        };
        if raw.role == Role::Hold {
            let fields = serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.as_object().map(|m| m.len()))
                .unwrap_or(0);
            if fields != 1 {
                return Err(err(
                    "a plugin with \"role\": \"hold\" takes no other option (it only hashes bodies for the verify plugin after it)",
                ));
            }
        }
        let prefix = HeaderPrefix::parse(&raw.header_prefix).map_err(|e| err(e.to_string()))?;
        let to_i64 = |v: u64, field: &str| {
            i64::try_from(v).map_err(|_| err(format!("{field} is too large")))
        };
        let mut required = Vec::with_capacity(raw.required_components.len());
        for c in &raw.required_components {
            required
                .push(Component::parse(c).map_err(|e| err(format!("required_components: {e}")))?);
        }
        if raw.max_signatures == 0 || raw.max_signatures > 64 {
            return Err(err("max_signatures must be between 1 and 64"));
        }
        let slots = crate::replay::SLOTS as u64;
        if raw.replay_capacity < slots || raw.replay_capacity > 1 << 24 {
            return Err(err(format!(
                "replay_capacity must be between {slots} and {}",
                1u64 << 24
            )));
        }
        if raw.max_body_bytes == 0 || raw.max_body_bytes > 1 << 30 {
            return Err(err("max_body_bytes must be between 1 and 1073741824"));
        }
        if let Some(store) = &raw.replay_store {
            if !raw.replay_protection {
                return Err(err(
                    "replay_store needs replay_protection (a store records what the filter checks)",
                ));
            }
            if store.cluster.trim().is_empty() {
                return Err(err("replay_store.cluster must name an Envoy cluster"));
            }
            if store.timeout_ms == 0 || store.timeout_ms > 60_000 {
                return Err(err("replay_store.timeout_ms must be between 1 and 60000"));
            }
        }
        let d = &raw.directory;
        if d.timeout_ms == 0 || d.max_bytes == 0 || d.max_keys == 0 {
            return Err(err(
                "directory: timeout_ms, max_bytes and max_keys must be positive",
            ));
        }
        if d.negative_cache_seconds > 300 {
            return Err(err("directory.negative_cache_seconds must be at most 300"));
        }
        if d.min_refresh_seconds > d.max_cache_seconds {
            return Err(err(
                "directory.min_refresh_seconds must not exceed directory.max_cache_seconds",
            ));
        }
        let mut agents: Vec<AgentConfig> = Vec::with_capacity(raw.agents.len());
        for (i, a) in raw.agents.iter().enumerate() {
            let at = format!("agents[{i}]");
            if a.kind.is_some() {
                return Err(err(format!(
                    "{at}.type is no longer supported: write the JWK Set URL in \"url\" (an https origin means its {})",
                    crate::agent_url::DIRECTORY_PATH
                )));
            }
            let agent =
                AgentUrl::parse(&a.url).map_err(|e| err(format!("{at}.url {:?}: {e}", a.url)))?;
            if a.name.trim().is_empty() {
                return Err(err(format!("{at}.name must not be empty")));
            }
            if a.cluster.as_deref().is_some_and(str::is_empty) {
                return Err(err(format!("{at}.cluster must not be empty")));
            }
            if a.cluster.is_none() && a.keys.is_empty() {
                return Err(err(format!("{at} needs a cluster or pinned keys")));
            }
            if let Some(j) = agents.iter().position(|b| b.agent.id() == agent.id()) {
                return Err(err(format!(
                    "{at}.url {:?} names the same agent ({}) as agents[{j}]: it is listed twice",
                    a.url,
                    agent.id().as_str()
                )));
            }
            let mut keys = Vec::with_capacity(a.keys.len());
            for (j, k) in a.keys.iter().enumerate() {
                let key = Jwk::from_value(k)
                    .and_then(|jwk| jwk.to_key())
                    .map_err(|e| err(format!("{at}.keys[{j}]: {e}")))?;
                keys.push(key);
            }
            agents.push(AgentConfig {
                name: a.name.clone(),
                agent,
                cluster: a.cluster.clone(),
                keys,
            });
        }
        Ok(Config {
            role: raw.role,
            mode: raw.mode,
            header_prefix: prefix,
            policy: Policy {
                clock_skew_seconds: to_i64(raw.clock_skew_seconds, "clock_skew_seconds")?,
                max_validity_seconds: to_i64(raw.max_validity_seconds, "max_validity_seconds")?,
                required_components: required,
                allow_test_keys: raw.allow_test_keys,
                require_nonce: raw.require_nonce,
                max_signatures: usize::try_from(raw.max_signatures).unwrap_or(1),
                replay_protection: raw.replay_protection,
            },
            replay_protection: raw.replay_protection,
            // Whole buckets, rounded up.
            replay_capacity: usize::try_from(raw.replay_capacity.div_ceil(slots) * slots)
                .unwrap_or(usize::MAX),
            max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
            replay_store: raw.replay_store,
            agents,
            directory: raw.directory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &str =
        r#"{"kty":"OKP","crv":"Ed25519","x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}"#;

    fn load(s: &str) -> Result<Config, String> {
        Config::from_json(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = load("").expect("empty");
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.header_prefix, "x-web-bot-auth-");
        assert_eq!(c.policy, Policy::default());
        assert!(c.replay_protection);
        assert_eq!(c.directory, DirectorySettings::default());
        assert_eq!(load("{}").expect("{}"), c);
        assert_eq!(c.role, Role::Verify);
        assert_eq!(load(r#"{"role":"hold"}"#).expect("hold").role, Role::Hold);
    }

    /// The README's configuration reference shows the defaults of this module.
    #[test]
    fn the_readme_shows_the_defaults() {
        let readme = include_str!("../../../README.md");
        let shown = |needle: String| assert!(readme.contains(&needle), "README lacks {needle}");
        let row = |field: &str, value: String| shown(format!("| `{field}` | `{value}` |"));
        let mode = match DEFAULT_MODE {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
            Mode::Require => "require",
        };
        row("mode", format!("{mode:?}"));
        row("header_prefix", format!("{DEFAULT_HEADER_PREFIX:?}"));
        row("clock_skew_seconds", DEFAULT_CLOCK_SKEW_SECONDS.to_string());
        row(
            "max_validity_seconds",
            DEFAULT_MAX_VALIDITY_SECONDS.to_string(),
        );
        row("require_nonce", DEFAULT_REQUIRE_NONCE.to_string());
        row("replay_protection", DEFAULT_REPLAY_PROTECTION.to_string());
        row("allow_test_keys", DEFAULT_ALLOW_TEST_KEYS.to_string());
        row("max_signatures", DEFAULT_MAX_SIGNATURES.to_string());
        row("max_body_bytes", DEFAULT_MAX_BODY_BYTES.to_string());
        row("replay_capacity", DEFAULT_REPLAY_CAPACITY.to_string());
        shown(format!("default {DEFAULT_REPLAY_STORE_TIMEOUT_MS})"));
        let d = DEFAULT_DIRECTORY;
        for (field, value) in [
            ("timeout_ms", d.timeout_ms.to_string()),
            ("max_bytes", d.max_bytes.to_string()),
            ("max_keys", d.max_keys.to_string()),
            ("min_refresh_seconds", d.min_refresh_seconds.to_string()),
            ("max_cache_seconds", d.max_cache_seconds.to_string()),
            (
                "negative_cache_seconds",
                d.negative_cache_seconds.to_string(),
            ),
            ("require_proof", format!("`{}`", d.require_proof)),
        ] {
            shown(format!("`{field}` ({value}"));
        }
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let c = load("").expect("empty");
        assert_eq!(c.mode, DEFAULT_MODE);
        assert_eq!(c.header_prefix, DEFAULT_HEADER_PREFIX);
        assert_eq!(c.policy.clock_skew_seconds, DEFAULT_CLOCK_SKEW_SECONDS);
        assert_eq!(c.policy.max_validity_seconds, DEFAULT_MAX_VALIDITY_SECONDS);
        assert_eq!(c.policy.require_nonce, DEFAULT_REQUIRE_NONCE);
        assert_eq!(c.policy.allow_test_keys, DEFAULT_ALLOW_TEST_KEYS);
        assert_eq!(c.policy.max_signatures as u64, DEFAULT_MAX_SIGNATURES);
        assert_eq!(c.replay_protection, DEFAULT_REPLAY_PROTECTION);
        assert_eq!(c.max_body_bytes as u64, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.replay_capacity as u64, DEFAULT_REPLAY_CAPACITY);
        assert_eq!(c.directory, DEFAULT_DIRECTORY);
        let store = load(r#"{"replay_store":{"cluster":"r"}}"#).expect("store");
        assert_eq!(
            store.replay_store.map(|s| s.timeout_ms),
            Some(DEFAULT_REPLAY_STORE_TIMEOUT_MS)
        );
    }

    #[test]
    fn full_configuration() {
        let c = load(&format!(
            r#"{{"mode":"require","header_prefix":"X-Bot-","required_components":["@method","@path"],
            "agents":[{{"name":"a","url":"https://Agent.Example/","cluster":"c","keys":[{KEY}]}},
                      {{"name":"j","url":"https://j.example/k.json","cluster":"j"}}],
            "directory":{{"timeout_ms":500}}}}"#
        ))
        .expect("config");
        assert_eq!(c.mode, Mode::Require);
        assert_eq!(c.header_prefix, "x-bot-");
        assert_eq!(c.policy.required_components.len(), 2);
        assert_eq!(c.agents[0].url(), "https://agent.example");
        assert_eq!(c.agents[0].keys.len(), 1);
        assert!(c.agents[0].agent.id().is_well_known());
        assert_eq!(c.agents[1].url(), "https://j.example/k.json");
        assert!(!c.agents[1].agent.id().is_well_known());
        assert_eq!(c.directory.timeout_ms, 500);
        assert_eq!(c.directory.max_keys, 32);
        // Pinned keys are usable at once; an agent with only a cluster waits for its fetch.
        let keys = crate::key_cache::KeyCache::new(&c);
        let lookup = |url| {
            let id = crate::agent_url::AgentId::parse(url).unwrap();
            matches!(
                crate::keyring::KeySource::lookup(&keys, &id, "other"),
                crate::keyring::Lookup::UnknownKey
            )
        };
        assert!(lookup("https://agent.example"));
        assert!(matches!(
            crate::keyring::KeySource::lookup(
                &keys,
                &crate::agent_url::AgentId::parse("https://j.example/k.json").unwrap(),
                "other"
            ),
            crate::keyring::Lookup::Unavailable
        ));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"mdoe":"observe"}"#, "unknown field `mdoe`"),
            (r#"{"mode":"block"}"#, "unknown variant `block`"),
            (r#"{"clock_skew_seconds":"60"}"#, "invalid type: string"),
            (r#"{"clock_skew_seconds":-1}"#, "invalid value"),
            (r#"{"directory":{"timeout":1}}"#, "unknown field `timeout`"),
            (
                r#"{"directory":{"negative_cache_seconds":301}}"#,
                "negative_cache_seconds",
            ),
            (r#"{"header_prefix":""}"#, "header_prefix"),
            (r#"{"header_prefix":"sig"}"#, "header_prefix"),
            (
                r#"{"required_components":["@bogus"]}"#,
                "required_components",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example"}]}"#,
                "agents[0] needs a cluster or pinned keys",
            ),
            (
                r#"{"agents":[{"name":"a","url":"http://a.example","cluster":"c"}]}"#,
                "agents[0].url",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","cluster":"c","type":"x"}]}"#,
                "agents[0].type is no longer supported: write the JWK Set URL in \"url\"",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example/k.json","cluster":"c","type":"jwks_uri"}]}"#,
                "agents[0].type is no longer supported",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","cluster":"c","type":"directory"}]}"#,
                "agents[0].type is no longer supported",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","cluster":"c"},{"name":"b","url":"https://a.example/.well-known/http-message-signatures-directory?v=2","cluster":"c"}]}"#,
                "agents[1].url",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","keys":[{"kty":"OKP"}]}]}"#,
                "agents[0].keys[0]",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","cluster":"c","extra":1}]}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"agents":[{"name":"a","url":"https://a.example","cluster":"c"},{"name":"b","url":"https://A.example:443","cluster":"c"}]}"#,
                "listed twice",
            ),
            ("not json", "expected"),
            (
                r#"{"role":"hold","mode":"observe"}"#,
                "takes no other option",
            ),
            (r#"{"role":"watch"}"#, "unknown variant `watch`"),
            (
                r#"{"replay_store":{"cluster":"r"},"replay_protection":false}"#,
                "replay_store needs replay_protection",
            ),
            (r#"{"replay_store":{"cluster":""}}"#, "replay_store.cluster"),
            (
                r#"{"replay_store":{"cluster":"r","timeout_ms":0}}"#,
                "replay_store.timeout_ms",
            ),
            (
                r#"{"replay_store":{"cluster":"r","on_error":"maybe"}}"#,
                "unknown variant `maybe`",
            ),
            (
                r#"{"replay_store":{"cluster":"r","tls":true}}"#,
                "unknown field `tls`",
            ),
        ];
        for (input, needle) in cases {
            let e = load(input).expect_err(input);
            assert!(e.contains(needle), "{input}: {e}");
            assert!(e.starts_with("invalid web-bot-auth configuration: "), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
