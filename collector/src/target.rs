//! `Target`: an IPv4/IPv6 address or CIDR, validated and normalized at the boundary.
//!
//! A bare address becomes a /32 or /128; host bits are zeroed (`10.1.2.3/8` is `10.0.0.0/8`);
//! IPv4-mapped IPv6 is written as IPv4 and zone ids are refused (the record contract's address
//! form, which the filter's lookups and the rules engine use too), so every spelling of the same
//! network is the same decision.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use warden_proto::contract;

/// A normalized network: an address with its host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(IpNet);

/// Why a string is not a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IP address or CIDR (e.g. 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)")]
pub struct TargetError {
    /// The rejected input.
    pub input: String,
}

impl Target {
    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The network address bytes as the filter expects them: 4 bytes for IPv4, 16 for IPv6.
    pub fn address_bytes(&self) -> Vec<u8> {
        match self.0.network() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u32 {
        u32::from(self.0.prefix_len())
    }

    /// Whether `other` lies entirely inside this network (an address family never contains the
    /// other).
    pub fn contains(&self, other: &Target) -> bool {
        self.0.contains(&other.0)
    }

    /// The inclusive range of 16-byte keys (IPv4 mapped into `::ffff:0:0/96`) this network covers,
    /// matching how the record store indexes client addresses.
    pub fn key_range(&self) -> ([u8; 16], [u8; 16]) {
        (ip_key(self.0.network()), ip_key(self.0.broadcast()))
    }

    /// Builds a target from a filter-format address and prefix length.
    pub fn from_parts(address: &[u8], prefix_len: u32) -> Option<Target> {
        let prefix = u8::try_from(prefix_len).ok()?;
        let ip = match address.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(address).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(address).ok()?),
            _ => return None,
        };
        IpNet::new(ip, prefix).ok().map(Target::from)
    }
}

impl From<IpNet> for Target {
    /// Normalizes a network: IPv4-mapped written as IPv4 (the record contract's address form),
    /// host bits cleared.
    fn from(net: IpNet) -> Self {
        let (ip, len) = contract::canonical_prefix(net.addr(), net.prefix_len());
        Target(IpNet::new(ip, len).unwrap_or(net).trunc())
    }
}

/// The 16-byte index key of an address: IPv6 as is, IPv4 mapped into `::ffff:0:0/96` so both
/// families share one ordered column.
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        let err = || TargetError {
            input: s.to_string(),
        };
        if input.contains('%') {
            return Err(err());
        }
        if input.contains('/') {
            let net: IpNet = input.parse().map_err(|_| err())?;
            Ok(Target::from(net))
        } else {
            let ip = contract::parse_ip(input).map_err(|_| err())?;
            Ok(Target(IpNet::from(ip)))
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_targets_are_ipv4_and_zone_ids_are_refused() {
        // `warden ban ::ffff:203.0.113.7` used to go into the IPv6 table and never apply.
        assert_eq!(
            "::ffff:203.0.113.7".parse::<Target>().unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            "::ffff:203.0.113.0/120"
                .parse::<Target>()
                .unwrap()
                .to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            "::ffff:0:0/64".parse::<Target>().unwrap().to_string(),
            "::/64"
        );
        assert!("fe80::1%eth0".parse::<Target>().is_err());
        assert!("fe80::1%eth0/64".parse::<Target>().is_err());
        let t = Target::from_parts(
            &"::ffff:198.51.100.7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            128,
        )
        .unwrap();
        assert_eq!(t.address_bytes(), [198, 51, 100, 7]);
    }

    #[test]
    fn bare_addresses_become_host_networks() {
        assert_eq!(
            "203.0.113.7".parse::<Target>().unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            "2001:db8::1".parse::<Target>().unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn host_bits_are_zeroed() {
        let t: Target = "10.1.2.3/8".parse().unwrap();
        assert_eq!(t.to_string(), "10.0.0.0/8");
        assert_eq!(t.address_bytes(), vec![10, 0, 0, 0]);
        assert_eq!(t.prefix_len(), 8);
    }

    #[test]
    fn garbage_is_rejected_with_the_input() {
        for bad in ["abc", "10.0.0.0/33", "1.2.3", "", "::1/129"] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn containment_and_key_range() {
        let wide: Target = "10.0.0.0/8".parse().unwrap();
        let narrow: Target = "10.9.0.0/16".parse().unwrap();
        assert!(wide.contains(&narrow));
        assert!(!narrow.contains(&wide));
        let (lo, hi) = narrow.key_range();
        assert_eq!(&lo[10..], &[0xff, 0xff, 10, 9, 0, 0]);
        assert_eq!(&hi[10..], &[0xff, 0xff, 10, 9, 255, 255]);
    }

    #[test]
    fn from_parts_round_trips() {
        let t: Target = "2001:db8::/32".parse().unwrap();
        assert_eq!(
            Target::from_parts(&t.address_bytes(), t.prefix_len()),
            Some(t)
        );
        assert_eq!(Target::from_parts(&[1, 2, 3], 8), None);
    }
}
