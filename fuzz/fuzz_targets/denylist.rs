//! Fuzz target: the filter's deny list (`warden_filter::denylist::DenyList`) driven by any
//! sequence of updates (snapshot chunks in or out of order, deltas with or without a version gap,
//! upserts and removals of valid and invalid entries), purges and lookups, checked after every
//! step against a model that keeps the entries in a plain map and answers lookups by scanning
//! all of them: the allowlist wins, else the longest live deny or throttle prefix; one entry per
//! (table, network), the last write winning. Every answer, version, length and error must agree.

#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use warden_filter::denylist::{DenyList, UpdateError, Verdict};
use warden_proto::pb::{
    Action, Delta, DenyListUpdate, EntryKey, ListEntry, SnapshotChunk, deny_list_update,
};

/// An address on the wire. Most come from a small space so that entries overlap and lookups
/// hit them; some are anything, IPv4-mapped, or of a length no address has.
#[derive(Arbitrary, Debug, Clone)]
enum Addr {
    SmallV4(u8),
    SmallV6(u8),
    Mapped(u8),
    AnyV4([u8; 4]),
    AnyV6([u8; 16]),
    Bad(Vec<u8>),
}

impl Addr {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Addr::SmallV4(x) => small_v4(*x).octets().to_vec(),
            Addr::SmallV6(x) => small_v6(*x).octets().to_vec(),
            Addr::Mapped(x) => small_v4(*x).to_ipv6_mapped().octets().to_vec(),
            Addr::AnyV4(a) => a.to_vec(),
            Addr::AnyV6(a) => a.to_vec(),
            Addr::Bad(b) => b.clone(),
        }
    }

    fn ip(&self) -> IpAddr {
        match self {
            Addr::SmallV4(x) => IpAddr::V4(small_v4(*x)),
            Addr::SmallV6(x) => IpAddr::V6(small_v6(*x)),
            Addr::Mapped(x) => IpAddr::V6(small_v4(*x).to_ipv6_mapped()),
            Addr::AnyV4(a) => IpAddr::from(*a),
            Addr::AnyV6(a) => IpAddr::from(*a),
            // Lookups take an address; use the bytes as an IPv4 one when they cannot be one.
            Addr::Bad(b) => IpAddr::from([
                b.first().copied().unwrap_or(10),
                0,
                b.get(1).copied().unwrap_or(0) & 3,
                b.get(2).copied().unwrap_or(0) & 3,
            ]),
        }
    }
}

fn small_v4(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (x >> 2) & 3, x & 3)
}

fn small_v6(x: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        u16::from((x >> 2) & 3),
        0,
        0,
        0,
        u16::from(x & 3),
    )
}

/// A prefix length for `address`: mostly one its family has, sometimes one past it or far
/// beyond.
fn prefix_len(address: &[u8], len: u8) -> u32 {
    let max = match address.len() {
        4 => 32,
        16 => 128,
        _ => return u32::from(len),
    };
    match len {
        250..=254 => max + 1,
        255 => u32::MAX,
        _ => u32::from(len) % (max + 1),
    }
}

/// An action: mostly deny, throttle or allow; sometimes unspecified or unknown to the proto.
fn action(a: u8) -> i32 {
    match a {
        0..=249 => 1 + i32::from(a % 3),
        250 => 0,
        251 => 4,
        252 => -1,
        253 => i32::MAX,
        _ => i32::MIN,
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct WireEntry {
    addr: Addr,
    prefix_len: u8,
    action: u8,
    /// 0 = never; otherwise a time around the lookups' (negative: always expired).
    expires: i8,
    id: u16,
    /// Reasons repeat (interned) unless `unique`.
    reason: u8,
    unique: bool,
}

impl WireEntry {
    fn wire(&self, salt: u64) -> ListEntry {
        let address = self.addr.bytes();
        ListEntry {
            prefix_len: prefix_len(&address, self.prefix_len),
            address,
            action: action(self.action),
            expires_at_ms: i64::from(self.expires),
            decision_id: u64::from(self.id),
            reason: if self.unique {
                format!("unique {salt}")
            } else {
                format!("r{}", self.reason % 4)
            },
            origin: format!("o{}", self.reason % 3),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct WireKey {
    addr: Addr,
    prefix_len: u8,
    action: u8,
}

impl WireKey {
    fn wire(&self) -> EntryKey {
        let address = self.addr.bytes();
        EntryKey {
            prefix_len: prefix_len(&address, self.prefix_len),
            address,
            action: action(self.action),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Snapshot {
        version: u8,
        first: bool,
        last: bool,
        entries: Vec<WireEntry>,
    },
    Delta {
        /// 0: from the applied version; otherwise a gap (or, by chance, the applied one).
        from: u8,
        version: u8,
        upserts: Vec<WireEntry>,
        removals: Vec<WireKey>,
    },
    /// Many upserts with distinct reasons, so the interned strings outgrow the live entries
    /// and get compacted.
    Bulk {
        count: u8,
        template: WireEntry,
    },
    Empty,
    Abandon,
    Purge {
        now: u8,
    },
    Lookup {
        addr: Addr,
        now: u8,
    },
    /// A lookup of an address inside the network of one of the model's entries, so that
    /// lookups hit often whatever the addresses.
    LookupInside {
        entry: u16,
        host_bits: u128,
        now: u8,
    },
}

/// One entry as the model holds it.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    throttle: bool,
    expires: i64,
    id: u64,
    reason: String,
    origin: String,
}

impl Model {
    fn live(&self, now: i64) -> bool {
        self.expires == 0 || self.expires > now
    }
}

/// (allowlist?, network) -> entry.
type Table = HashMap<(bool, IpNet), Model>;

/// The network an address and prefix length name on the wire, as the record contract writes
/// it (IPv4-mapped with a prefix of at least 96 is the IPv4 network), host bits cleared.
fn network(address: &[u8], prefix_len: u32) -> Option<IpNet> {
    let len = u8::try_from(prefix_len).ok()?;
    let net = match address.len() {
        4 => {
            let a: [u8; 4] = address.try_into().ok()?;
            IpNet::new(IpAddr::from(a), len).ok()?
        }
        16 => {
            let a: [u8; 16] = address.try_into().ok()?;
            let v6 = Ipv6Addr::from(a);
            match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => IpNet::new(IpAddr::V4(v4), len - 96).ok()?,
                _ => IpNet::new(IpAddr::V6(v6), len).ok()?,
            }
        }
        _ => return None,
    };
    Some(net.trunc())
}

/// The model's reading of a wire entry: `None` when invalid.
fn model_entry(e: &ListEntry) -> Option<((bool, IpNet), Model)> {
    let net = network(&e.address, e.prefix_len)?;
    let (allow, throttle) = match Action::try_from(e.action).ok()? {
        Action::Allow => (true, false),
        Action::Deny => (false, false),
        Action::Throttle => (false, true),
        Action::Unspecified => return None,
    };
    Some((
        (allow, net),
        Model {
            throttle,
            expires: e.expires_at_ms,
            id: e.decision_id,
            reason: e.reason.clone(),
            origin: e.origin.clone(),
        },
    ))
}

#[derive(Default)]
struct State {
    table: Table,
    version: u64,
    staging: Option<(u64, Table)>,
}

impl State {
    fn apply(&mut self, u: &DenyListUpdate) -> Result<Option<u64>, UpdateError> {
        match u.update.as_ref().ok_or(UpdateError::Empty)? {
            deny_list_update::Update::Snapshot(c) => {
                if c.first {
                    self.staging = Some((c.version, Table::new()));
                }
                let Some((version, staged)) = self.staging.as_mut() else {
                    return Err(UpdateError::SnapshotOutOfOrder(c.version));
                };
                if *version != c.version {
                    self.staging = None;
                    return Err(UpdateError::SnapshotOutOfOrder(c.version));
                }
                staged.extend(c.entries.iter().filter_map(model_entry));
                if !c.last {
                    return Ok(None);
                }
                let (version, staged) = self.staging.take().unwrap_or_default();
                self.table = staged;
                self.version = version;
                Ok(Some(version))
            }
            deny_list_update::Update::Delta(d) => {
                if d.from_version != self.version {
                    return Err(UpdateError::VersionGap {
                        from: d.from_version,
                        current: self.version,
                    });
                }
                self.table.extend(d.upserts.iter().filter_map(model_entry));
                for k in &d.removals {
                    if let Some(net) = network(&k.address, k.prefix_len) {
                        self.table.remove(&(k.action == Action::Allow as i32, net));
                    }
                }
                self.version = d.version;
                Ok(Some(d.version))
            }
        }
    }

    fn purge(&mut self, now: i64) -> usize {
        let before = self.table.len();
        self.table.retain(|_, m| m.live(now));
        before - self.table.len()
    }

    /// An address in the network of the `i`th entry (any order will do), its host bits from
    /// `bits`; an IPv4 one sometimes written IPv4-mapped.
    fn inside(&self, i: usize, bits: u128) -> IpAddr {
        let Some((_, net)) = self.table.keys().nth(i % self.table.len().max(1)) else {
            return IpAddr::from([10, 0, 0, 0]);
        };
        match net {
            IpNet::V4(n) => {
                let host = u32::from(n.network()) | (bits as u32 & u32::from(n.hostmask()));
                let v4 = Ipv4Addr::from(host);
                if bits >> 127 == 1 {
                    IpAddr::V6(v4.to_ipv6_mapped())
                } else {
                    IpAddr::V4(v4)
                }
            }
            IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network()) | (bits & u128::from(n.hostmask())),
            )),
        }
    }

    /// The linear scan: the entry that decides `ip` at `now`, if any.
    fn lookup(&self, ip: IpAddr, now: i64) -> Option<&Model> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let live = self
            .table
            .iter()
            .filter(|((_, net), m)| m.live(now) && net.contains(&ip));
        if live.clone().any(|((allow, _), _)| *allow) {
            return None;
        }
        live.max_by_key(|((_, net), _)| net.prefix_len())
            .map(|(_, m)| m)
    }
}

fn check(d: &DenyList, s: &State, what: &str) {
    assert_eq!(d.version(), s.version, "version after {what}");
    assert_eq!(d.len(), s.table.len(), "entries after {what}");
    assert_eq!(d.is_empty(), s.table.is_empty(), "is_empty after {what}");
}

/// The list and the scan decide `ip` at `now` alike, to the reason.
fn check_lookup(d: &DenyList, s: &State, ip: IpAddr, now: i64) {
    let got = d.lookup(ip, now).map(|m| {
        (
            m.verdict,
            m.decision_id,
            m.reason.to_string(),
            m.origin.to_string(),
            m.expires_at_ms,
        )
    });
    let want = s.lookup(ip, now).map(|m| {
        (
            if m.throttle {
                Verdict::Throttle
            } else {
                Verdict::Deny
            },
            m.id,
            m.reason.clone(),
            m.origin.clone(),
            m.expires,
        )
    });
    assert_eq!(got, want, "lookup {ip} at {now}");
}

fuzz_target!(|ops: Vec<Op>| {
    let mut d = DenyList::new();
    let mut s = State::default();
    let mut salt = 0u64;
    // Bulk upserts per input: enough to outgrow the interner's slack (1024), few enough
    // to keep every input fast.
    let mut bulk_budget = 2048usize;
    for op in ops {
        let update = match op {
            Op::Snapshot {
                version,
                first,
                last,
                entries,
            } => Some(deny_list_update::Update::Snapshot(SnapshotChunk {
                version: u64::from(version),
                first,
                last,
                entries: entries
                    .iter()
                    .map(|e| {
                        salt += 1;
                        e.wire(salt)
                    })
                    .collect(),
            })),
            Op::Delta {
                from,
                version,
                upserts,
                removals,
            } => Some(deny_list_update::Update::Delta(Delta {
                from_version: if from == 0 {
                    s.version
                } else {
                    u64::from(from)
                },
                version: u64::from(version),
                upserts: upserts
                    .iter()
                    .map(|e| {
                        salt += 1;
                        e.wire(salt)
                    })
                    .collect(),
                removals: removals.iter().map(WireKey::wire).collect(),
            })),
            Op::Bulk { count, template } => Some(deny_list_update::Update::Delta(Delta {
                from_version: s.version,
                version: s.version.wrapping_add(1),
                upserts: (0..{
                    let n = (usize::from(count) * 8).min(bulk_budget);
                    bulk_budget -= n;
                    n
                })
                    .map(|i| {
                        salt += 1;
                        let mut e = template.clone();
                        if let Addr::SmallV4(x) | Addr::SmallV6(x) | Addr::Mapped(x) = &mut e.addr {
                            *x = x.wrapping_add(i as u8);
                        }
                        e.unique = true;
                        e.wire(salt)
                    })
                    .collect(),
                removals: Vec::new(),
            })),
            Op::Empty => None,
            Op::Abandon => {
                d.abandon_snapshot();
                s.staging = None;
                continue;
            }
            Op::Purge { now } => {
                let now = i64::from(now);
                assert_eq!(d.purge(now), s.purge(now), "purged at {now}");
                check(&d, &s, "purge");
                continue;
            }
            Op::Lookup { addr, now } => {
                check_lookup(&d, &s, addr.ip(), i64::from(now));
                continue;
            }
            Op::LookupInside {
                entry,
                host_bits,
                now,
            } => {
                check_lookup(
                    &d,
                    &s,
                    s.inside(usize::from(entry), host_bits),
                    i64::from(now),
                );
                continue;
            }
        };
        let update = DenyListUpdate { update };
        let want = s.apply(&update);
        let got = d.apply(update);
        assert_eq!(got, want, "update result");
        check(&d, &s, "update");
    }
});
