//! The deny-list stream (`DenyListService/Subscribe`) as a state machine: when to open it, what
//! to say first (the known version, or 0 for a fresh snapshot after a refused update), how each
//! pushed update is applied and acknowledged, and the reconnect backoff. The VM glue only opens,
//! sends and cancels what this module asks for.

use prost::Message;
use warden_proto::pb::{
    Ack, DenyListUpdate, FilterIdentity, FilterMessage, SubscribeRequest, filter_message,
};

use crate::backoff::Backoff;
use crate::denylist::DenyList;

/// The stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    token: Option<u32>,
    backoff: Backoff,
    /// After a refused update the next subscription asks for a full snapshot.
    want_snapshot: bool,
}

/// What to do with a pushed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// A version was applied: send this acknowledgement on the stream.
    Applied {
        /// The applied version.
        version: u64,
        /// The encoded `FilterMessage` acknowledging it.
        ack: Vec<u8>,
    },
    /// A snapshot chunk was staged; nothing to send yet.
    Staged,
    /// The update could not be applied: cancel the stream (the list in force stays) and
    /// resubscribe for a snapshot.
    Refused(String),
    /// The message is not for this stream (an old token).
    Ignored,
}

impl Subscription {
    /// A closed stream that may connect at once.
    pub(crate) fn new(reconnect_initial_ms: u64, reconnect_max_ms: u64) -> Self {
        Self {
            token: None,
            backoff: Backoff::new(reconnect_initial_ms, reconnect_max_ms),
            want_snapshot: false,
        }
    }

    /// Keeps an open stream across a reconfiguration, with the new backoff bounds.
    pub(crate) fn reconfigured(&self, reconnect_initial_ms: u64, reconnect_max_ms: u64) -> Self {
        Self {
            token: self.token,
            backoff: Backoff::new(reconnect_initial_ms, reconnect_max_ms),
            want_snapshot: self.want_snapshot,
        }
    }

    /// Whether the stream should be opened at `now_ms`.
    pub(crate) fn should_connect(&self, now_ms: u64) -> bool {
        self.token.is_none() && self.backoff.ready(now_ms)
    }

    /// The first message of a new stream.
    pub(crate) fn hello(&self, identity: &FilterIdentity, applied_version: u64) -> Vec<u8> {
        let known_version = if self.want_snapshot {
            0
        } else {
            applied_version
        };
        FilterMessage {
            message: Some(filter_message::Message::Subscribe(SubscribeRequest {
                filter: Some(identity.clone()),
                known_version,
            })),
        }
        .encode_to_vec()
    }

    /// The stream opened as `token` and its first message was sent.
    pub(crate) fn opened(&mut self, token: u32) {
        self.token = Some(token);
        self.want_snapshot = false;
    }

    /// Opening failed at `now_ms`: back off.
    pub(crate) fn open_failed(&mut self, now_ms: u64) {
        self.backoff.fail(now_ms);
    }

    /// Whether `token` is the open stream.
    pub(crate) fn is(&self, token: u32) -> bool {
        self.token == Some(token)
    }

    /// The open stream's token.
    pub(crate) fn token(&self) -> Option<u32> {
        self.token
    }

    /// Applies a message pushed on stream `token`.
    pub(crate) fn received(&mut self, token: u32, message: &[u8], list: &mut DenyList) -> Received {
        if !self.is(token) {
            return Received::Ignored;
        }
        let result = DenyListUpdate::decode(message)
            .map_err(|e| e.to_string())
            .and_then(|u| list.apply(u).map_err(|e| e.to_string()));
        match result {
            Ok(Some(version)) => {
                self.backoff.succeed();
                let ack = FilterMessage {
                    message: Some(filter_message::Message::Ack(Ack { version })),
                };
                Received::Applied {
                    version,
                    ack: ack.encode_to_vec(),
                }
            }
            Ok(None) => {
                self.backoff.succeed();
                Received::Staged
            }
            Err(reason) => {
                list.abandon_snapshot();
                self.token = None;
                self.want_snapshot = true;
                Received::Refused(reason)
            }
        }
    }

    /// Stream `token` closed at `now_ms`; returns the reconnect delay when it was the open one.
    pub(crate) fn closed(&mut self, token: u32, now_ms: u64, list: &mut DenyList) -> Option<u64> {
        if !self.is(token) {
            return None;
        }
        self.token = None;
        self.backoff.fail(now_ms);
        list.abandon_snapshot();
        Some(self.backoff.delay_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_proto::pb::{Action, Delta, ListEntry, SnapshotChunk, deny_list_update};

    fn entry(last: u8) -> ListEntry {
        ListEntry {
            address: vec![10, 0, 0, last],
            prefix_len: 32,
            action: Action::Deny as i32,
            decision_id: u64::from(last),
            ..Default::default()
        }
    }

    fn snapshot(version: u64, first: bool, last: bool) -> Vec<u8> {
        DenyListUpdate {
            update: Some(deny_list_update::Update::Snapshot(SnapshotChunk {
                version,
                first,
                last,
                entries: vec![entry(1)],
            })),
        }
        .encode_to_vec()
    }

    fn delta(from: u64, to: u64) -> Vec<u8> {
        DenyListUpdate {
            update: Some(deny_list_update::Update::Delta(Delta {
                from_version: from,
                version: to,
                upserts: vec![entry(2)],
                removals: vec![],
            })),
        }
        .encode_to_vec()
    }

    fn known_version(hello: &[u8]) -> u64 {
        match FilterMessage::decode(hello).unwrap().message {
            Some(filter_message::Message::Subscribe(s)) => s.known_version,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_snapshot_in_chunks_then_a_delta_are_applied_and_acknowledged() {
        let mut s = Subscription::new(100, 1000);
        let mut list = DenyList::new();
        assert!(s.should_connect(0));
        assert_eq!(known_version(&s.hello(&FilterIdentity::default(), 0)), 0);
        s.opened(5);
        assert!(!s.should_connect(0));
        assert_eq!(
            s.received(5, &snapshot(3, true, false), &mut list),
            Received::Staged
        );
        match s.received(5, &snapshot(3, false, true), &mut list) {
            Received::Applied { version: 3, ack } => {
                let m = FilterMessage::decode(ack.as_slice()).unwrap();
                assert_eq!(
                    m.message,
                    Some(filter_message::Message::Ack(Ack { version: 3 }))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.received(5, &delta(3, 4), &mut list),
            Received::Applied { version: 4, .. }
        ));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_gap_refuses_the_update_keeps_the_list_and_asks_for_a_snapshot() {
        let mut s = Subscription::new(100, 1000);
        let mut list = DenyList::new();
        s.opened(1);
        s.received(1, &snapshot(3, true, true), &mut list);
        assert!(matches!(
            s.received(1, &delta(7, 8), &mut list),
            Received::Refused(_)
        ));
        assert_eq!(list.version(), 3, "the list in force stays");
        assert!(s.should_connect(0));
        assert_eq!(
            known_version(&s.hello(&FilterIdentity::default(), list.version())),
            0,
            "a fresh snapshot"
        );
        s.opened(2);
        assert_eq!(
            known_version(&s.hello(&FilterIdentity::default(), list.version())),
            3,
            "later reconnects resume from the known version"
        );
    }

    #[test]
    fn garbage_and_stale_tokens_are_handled() {
        let mut s = Subscription::new(100, 1000);
        let mut list = DenyList::new();
        s.opened(1);
        assert_eq!(s.received(9, &delta(0, 1), &mut list), Received::Ignored);
        assert!(matches!(
            s.received(1, b"\xff\xff\xff", &mut list),
            Received::Refused(_)
        ));
    }

    #[test]
    fn a_closed_stream_reconnects_with_backoff_and_its_known_version() {
        let mut s = Subscription::new(100, 1000);
        let mut list = DenyList::new();
        s.opened(1);
        s.received(1, &snapshot(2, true, true), &mut list);
        assert_eq!(s.closed(7, 0, &mut list), None, "not the open stream");
        assert_eq!(s.closed(1, 1000, &mut list), Some(100));
        assert!(!s.should_connect(1050));
        assert!(s.should_connect(1100));
        assert_eq!(known_version(&s.hello(&FilterIdentity::default(), 2)), 2);
        s.opened(3);
        s.closed(3, 2000, &mut list);
        assert!(!s.should_connect(2150), "the delay doubled");
        assert!(s.should_connect(2200));
    }
}
