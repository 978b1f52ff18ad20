//! Properties over hostile input: the parser and the record builder never panic on anything a
//! sender or a Kubernetes client can put in an event, records stay bounded and free of control
//! characters, and the keep list's name patterns agree with a naive model.

use crate::bounds::{MAX_LIST, MAX_STRING_BYTES, clean};
use crate::fixtures::{body, event};
use crate::{ChangeRecord, KeepList, Snapshot, change_record, parse_event_list};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON, with keys drawn mostly from the fields the summaries read so that the
/// interesting paths are taken with wrong shapes.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("spec".to_string()),
        Just("metadata".to_string()),
        Just("rules".to_string()),
        Just("host".to_string()),
        Just("hosts".to_string()),
        Just("tls".to_string()),
        Just("listeners".to_string()),
        Just("servers".to_string()),
        Just("data".to_string()),
        Just("tls.crt".to_string()),
        Just("annotations".to_string()),
        Just("mtls".to_string()),
        Just("mode".to_string()),
        Just("action".to_string()),
        Just("kind".to_string()),
        Just("port".to_string()),
        Just("wasm".to_string()),
        Just("jwt".to_string()),
        "[a-z$/.\\-]{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
        Just(json!("STRICT")),
        Just(json!("HTTP")),
        Just(json!("{}")),
    ];
    leaf.prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

const KINDS: [(&str, &str); 20] = [
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
    ("gateway.networking.k8s.io", "gateways"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("gateway.networking.k8s.io", "grpcroutes"),
    ("gateway.networking.k8s.io", "referencegrants"),
    ("", "secrets"),
    ("", "configmaps"),
    ("networking.istio.io", "gateways"),
    ("networking.istio.io", "virtualservices"),
    ("networking.istio.io", "envoyfilters"),
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "requestauthentications"),
    ("security.istio.io", "peerauthentications"),
    ("extensions.istio.io", "wasmplugins"),
    ("gateway.envoyproxy.io", "securitypolicies"),
    ("gateway.envoyproxy.io", "envoyextensionpolicies"),
    ("gateway.envoyproxy.io", "clienttrafficpolicies"),
    ("example.com", "widgets"),
    ("", "pods"),
];

fn assert_bounded(r: &ChangeRecord) {
    let s = &r.summary;
    let lists = [
        &r.groups,
        &r.source_ips,
        &s.hosts,
        &s.hosts_added,
        &s.hosts_removed,
        &s.paths,
        &s.backends,
        &s.tls_hosts,
        &s.tls_secrets,
        &s.listeners_without_tls,
        &s.rules_added,
        &s.rules_removed,
        &s.changed_fields,
        &s.notes,
    ];
    for l in lists {
        assert!(l.len() <= MAX_LIST);
        for x in l {
            assert!(x.len() <= MAX_STRING_BYTES);
            assert!(!x.chars().any(char::is_control), "{x:?}");
        }
    }
    for x in [&r.user, &r.name, &r.user_agent]
        .into_iter()
        .chain(s.auth_removed.as_ref())
    {
        assert!(x.len() <= MAX_STRING_BYTES && !x.chars().any(char::is_control));
    }
}

/// The naive model of a `*` pattern: try every split.
fn naive_glob(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|i| naive_glob(rest, &n[i..])),
        Some((c, rest)) => n.first() == Some(c) && naive_glob(rest, &n[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_event_list(&bytes);
    }

    #[test]
    fn the_parser_never_panics_on_mutated_bodies(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut b = body(&[event("patch", "networking.k8s.io", "ingresses", "shop", "web")]);
        for (i, byte) in flips {
            let at = i.index(b.len());
            b[at] = byte;
        }
        let _ = parse_event_list(&b);
    }

    #[test]
    fn records_of_any_object_are_bounded_and_never_panic(
        kind in prop::sample::select(KINDS.to_vec()),
        verb in prop::sample::select(vec!["create", "update", "patch", "delete", "deletecollection"]),
        request in json_value(),
        response in json_value(),
        previous in json_value(),
        code in prop::option::of(100i32..600),
    ) {
        let mut ev = event(verb, kind.0, kind.1, "ns", "name");
        ev["requestObject"] = request;
        ev["responseObject"] = response;
        ev["responseStatus"] = json!({"code": code});
        let events = parse_event_list(&body(&[ev])).unwrap();
        let keep = KeepList::default_list();
        let _ = keep.decide(&events[0], &|_, _| true);
        let (r, snap) = change_record(&events[0], Some(&Snapshot(previous)));
        assert_bounded(&r);
        if let Some(s) = snap {
            assert!(serde_json::to_vec(&s.0).unwrap().len() <= crate::MAX_SNAPSHOT_BYTES);
            let (r2, _) = change_record(&events[0], Some(&s));
            assert_bounded(&r2);
        }
    }

    #[test]
    fn clean_bounds_and_strips_any_string(s in "\\PC*|[\\x00-\\x1f\\u{202a}-\\u{202e}a-z]{0,800}") {
        let c = clean(&s);
        prop_assert!(c.len() <= MAX_STRING_BYTES);
        prop_assert!(!c.chars().any(char::is_control));
        if s.len() <= MAX_STRING_BYTES / 3 {
            prop_assert_eq!(c.chars().count(), s.chars().count());
        }
    }

    #[test]
    fn name_patterns_agree_with_the_naive_model(p in "[ab*]{0,8}", n in "[ab]{0,10}") {
        prop_assert_eq!(crate::keep::glob(&p, &n), naive_glob(p.as_bytes(), n.as_bytes()));
    }
}
