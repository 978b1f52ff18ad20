//! Fuzz target: both configuration parsers on any text. The collector's `warden.toml`
//! (`warden_collector::config::Config::parse`) and the filter's JSON plugin configuration
//! (`warden_filter::config::Config::parse`) answer with a configuration or an error naming what
//! is wrong, never a panic; a configuration they accept passes its own validation again and keeps
//! the ranges validation promises the code downstream.
//!
//! scripts/fuzz.sh gives this target a dictionary of every field name of both configurations.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn collector(text: &str) {
    let path = Path::new("/etc/warden/warden.toml");
    match warden_collector::config::Config::parse(text, path) {
        Ok(c) => {
            let again = c.validate(path);
            assert!(again.is_ok(), "accepted, then refused: {again:?}");
            let _ = c.check_exposure();
            let _ = c.insecure_listeners();
            assert!(c.limits.max_record_bytes >= warden_proto::contract::MAX_RECORD_BYTES);
            assert!(c.limits.max_field_bytes >= warden_proto::contract::MAX_FIELD_BYTES);
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
    }
}

fn filter(bytes: &[u8]) {
    match warden_filter::config::Config::parse(bytes) {
        Ok(c) => {
            let r = &c.record;
            assert!((16..=warden_proto::contract::MAX_FIELD_BYTES).contains(&r.max_header_bytes));
            assert!(
                (1024..=warden_proto::contract::MAX_RECORD_BYTES).contains(&r.max_record_bytes)
            );
            assert!(r.max_record_bytes <= c.batch.max_batch_bytes);
            assert!(c.batch.max_batch_bytes <= c.batch.max_pending_bytes);
            assert!(c.batch.retry_initial_ms <= c.batch.retry_max_ms);
            assert!(c.deny_list.reconnect_initial_ms <= c.deny_list.reconnect_max_ms);
            assert!(!c.authority().is_empty(), "no gRPC authority");
            for name in &r.captured_headers {
                assert!(
                    !name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()),
                    "captured header {name:?} not normalised"
                );
            }
            assert!(r.token_segment_prefixes.iter().all(|p| p.len() >= 3));
            assert!(r.path_scrub_patterns.iter().all(|p| p.starts_with('/')));
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The collector reads its file as UTF-8 (`read_to_string`); other bytes never reach it.
    if let Ok(text) = std::str::from_utf8(data) {
        collector(text);
    }
    filter(data);
});
