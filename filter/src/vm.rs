//! The filter in one Wasm VM: its configuration, shipper, deny list, deny-list stream and
//! metrics, and what it does on each callback Envoy delivers. Everything here talks to Envoy
//! through [`Host`], so the whole per-request path is tested on the host against a fake Envoy
//! that counts host calls (`tests` below); `abi.rs` only forwards Envoy's callbacks here.
//!
//! # One state per VM
//! Envoy creates a root context per plugin configuration, and the filter exports no
//! `proxy_on_context_create` (each exported callback is a VM entry on every request, and a
//! request needs nothing from it), so an HTTP context does not say which root context it
//! belongs to. The VM therefore keeps one state: records, identity and deny list belong to the
//! VM, and the configuration applied last applies to every request the VM sees. Several root
//! contexts with the same configuration (one filter on several listeners) share it; during a
//! configuration update the new configuration takes over from the old one.
//!
//! # Per request
//! - `on_request_headers`: nothing at all while the deny list is empty; otherwise one host call
//!   for `source.address` and a lookup. A listed client gets the prepared local reply and its
//!   record is written then, from one more host call (the request headers).
//! - `on_log`: two host calls that return data (the request headers; the attribute list) and the
//!   clock. The record is encoded straight into the open batch; a full batch, or an urgent
//!   record, wakes the root context through a shared queue instead of waiting for the tick.

use prost::Message;
use warden_proto::pb::{ExportResponse, FilterIdentity};

use crate::attributes::{Compiled, Plan};
use crate::batch::{Appended, Outcome, Shipper};
use crate::config::Config;
use crate::deny_reply::DenyReply;
use crate::denylist::DenyList;
use crate::headers::{RequestHeaders, Wanted};
use crate::host::{BufferType, Host, LogLevel, MapType, Status, property_path, serialize_pairs};
use crate::metrics::{Counter, Gauge, Held, Metrics};
use crate::request::{self, Blocked, Completed};
use crate::subscribe::{Received, Subscription};

/// `proxy_on_request_headers`: let the request continue.
pub(crate) const CONTINUE: u32 = 0;
/// `proxy_on_request_headers`: stop it (Warden answered it).
pub(crate) const PAUSE: u32 = 1;

/// Tick period: a due batch leaves within 50 ms, and counters reach Envoy's stats as often.
pub(crate) const TICK_MS: u32 = 50;
/// How often expired deny-list entries are purged (lookups ignore them in between).
const PURGE_EVERY_MS: u64 = 10_000;
/// Requests answered by Warden and not yet logged, or carrying an ext_authz header value, that
/// the VM remembers at most (a stream Envoy never logs must not grow the VM).
const MAX_TRACKED_REQUESTS: usize = 4096;

const AUDIT_SERVICE: &str = "warden.v1.AuditService";
const DENYLIST_SERVICE: &str = "warden.v1.DenyListService";
const GRPC_INVALID_ARGUMENT: u32 = 3;
/// Shared-data key of the VM counter.
const WORKER_COUNTER_KEY: &str = "warden.worker_counter";
const SOURCE_ADDRESS: &[u8] = b"source\0address";

/// The applied configuration and what is derived from it once.
struct Active {
    config: Config,
    /// The configuration as Envoy gave it, to recognise another root context with the same one.
    source: Vec<u8>,
    plan: Plan,
    compiled: Compiled,
    wanted: Wanted,
    reply: DenyReply,
    /// The collector's gRPC service, as Envoy's gRPC calls take it.
    upstream: Vec<u8>,
    /// Metadata of every call to the collector, serialised as pairs.
    metadata: Vec<u8>,
}

/// Wakes the root context from an HTTP context without waiting for the next tick: each VM
/// registers a shared queue of its own, and Envoy delivers `on_queue_ready` to the root context
/// that registered it right after the current callback. One token in the queue is enough.
#[derive(Debug, Default)]
struct Wake {
    queue: Option<u32>,
    pending: bool,
}

/// The filter state of one VM.
#[derive(Default)]
pub(crate) struct Vm {
    active: Option<Active>,
    identity: FilterIdentity,
    shipper: Option<Shipper>,
    denylist: DenyList,
    subscription: Option<Subscription>,
    metrics: Metrics,
    wake: Wake,
    /// Contexts whose record was written at request headers (Warden answered them).
    recorded: Vec<u32>,
    /// The identity headers as each request arrived, by context.
    sent_identity: Vec<(u32, SentIdentity)>,
    /// The redacted path of the request being recorded (reused).
    path_scratch: String,
    /// Envoy's clock at the last callback that read it, ms (deny-list expiry checks).
    clock_ms: u64,
    last_purge_ms: u64,
}

/// `envoy.config.core.v3.GrpcService` with only `envoy_grpc` set: Envoy's gRPC host calls
/// accept it serialised in place of a cluster name, which is how an `:authority` other than the
/// cluster name is chosen.
#[derive(Clone, PartialEq, prost::Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
    #[prost(string, tag = "2")]
    authority: String,
}

/// The `upstream` argument of gRPC host calls: the cluster name, or a serialised `GrpcService`
/// when another authority is configured.
pub(crate) fn grpc_upstream(cluster: &str, authority: &str) -> Vec<u8> {
    if authority.is_empty() || authority == cluster {
        return cluster.as_bytes().to_vec();
    }
    prost::Message::encode_to_vec(&GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
            authority: authority.to_string(),
        }),
    })
}

/// Takes the next VM index of this Envoy process: each VM increments a shared counter with
/// compare-and-swap, so the VMs get 0, 1, 2, ... in start order.
fn take_worker_index(host: &impl Host) -> u32 {
    for _ in 0..100 {
        let (value, cas) = host.shared_data(WORKER_COUNTER_KEY);
        let current = value
            .and_then(|b| b.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()))
            .map_or(0, u32::from_le_bytes);
        match host.set_shared_data(
            WORKER_COUNTER_KEY,
            &current.wrapping_add(1).to_le_bytes(),
            cas,
        ) {
            Ok(()) => return current,
            Err(Status::CAS_MISMATCH) => continue,
            Err(_) => return current,
        }
    }
    // Contention this long means something is badly wrong; a duplicate index only makes two
    // VMs share a label (their instance ids still differ).
    0
}

fn now_ms(host: &impl Host) -> u64 {
    host.now_ns() / 1_000_000
}

impl Vm {
    /// A VM awaiting its configuration.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `proxy_on_configure`: parses and validates the configuration once; `false` (with a log
    /// naming the field) makes Envoy refuse it.
    pub(crate) fn configure(&mut self, host: &impl Host, size: usize) -> bool {
        let source = host
            .buffer(BufferType::PluginConfiguration, 0, size)
            .unwrap_or_default();
        if let Some(active) = &self.active
            && active.source == source
        {
            // Another root context with the same configuration (the filter on another
            // listener): it shares this VM's state, and ticks too.
            return self.start_ticking(host);
        }
        let config = match Config::parse(&source) {
            Ok(c) => c,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("warden: invalid configuration: {e}"),
                );
                return false;
            }
        };
        let now = now_ms(host);
        self.clock_ms = now;
        if self.identity.instance_id.is_empty() {
            let worker = take_worker_index(host);
            let node_id = host
                .property(&property_path(&["xds", "node", "id"]))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            self.identity = FilterIdentity {
                instance_id: format!("{node_id}-{}-{worker}", host.now_ns()),
                node_id,
                worker,
                filter_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            self.metrics = Metrics::define(host);
            self.wake = Wake {
                queue: host
                    .register_queue(&format!("warden.wake.{}", self.identity.instance_id))
                    .map_err(|e| {
                        host.log(
                            LogLevel::Warn,
                            &format!("cannot register the wake queue: {e}; urgent records wait for the tick"),
                        )
                    })
                    .ok(),
                pending: false,
            };
            self.last_purge_ms = now;
        } else if self.active.is_some() {
            host.log(
                LogLevel::Info,
                "warden: a new configuration replaces the previous one in this VM (one Warden \
                 configuration applies per vm_id)",
            );
        }
        let plan = Plan::new(!config.identity.jwt_metadata_namespace.is_empty());
        let compiled = match plan.compile(host) {
            Ok(c) => c,
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "warden: this Envoy cannot evaluate CEL expressions ({e}); reading \
                         attributes one by one costs about 10 µs more per request"
                    ),
                );
                Compiled::default()
            }
        };
        if let Some(old) = self.active.as_ref().map(|a| a.compiled) {
            for token in [old.fast, old.guarded].into_iter().flatten() {
                let _ = host.call_foreign("expr_delete", &token.to_le_bytes());
            }
        }
        match self.shipper.as_mut() {
            // Pending records and batches in flight survive a reconfiguration.
            Some(s) => s.reconfigure(&config.batch, config.record.max_record_bytes),
            None => {
                self.shipper = Some(Shipper::new(
                    &config.batch,
                    config.record.max_record_bytes,
                    &self.identity,
                ));
            }
        }
        let d = &config.deny_list;
        self.subscription = match (d.enabled, self.subscription.take()) {
            (true, Some(s)) => Some(s.reconfigured(d.reconnect_initial_ms, d.reconnect_max_ms)),
            (true, None) => Some(Subscription::new(
                d.reconnect_initial_ms,
                d.reconnect_max_ms,
            )),
            (false, Some(s)) => {
                if let Some(token) = s.token() {
                    host.grpc_cancel(token);
                }
                None
            }
            (false, None) => None,
        };
        let token = if config.collector.token_env.is_empty() {
            config.collector.token.clone()
        } else {
            match host.env_var(&config.collector.token_env) {
                Some(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    host.log(
                        LogLevel::Error,
                        &format!(
                            "warden: invalid configuration: collector.token_env: {} is not set in the Wasm VM's environment (list it in vm_config.environment_variables.host_env_keys)",
                            config.collector.token_env
                        ),
                    );
                    return false;
                }
            }
        };
        let mut metadata = Vec::new();
        if !token.is_empty() {
            let bearer = format!("Bearer {token}");
            serialize_pairs(
                std::iter::once((&b"authorization"[..], bearer.as_bytes())),
                &mut metadata,
            );
        }
        self.active = Some(Active {
            upstream: grpc_upstream(&config.collector.cluster, &config.collector.authority),
            metadata,
            reply: DenyReply::new(&config.deny_list),
            wanted: Wanted {
                captured: config.record.captured_headers.clone(),
                api_key: config.identity.api_key_header.clone(),
                ext_authz_user: config.identity.ext_authz_user_header.clone(),
                basic_auth_user: config.identity.basic_auth_user_header.clone(),
                api_key_client: config.identity.api_key_client_header.clone(),
            },
            plan,
            compiled,
            source,
            config,
        });
        host.log(
            LogLevel::Info,
            &format!(
                "configured worker {} instance {} (filter {})",
                self.identity.worker, self.identity.instance_id, self.identity.filter_version
            ),
        );
        self.start_ticking(host)
    }

    fn start_ticking(&self, host: &impl Host) -> bool {
        if host.set_tick_period_ms(TICK_MS).is_err() {
            host.log(
                LogLevel::Error,
                "cannot set the tick period; records will not be shipped",
            );
        }
        true
    }

    /// `proxy_on_request_headers`: the deny-list check.
    pub(crate) fn request_headers(&mut self, host: &impl Host, context: u32) -> u32 {
        let Some(active) = self.active.as_mut() else {
            return CONTINUE;
        };
        // An identity header counts only when Envoy (an authorizer) set or changed it, so its
        // value as the client sent it is kept until the request is logged.
        let sent = |name: &str| {
            (!name.is_empty())
                .then(|| host.header_value(MapType::RequestHeaders, name))
                .flatten()
        };
        let w = &active.wanted;
        if !w.ext_authz_user.is_empty()
            || !w.basic_auth_user.is_empty()
            || !w.api_key_client.is_empty()
        {
            let identity = SentIdentity {
                ext_authz_user: sent(&w.ext_authz_user),
                basic_auth_user: sent(&w.basic_auth_user),
                api_key_client: sent(&w.api_key_client),
            };
            remember(&mut self.sent_identity, (context, identity));
        }
        if !active.config.deny_list.enabled || self.denylist.is_empty() {
            return CONTINUE;
        }
        let Some(source) = host.property(SOURCE_ADDRESS) else {
            return CONTINUE;
        };
        let Some(ip) = request::parse_ip(&source) else {
            return CONTINUE;
        };
        let clock = i64::try_from(self.clock_ms).unwrap_or(i64::MAX);
        let Some(matched) = self.denylist.lookup(ip, clock) else {
            return CONTINUE;
        };
        let now_ns = host.now_ns();
        let reply = active
            .reply
            .reply(matched.verdict, matched.expires_at_ms, now_ns / 1_000_000);
        let status = reply.status;
        if let Err(e) = host.send_local_response(status, "warden_denied", reply.body, reply.headers)
        {
            // Fail open: an unsendable reply must not stall the request.
            host.log(LogLevel::Warn, &format!("cannot send local reply: {e}"));
            return CONTINUE;
        }
        self.metrics.add(
            match matched.verdict {
                crate::denylist::Verdict::Deny => Counter::RequestsBlocked,
                crate::denylist::Verdict::Throttle => Counter::RequestsThrottled,
            },
            1,
        );
        let headers = host
            .header_pairs(MapType::RequestHeaders)
            .unwrap_or_default();
        let blocked = Blocked {
            source: &source,
            headers: RequestHeaders::scan(&headers, &active.wanted),
            now_ns,
            status,
            matched,
        };
        if let Some(shipper) = self.shipper.as_mut() {
            let appended = request::record_blocked(
                &blocked,
                &active.config,
                &active.wanted,
                &mut self.path_scratch,
                shipper,
            );
            after_append(host, &mut self.metrics, &mut self.wake, appended);
        }
        remember(&mut self.recorded, context);
        PAUSE
    }

    /// `proxy_on_log`: records the completed request.
    pub(crate) fn log(&mut self, host: &impl Host, context: u32) {
        let sent = take(&mut self.sent_identity, |(c, _)| *c == context)
            .map(|(_, v)| v)
            .unwrap_or_default();
        if take(&mut self.recorded, |c| *c == context).is_some() {
            return;
        }
        let (Some(active), Some(shipper)) = (self.active.as_ref(), self.shipper.as_mut()) else {
            return;
        };
        let headers = host
            .header_pairs(MapType::RequestHeaders)
            .unwrap_or_default();
        let attrs = active.plan.read(host, active.compiled);
        let now_ns = host.now_ns();
        self.clock_ms = now_ns / 1_000_000;
        let completed = Completed {
            attrs: active.plan.decode(&attrs),
            headers: RequestHeaders::scan(&headers, &active.wanted),
            now_ns,
            sent_identity: sent.ext_authz_user.as_deref(),
            sent_basic_auth_user: sent.basic_auth_user.as_deref(),
            sent_api_key_client: sent.api_key_client.as_deref(),
        };
        let appended = request::record_completed(
            &completed,
            &active.config,
            &active.wanted,
            &mut self.path_scratch,
            shipper,
        );
        after_append(host, &mut self.metrics, &mut self.wake, appended);
    }

    /// `proxy_on_tick`: sends due batches, keeps the deny-list stream open, purges expired
    /// entries and adds the counted events to Envoy's counters.
    pub(crate) fn tick(&mut self, host: &impl Host) {
        let now = now_ms(host);
        self.clock_ms = now;
        self.flush(host, now);
        self.connect(host, now);
        if self.subscription.is_some() && now.saturating_sub(self.last_purge_ms) >= PURGE_EVERY_MS {
            self.last_purge_ms = now;
            if self.denylist.purge(i64::try_from(now).unwrap_or(i64::MAX)) > 0 {
                self.update_gauges(host);
            }
        }
        if let Some(shipper) = self.shipper.as_ref() {
            self.metrics
                .hold(host, Held::PendingRecords, shipper.pending_len() as u64);
            self.metrics
                .hold(host, Held::PendingBytes, shipper.pending_bytes() as u64);
            self.metrics
                .hold(host, Held::Summaries, shipper.summaries_held() as u64);
        }
        self.metrics.flush(host);
    }

    /// `proxy_on_queue_ready`: an HTTP context asked for a batch to leave now.
    pub(crate) fn queue_ready(&mut self, host: &impl Host, queue: u32) {
        if self.wake.queue != Some(queue) {
            return;
        }
        self.wake.pending = false;
        while let Ok(Some(_)) = host.dequeue(queue) {}
        let now = now_ms(host);
        self.flush(host, now);
    }

    /// Sends every batch that is due, up to the in-flight cap.
    fn flush(&mut self, host: &impl Host, now: u64) {
        let (Some(active), Some(shipper)) = (self.active.as_ref(), self.shipper.as_mut()) else {
            return;
        };
        let timeout = u32::try_from(active.config.collector.timeout_ms).unwrap_or(u32::MAX);
        while let Some(batch) = shipper.next_batch(now) {
            match host.grpc_call(
                &active.upstream,
                AUDIT_SERVICE,
                "Export",
                &active.metadata,
                batch.body(),
                timeout,
            ) {
                Ok(token) => shipper.dispatched(token, batch),
                Err(e) => {
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "cannot dispatch Export to {}: {e}",
                            active.config.collector.cluster
                        ),
                    );
                    let outcome = shipper.requeue(batch, now);
                    count_outcome(&mut self.metrics, outcome);
                    break;
                }
            }
        }
    }

    /// Opens the deny-list stream when it is closed and the backoff allows.
    fn connect(&mut self, host: &impl Host, now: u64) {
        let (Some(active), Some(sub)) = (self.active.as_ref(), self.subscription.as_mut()) else {
            return;
        };
        if !sub.should_connect(now) {
            return;
        }
        let token = match host.grpc_stream(
            &active.upstream,
            DENYLIST_SERVICE,
            "Subscribe",
            &active.metadata,
        ) {
            Ok(t) => t,
            Err(e) => {
                host.log(LogLevel::Warn, &format!("cannot open Subscribe: {e}"));
                sub.open_failed(now);
                return;
            }
        };
        let hello = sub.hello(&self.identity, self.denylist.version());
        if let Err(e) = host.grpc_send(token, &hello, false) {
            host.log(LogLevel::Warn, &format!("cannot send subscribe: {e}"));
            host.grpc_cancel(token);
            sub.open_failed(now);
            return;
        }
        sub.opened(token);
        self.metrics.add(Counter::DenylistReconnects, 1);
    }

    fn update_gauges(&self, host: &impl Host) {
        self.metrics
            .set(host, Gauge::DenylistEntries, self.denylist.len() as u64);
        self.metrics
            .set(host, Gauge::DenylistVersion, self.denylist.version());
    }

    /// `proxy_on_grpc_receive`: an `Export` acknowledgement, or a deny-list update.
    pub(crate) fn grpc_receive(&mut self, host: &impl Host, token: u32, size: usize) {
        if let Some(sub) = self.subscription.as_mut()
            && sub.is(token)
        {
            let message = host
                .buffer(BufferType::GrpcReceive, 0, size)
                .unwrap_or_default();
            match sub.received(token, &message, &mut self.denylist) {
                Received::Applied { version, ack } => {
                    self.update_gauges(host);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "deny list version {version} applied ({} entries)",
                            self.denylist.len()
                        ),
                    );
                    let _ = host.grpc_send(token, &ack, false);
                }
                Received::Staged | Received::Ignored => {}
                Received::Refused(reason) => {
                    host.log(
                        LogLevel::Warn,
                        &format!("deny-list update refused: {reason}; resubscribing"),
                    );
                    self.metrics.add(Counter::DenylistUpdatesRejected, 1);
                    host.grpc_cancel(token);
                }
            }
            return;
        }
        // Only gRPC OK delivers a message on a unary call: the batch is committed, except the
        // records the collector refused one by one, which the answer lists.
        let refused = if size > 0 {
            let message = host
                .buffer(BufferType::GrpcReceive, 0, size)
                .unwrap_or_default();
            refused_records(host, &message)
        } else {
            0
        };
        self.metrics.add(Counter::RecordsRejected, refused);
        self.export_done(host, token, None);
    }

    /// `proxy_on_grpc_close`: a failed `Export`, or the deny-list stream closing.
    pub(crate) fn grpc_close(&mut self, host: &impl Host, token: u32, status: u32) {
        if let Some(sub) = self.subscription.as_mut()
            && sub.is(token)
        {
            let now = now_ms(host);
            if let Some(delay) = sub.closed(token, now, &mut self.denylist) {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "deny-list stream closed (status {status}); reconnecting in {delay} ms"
                    ),
                );
            }
            return;
        }
        self.export_done(host, token, Some(status));
    }

    /// An `Export` call ended: `None` is OK. INVALID_ARGUMENT would come back for the same
    /// records every time, so that batch is dropped and counted; anything else (UNAVAILABLE,
    /// a timeout, UNAUTHENTICATED) is retried, since the collector dedups by (identity,
    /// sequence).
    fn export_done(&mut self, host: &impl Host, token: u32, failed: Option<u32>) {
        let now = now_ms(host);
        let Some(shipper) = self.shipper.as_mut() else {
            return;
        };
        let outcome = match failed {
            None => shipper.completed(token, true, now),
            Some(GRPC_INVALID_ARGUMENT) => {
                host.log(
                    LogLevel::Error,
                    "the collector refused a batch as invalid (see its log); dropping it",
                );
                shipper.rejected(token)
            }
            Some(status) => {
                if host.log_level() <= LogLevel::Debug {
                    host.log(
                        LogLevel::Debug,
                        &format!("Export failed: gRPC status {status}; will retry"),
                    );
                }
                shipper.completed(token, false, now)
            }
        };
        count_outcome(&mut self.metrics, outcome);
        // A call slot is free: what gathered meanwhile leaves now, not at the next tick.
        self.flush(host, now);
    }

    /// The shipper (tests).
    #[cfg(test)]
    fn shipper(&self) -> &Shipper {
        self.shipper.as_ref().expect("configured")
    }
}

/// How many records an `Export` answer says were refused; the first reason is logged, since
/// the filter should never build a record the collector refuses (a newer collector's contract,
/// a clock far off).
fn refused_records(host: &impl Host, message: &[u8]) -> u64 {
    let Ok(answer) = ExportResponse::decode(message) else {
        return 0;
    };
    if let Some(first) = answer.refused.first() {
        host.log(
            LogLevel::Warn,
            &format!(
                "the collector refused {} record(s) of a batch, first: {}",
                answer.refused.len(),
                first.reason
            ),
        );
    }
    if let Some(first) = answer.refused_summaries.first() {
        host.log(
            LogLevel::Warn,
            &format!(
                "the collector refused {} record summar(ies), first: {}",
                answer.refused_summaries.len(),
                first.reason
            ),
        );
    }
    answer.refused.len() as u64
}

fn count_outcome(metrics: &mut Metrics, outcome: Outcome) {
    metrics.add(Counter::RecordsSent, outcome.sent);
    metrics.add(Counter::BatchesSent, u64::from(outcome.sent > 0));
    metrics.add(Counter::RecordsFailed, outcome.failed);
    metrics.add(Counter::BatchesFailed, u64::from(outcome.failed > 0));
    metrics.add(Counter::RecordsSummarized, outcome.summarized);
    metrics.add(Counter::RecordsDropped, outcome.dropped);
    metrics.add(Counter::RecordsRejected, outcome.rejected);
}

fn after_append(host: &impl Host, metrics: &mut Metrics, wake: &mut Wake, appended: Appended) {
    metrics.add(Counter::RecordsSummarized, appended.summarized);
    metrics.add(Counter::RecordsDropped, appended.dropped);
    if appended.send_now
        && !wake.pending
        && let Some(queue) = wake.queue
    {
        wake.pending = host.enqueue(queue, b"w").is_ok();
    }
}

/// Adds to a bounded list of per-request facts, forgetting the oldest beyond the bound.
/// The identity headers a request arrived with (before any Envoy filter ran).
#[derive(Debug, Default)]
struct SentIdentity {
    ext_authz_user: Option<Vec<u8>>,
    basic_auth_user: Option<Vec<u8>>,
    api_key_client: Option<Vec<u8>>,
}

fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= MAX_TRACKED_REQUESTS {
        list.remove(0);
    }
    list.push(item);
}

/// Removes and returns the first item matching `pred`.
fn take<T>(list: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> Option<T> {
    let i = list.iter().position(pred)?;
    Some(list.swap_remove(i))
}

#[cfg(test)]
mod tests;
