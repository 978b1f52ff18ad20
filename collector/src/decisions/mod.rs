//! Deny-list decisions and the allowlist: durable in SQLite, mirrored in memory, versioned.
//!
//! Every change (ban, unban, expiry, allowlist add/remove, bulk load) commits in one transaction
//! together with the bumped version and an admin-audit row, then updates memory, appends to the
//! bounded change log and is broadcast to the Subscribe streams — all under one lock, so a stream
//! that takes a snapshot and subscribes under that lock never misses or double-applies a change.

//!
//! Files: [`model`] (what a decision is), [`store`] (the durable, in-memory mirrored store and
//! its expiry), [`changes`] (change log and snapshots for the push), [`audit`] (who changed
//! what), [`push`] (the `DenyListService/Subscribe` streams fed from the change log).

pub mod audit;
pub mod changes;
pub mod model;
pub mod push;
pub mod store;

pub use audit::AuditEntry;
pub use changes::{Catchup, Change, Snapshot};
pub use model::{BanRequest, Decision, DecisionAction, Origin};
pub use store::{Decisions, expiry_task};

#[cfg(test)]
pub(crate) mod tests {
    use super::store::*;
    use super::*;
    use crate::config::Synchronous;
    use crate::metrics::Metrics;
    use crate::target::Target;
    use crate::time::{Ttl, now_ms};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) fn open(dir: &Path) -> Arc<Decisions> {
        let conn = crate::db::open_connection(&dir.join("warden.db"), Synchronous::Normal).unwrap();
        Decisions::open(conn, 100, 1000, Arc::new(Metrics::default())).unwrap()
    }

    pub(crate) fn ban(target: &str, ttl: Option<Duration>) -> BanRequest {
        BanRequest {
            target: target.parse().unwrap(),
            action: DecisionAction::Deny,
            ttl: Ttl(ttl),
            reason: "scanner".into(),
            actor: "ops@host".into(),
            origin: Origin::manual(),
        }
    }

    #[test]
    fn decisions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let (ban1, v1) = d.ban(ban("203.0.113.7", None)).unwrap();
        assert_eq!(v1, 1);
        d.allow_add("10.0.0.0/8".parse().unwrap(), "office", "ops")
            .unwrap();
        drop(d);
        let d = open(dir.path());
        assert_eq!(d.version(), 2);
        let (deny, _) = d.list(false, 100).unwrap();
        assert_eq!(deny, vec![ban1]);
        let (allow, total) = d.list(true, 100).unwrap();
        assert_eq!(total, 1);
        assert_eq!(allow[0].target.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn expired_decisions_are_removed_as_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let (b, _) = d
            .ban(ban("203.0.113.7", Some(Duration::from_secs(60))))
            .unwrap();
        d.ban(ban("203.0.113.8", None)).unwrap();
        assert_eq!(d.expire_due(now_ms()).unwrap(), 0);
        let at = b.expires_at_ms.unwrap();
        assert_eq!(d.expire_due(at).unwrap(), 1);
        assert_eq!(d.version(), 3);
        let (left, _) = d.list(false, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].target.to_string(), "203.0.113.8/32");
        let audit = d.audit(None, 10).unwrap();
        assert_eq!(audit[0].operation, "expire");
        assert_eq!(audit[0].actor, "warden");
    }

    #[test]
    fn a_ban_inside_an_allowlist_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.allow_add("10.0.0.0/8".parse().unwrap(), "office", "ops")
            .unwrap();
        let e = d.ban(ban("10.1.2.3", None)).unwrap_err();
        assert_eq!(e.http_status(), axum::http::StatusCode::CONFLICT);
        assert!(
            e.to_string()
                .contains("covered by allowlist entry 10.0.0.0/8"),
            "{e}"
        );
        assert_eq!(d.version(), 1, "nothing changed");
        // A wider ban is accepted; the filter's allow entry still wins for the allowed range.
        d.ban(ban("0.0.0.0/0", None)).unwrap();
    }

    #[test]
    fn unban_of_an_unknown_target_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let e = d
            .unban("198.51.100.1".parse().unwrap(), "", "ops")
            .unwrap_err();
        assert_eq!(e.http_status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(d.version(), 0);
    }

    #[test]
    fn each_change_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.ban(ban("203.0.113.7", None)).unwrap();
        d.unban("203.0.113.7".parse().unwrap(), "false positive", "bob")
            .unwrap();
        let audit = d.audit(None, 10).unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(
            (
                audit[0].operation.as_str(),
                audit[0].actor.as_str(),
                audit[0].reason.as_str()
            ),
            ("unban", "bob", "false positive")
        );
        assert_eq!((audit[1].operation.as_str(), audit[1].version), ("ban", 1));
    }

    #[test]
    fn catch_up_sends_deltas_when_known_and_snapshots_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.ban(ban("203.0.113.1", None)).unwrap();
        d.ban(ban("203.0.113.2", None)).unwrap();
        d.unban("203.0.113.1".parse().unwrap(), "", "ops").unwrap();
        match d.catch_up(1).unwrap().0 {
            Catchup::Delta(c) => {
                assert_eq!((c.from_version, c.version), (1, 3));
                assert_eq!(c.upserts.len(), 1);
                assert_eq!(c.upserts[0].address, vec![203, 0, 113, 2]);
                assert_eq!(c.removals.len(), 1);
                assert_eq!(c.removals[0].address, vec![203, 0, 113, 1]);
            }
            other => panic!("expected a delta, got {other:?}"),
        }
        assert!(matches!(d.catch_up(3).unwrap().0, Catchup::UpToDate(3)));
        match d.catch_up(0).unwrap().0 {
            Catchup::Snapshot(s) => {
                assert_eq!((s.version, s.entries, s.chunks.len()), (3, 1, 1));
                assert!(s.chunks[0].first && s.chunks[0].last);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert!(
            matches!(d.catch_up(99).unwrap().0, Catchup::Snapshot(_)),
            "a version from the future"
        );
        // After a restart the log is empty: an old version gets a snapshot.
        drop(d);
        let d = open(dir.path());
        assert!(matches!(d.catch_up(1).unwrap().0, Catchup::Snapshot(_)));
        assert!(matches!(d.catch_up(3).unwrap().0, Catchup::UpToDate(3)));
    }

    #[test]
    fn bulk_loads_are_one_version_and_skip_allowed_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.allow_add("192.168.0.0/16".parse().unwrap(), "lan", "ops")
            .unwrap();
        let targets: Vec<Target> = (0..2000u32)
            .map(|i| Target::from_parts(&(0x0a00_0000 + i).to_be_bytes(), 32).unwrap())
            .chain(["192.168.1.1".parse().unwrap()])
            .collect();
        let (added, skipped, version) = d
            .ban_many(
                targets,
                DecisionAction::Deny,
                Ttl(None),
                "feed",
                "ops",
                &Origin::list("bad.txt"),
            )
            .unwrap();
        assert_eq!((added, skipped.len(), version), (2000, 1, 2));
        let (mut rx_catchup, _) = d.catch_up(1).unwrap();
        assert!(
            matches!(rx_catchup, Catchup::Snapshot(_)),
            "oversized change → snapshot"
        );
        if let Catchup::Snapshot(s) = &mut rx_catchup {
            assert_eq!(s.entries, 2001);
            assert_eq!(s.chunks.len(), 3);
            assert!(s.chunks[0].first && !s.chunks[0].last && s.chunks[2].last);
        }
    }

    #[test]
    fn origins_parse() {
        assert!("manual".parse::<Origin>().is_ok());
        assert!("rule:scanner".parse::<Origin>().is_ok());
        assert!("list:bad.txt".parse::<Origin>().is_ok());
        assert!("rule:".parse::<Origin>().is_err());
        assert!("robot".parse::<Origin>().is_err());
        assert_eq!(
            "allow".parse::<DecisionAction>().unwrap_err(),
            "\"allow\" is not an action (deny or throttle)"
        );
    }
}
