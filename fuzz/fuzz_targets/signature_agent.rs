//! `Signature-Agent` parsing (dictionary and legacy forms, member parameters), member
//! selection, and the agent identity that follows it in verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::agent_url::{AgentId, AgentUrl};
use wba_filter::component::Component;
use wba_filter::signature_agent::{parse_signature_agent, SignatureAgent};

fuzz_target!(|data: &[u8]| {
    let value = wba_filter_fuzz::text(data);
    wba_filter_fuzz::bounded("Signature-Agent", || check(&value));
});

fn check(value: &str) {
    let Ok(agent) = parse_signature_agent(value) else {
        return;
    };
    let members = match &agent {
        SignatureAgent::Dictionary(m) => m.clone(),
        SignatureAgent::Legacy(m) => vec![m.clone()],
    };
    // Each check below looks a member up again (a linear search): the first 64 members only
    // (the most a request may send), so that this target's own work stays linear in the input.
    for m in members.iter().take(64) {
        let _ = m.dialect();
        if let Ok(u) = AgentUrl::parse(&m.url) {
            // Normalization is idempotent, whatever the bytes.
            assert_eq!(AgentId::parse(u.id().as_str()).as_ref(), Ok(u.id()));
            assert_eq!(AgentId::parse(u.id().shown()).as_ref(), Ok(u.id()));
            assert_eq!(
                AgentUrl::parse(u.fetch_url())
                    .map(|f| f.id().clone())
                    .as_ref(),
                Ok(u.id())
            );
            let _ = u.fetch_target();
        }
        if let Some(key) = &m.key {
            if let Ok(c) = Component::parse(&format!("signature-agent;key=\"{key}\"")) {
                assert_eq!(
                    agent
                        .member_for(&c, "unrelated")
                        .and_then(|m| m.key.as_deref()),
                    Some(key.as_str())
                );
            }
            // The plain component over a dictionary names the member keyed by the label.
            if let Ok(c) = Component::parse("signature-agent") {
                assert!(agent.member_for(&c, key).is_some());
            }
        }
    }
    if let Ok(c) = Component::parse("signature-agent") {
        let _ = agent.member_for(&c, "sig1");
    }
}
