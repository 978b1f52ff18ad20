//! Client addresses: reading them from records, grouping them into keys and targets
//! (`ipv4_prefix`, `ipv6_prefix`), and parsing listed addresses and networks.
//!
//! The canonical form (an IPv4-mapped IPv6 address is the IPv4 address it carries) is the record
//! contract's, `warden_proto::contract`, so a rule, a list entry, a ban and a query all see one
//! spelling of a client.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use warden_proto::contract::{canonical_ip, canonical_prefix, parse_ip};

/// Default IPv4 grouping: one key per address.
pub(crate) const DEFAULT_IPV4_PREFIX: u8 = 32;
/// Default IPv6 grouping: one key per /64, the usual allocation to a single subscriber, so an
/// attacker cannot dodge a per-address rule by rotating through the addresses of its own /64.
pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

/// How client addresses are grouped into keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Prefix length for IPv4 clients.
    pub ipv4_prefix: u8,
    /// Prefix length for IPv6 clients.
    pub ipv6_prefix: u8,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// The client address, in the contract's canonical form, so both spellings of an IPv4 client on
/// a dual-stack listener share a key.
pub(crate) fn parse_addr(s: &str) -> Option<IpAddr> {
    match parse_ip(s) {
        Ok(ip) => Some(ip),
        // Tolerate `addr:port` in case a filter version sends it joined.
        Err(_) => Some(canonical_ip(s.parse::<SocketAddr>().ok()?.ip())),
    }
}

/// The host of an `:authority`: without its port, brackets of an IPv6 literal kept.
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A grouped address as a key: IPv4 in the IPv4-mapped range, so it cannot meet an IPv6 key.
///
/// Integer masks rather than [`IpNet`]: this runs for every record and every rule.
pub(crate) fn group_key(addr: IpAddr, g: Grouping) -> u128 {
    match addr {
        IpAddr::V4(v4) => (0xffff_u128 << 32) | u128::from(u32::from(v4) & mask32(g.ipv4_prefix)),
        IpAddr::V6(v6) => u128::from(v6) & mask128(g.ipv6_prefix),
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// The network a grouped address stands for (only built when a rule triggers).
pub(crate) fn group_net(addr: IpAddr, g: Grouping) -> IpNet {
    let prefix = match addr {
        IpAddr::V4(_) => g.ipv4_prefix,
        IpAddr::V6(_) => g.ipv6_prefix,
    };
    // The prefixes were range-checked on load; a full-length net is the safe fallback.
    IpNet::new(addr, prefix).map_or_else(|_| IpNet::from(addr), |net| net.trunc())
}

/// A grouped address as people write it: `203.0.113.7` for a single address, else the CIDR.
pub(crate) fn net_label(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Parses an address (`192.0.2.7`, a host route) or a CIDR (`192.0.2.0/24`). Host bits set in a
/// CIDR are cleared rather than rejected: published lists contain such entries and the intent is
/// clear.
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    // The record contract's form: IPv4-mapped entries are IPv4, so they match IPv4 clients.
    let (ip, len) = canonical_prefix(net.addr(), net.prefix_len());
    Some(IpNet::new(ip, len).unwrap_or(net).trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::rate::first_segment;

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn helpers_group_and_strip() {
        assert_eq!(strip_port("example.com:8443"), "example.com");
        assert_eq!(strip_port("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(first_segment("/api/v1/x"), "/api");
        assert_eq!(first_segment("/login"), "/login");
        assert_eq!(
            parse_addr("192.0.2.1:5000"),
            Some("192.0.2.1".parse().unwrap())
        );
        let g = Grouping {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        };
        let a: IpAddr = "192.0.2.77".parse().unwrap();
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(group_key(a, g), group_key(b, g));
        assert_eq!(group_net(a, g).to_string(), "192.0.2.0/24");
    }
}
