//! Who may talk to the gRPC listener: each filter proves what it is with a client certificate
//! or a per-filter token, and each credential names the Envoy node ids it may use. An `Export`
//! or `Subscribe` under a node id the credential does not cover is refused with
//! `PERMISSION_DENIED`; a missing or wrong credential with `UNAUTHENTICATED`. Both are counted
//! and logged with the credential's name (never the token). Calls and streams in progress are
//! capped per credential, and so are the filter identities a credential sends records as (each
//! costs the collector deduplication state).

use super::conn::ConnInfo;
use super::credentials::{Pattern, TokenHash, bearer};
use crate::config::FilterCredentialConfig;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tonic::metadata::MetadataMap;
use warden_proto::pb::FilterIdentity;

/// How a filter credential is proved.
#[derive(Debug, Clone)]
enum Secret {
    Token(TokenHash),
    Certificate(Pattern),
}

/// One filter credential.
#[derive(Debug, Clone)]
pub struct FilterCredential {
    name: Arc<str>,
    secret: Secret,
    node_ids: Vec<Pattern>,
}

impl FilterCredential {
    /// A token credential (the local one, a shared `grpc.token`).
    pub fn token(name: &str, hash: TokenHash, node_ids: Vec<Pattern>) -> Self {
        FilterCredential {
            name: name.into(),
            secret: Secret::Token(hash),
            node_ids,
        }
    }

    fn from_config(c: &FilterCredentialConfig) -> Result<Self, String> {
        let secret = match (&c.token_sha256, &c.certificate) {
            (Some(t), None) => Secret::Token(t.parse()?),
            (None, Some(p)) => Secret::Certificate(p.parse()?),
            _ => return Err("set exactly one of token_sha256 and certificate".into()),
        };
        let node_ids = c
            .node_ids
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<Pattern>, String>>()?;
        Ok(FilterCredential {
            name: c.name.as_str().into(),
            secret,
            node_ids,
        })
    }
}

/// An authenticated filter: the credential it used.
#[derive(Debug, Clone)]
pub struct FilterCaller {
    credential: Arc<FilterCredential>,
}

impl FilterCaller {
    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.credential.name
    }

    /// Whether the credential covers `node_id`.
    pub fn covers(&self, node_id: &str) -> bool {
        self.credential.node_ids.iter().any(|p| p.matches(node_id))
    }
}

/// Refusal counters, by reason (bounded labels for `/metrics`).
#[derive(Debug, Default)]
pub struct FilterAuthCounters {
    /// No credential, or one that matches nothing.
    pub unauthenticated: AtomicU64,
    /// A known credential used for a node id it does not cover.
    pub permission_denied: AtomicU64,
    /// Over the per-credential cap of calls, streams or identities.
    pub over_limit: AtomicU64,
}

/// Per-credential caps.
#[derive(Debug, Clone, Copy)]
pub struct FilterCaps {
    /// `Export` calls in progress at once.
    pub calls: usize,
    /// `Subscribe` streams open at once.
    pub streams: usize,
    /// Distinct filter identities sending records within `identity_window_ms`.
    pub identities: usize,
    /// How long an identity counts after its last batch (the deduplication window).
    pub identity_window_ms: i64,
}

impl Default for FilterCaps {
    fn default() -> Self {
        FilterCaps {
            calls: 64,
            streams: 1024,
            identities: 10_000,
            identity_window_ms: 86_400_000,
        }
    }
}

/// A filter identity as the collector keys its state.
type IdentityKey = (String, u32, String);

/// The filter credentials and the per-credential usage.
#[derive(Debug)]
pub struct FilterAuth {
    credentials: Vec<Arc<FilterCredential>>,
    caps: FilterCaps,
    calls: Mutex<HashMap<Arc<str>, usize>>,
    streams: Mutex<HashMap<Arc<str>, usize>>,
    /// Per credential: the identities it sent records as, and when last.
    identities: Mutex<HashMap<Arc<str>, HashMap<IdentityKey, i64>>>,
    /// Refusals.
    pub counters: FilterAuthCounters,
}

/// Which cap a [`Slot`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// An `Export` call.
    Call,
    /// A `Subscribe` stream.
    Stream,
}

/// A call or stream in progress; freed on drop.
#[derive(Debug)]
pub struct Slot {
    auth: Arc<FilterAuth>,
    name: Arc<str>,
    kind: SlotKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let map = match self.kind {
            SlotKind::Call => &self.auth.calls,
            SlotKind::Stream => &self.auth.streams,
        };
        if let Ok(mut m) = map.lock()
            && let Some(n) = m.get_mut(&self.name)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

impl Default for FilterAuth {
    /// No credential: every filter is refused (in-process users of `Ingest::export`, which
    /// checks nothing itself, use this).
    fn default() -> Self {
        FilterAuth {
            credentials: Vec::new(),
            caps: FilterCaps::default(),
            calls: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
            counters: FilterAuthCounters::default(),
        }
    }
}

impl FilterAuth {
    /// Builds the credential list; `extra` are credentials made outside the configuration
    /// (the local token, a shared `grpc.token`).
    pub fn new(
        configured: &[FilterCredentialConfig],
        extra: Vec<FilterCredential>,
        caps: FilterCaps,
    ) -> Result<FilterAuth, String> {
        let mut credentials = Vec::new();
        for c in configured {
            credentials.push(Arc::new(
                FilterCredential::from_config(c)
                    .map_err(|e| format!("grpc.credentials {:?}: {e}", c.name))?,
            ));
        }
        credentials.extend(extra.into_iter().map(Arc::new));
        Ok(FilterAuth {
            credentials,
            caps,
            calls: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
            counters: FilterAuthCounters::default(),
        })
    }

    /// Who is calling: a bearer token if one is sent (it must match), else the verified client
    /// certificate. The error says what is missing, never echoing what was sent.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        conn: Option<&ConnInfo>,
    ) -> Result<FilterCaller, Error> {
        let found = self.find(metadata, conn);
        if found.is_err() {
            self.counters.unauthenticated.fetch_add(1, Relaxed);
        }
        found.map(|credential| FilterCaller { credential })
    }

    fn find(
        &self,
        metadata: &MetadataMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Arc<FilterCredential>, Error> {
        if let Some(value) = metadata.get("authorization") {
            let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
                Error::Unauthenticated("the authorization metadata is not `Bearer <token>`".into())
            })?;
            return self
                .credentials
                .iter()
                .find(|c| matches!(&c.secret, Secret::Token(h) if h.matches(token)))
                .cloned()
                .ok_or_else(|| Error::Unauthenticated("invalid filter token".into()));
        }
        if let Some(peer) = conn.and_then(|c| c.peer.as_ref()) {
            return self
                .credentials
                .iter()
                .find(|c| {
                    matches!(&c.secret, Secret::Certificate(p) if peer.names().any(|n| p.matches(n)))
                })
                .cloned()
                .ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "client certificate {:?} is not a filter credential",
                        peer.display_name()
                    ))
                });
        }
        Err(Error::Unauthenticated(
            "no filter credential: present a client certificate or `authorization: Bearer <token>` metadata".into(),
        ))
    }

    /// Refuses a node id the caller's credential does not cover.
    pub fn check_node(&self, caller: &FilterCaller, node_id: &str) -> Result<(), Error> {
        if caller.covers(node_id) {
            return Ok(());
        }
        self.counters.permission_denied.fetch_add(1, Relaxed);
        tracing::warn!(credential = caller.name(), node_id = %truncate(node_id), "filter credential does not cover this node id");
        Err(Error::PermissionDenied(format!(
            "credential {:?} does not cover node id {:?}",
            caller.name(),
            truncate(node_id)
        )))
    }

    /// Takes a call or stream slot for `caller`, or refuses when its cap is reached.
    pub fn acquire(self: &Arc<Self>, caller: &FilterCaller, kind: SlotKind) -> Result<Slot, Error> {
        let (map, max, what) = match kind {
            SlotKind::Call => (&self.calls, self.caps.calls, "Export calls"),
            SlotKind::Stream => (&self.streams, self.caps.streams, "Subscribe streams"),
        };
        let name = Arc::clone(&caller.credential.name);
        let mut m = map
            .lock()
            .map_err(|_| Error::Storage("credential usage lock poisoned".into()))?;
        let n = m.entry(Arc::clone(&name)).or_insert(0);
        if *n >= max {
            self.counters.over_limit.fetch_add(1, Relaxed);
            return Err(Error::TooManyRequests(format!(
                "credential {name:?} already has {max} {what} in progress"
            )));
        }
        *n += 1;
        Ok(Slot {
            auth: Arc::clone(self),
            name,
            kind,
        })
    }

    /// Admits `filter` as an identity `caller` sends records as at `now_ms`, or refuses a new one
    /// when the credential already has its cap of identities active within the window (the
    /// identities it already uses keep working).
    pub fn admit_identity(
        &self,
        caller: &FilterCaller,
        filter: &FilterIdentity,
        now_ms: i64,
    ) -> Result<(), Error> {
        let mut all = self
            .identities
            .lock()
            .map_err(|_| Error::Storage("credential usage lock poisoned".into()))?;
        let name = &caller.credential.name;
        let known = all.entry(Arc::clone(name)).or_default();
        let key = (
            filter.node_id.clone(),
            filter.worker,
            filter.instance_id.clone(),
        );
        if let Some(seen) = known.get_mut(&key) {
            *seen = now_ms;
            return Ok(());
        }
        if known.len() >= self.caps.identities {
            let idle_before = now_ms.saturating_sub(self.caps.identity_window_ms);
            known.retain(|_, seen| *seen >= idle_before);
        }
        if known.len() >= self.caps.identities {
            self.counters.over_limit.fetch_add(1, Relaxed);
            tracing::warn!(credential = %name, node_id = %truncate(&filter.node_id), "filter credential is at its cap of identities");
            return Err(Error::TooManyRequests(format!(
                "credential {name:?} already sends records as {} filter identities (node id, worker, instance) active within the deduplication window; raise grpc.max_identities_per_credential or give each gateway its own credential",
                self.caps.identities
            )));
        }
        known.insert(key, now_ms);
        Ok(())
    }

    /// The number of credentials (for the start-up log).
    pub fn len(&self) -> usize {
        self.credentials.len()
    }

    /// Whether there is none (then every filter is refused).
    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }
}

/// A caller-chosen string, shortened for logs and errors.
fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::PeerCertificate;

    fn md(auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = auth {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    fn auth() -> Arc<FilterAuth> {
        let configured = vec![
            FilterCredentialConfig {
                name: "ingress-token".into(),
                token_sha256: Some(TokenHash::of("wdn_secret").to_hex()),
                certificate: None,
                node_ids: vec!["ingress-*".into()],
            },
            FilterCredentialConfig {
                name: "gateway-cert".into(),
                token_sha256: None,
                certificate: Some("spiffe://cluster/ns/gw/*".into()),
                node_ids: vec!["gateway-1".into()],
            },
        ];
        let caps = FilterCaps {
            calls: 2,
            streams: 1,
            identities: 3,
            identity_window_ms: 1_000,
        };
        Arc::new(FilterAuth::new(&configured, Vec::new(), caps).unwrap())
    }

    fn conn(uri: &str) -> ConnInfo {
        ConnInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            tls: true,
            peer: Some(Arc::new(PeerCertificate {
                subject: "CN=gw".into(),
                common_name: Some("gw".into()),
                dns_names: vec![],
                uris: vec![uri.into()],
                fingerprint: "00".into(),
            })),
        }
    }

    #[test]
    fn a_token_is_bound_to_its_node_ids() {
        let a = auth();
        let caller = a
            .authenticate(&md(Some("Bearer wdn_secret")), None)
            .unwrap();
        assert_eq!(caller.name(), "ingress-token");
        assert!(a.check_node(&caller, "ingress-7").is_ok());
        let e = a.check_node(&caller, "gateway-1").unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("ingress-token"), "{e}");
        assert_eq!(a.counters.permission_denied.load(Relaxed), 1);
    }

    #[test]
    fn a_wrong_or_missing_credential_is_unauthenticated() {
        let a = auth();
        for (metadata, peer) in [
            (md(Some("Bearer nope")), None),
            (md(Some("Basic abc")), None),
            (md(None), None),
            (md(None), Some(conn("spiffe://other/sa/x"))),
        ] {
            let e = a.authenticate(&metadata, peer.as_ref()).unwrap_err();
            assert_eq!(e.grpc_code(), tonic::Code::Unauthenticated, "{e}");
            assert!(!e.to_string().contains("nope"), "never echoes the token");
        }
        assert_eq!(a.counters.unauthenticated.load(Relaxed), 4);
    }

    #[test]
    fn a_certificate_matches_by_san() {
        let a = auth();
        let caller = a
            .authenticate(&md(None), Some(&conn("spiffe://cluster/ns/gw/sa/envoy")))
            .unwrap();
        assert_eq!(caller.name(), "gateway-cert");
        assert!(a.check_node(&caller, "gateway-1").is_ok());
        assert!(a.check_node(&caller, "gateway-2").is_err());
    }

    #[test]
    fn calls_and_streams_are_capped_per_credential() {
        let a = auth();
        let caller = a
            .authenticate(&md(Some("Bearer wdn_secret")), None)
            .unwrap();
        let one = a.acquire(&caller, SlotKind::Call).unwrap();
        let _two = a.acquire(&caller, SlotKind::Call).unwrap();
        let e = a.acquire(&caller, SlotKind::Call).unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        drop(one);
        assert!(a.acquire(&caller, SlotKind::Call).is_ok());
        let _s = a.acquire(&caller, SlotKind::Stream).unwrap();
        assert!(a.acquire(&caller, SlotKind::Stream).is_err());
    }

    #[test]
    fn identities_are_capped_per_credential_and_forgotten_when_idle() {
        let a = auth();
        let caller = a
            .authenticate(&md(Some("Bearer wdn_secret")), None)
            .unwrap();
        let id = |instance: &str| FilterIdentity {
            node_id: "ingress-1".into(),
            worker: 0,
            instance_id: instance.into(),
            ..Default::default()
        };
        for i in ["a", "b", "c"] {
            a.admit_identity(&caller, &id(i), 10_000).unwrap();
        }
        let e = a.admit_identity(&caller, &id("d"), 10_500).unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        assert!(e.to_string().contains("ingress-token"), "{e}");
        a.admit_identity(&caller, &id("a"), 10_500)
            .expect("an identity already in use keeps working");
        // Past the window, the idle ones (b, c) make room.
        a.admit_identity(&caller, &id("d"), 11_200).unwrap();
        a.admit_identity(&caller, &id("e"), 11_200).unwrap();
        assert!(a.admit_identity(&caller, &id("f"), 11_200).is_err());
    }
}
