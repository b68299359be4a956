//! Properties of the agent identity model: normalization is idempotent, an origin and its
//! well-known directory URL are one agent, the query never changes the identity, and a
//! `Signature-Agent` member with parameters is ignored unless it is one of the previous
//! draft's two unambiguous forms.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use proptest::sample::select;
use wba_filter::agent_url::{AgentId, AgentUrl, DIRECTORY_PATH};
use wba_filter::signature_agent::{parse_signature_agent, MemberParams, SignatureAgent};

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]{1,8}(\\.[a-zA-Z0-9-]{1,8}){0,2}",
        Just("[::1]".to_string()),
        Just("127.0.0.1".to_string()),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(":443".to_string()),
        (1u32..65536).prop_map(|p| format!(":{p}")),
    ]
}

/// Path segments mixing plain characters, dot segments and percent-encodings.
fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9_~-]{1,6}",
            select(vec![
                ".",
                "..",
                "%7e",
                "%7E",
                "%2f",
                "%e2%82%ac",
                "a%2Db",
                "%41",
                "100%",
                "%zz",
                "a b",
                "\u{e9}",
                "%25"
            ])
            .prop_map(str::to_string),
        ],
        0..4,
    )
    .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect())
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("?".to_string()),
        "\\?[a-z0-9=&/?]{0,8}",
    ]
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "#[a-z0-9]{0,4}"]
}

fn scheme() -> impl Strategy<Value = &'static str> {
    select(vec!["https://", "HTTPS://", "Https://"])
}

fn url() -> impl Strategy<Value = String> {
    (scheme(), host(), port(), path(), query(), fragment())
        .prop_map(|(s, h, p, path, q, f)| format!("{s}{h}{p}{path}{q}{f}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn normalization_is_idempotent(u in url()) {
        let Ok(a) = AgentUrl::parse(&u) else { return Ok(()) };
        let id = a.id();
        // The identity, the shown form and the fetch URL all read back as the same agent.
        prop_assert_eq!(&AgentId::parse(id.as_str()).unwrap(), id);
        prop_assert_eq!(&AgentId::parse(id.shown()).unwrap(), id);
        let again = AgentUrl::parse(a.fetch_url()).unwrap();
        prop_assert_eq!(again.id(), id);
        prop_assert_eq!(again.fetch_url(), a.fetch_url());
        prop_assert!(!id.as_str().contains(['?', '#']));
    }

    #[test]
    fn an_origin_and_its_well_known_url_are_one_agent(
        s in scheme(), h in host(), p in port(), slash in any::<bool>(), q in query(), f in fragment(),
    ) {
        let origin = format!("{s}{h}{p}{}{q}{f}", if slash { "/" } else { "" });
        let well_known = format!("{s}{h}{p}{DIRECTORY_PATH}{q}{f}");
        let (Ok(o), Ok(w)) = (AgentUrl::parse(&origin), AgentUrl::parse(&well_known)) else {
            return Ok(());
        };
        prop_assert!(o.is_origin());
        prop_assert!(!w.is_origin());
        prop_assert_eq!(o.id(), w.id());
        prop_assert!(o.id().is_well_known());
        prop_assert_eq!(o.fetch_url(), w.fetch_url());
        // Shown as the origin, without path.
        prop_assert_eq!(o.id().shown().matches('/').count(), 2);
    }

    #[test]
    fn the_query_is_not_the_identity(u in url(), q in query()) {
        let Ok(a) = AgentId::parse(&u) else { return Ok(()) };
        let base = u.split(['?', '#']).next().unwrap_or_default();
        prop_assert_eq!(AgentId::parse(&format!("{base}{q}")).unwrap(), a);
    }

    #[test]
    fn a_member_with_parameters_is_ignored_unless_an_unambiguous_previous_type(
        u in url(),
        params in proptest::collection::vec(
            (select(vec!["type", "v", "x"]), select(vec!["directory", "jwks_uri", "cimd", "\"directory\"", "\"jwks_uri\"", "1", "?1"])),
            0..3,
        ),
    ) {
        // Structured-field strings hold printable ASCII only.
        prop_assume!(u.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'));
        let mut keys: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        prop_assume!(keys.len() == params.len());
        let serialized: String = params.iter().map(|(k, v)| format!(";{k}={v}")).collect();
        let field = format!("m=\"{u}\"{serialized}");
        let Ok(SignatureAgent::Dictionary(m)) = parse_signature_agent(&field) else {
            return Err(TestCaseError::fail(format!("{field} does not parse")));
        };
        let origin = AgentUrl::parse(&u).map(|a| a.is_origin()).ok();
        let expected = match params.as_slice() {
            [] => MemberParams::None,
            [("type", "directory" | "\"directory\"")] if origin != Some(false) => {
                MemberParams::PreviousDraft("directory")
            }
            [("type", "jwks_uri" | "\"jwks_uri\"")] if origin != Some(true) => {
                MemberParams::PreviousDraft("jwks_uri")
            }
            // Compared by kind below: the serialization is sfv's.
            _ => MemberParams::Ignored(String::new()),
        };
        match (&m[0].params, &expected) {
            (MemberParams::Ignored(_), MemberParams::Ignored(_)) => {}
            (got, want) => prop_assert_eq!(got, want, "{}", field),
        }
    }
}
