//! The proxy-wasm ABI (0.2.1) as this filter uses it: the host functions it imports, behind
//! [`WasmHost`], and the callbacks it exports, which forward to the VM's [`Vm`].
//!
//! Why not the proxy-wasm Rust SDK: the SDK exports every callback of the ABI, and Envoy enters
//! the VM for each exported one on every request (context create, request headers, request
//! body, response headers, each response body chunk, log, done, delete), whether the filter
//! needs it or not. Measured with callgrind in Envoy 1.40, a do-nothing SDK filter costs 19,400
//! instructions per request; the same filter exporting only the two callbacks Warden needs
//! (request headers and log) costs 9,900. The SDK also panics on unexpected host statuses and on
//! non-UTF-8 header values, and copies every header into its own `String`. What remains here is
//! the ABI's plain contract: unsafe only where Wasm memory crosses the boundary.
//!
//! `#[no_mangle]` exports a callback whatever its Rust visibility, so the callbacks are
//! `pub(crate)` like the rest of the crate's glue.
//!
//! Not exported, on purpose: `proxy_on_context_create`, `proxy_on_done` and `proxy_on_delete`
//! (per-request VM entries with nothing to do: the filter keeps no per-request state but for the
//! few requests it answers itself), request and response bodies, trailers and response headers.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ptr::{null, null_mut};

use crate::host::{BufferType, Host, LogLevel, MapType, MetricType, Status};
use crate::vm::Vm;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_property(path: *const u8, size: usize, out: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, out: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        out: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        argument: *const u8,
        argument_size: usize,
        out: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_grpc_call(
        upstream: *const u8,
        upstream_size: usize,
        service: *const u8,
        service_size: usize,
        method: *const u8,
        method_size: usize,
        metadata: *const u8,
        metadata_size: usize,
        message: *const u8,
        message_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_grpc_stream(
        upstream: *const u8,
        upstream_size: usize,
        service: *const u8,
        service_size: usize,
        method: *const u8,
        method_size: usize,
        metadata: *const u8,
        metadata_size: usize,
        token: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(token: u32, message: *const u8, size: usize, end_stream: u32) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        len: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(name: *const u8, size: usize, id: *mut u32) -> u32;
    fn proxy_enqueue_shared_queue(queue: u32, value: *const u8, size: usize) -> u32;
    fn proxy_dequeue_shared_queue(queue: u32, out: *mut *mut u8, len: *mut usize) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn environ_sizes_get(count: *mut usize, size: *mut usize) -> u16;
    fn environ_get(pointers: *mut *mut u8, buffer: *mut u8) -> u16;
}

fn status(code: u32) -> Result<(), Status> {
    if code == 0 { Ok(()) } else { Err(Status(code)) }
}

/// Takes ownership of bytes Envoy wrote into memory it got from `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` must be null or come from `proxy_on_memory_allocate(len)`.
unsafe fn owned(data: *mut u8, len: usize) -> Vec<u8> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy allocated exactly `len` bytes with `proxy_on_memory_allocate`, which
    // allocates a `Vec<u8>` of capacity `len` with the global allocator and forgets it.
    unsafe { Vec::from_raw_parts(data, len, len) }
}

/// Calls a host function that returns bytes through the (pointer, length) out-parameters.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    let code = call(&mut data, &mut len);
    // SAFETY: the host filled the out-parameters from `proxy_on_memory_allocate`, or left null.
    let bytes = unsafe { owned(data, len) };
    status(code).map(|()| bytes)
}

/// The Envoy host, through the imported functions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WasmHost;

impl Host for WasmHost {
    fn log(&self, level: LogLevel, message: &str) {
        // SAFETY: a valid slice for the duration of the call.
        unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    fn log_level(&self) -> LogLevel {
        let mut level = 0u32;
        // SAFETY: a valid out-pointer.
        let _ = unsafe { proxy_get_log_level(&mut level) };
        match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }

    fn now_ns(&self) -> u64 {
        let mut t = 0u64;
        // SAFETY: a valid out-pointer.
        match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
            0 => t,
            _ => 0,
        }
    }

    fn property(&self, path: &[u8]) -> Option<Vec<u8>> {
        // SAFETY: valid slices and out-pointers for the duration of the call.
        returned(|d, l| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, l) }).ok()
    }

    fn header_pairs(&self, map: MapType) -> Option<Vec<u8>> {
        // SAFETY: valid out-pointers.
        returned(|d, l| unsafe { proxy_get_header_map_pairs(map as u32, d, l) }).ok()
    }

    fn header_value(&self, map: MapType, name: &str) -> Option<Vec<u8>> {
        returned(|d, l| {
            // SAFETY: valid slices and out-pointers for the duration of the call.
            unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, l) }
        })
        .ok()
    }

    fn buffer(&self, buffer: BufferType, start: usize, max: usize) -> Option<Vec<u8>> {
        // SAFETY: valid out-pointers.
        returned(|d, l| unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, d, l) }).ok()
    }

    fn call_foreign(&self, function: &str, argument: &[u8]) -> Result<Vec<u8>, Status> {
        returned(|d, l| {
            // SAFETY: valid slices and out-pointers for the duration of the call.
            unsafe {
                proxy_call_foreign_function(
                    function.as_ptr(),
                    function.len(),
                    argument.as_ptr(),
                    argument.len(),
                    d,
                    l,
                )
            }
        })
    }

    fn send_local_response(
        &self,
        code: u32,
        details: &str,
        body: &[u8],
        headers: &[u8],
    ) -> Result<(), Status> {
        // SAFETY: valid slices for the duration of the call; -1: not a gRPC reply.
        status(unsafe {
            proxy_send_local_response(
                code,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    fn grpc_call(
        &self,
        upstream: &[u8],
        service: &str,
        method: &str,
        metadata: &[u8],
        message: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        let mut token = 0u32;
        // SAFETY: valid slices and out-pointer for the duration of the call.
        status(unsafe {
            proxy_grpc_call(
                upstream.as_ptr(),
                upstream.len(),
                service.as_ptr(),
                service.len(),
                method.as_ptr(),
                method.len(),
                if metadata.is_empty() {
                    null()
                } else {
                    metadata.as_ptr()
                },
                metadata.len(),
                message.as_ptr(),
                message.len(),
                timeout_ms,
                &mut token,
            )
        })
        .map(|()| token)
    }

    fn grpc_stream(
        &self,
        upstream: &[u8],
        service: &str,
        method: &str,
        metadata: &[u8],
    ) -> Result<u32, Status> {
        let mut token = 0u32;
        // SAFETY: valid slices and out-pointer for the duration of the call.
        status(unsafe {
            proxy_grpc_stream(
                upstream.as_ptr(),
                upstream.len(),
                service.as_ptr(),
                service.len(),
                method.as_ptr(),
                method.len(),
                if metadata.is_empty() {
                    null()
                } else {
                    metadata.as_ptr()
                },
                metadata.len(),
                &mut token,
            )
        })
        .map(|()| token)
    }

    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), Status> {
        // SAFETY: a valid slice for the duration of the call.
        status(unsafe {
            proxy_grpc_send(
                token,
                message.as_ptr(),
                message.len(),
                u32::from(end_stream),
            )
        })
    }

    fn grpc_cancel(&self, token: u32) {
        // SAFETY: no memory crosses.
        let _ = unsafe { proxy_grpc_cancel(token) };
    }

    fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), Status> {
        // SAFETY: no memory crosses.
        status(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let mut id = 0u32;
        // SAFETY: a valid slice and out-pointer for the duration of the call.
        status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })
            .map(|()| id)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        // SAFETY: no memory crosses.
        let _ = unsafe { proxy_increment_metric(id, delta) };
    }

    fn record_metric(&self, id: u32, value: u64) {
        // SAFETY: no memory crosses.
        let _ = unsafe { proxy_record_metric(id, value) };
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        let mut cas = 0u32;
        let value = returned(|d, l| {
            // SAFETY: valid slices and out-pointers for the duration of the call.
            unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), d, l, &mut cas) }
        });
        (value.ok(), cas)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        // SAFETY: valid slices for the duration of the call.
        status(unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        })
    }

    fn register_queue(&self, name: &str) -> Result<u32, Status> {
        let mut id = 0u32;
        // SAFETY: a valid slice and out-pointer for the duration of the call.
        status(unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })
            .map(|()| id)
    }

    fn enqueue(&self, queue: u32, value: &[u8]) -> Result<(), Status> {
        // SAFETY: a valid slice for the duration of the call.
        status(unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) })
    }

    fn env_var(&self, name: &str) -> Option<String> {
        let (mut count, mut size) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 || count == 0 {
            return None;
        }
        let mut pointers: Vec<*mut u8> = vec![null_mut(); count];
        let mut buffer: Vec<u8> = vec![0; size];
        // SAFETY: the host writes `count` pointers into `pointers` and `size` bytes of
        // NUL-terminated `NAME=value` strings into `buffer`, as environ_sizes_get announced.
        if unsafe { environ_get(pointers.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
            return None;
        }
        buffer
            .split(|b| *b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| {
                let (key, value) = entry.split_once('=')?;
                (key == name).then(|| value.to_string())
            })
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, Status> {
        // SAFETY: valid out-pointers.
        match returned(|d, l| unsafe { proxy_dequeue_shared_queue(queue, d, l) }) {
            Ok(bytes) => Ok(Some(bytes)),
            // Empty (7) or not found: nothing waiting.
            Err(Status(7)) | Err(Status::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

thread_local! {
    /// The VM's filter. Wasm VMs are single-threaded; the `RefCell` guards against a callback
    /// arriving while another is running (Envoy defers local replies and gRPC callbacks until
    /// the running callback returns, so this does not happen, but a busy borrow is skipped
    /// rather than panicking).
    static VM: RefCell<Vm> = RefCell::new(Vm::new());
}

fn with_vm<T>(default: T, f: impl FnOnce(&mut Vm) -> T) -> T {
    VM.with(|vm| match vm.try_borrow_mut() {
        Ok(mut vm) => f(&mut vm),
        Err(_) => default,
    })
}

/// Marks the ABI version.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_abi_version_0_2_1() {}

/// Allocates memory Envoy writes returned values into (freed by [`owned`]).
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let pointer = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    pointer
}

/// The VM starts: a panic (a bug: it aborts the VM, and `failure_policy: FAIL_OPEN` lets
/// traffic pass) is logged at critical level first; the rest waits for a configuration.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_vm_start(
    _root_context: u32,
    _vm_configuration_size: usize,
) -> u32 {
    std::panic::set_hook(Box::new(|info| {
        WasmHost.log(
            LogLevel::Critical,
            &format!("warden filter panicked: {info}"),
        );
    }));
    1
}

/// A root context receives its configuration.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_configure(_root_context: u32, configuration_size: usize) -> u32 {
    u32::from(with_vm(false, |vm| {
        vm.configure(&WasmHost, configuration_size)
    }))
}

/// A request's headers arrived.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_request_headers(context: u32, _headers: usize, _end: u32) -> u32 {
    with_vm(crate::vm::CONTINUE, |vm| {
        vm.request_headers(&WasmHost, context)
    })
}

/// A request completed.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_log(context: u32) {
    with_vm((), |vm| vm.log(&WasmHost, context));
}

/// The tick of a root context.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_tick(_root_context: u32) {
    with_vm((), |vm| vm.tick(&WasmHost));
}

/// The wake queue has a message.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_queue_ready(_root_context: u32, queue: u32) {
    with_vm((), |vm| vm.queue_ready(&WasmHost, queue));
}

/// A gRPC call answered, or a stream pushed a message.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_grpc_receive(_context: u32, token: u32, size: usize) {
    with_vm((), |vm| vm.grpc_receive(&WasmHost, token, size));
}

/// A gRPC call failed, or a stream closed.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn proxy_on_grpc_close(_context: u32, token: u32, status_code: u32) {
    with_vm((), |vm| vm.grpc_close(&WasmHost, token, status_code));
}
