//! Fuzz target: Kubernetes audit webhook bodies (`warden_k8s_audit`), the bytes any client of
//! the API server can shape (object names, annotations, patches, objects of any depth). A body
//! is parsed or refused with a message; every parsed event goes through the keep list and
//! becomes a change record, alone and against the snapshot of the previous event on the same
//! object, never panicking; records stay within their bounds and snapshots within theirs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use warden_k8s_audit::{KeepList, MAX_SNAPSHOT_BYTES, ObjectKey, Snapshot, change_record};

fuzz_target!(|data: &[u8]| {
    let batch = match warden_k8s_audit::parse_event_batch(data) {
        Ok(batch) => batch,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error without a message");
            return;
        }
    };
    for problem in &batch.rejected {
        assert!(!problem.to_string().is_empty());
    }
    let keep = KeepList::default_list();
    let mut snapshots: HashMap<ObjectKey, Snapshot> = HashMap::new();
    for ev in &batch.events {
        let _ = keep.decide(ev, &|_, name| name.len() % 2 == 0);
        let key = ev.object_key();
        let previous = key.as_ref().and_then(|k| snapshots.get(k));
        let (record, snapshot) = change_record(ev, previous);
        let text = serde_json::to_string(&record).unwrap_or_default();
        assert!(!text.is_empty(), "a record that does not serialize");
        assert!(
            record.summary.hosts.len() <= 65 && record.groups.len() <= 65,
            "an unbounded list"
        );
        assert!(record.audit_id.len() <= 1024 && record.name.len() <= 1024);
        if let (Some(k), Some(s)) = (key, snapshot) {
            assert!(
                s.0.to_string().len() <= MAX_SNAPSHOT_BYTES + 1024,
                "a snapshot over its bound"
            );
            snapshots.insert(k, s);
        }
    }
});
