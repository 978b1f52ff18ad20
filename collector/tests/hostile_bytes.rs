//! Property tests with hostile input for the collector's decoders and validators: whatever the
//! bytes, they answer with an error (or a value), never a panic; and a record the contract
//! accepts is stored as it came.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use prost::Message;
use warden_collector::config::{Config, Limits};
use warden_collector::ingest::{TimeBounds, sort_records};
use warden_collector::store::block::{CODEC_PROTOBUF_LZ4, decode_body, decode_summary};
use warden_proto::pb::{AccessRecord, ExportRequest};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn block_decoding_refuses_garbage_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_body(CODEC_PROTOBUF_LZ4, &bytes);
        let _ = decode_body(7, &bytes);
        let _ = decode_summary(&bytes);
    }

    #[test]
    fn export_batches_of_any_bytes_are_sorted_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(req) = ExportRequest::decode(bytes.as_slice()) {
            let limits = Limits::default();
            let time = TimeBounds::at(1_700_000_000_000, &limits, std::time::Duration::ZERO);
            let n = req.records.len();
            let (kept, refused) = sort_records(req.records, &limits, time);
            prop_assert_eq!(kept.len() + refused.len(), n);
        }
    }

    #[test]
    fn any_configuration_text_is_parsed_or_refused_without_panicking(text in "[a-z_\\[\\]=\\.\"0-9 \\n]{0,200}") {
        let _ = Config::parse(&text, std::path::Path::new("warden.toml"));
    }

    #[test]
    fn a_valid_record_is_kept_byte_for_byte(
        path in "/[a-zA-Z0-9/._-]{0,100}",
        host in "[a-z0-9.-]{1,40}",
        status in 100u32..600,
        method in "[A-Z]{1,10}",
    ) {
        let r = AccessRecord {
            sequence: 1,
            time_ms: 1_700_000_000_000,
            client_address: "198.51.100.7".into(),
            authority: host,
            path,
            status,
            method,
            ..AccessRecord::default()
        };
        let limits = Limits::default();
        let time = TimeBounds::at(1_700_000_000_000, &limits, std::time::Duration::ZERO);
        let (kept, refused) = sort_records(vec![r.clone()], &limits, time);
        prop_assert!(refused.is_empty());
        prop_assert_eq!(kept[0].encode_to_vec(), r.encode_to_vec());
    }
}
