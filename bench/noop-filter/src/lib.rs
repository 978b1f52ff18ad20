//! A proxy-wasm HTTP filter that does nothing, built with the same SDK, toolchain and release
//! profile as the Warden filter. It is the floor of `make bench`: what any proxy-wasm filter
//! costs Envoy before it does any work (VM entry per callback, context bookkeeping). The
//! Warden filter's own cost is what it adds above this.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

/// The root context: accepts any configuration and creates do-nothing HTTP contexts.
struct NoopRoot;

/// One request's context: every callback keeps the SDK's default (continue).
struct NoopHttp;

impl Context for NoopRoot {}
impl Context for NoopHttp {}
impl HttpContext for NoopHttp {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[allow(missing_docs)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::NoopRoot)
        });
    }}
}
