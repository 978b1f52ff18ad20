//! The root context of one VM: parses the configuration, owns the shipper and the deny list
//! (shared with HTTP contexts through `Rc<RefCell<State>>`), and on a fine tick dispatches
//! `Export` calls and keeps the `Subscribe` stream open.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use warden_proto::pb::{
    Ack, DenyListUpdate, FilterIdentity, FilterMessage, SubscribeRequest, filter_message,
};

use crate::batch::{Backoff, Outcome, Shipper};
use crate::config::Config;
use crate::denylist::DenyList;
use crate::host::{self, Counter, Gauge, Metrics, Wake};
use crate::http_context::WardenHttp;

/// Tick period: fine enough that a full batch leaves within 50 ms and the flush interval is kept
/// to within 50 ms.
const TICK: Duration = Duration::from_millis(50);
/// How often expired deny-list entries are purged (lookups ignore them in between).
const PURGE_EVERY_MS: u64 = 10_000;
const AUDIT_SERVICE: &str = "warden.v1.AuditService";
const GRPC_OK: u32 = 0;
const GRPC_INVALID_ARGUMENT: u32 = 3;
const DENYLIST_SERVICE: &str = "warden.v1.DenyListService";

/// State shared between the root context and the HTTP contexts of one VM.
#[derive(Debug)]
pub struct State {
    /// Pending records and in-flight batches.
    pub shipper: Shipper,
    /// The applied deny list.
    pub denylist: DenyList,
    /// Metric ids.
    pub metrics: Metrics,
    /// Wakes the root context when an urgent record is queued.
    pub wake: Wake,
}

/// The Subscribe stream's connection state.
#[derive(Debug)]
struct Stream {
    token: Option<u32>,
    backoff: Backoff,
    /// After a refused update the next subscription asks for a full snapshot.
    want_snapshot: bool,
}

/// The root context.
pub struct WardenRoot {
    config: Option<Rc<Config>>,
    state: Option<Rc<RefCell<State>>>,
    identity: FilterIdentity,
    stream: Option<Stream>,
    last_purge_ms: u64,
    /// The collector's gRPC service, as Envoy expects it (set with the configuration).
    upstream: String,
    /// Metadata of every call to the collector (its bearer token, if one is configured).
    grpc_metadata: Vec<(String, Vec<u8>)>,
}

impl WardenRoot {
    /// A root context awaiting its configuration.
    pub fn new() -> Self {
        Self {
            config: None,
            state: None,
            identity: FilterIdentity::default(),
            stream: None,
            last_purge_ms: 0,
            upstream: String::new(),
            grpc_metadata: Vec::new(),
        }
    }

    fn metadata(config: &Config) -> Vec<(String, Vec<u8>)> {
        if config.collector.token.is_empty() {
            return Vec::new();
        }
        vec![(
            "authorization".to_string(),
            format!("Bearer {}", config.collector.token).into_bytes(),
        )]
    }

    /// The call metadata as the host call takes it.
    fn metadata_pairs(metadata: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
        metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }

    fn record_outcome(metrics: &Metrics, outcome: Outcome) {
        metrics.add(Counter::RecordsSent, outcome.sent);
        metrics.add(Counter::BatchesSent, u64::from(outcome.sent > 0));
        metrics.add(Counter::RecordsFailed, outcome.failed);
        metrics.add(Counter::BatchesFailed, u64::from(outcome.failed > 0));
        metrics.add(Counter::RecordsDropped, outcome.dropped);
        metrics.add(Counter::RecordsRejected, outcome.rejected);
    }

    /// Sends every batch that is due, up to the in-flight cap.
    fn flush(&mut self, config: &Config, state: &mut State, now: u64) {
        let md = Self::metadata_pairs(&self.grpc_metadata);
        while let Some(batch) = state.shipper.next_batch(now) {
            let body = batch.encode(&self.identity, state.shipper.dropped_total());
            match hostcalls::dispatch_grpc_call(
                &self.upstream,
                AUDIT_SERVICE,
                "Export",
                md.clone(),
                Some(&body),
                Duration::from_millis(config.collector.timeout_ms),
            ) {
                Ok(token) => state.shipper.dispatched(token, batch),
                Err(e) => {
                    host::log(
                        LogLevel::Warn,
                        &format!(
                            "cannot dispatch Export to {}: {e:?}",
                            config.collector.cluster
                        ),
                    );
                    let outcome = state.shipper.requeue(batch, now);
                    Self::record_outcome(&state.metrics, outcome);
                    break;
                }
            }
        }
    }

    /// Opens the Subscribe stream when it is closed and the backoff allows.
    fn connect(&mut self, state: &State, now: u64) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.token.is_some() || !stream.backoff.ready(now) {
            return;
        }
        let md = Self::metadata_pairs(&self.grpc_metadata);
        let token =
            match hostcalls::open_grpc_stream(&self.upstream, DENYLIST_SERVICE, "Subscribe", md) {
                Ok(t) => t,
                Err(e) => {
                    host::log(LogLevel::Warn, &format!("cannot open Subscribe: {e:?}"));
                    stream.backoff.fail(now);
                    return;
                }
            };
        let known_version = if stream.want_snapshot {
            0
        } else {
            state.denylist.version()
        };
        let hello = FilterMessage {
            message: Some(filter_message::Message::Subscribe(SubscribeRequest {
                filter: Some(self.identity.clone()),
                known_version,
            })),
        };
        if let Err(e) =
            hostcalls::send_grpc_stream_message(token, Some(&hello.encode_to_vec()), false)
        {
            host::log(LogLevel::Warn, &format!("cannot send subscribe: {e:?}"));
            let _ = hostcalls::cancel_grpc_stream(token);
            stream.backoff.fail(now);
            return;
        }
        host::log(
            LogLevel::Debug,
            &format!("subscribed to deny list (known_version {known_version})"),
        );
        stream.token = Some(token);
        stream.want_snapshot = false;
    }

    fn update_gauges(state: &State) {
        state
            .metrics
            .set(Gauge::DenylistEntries, state.denylist.len() as u64);
        state
            .metrics
            .set(Gauge::DenylistVersion, state.denylist.version());
    }
}

impl Default for WardenRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for WardenRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let mut state = state.borrow_mut();
        // Only gRPC OK means the batch is committed. INVALID_ARGUMENT would come back for the
        // same records every time, so that batch is dropped and counted; anything else
        // (UNAVAILABLE, a timeout, UNAUTHENTICATED) is retried, since the collector dedups by
        // (identity, sequence).
        let now = host::now_ms();
        let outcome = match status_code {
            GRPC_OK => state.shipper.completed(token_id, true, now),
            GRPC_INVALID_ARGUMENT => {
                // The status message is not read: the SDK's get_grpc_status unwraps its UTF-8
                // conversion; the collector logs the reason of every refusal.
                host::log(
                    LogLevel::Error,
                    "the collector refused a batch as invalid (see its log); dropping it",
                );
                state.shipper.rejected(token_id)
            }
            _ => {
                host::log(
                    LogLevel::Debug,
                    &format!("Export failed: gRPC status {status_code}; will retry"),
                );
                state.shipper.completed(token_id, false, now)
            }
        };
        Self::record_outcome(&state.metrics, outcome);
        // Urgent records that gathered while this call was in flight leave now.
        if let Some(config) = self.config.clone().filter(|_| state.shipper.has_urgent()) {
            self.flush(&config, &mut state, now);
        }
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.token != Some(token_id) {
            return;
        }
        let bytes = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, message_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut state = state.borrow_mut();
        let result = DenyListUpdate::decode(bytes.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|u| state.denylist.apply(u).map_err(|e| e.to_string()));
        match result {
            Ok(applied) => {
                stream.backoff.succeed();
                if let Some(version) = applied {
                    Self::update_gauges(&state);
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "deny list version {version} applied ({} entries)",
                            state.denylist.len()
                        ),
                    );
                    let ack = FilterMessage {
                        message: Some(filter_message::Message::Ack(Ack { version })),
                    };
                    let _ = hostcalls::send_grpc_stream_message(
                        token_id,
                        Some(&ack.encode_to_vec()),
                        false,
                    );
                }
            }
            Err(e) => {
                // Keep enforcing the applied list; ask for a fresh snapshot on a new stream.
                host::log(
                    LogLevel::Warn,
                    &format!("deny-list update refused: {e}; resubscribing"),
                );
                state.metrics.add(Counter::DenylistUpdatesRejected, 1);
                state.denylist.abandon_snapshot();
                let _ = hostcalls::cancel_grpc_stream(token_id);
                stream.token = None;
                stream.want_snapshot = true;
            }
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.token != Some(token_id) {
            return;
        }
        stream.token = None;
        stream.backoff.fail(host::now_ms());
        if let Some(state) = &self.state {
            state.borrow_mut().denylist.abandon_snapshot();
        }
        host::log(
            LogLevel::Info,
            &format!(
                "deny-list stream closed (status {status_code}); reconnecting in {} ms",
                stream.backoff.delay_ms()
            ),
        );
    }
}

impl RootContext for WardenRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("warden: invalid configuration: {e}"),
                );
                return false;
            }
        };
        let now = host::now_ms();
        if self.identity.instance_id.is_empty() {
            let worker = host::take_worker_index();
            let node_id = host::node_id();
            self.identity = FilterIdentity {
                instance_id: format!("{node_id}-{}-{worker}", host::now_nanos()),
                node_id,
                worker,
                filter_version: env!("CARGO_PKG_VERSION").to_string(),
            };
        }
        match &self.state {
            // A reconfiguration keeps pending records and the applied list; new batch limits
            // take effect with the next VM.
            Some(_) => {}
            None => {
                self.state = Some(Rc::new(RefCell::new(State {
                    shipper: Shipper::new(&config.batch, config.record.max_record_bytes, now),
                    denylist: DenyList::new(),
                    metrics: Metrics::define(),
                    wake: Wake::register(&format!("warden.wake.{}", self.identity.instance_id)),
                })));
            }
        }
        self.stream = config.deny_list.enabled.then(|| Stream {
            token: self.stream.as_ref().and_then(|s| s.token),
            backoff: Backoff::new(
                config.deny_list.reconnect_initial_ms,
                config.deny_list.reconnect_max_ms,
            ),
            want_snapshot: false,
        });
        self.upstream = host::grpc_upstream(&config.collector.cluster, &config.collector.authority);
        self.grpc_metadata = Self::metadata(&config);
        self.config = Some(config);
        self.last_purge_ms = now;
        if hostcalls::set_tick_period(TICK).is_err() {
            host::log(
                LogLevel::Error,
                "cannot set the tick period; records will not be shipped",
            );
        }
        host::log(
            LogLevel::Info,
            &format!(
                "configured worker {} instance {} (filter {})",
                self.identity.worker, self.identity.instance_id, self.identity.filter_version
            ),
        );
        true
    }

    fn on_tick(&mut self) {
        let (Some(config), Some(state)) = (self.config.clone(), self.state.clone()) else {
            return;
        };
        let now = host::now_ms();
        let mut state = state.borrow_mut();
        self.flush(&config, &mut state, now);
        if config.deny_list.enabled {
            self.connect(&state, now);
            if now.saturating_sub(self.last_purge_ms) >= PURGE_EVERY_MS {
                self.last_purge_ms = now;
                if state.denylist.purge(i64::try_from(now).unwrap_or(i64::MAX)) > 0 {
                    Self::update_gauges(&state);
                }
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let (Some(config), Some(state)) = (self.config.clone(), self.state.clone()) else {
            return;
        };
        let mut state = state.borrow_mut();
        if !state.wake.is(queue_id) {
            return;
        }
        state.wake.drain();
        self.flush(&config, &mut state, host::now_ms());
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WardenHttp::new(
            self.config.clone(),
            self.state.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
