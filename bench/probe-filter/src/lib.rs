//! A probe for `make profile`: a proxy-wasm filter that exports only `on_request_headers` and
//! `on_log` (the two callbacks the Warden filter uses) and makes the host calls its
//! configuration lists in `on_log`, discarding the results. Comparing Envoy's instructions per
//! request with and without each call gives the cost of that call alone.
//!
//! Configuration (JSON): `{"log": [OP, ...]}` where OP is `"clock"`, `"headers"` (all request
//! headers), `"property:a.b"`, or `"cel:EXPRESSION"` (compiled once with `expr_create`,
//! evaluated per request with `expr_evaluate`).
#![allow(unsafe_code)]

/// One host call to make per request.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `proxy_get_current_time_nanoseconds`.
    Clock,
    /// `proxy_get_header_map_pairs` of the request headers.
    Headers,
    /// `proxy_get_property` of a NUL-separated path.
    Property(Vec<u8>),
    /// `expr_evaluate` of a compiled expression text.
    Cel(String),
}

/// Parses the probe's configuration.
pub fn parse(config: &[u8]) -> Result<Vec<Op>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        log: Vec<String>,
    }
    if config.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let c: Config = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    c.log
        .iter()
        .map(|op| match op.split_once(':') {
            None if op == "clock" => Ok(Op::Clock),
            None if op == "headers" => Ok(Op::Headers),
            Some(("property", path)) => Ok(Op::Property(path.replace('.', "\0").into_bytes())),
            Some(("cel", expr)) => Ok(Op::Cel(expr.to_string())),
            _ => Err(format!("unknown op {op:?}")),
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
mod abi {
    use super::*;
    use std::cell::RefCell;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_get_property(p: *const u8, s: usize, out: *mut *mut u8, len: *mut usize) -> u32;
        fn proxy_get_header_map_pairs(map: u32, out: *mut *mut u8, len: *mut usize) -> u32;
        fn proxy_get_buffer_bytes(
            b: u32,
            start: usize,
            max: usize,
            out: *mut *mut u8,
            len: *mut usize,
        ) -> u32;
        fn proxy_call_foreign_function(
            n: *const u8,
            ns: usize,
            a: *const u8,
            asz: usize,
            out: *mut *mut u8,
            len: *mut usize,
        ) -> u32;
    }

    /// An op ready to run: expressions compiled to their tokens.
    enum Ready {
        Clock,
        Headers,
        Property(Vec<u8>),
        Cel(u32),
    }

    thread_local! {
        static OPS: RefCell<Vec<Ready>> = const { RefCell::new(Vec::new()) };
    }

    fn log(message: &str) {
        // SAFETY: a valid slice for the call.
        unsafe { proxy_log(3, message.as_ptr(), message.len()) };
    }

    /// Calls a host function returning bytes; frees them.
    fn returned(f: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (u32, Vec<u8>) {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        let status = f(&mut data, &mut len);
        let bytes = if data.is_null() || len == 0 {
            Vec::new()
        } else {
            // SAFETY: allocated by `proxy_on_memory_allocate(len)`.
            unsafe { Vec::from_raw_parts(data, len, len) }
        };
        (status, bytes)
    }

    fn foreign(name: &str, arg: &[u8]) -> (u32, Vec<u8>) {
        // SAFETY: valid slices and out-pointers for the call.
        returned(|d, l| unsafe {
            proxy_call_foreign_function(name.as_ptr(), name.len(), arg.as_ptr(), arg.len(), d, l)
        })
    }

    /// Marks the ABI version.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_abi_version_0_2_1() {}

    /// Memory Envoy writes returned values into.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
        let mut v: Vec<u8> = Vec::with_capacity(size);
        let p = v.as_mut_ptr();
        std::mem::forget(v);
        p
    }

    /// Nothing to do at VM start.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
        1
    }

    /// Parses the ops and compiles the expressions.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
        // SAFETY: valid out-pointers.
        let (_, config) = returned(|d, l| unsafe { proxy_get_buffer_bytes(7, 0, size, d, l) });
        let ops = match parse(&config) {
            Ok(ops) => ops,
            Err(e) => {
                log(&format!("probe: invalid configuration: {e}"));
                return 0;
            }
        };
        let mut ready = Vec::new();
        for op in ops {
            ready.push(match op {
                Op::Clock => Ready::Clock,
                Op::Headers => Ready::Headers,
                Op::Property(p) => Ready::Property(p),
                Op::Cel(expr) => {
                    let (status, token) = foreign("expr_create", expr.as_bytes());
                    let Some(token) = token.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok())
                    else {
                        log(&format!("probe: expr_create failed ({status}) for {expr}"));
                        return 0;
                    };
                    Ready::Cel(u32::from_le_bytes(token))
                }
            });
        }
        OPS.with(|o| *o.borrow_mut() = ready);
        1
    }

    /// Continues every request.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
        0
    }

    /// Runs the ops.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_log(_context: u32) {
        OPS.with(|ops| {
            for op in ops.borrow().iter() {
                match op {
                    Ready::Clock => {
                        let mut t = 0u64;
                        // SAFETY: a valid out-pointer.
                        unsafe { proxy_get_current_time_nanoseconds(&mut t) };
                    }
                    Ready::Headers => {
                        // SAFETY: valid out-pointers.
                        returned(|d, l| unsafe { proxy_get_header_map_pairs(0, d, l) });
                    }
                    Ready::Property(path) => {
                        // SAFETY: valid slices and out-pointers.
                        returned(|d, l| unsafe {
                            proxy_get_property(path.as_ptr(), path.len(), d, l)
                        });
                    }
                    Ready::Cel(token) => {
                        foreign("expr_evaluate", &token.to_le_bytes());
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_and_unknown_ones_are_refused() {
        let ops =
            parse(br#"{"log": ["clock", "headers", "property:source.address", "cel:[1, 2]"]}"#)
                .unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Clock,
                Op::Headers,
                Op::Property(b"source\0address".to_vec()),
                Op::Cel("[1, 2]".into())
            ]
        );
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(br#"{"log": ["nope"]}"#).is_err());
    }
}
