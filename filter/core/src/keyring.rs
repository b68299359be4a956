//! Where verification finds keys: looked up by the pair (agent, keyid), never keyid alone.

use crate::agent_url::AgentId;
use crate::jwk::Key;

/// The answer to a key lookup.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Found {
        key: &'a Key,
        agent_name: &'a str,
    },
    /// The agent is not a trusted one.
    UnknownAgent,
    /// The agent is known and its keys are loaded, but none has this thumbprint.
    UnknownKey,
    /// The agent is known but its keys are not available (not fetched yet, or fetch failed).
    Unavailable,
}

/// Anything that can resolve (agent, keyid) to a key: pinned keys, a fetched directory cache.
pub trait KeySource {
    fn lookup(&self, agent: &AgentId, keyid: &str) -> Lookup<'_>;
}

/// One trusted agent and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    pub name: String,
    pub id: AgentId,
    pub keys: Vec<Key>,
    /// False while the agent's keys have never been loaded.
    pub loaded: bool,
}

/// An in-memory key source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    pub agents: Vec<AgentKeys>,
}

impl KeyRing {
    /// Adds an agent with a loaded key set.
    pub fn add(&mut self, name: &str, id: AgentId, keys: Vec<Key>) {
        self.agents.push(AgentKeys {
            name: name.to_string(),
            id,
            keys,
            loaded: true,
        });
    }
}

impl KeySource for KeyRing {
    fn lookup(&self, agent: &AgentId, keyid: &str) -> Lookup<'_> {
        let Some(agent) = self.agents.iter().find(|a| &a.id == agent) else {
            return Lookup::UnknownAgent;
        };
        match agent.keys.iter().find(|k| k.thumbprint == keyid) {
            Some(key) => Lookup::Found {
                key,
                agent_name: &agent.name,
            },
            None if agent.loaded => Lookup::UnknownKey,
            None => Lookup::Unavailable,
        }
    }
}
