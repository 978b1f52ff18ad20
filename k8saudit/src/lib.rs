//! Kubernetes audit events (`audit.k8s.io/v1`) as the API server's webhook backend sends them:
//! parsing and validating an `EventList`, deciding which events are ingress-policy changes worth
//! keeping, and turning each kept event into a change record with a summary of what changed.
//! Pure functions with no I/O; the collector stores and serves what this crate produces.
//!
//! Every byte is treated as hostile: parsing is bounded ([`MAX_BODY_BYTES`], [`MAX_EVENTS`],
//! [`MAX_OBJECT_DEPTH`]), records are bounded and free of control characters ([`bounds`]),
//! snapshots are bounded ([`MAX_SNAPSHOT_BYTES`]), and nothing of a Secret's data, nor the
//! annotations that copy whole objects, reaches a record or a snapshot ([`sanitize`]).
//!
//! The flow for one body: [`parse_event_list`] (or [`parse_event_batch`]), then for each event
//! [`KeepList::decide`], and for each kept one [`change_record`] with the object's previous
//! [`Snapshot`].

pub mod bounds;
mod certificate;
mod event;
mod json;
mod keep;
mod kinds;
mod paths;
mod record;
pub mod sanitize;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use event::{
    Event, EventBatch, MAX_AUDIT_ID_BYTES, MAX_BODY_BYTES, MAX_EVENTS, MAX_NAME_BYTES,
    MAX_OBJECT_DEPTH, ObjectKey, ObjectReference, ParseError, UserInfo, parse_event_batch,
    parse_event_list,
};
pub use keep::{DropReason, KeepDecision, KeepList};
pub use record::{
    CertificateSummary, ChangeRecord, ChangeSummary, PluginSummary, Snapshot, change_record,
};
pub use sanitize::MAX_SNAPSHOT_BYTES;
