//! Thin, panic-free wrappers over the proxy-wasm host calls the filter uses: typed attribute
//! reads (Envoy serialises integers as 8 little-endian bytes, timestamps and durations as
//! nanoseconds in an `i64`), logging, time, metrics and the worker counter in shared data.
//!
//! Every failure of a host call maps to "absent" or is ignored: an attribute Envoy cannot give
//! must never fail the request it describes.

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType, Status};

/// Logs at `level`; a failing log call is ignored (there is nowhere else to report it).
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Envoy's clock, ms since the epoch (0 if unavailable).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Envoy's clock, ns since the epoch (0 if unavailable).
pub fn now_nanos() -> u128 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Raw attribute bytes.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// A string attribute (empty when absent or not UTF-8).
pub fn string(path: &[&str]) -> String {
    property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// An integer attribute: 8 little-endian bytes (CEL `int`, `uint`, timestamp and duration).
pub fn int(path: &[&str]) -> Option<i64> {
    let b = property(path)?;
    let bytes: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

/// An unsigned integer attribute (same encoding as [`int`]).
pub fn uint(path: &[&str]) -> Option<u64> {
    int(path).map(|v| v as u64)
}

/// One request header, when present. Header values may hold any byte Envoy accepts (HTTP
/// allows obs-text, 0x80-0xFF): read them as bytes and convert lossily, because the SDK's
/// `String` variants unwrap the UTF-8 conversion and a single hostile header would panic the VM.
pub fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(proxy_wasm::types::MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|value| String::from_utf8_lossy(&value).into_owned())
}

/// Every request header in one host call (lower-case names; HTTP/1 `Host` is `:authority`).
/// One call that returns them all is much cheaper than one call per header or attribute:
/// each host call crosses into Envoy and back, and each returned value is copied into the VM.
/// Values are converted lossily, as in [`request_header`]; names are tokens, always ASCII.
pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpRequestHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

/// Envoy's node id: the `xds.node` attribute (Envoy 1.40 answers `xds.node.id`; the older
/// `node.id` path returns nothing in a root context).
pub fn node_id() -> String {
    string(&["xds", "node", "id"])
}

/// The metric ids of one VM. Envoy shows them in `/stats` prefixed with `wasmcustom.`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    records_sent: Option<u32>,
    records_failed: Option<u32>,
    records_dropped: Option<u32>,
    records_rejected: Option<u32>,
    batches_sent: Option<u32>,
    batches_failed: Option<u32>,
    requests_blocked: Option<u32>,
    requests_throttled: Option<u32>,
    denylist_entries: Option<u32>,
    denylist_version: Option<u32>,
    denylist_updates_rejected: Option<u32>,
}

/// A counter of [`Metrics`].
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// Records acknowledged by the collector.
    RecordsSent,
    /// Records in failed batches (each retry counts again).
    RecordsFailed,
    /// Records dropped from the full pending buffer.
    RecordsDropped,
    /// Records of batches the collector refused as invalid (dropped, not retried).
    RecordsRejected,
    /// Export calls acknowledged.
    BatchesSent,
    /// Export calls failed or refused.
    BatchesFailed,
    /// Requests answered with the deny status.
    RequestsBlocked,
    /// Requests answered with the throttle status.
    RequestsThrottled,
    /// Deny-list updates that could not be applied (the filter resubscribed).
    DenylistUpdatesRejected,
}

/// A gauge of [`Metrics`].
#[derive(Debug, Clone, Copy)]
pub enum Gauge {
    /// Entries of the applied deny list (allow entries included).
    DenylistEntries,
    /// Applied deny-list version.
    DenylistVersion,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            log(
                LogLevel::Warn,
                &format!("cannot define metric {name}: {e:?}"),
            );
            None
        }
    }
}

impl Metrics {
    /// Defines the metrics (idempotent in Envoy: every VM gets the same stats).
    pub fn define() -> Self {
        use MetricType::{Counter, Gauge};
        Self {
            records_sent: define(Counter, "warden.records_sent"),
            records_failed: define(Counter, "warden.records_failed"),
            records_dropped: define(Counter, "warden.records_dropped"),
            records_rejected: define(Counter, "warden.records_rejected"),
            batches_sent: define(Counter, "warden.batches_sent"),
            batches_failed: define(Counter, "warden.batches_failed"),
            requests_blocked: define(Counter, "warden.requests_blocked"),
            requests_throttled: define(Counter, "warden.requests_throttled"),
            denylist_entries: define(Gauge, "warden.denylist_entries"),
            denylist_version: define(Gauge, "warden.denylist_version"),
            denylist_updates_rejected: define(Counter, "warden.denylist_updates_rejected"),
        }
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        let id = match counter {
            Counter::RecordsSent => self.records_sent,
            Counter::RecordsFailed => self.records_failed,
            Counter::RecordsDropped => self.records_dropped,
            Counter::RecordsRejected => self.records_rejected,
            Counter::BatchesSent => self.batches_sent,
            Counter::BatchesFailed => self.batches_failed,
            Counter::RequestsBlocked => self.requests_blocked,
            Counter::RequestsThrottled => self.requests_throttled,
            Counter::DenylistUpdatesRejected => self.denylist_updates_rejected,
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets a gauge.
    pub fn set(&self, gauge: Gauge, value: u64) {
        let id = match gauge {
            Gauge::DenylistEntries => self.denylist_entries,
            Gauge::DenylistVersion => self.denylist_version,
        };
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// Shared-data key of the VM counter.
const WORKER_COUNTER_KEY: &str = "warden.worker_counter";

/// Takes the next VM index of this Envoy process: each VM increments a shared counter with
/// compare-and-swap, so the main-thread VM and the workers get 0..=N in start order.
pub fn take_worker_index() -> u32 {
    for _ in 0..100 {
        let (value, cas) = hostcalls::get_shared_data(WORKER_COUNTER_KEY).unwrap_or_default();
        let current = value
            .and_then(|b| b.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()))
            .map_or(0, u32::from_le_bytes);
        let next = current.wrapping_add(1).to_le_bytes();
        match hostcalls::set_shared_data(WORKER_COUNTER_KEY, Some(&next), cas) {
            Ok(()) => return current,
            Err(Status::CasMismatch) => continue,
            Err(_) => return current,
        }
    }
    // Contention this long means something is badly wrong; a duplicate index only makes two
    // VMs share a label (their instance ids still differ).
    0
}

/// `envoy.config.core.v3.GrpcService` with only `envoy_grpc` set: Envoy's gRPC host calls
/// accept this serialised message in place of a cluster name, which is how an `:authority`
/// other than the cluster name is chosen.
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
/// when an authority other than the cluster name is configured. The host call takes a `&str`;
/// the message is ASCII while names stay under 128 bytes, otherwise the plain cluster name is
/// used (and the authority defaults to it).
pub fn grpc_upstream(cluster: &str, authority: &str) -> String {
    if authority.is_empty() || authority == cluster {
        return cluster.to_string();
    }
    let bytes = prost::Message::encode_to_vec(&GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
            authority: authority.to_string(),
        }),
    });
    String::from_utf8(bytes).unwrap_or_else(|_| cluster.to_string())
}

/// Wakes this VM's root context from an HTTP context without waiting for the next tick.
///
/// Each VM registers a shared queue of its own; Envoy delivers `on_queue_ready` for it to the
/// registering root context, on the same thread, right after the current callback. One token
/// in the queue is enough, so further wakes are skipped until the root context drains it.
#[derive(Debug, Default)]
pub struct Wake {
    queue: Option<u32>,
    pending: bool,
}

impl Wake {
    /// Registers the queue `name` (unique per VM); without it, wakes do nothing and the tick
    /// alone ships records.
    pub fn register(name: &str) -> Self {
        let queue = match hostcalls::register_shared_queue(name) {
            Ok(id) => Some(id),
            Err(e) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "cannot register queue {name}: {e:?}; urgent records wait for the tick"
                    ),
                );
                None
            }
        };
        Self {
            queue,
            pending: false,
        }
    }

    /// Whether `queue_id` is this VM's wake queue.
    pub fn is(&self, queue_id: u32) -> bool {
        self.queue == Some(queue_id)
    }

    /// Asks for `on_queue_ready` on the root context.
    pub fn wake(&mut self) {
        if self.pending {
            return;
        }
        if let Some(queue) = self.queue {
            self.pending = hostcalls::enqueue_shared_queue(queue, Some(b"w")).is_ok();
        }
    }

    /// Empties the queue, so the next `wake` enqueues again.
    pub fn drain(&mut self) {
        self.pending = false;
        if let Some(queue) = self.queue {
            while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue) {}
        }
    }
}
