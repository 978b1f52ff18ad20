//! A fake Envoy for host tests: answers every [`Host`] call from state the test sets up, records
//! what the filter did (local replies, gRPC calls, metrics, logs), and counts host calls and the
//! bytes they copied into the VM, so tests can assert what a typical request costs.
//!
//! The test binary's allocator counts the allocations the filter makes (not the fake host's own,
//! which stand for Envoy's), so a test can also assert that a request allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Counts allocations per thread, except while the fake host itself runs.
struct CountingAllocator;

fn count_allocation() {
    let quiet = QUIET.try_with(Cell::get).unwrap_or(true);
    if !quiet {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations the filter code made in it on this thread.
pub(crate) fn filter_allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

/// Marks the fake host's own work (it stands for Envoy's) as not the filter's.
struct Quiet(bool);

fn quiet() -> Quiet {
    Quiet(QUIET.with(|q| q.replace(true)))
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(self.0));
    }
}

use crate::host::{BufferType, Host, LogLevel, MapType, MetricType, Status, serialize_pairs};

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalReply {
    /// Status code.
    pub status: u32,
    /// Body.
    pub body: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A unary gRPC call the filter dispatched.
#[derive(Debug, Clone)]
pub(crate) struct GrpcCall {
    /// Its token.
    pub token: u32,
    /// Service and method.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Metadata pairs.
    pub metadata: Vec<(String, String)>,
    /// The serialised request.
    pub message: Vec<u8>,
}

/// Evaluates an expression text (the test's stand-in for Envoy's CEL).
type Evaluator = Box<dyn Fn(&str) -> Result<Vec<u8>, Status>>;

/// Call and byte counts since the last [`FakeHost::reset_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Host calls of every kind.
    pub calls: u64,
    /// Calls that returned bytes (each costs Envoy an allocation callback into the VM).
    pub returning_calls: u64,
    /// Bytes copied into the VM.
    pub bytes_in: u64,
    /// Calls by method name.
    pub by_method: BTreeMap<&'static str, u64>,
}

/// The fake host.
#[derive(Default)]
pub(crate) struct FakeHost {
    now_ns: Cell<u64>,
    request_headers: RefCell<Vec<(String, Vec<u8>)>>,
    properties: RefCell<HashMap<String, Vec<u8>>>,
    configuration: RefCell<Vec<u8>>,
    grpc_receive: RefCell<Vec<u8>>,
    expressions: RefCell<Vec<String>>,
    evaluator: RefCell<Option<Evaluator>>,
    /// `expr_create` fails with this status (an Envoy without CEL).
    pub no_cel: Cell<bool>,
    /// `proxy_grpc_call` fails (the cluster is missing).
    pub fail_dispatch: Cell<bool>,
    /// Local replies sent.
    pub replies: RefCell<Vec<LocalReply>>,
    /// Unary calls dispatched.
    pub calls: RefCell<Vec<GrpcCall>>,
    /// Streams opened: (token, service, method).
    pub streams: RefCell<Vec<(u32, String, String)>>,
    /// Messages sent on streams: (token, message).
    pub stream_messages: RefCell<Vec<(u32, Vec<u8>)>>,
    /// Cancelled tokens.
    pub cancelled: RefCell<Vec<u32>>,
    next_token: Cell<u32>,
    metrics: RefCell<Vec<(String, MetricType, i64)>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    queues: RefCell<Vec<(String, Vec<Vec<u8>>)>>,
    /// Log lines at or above `log_level`.
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// Envoy's log level (default info).
    pub log_level: Cell<Option<LogLevel>>,
    tick_ms: Cell<u32>,
    counts: RefCell<Counts>,
    env: RefCell<HashMap<String, String>>,
}

fn pairs_of(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_pairs(
        headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())),
        &mut out,
    );
    out
}

fn decode_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    crate::host::Pairs::new(bytes)
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

impl FakeHost {
    /// A host at time 1,700,000,000 s with nothing set.
    pub(crate) fn new() -> Self {
        let host = Self::default();
        host.now_ns.set(1_700_000_000_000_000_000);
        host.next_token.set(1);
        host
    }

    fn count(&self, method: &'static str, returned: Option<usize>) {
        let mut c = self.counts.borrow_mut();
        c.calls += 1;
        *c.by_method.entry(method).or_default() += 1;
        if let Some(n) = returned.filter(|n| *n > 0) {
            c.returning_calls += 1;
            c.bytes_in += n as u64;
        }
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts.borrow().clone()
    }

    /// Starts counting afresh.
    pub(crate) fn reset_counts(&self) {
        *self.counts.borrow_mut() = Counts::default();
    }

    /// Sets the clock.
    pub(crate) fn set_now_ms(&self, ms: u64) {
        self.now_ns.set(ms * 1_000_000);
    }

    /// Replaces the request headers.
    pub(crate) fn set_request_headers(&self, headers: &[(&str, &[u8])]) {
        *self.request_headers.borrow_mut() = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
    }

    /// Sets a property by its dotted path.
    pub(crate) fn set_property(&self, path: &str, value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.to_string(), value.to_vec());
    }

    /// Sets an environment variable of the VM.
    pub(crate) fn set_env(&self, name: &str, value: &str) {
        self.env
            .borrow_mut()
            .insert(name.to_string(), value.to_string());
    }

    /// Sets the plugin configuration.
    pub(crate) fn set_configuration(&self, json: &str) {
        *self.configuration.borrow_mut() = json.as_bytes().to_vec();
    }

    /// Sets the message `on_grpc_receive` will read.
    pub(crate) fn set_grpc_message(&self, message: &[u8]) {
        *self.grpc_receive.borrow_mut() = message.to_vec();
    }

    /// Answers `expr_evaluate` with `f(expression text)`.
    pub(crate) fn set_evaluator(&self, f: impl Fn(&str) -> Result<Vec<u8>, Status> + 'static) {
        *self.evaluator.borrow_mut() = Some(Box::new(f));
    }

    /// Expressions created so far.
    pub(crate) fn expressions(&self) -> Vec<String> {
        self.expressions.borrow().clone()
    }

    /// A metric's value by name.
    pub(crate) fn metric(&self, name: &str) -> i64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }

    /// The tick period set.
    pub(crate) fn tick_ms(&self) -> u32 {
        self.tick_ms.get()
    }

    /// Messages waiting in a queue by name.
    pub(crate) fn queued(&self, name: &str) -> usize {
        self.queues
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, q)| q.len())
    }

    /// Whether any log line contains `text`.
    pub(crate) fn logged(&self, text: &str) -> bool {
        self.logs.borrow().iter().any(|(_, m)| m.contains(text))
    }
}

impl Host for FakeHost {
    fn log(&self, level: LogLevel, message: &str) {
        let _quiet = quiet();
        self.count("log", None);
        if level >= self.log_level() {
            self.logs.borrow_mut().push((level, message.to_string()));
        }
    }

    fn log_level(&self) -> LogLevel {
        let _quiet = quiet();
        self.log_level.get().unwrap_or(LogLevel::Info)
    }

    fn now_ns(&self) -> u64 {
        let _quiet = quiet();
        self.count("now_ns", None);
        self.now_ns.get()
    }

    fn property(&self, path: &[u8]) -> Option<Vec<u8>> {
        let _quiet = quiet();
        let key = String::from_utf8_lossy(path).replace('\0', ".");
        let value = self.properties.borrow().get(&key).cloned();
        self.count("property", value.as_ref().map(Vec::len));
        value
    }

    fn header_pairs(&self, map: MapType) -> Option<Vec<u8>> {
        let _quiet = quiet();
        let bytes = match map {
            MapType::RequestHeaders => pairs_of(&self.request_headers.borrow()),
        };
        self.count("header_pairs", Some(bytes.len()));
        Some(bytes)
    }

    fn header_value(&self, map: MapType, name: &str) -> Option<Vec<u8>> {
        let _quiet = quiet();
        let headers = match map {
            MapType::RequestHeaders => self.request_headers.borrow(),
        };
        let value = headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        self.count("header_value", value.as_ref().map(Vec::len));
        value
    }

    fn buffer(&self, buffer: BufferType, start: usize, max: usize) -> Option<Vec<u8>> {
        let _quiet = quiet();
        let source = match buffer {
            BufferType::PluginConfiguration => self.configuration.borrow().clone(),
            BufferType::GrpcReceive => self.grpc_receive.borrow().clone(),
        };
        let end = start.saturating_add(max).min(source.len());
        let value = source.get(start.min(end)..end).map(<[u8]>::to_vec);
        self.count("buffer", value.as_ref().map(Vec::len));
        value
    }

    fn call_foreign(&self, function: &str, argument: &[u8]) -> Result<Vec<u8>, Status> {
        let _quiet = quiet();
        let result = match function {
            "expr_create" if self.no_cel.get() => Err(Status::NOT_FOUND),
            "expr_create" => {
                let mut e = self.expressions.borrow_mut();
                e.push(String::from_utf8_lossy(argument).into_owned());
                Ok(u32::try_from(e.len() - 1)
                    .unwrap_or(0)
                    .to_le_bytes()
                    .to_vec())
            }
            "expr_evaluate" => {
                let token = argument
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_le_bytes)
                    .ok_or(Status::BAD_ARGUMENT)?;
                let text = self
                    .expressions
                    .borrow()
                    .get(token as usize)
                    .cloned()
                    .ok_or(Status::NOT_FOUND)?;
                match self.evaluator.borrow().as_ref() {
                    Some(f) => f(&text),
                    None => Err(Status::INTERNAL_FAILURE),
                }
            }
            _ => Err(Status::NOT_FOUND),
        };
        self.count("call_foreign", result.as_ref().ok().map(Vec::len));
        result
    }

    fn send_local_response(
        &self,
        status: u32,
        _details: &str,
        body: &[u8],
        headers: &[u8],
    ) -> Result<(), Status> {
        let _quiet = quiet();
        self.count("send_local_response", None);
        self.replies.borrow_mut().push(LocalReply {
            status,
            body: body.to_vec(),
            headers: decode_pairs(headers),
        });
        Ok(())
    }

    fn grpc_call(
        &self,
        _upstream: &[u8],
        service: &str,
        method: &str,
        metadata: &[u8],
        message: &[u8],
        _timeout_ms: u32,
    ) -> Result<u32, Status> {
        let _quiet = quiet();
        self.count("grpc_call", None);
        if self.fail_dispatch.get() {
            return Err(Status::BAD_ARGUMENT);
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.calls.borrow_mut().push(GrpcCall {
            token,
            service: service.to_string(),
            method: method.to_string(),
            metadata: decode_pairs(metadata),
            message: message.to_vec(),
        });
        Ok(token)
    }

    fn grpc_stream(
        &self,
        _upstream: &[u8],
        service: &str,
        method: &str,
        _metadata: &[u8],
    ) -> Result<u32, Status> {
        let _quiet = quiet();
        self.count("grpc_stream", None);
        if self.fail_dispatch.get() {
            return Err(Status::BAD_ARGUMENT);
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.streams
            .borrow_mut()
            .push((token, service.to_string(), method.to_string()));
        Ok(token)
    }

    fn grpc_send(&self, token: u32, message: &[u8], _end_stream: bool) -> Result<(), Status> {
        let _quiet = quiet();
        self.count("grpc_send", None);
        self.stream_messages
            .borrow_mut()
            .push((token, message.to_vec()));
        Ok(())
    }

    fn grpc_cancel(&self, token: u32) {
        let _quiet = quiet();
        self.count("grpc_cancel", None);
        self.cancelled.borrow_mut().push(token);
    }

    fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), Status> {
        let _quiet = quiet();
        self.count("set_tick_period", None);
        self.tick_ms.set(period_ms);
        Ok(())
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let _quiet = quiet();
        self.count("define_metric", None);
        let mut m = self.metrics.borrow_mut();
        if let Some(i) = m.iter().position(|(n, _, _)| n == name) {
            return Ok(u32::try_from(i).unwrap_or(0));
        }
        m.push((name.to_string(), kind, 0));
        Ok(u32::try_from(m.len() - 1).unwrap_or(0))
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _quiet = quiet();
        self.count("increment_metric", None);
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 += delta;
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _quiet = quiet();
        self.count("record_metric", None);
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        let _quiet = quiet();
        let found = self.shared.borrow().get(key).cloned();
        self.count("shared_data", found.as_ref().map(|(v, _)| v.len()));
        match found {
            Some((v, cas)) => (Some(v), cas),
            None => (None, 0),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        let _quiet = quiet();
        self.count("set_shared_data", None);
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return Err(Status::CAS_MISMATCH);
        }
        shared.insert(key.to_string(), (value.to_vec(), current + 1));
        Ok(())
    }

    fn register_queue(&self, name: &str) -> Result<u32, Status> {
        let _quiet = quiet();
        self.count("register_queue", None);
        let mut q = self.queues.borrow_mut();
        q.push((name.to_string(), Vec::new()));
        Ok(u32::try_from(q.len() - 1).unwrap_or(0))
    }

    fn enqueue(&self, queue: u32, value: &[u8]) -> Result<(), Status> {
        let _quiet = quiet();
        self.count("enqueue", None);
        let mut q = self.queues.borrow_mut();
        let (_, items) = q.get_mut(queue as usize).ok_or(Status::NOT_FOUND)?;
        items.push(value.to_vec());
        Ok(())
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, Status> {
        let _quiet = quiet();
        let mut q = self.queues.borrow_mut();
        let item = q
            .get_mut(queue as usize)
            .and_then(|(_, items)| (!items.is_empty()).then(|| items.remove(0)));
        drop(q);
        self.count("dequeue", item.as_ref().map(Vec::len));
        Ok(item)
    }

    fn env_var(&self, name: &str) -> Option<String> {
        let _quiet = quiet();
        let value = self.env.borrow().get(name).cloned();
        self.count("env_var", value.as_ref().map(String::len));
        value
    }
}
