//! The host interface: every call the filter makes into Envoy goes through `Host`.
//!
//! Host calls are the filter's main per-request cost, and not all calls cost alike. Measured in
//! Envoy 1.40 with callgrind (instructions of the Envoy process per request, `make
//! profile-filter`): a call that returns nothing (the clock, a counter) costs about 1,200
//! instructions; a call that returns bytes costs about 10,000 whatever its size, because Envoy
//! calls back into the VM to allocate the reply (`proxy_on_memory_allocate`) and builds a set of
//! strings to guard that callback. So the filter asks for many values in one call (all request
//! headers at once; every stream attribute in one CEL expression) rather than one call each.
//!
//! The Wasm implementation is in `abi.rs`; tests use `crate::fake_host::FakeHost`, which counts
//! calls and bytes so that a test fails when a typical request starts costing more.

/// A host call that failed, with Envoy's status code (`proxy_wasm` ABI `WasmResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status(pub u32);

impl Status {
    /// Not found (a missing attribute, header, queue item or foreign function).
    // Read by `abi.rs`, which exists on wasm32 alone, and by the fake host.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) const NOT_FOUND: Status = Status(1);
    /// A bad argument (the fake host's answer to a call it cannot serve).
    #[cfg(test)]
    pub(crate) const BAD_ARGUMENT: Status = Status(2);
    /// A compare-and-swap mismatch on shared data.
    pub(crate) const CAS_MISMATCH: Status = Status(8);
    /// The host failed (for `expr_evaluate`: the expression evaluated to an error).
    pub(crate) const INTERNAL_FAILURE: Status = Status(10);
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "not found",
            2 => "bad argument",
            3 => "serialization failure",
            4 => "parse failure",
            7 => "empty",
            8 => "CAS mismatch",
            10 => "internal failure",
            12 => "unimplemented",
            _ => "error",
        };
        write!(f, "{name} (status {})", self.0)
    }
}

/// Log levels of the proxy-wasm ABI.
// `abi.rs`, which exists on wasm32 alone, reads each level from Envoy; the filter logs Debug to
// Error.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub(crate) enum LogLevel {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warning.
    Warn = 3,
    /// Error.
    Error = 4,
    /// Critical.
    Critical = 5,
}

/// Header maps of the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MapType {
    /// The downstream request's headers.
    RequestHeaders = 0,
}

/// Buffers of the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum BufferType {
    /// The message of a gRPC call or stream, in `on_grpc_receive`.
    GrpcReceive = 5,
    /// The plugin configuration, in `on_configure`.
    PluginConfiguration = 7,
}

/// Metric kinds of the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MetricType {
    /// A counter.
    Counter = 0,
    /// A gauge.
    Gauge = 1,
}

/// What the filter asks of Envoy. Methods map one to one to proxy-wasm host calls; byte
/// arguments are passed as Envoy expects them (header maps and call metadata serialised as
/// pairs, property paths NUL-separated).
pub(crate) trait Host {
    /// `proxy_log`.
    fn log(&self, level: LogLevel, message: &str);
    /// `proxy_get_log_level`: the lowest level Envoy prints (messages below it are not formatted).
    fn log_level(&self) -> LogLevel;
    /// `proxy_get_current_time_nanoseconds`; 0 when unavailable.
    fn now_ns(&self) -> u64;
    /// `proxy_get_property`; `None` when absent.
    fn property(&self, path: &[u8]) -> Option<Vec<u8>>;
    /// `proxy_get_header_map_pairs`: every header of a map in one call, serialised as pairs.
    fn header_pairs(&self, map: MapType) -> Option<Vec<u8>>;
    /// `proxy_get_header_map_value`.
    fn header_value(&self, map: MapType, name: &str) -> Option<Vec<u8>>;
    /// `proxy_get_buffer_bytes`.
    fn buffer(&self, buffer: BufferType, start: usize, max: usize) -> Option<Vec<u8>>;
    /// `proxy_call_foreign_function` (Envoy's `expr_create`, `expr_evaluate`).
    fn call_foreign(&self, function: &str, argument: &[u8]) -> Result<Vec<u8>, Status>;
    /// `proxy_send_local_response`; `headers` serialised as pairs.
    fn send_local_response(
        &self,
        status: u32,
        details: &str,
        body: &[u8],
        headers: &[u8],
    ) -> Result<(), Status>;
    /// `proxy_grpc_call`: a unary call; returns its token.
    #[allow(clippy::too_many_arguments)]
    fn grpc_call(
        &self,
        upstream: &[u8],
        service: &str,
        method: &str,
        metadata: &[u8],
        message: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status>;
    /// `proxy_grpc_stream`: opens a stream; returns its token.
    fn grpc_stream(
        &self,
        upstream: &[u8],
        service: &str,
        method: &str,
        metadata: &[u8],
    ) -> Result<u32, Status>;
    /// `proxy_grpc_send` on a stream.
    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), Status>;
    /// `proxy_grpc_cancel`.
    fn grpc_cancel(&self, token: u32);
    /// `proxy_set_tick_period_milliseconds`.
    fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), Status>;
    /// `proxy_define_metric`.
    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, Status>;
    /// `proxy_increment_metric`.
    fn increment_metric(&self, id: u32, delta: i64);
    /// `proxy_record_metric`.
    fn record_metric(&self, id: u32, value: u64);
    /// `proxy_get_shared_data`: the value (if any) and its CAS token.
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// `proxy_set_shared_data` with a CAS token (0: unconditional).
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), Status>;
    /// `proxy_register_shared_queue`.
    fn register_queue(&self, name: &str) -> Result<u32, Status>;
    /// `proxy_enqueue_shared_queue`.
    fn enqueue(&self, queue: u32, value: &[u8]) -> Result<(), Status>;
    /// `proxy_dequeue_shared_queue`; `Ok(None)` when the queue is empty.
    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, Status>;
    /// An environment variable of the VM (WASI `environ_get`: Envoy's
    /// `vm_config.environment_variables`); `None` when unset.
    fn env_var(&self, name: &str) -> Option<String>;
}

/// A property path in the ABI's form: segments separated by NUL.
pub(crate) fn property_path(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}

/// Serialises `(name, value)` pairs the way the ABI takes header maps and call metadata:
/// the count, then each name's and value's length (u32 little-endian), then each name and value
/// followed by a NUL. Appends to `out`, which callers reuse.
pub fn serialize_pairs<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    out: &mut Vec<u8>,
) {
    let count = pairs.clone().count();
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    for (name, value) in pairs.clone() {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
}

/// The pairs of a serialised map, borrowed from `bytes`, in order. Malformed input (a count or a
/// length running past the end) yields the pairs before the damage and then stops: a map Envoy
/// sent must never panic the VM.
#[derive(Debug, Clone)]
pub(crate) struct Pairs<'a> {
    bytes: &'a [u8],
    /// Next size entry.
    size_at: usize,
    /// Next name.
    data_at: usize,
    left: usize,
}

impl<'a> Pairs<'a> {
    /// Iterates the pairs of `bytes` (empty input: no pairs).
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        let count = read_u32(bytes, 0).map_or(0, |c| c as usize);
        // Each pair takes at least 10 bytes (two sizes, two NULs): a count beyond that is
        // malformed and is cut, so the size table never reads past the end.
        let count = count.min(bytes.len().saturating_sub(4) / 10);
        Self {
            bytes,
            size_at: 4,
            data_at: 4 + count * 8,
            left: count,
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let step = || -> Option<(usize, usize, &'a [u8], &'a [u8])> {
            let name_len = read_u32(self.bytes, self.size_at)? as usize;
            let value_len = read_u32(self.bytes, self.size_at + 4)? as usize;
            let name_end = self.data_at.checked_add(name_len)?;
            let name = self.bytes.get(self.data_at..name_end)?;
            let value_at = name_end.checked_add(1)?;
            let value_end = value_at.checked_add(value_len)?;
            let value = self.bytes.get(value_at..value_end)?;
            Some((self.size_at + 8, value_end + 1, name, value))
        };
        match step() {
            Some((size_at, data_at, name, value)) => {
                self.size_at = size_at;
                self.data_at = data_at;
                self.left -= 1;
                Some((name, value))
            }
            None => {
                self.left = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let input: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/a?b"),
            (b"x-empty", b""),
            (b"user-agent", b"t\xff"),
        ];
        let mut out = Vec::new();
        serialize_pairs(input.iter().copied(), &mut out);
        let back: Vec<_> = Pairs::new(&out).collect();
        assert_eq!(back, input);
        assert_eq!(Pairs::new(&[]).count(), 0);
    }

    #[test]
    fn malformed_pairs_stop_without_panicking() {
        let mut out = Vec::new();
        serialize_pairs(
            [(&b"a"[..], &b"bc"[..]), (b"d", b"e")].into_iter(),
            &mut out,
        );
        for cut in 0..out.len() {
            let _ = Pairs::new(&out[..cut]).count();
        }
        // A count far beyond the data, and sizes pointing past the end.
        let mut huge = out.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Pairs::new(&huge).count() <= 2);
        let mut long = out.clone();
        long[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(Pairs::new(&long).count(), 0);
    }

    #[test]
    fn property_paths_are_nul_separated() {
        assert_eq!(property_path(&["source", "address"]), b"source\0address");
    }
}
