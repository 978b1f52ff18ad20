//! Calls the collector makes (alert webhooks, Alertmanager) must not become a way in: no
//! redirects are followed; a destination must be on `alerts.allowed_destinations` when that list
//! is set; loopback, link-local, unspecified and cloud-metadata addresses are refused unless an
//! entry names them by address; and a URL is only ever logged as `scheme://host:port` (never
//! its credentials, path or query, where webhook secrets live).
//!
//! Names are checked after resolution, by the resolver the HTTP client uses, so a name that
//! resolves (or is rebound) to a refused address is refused at connect time.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Where outbound calls may go.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

/// Addresses no call may reach unless an entry names them: this machine, link-local (which
/// includes the cloud metadata service at 169.254.169.254) and the unspecified address.
fn special(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                // AWS's IPv6 metadata endpoint.
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

impl Destinations {
    /// Parses `alerts.allowed_destinations`: host names, addresses and CIDRs.
    pub fn parse(entries: &[String]) -> Result<Destinations, String> {
        let mut d = Destinations::default();
        for e in entries {
            let e = e.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                d.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                d.nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && e.len() <= 253
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                d.hosts.push(e.to_ascii_lowercase());
            } else {
                return Err(format!("{e:?} is not a host name, address or CIDR"));
            }
        }
        Ok(d)
    }

    fn restricted(&self) -> bool {
        !self.hosts.is_empty() || !self.nets.is_empty()
    }

    /// Whether a call to `host` (as written in the URL) at `ip` is permitted.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        let named = self.nets.iter().any(|n| n.contains(&ip));
        if special(ip) && !named {
            return false;
        }
        if !self.restricted() {
            return true;
        }
        named || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// `scheme://host:port` of a URL: what logs may show of it.
pub fn display(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

/// Resolves names for the outbound client and keeps only the addresses [`Destinations`] permits.
struct GuardedResolver(Arc<Destinations>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(&host, a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no address alerts.allowed_destinations permits"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The outbound HTTP client: no redirects, names resolved through the policy.
pub fn client(
    destinations: Arc<Destinations>,
    timeout: std::time::Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver(destinations)))
        .build()
}

/// Checks a URL whose host is an address (the resolver never sees those).
pub fn check_literal(destinations: &Destinations, url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = u.host_str().unwrap_or_default();
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if destinations.permits(&ip.to_string(), ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is not permitted (loopback, link-local and metadata addresses need an alerts.allowed_destinations entry)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_need_an_explicit_entry() {
        let open = Destinations::default();
        assert!(open.permits("hooks.example", ip("203.0.113.5")));
        assert!(
            open.permits("am.svc", ip("10.1.2.3")),
            "private networks are fine"
        );
        for refused in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "0.0.0.0",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!open.permits("x", ip(refused)), "{refused}");
        }
        let listed = Destinations::parse(&["127.0.0.1".into()]).unwrap();
        assert!(listed.permits("127.0.0.1", ip("127.0.0.1")));
        let by_name = Destinations::parse(&["localhost".into()]).unwrap();
        assert!(
            !by_name.permits("localhost", ip("127.0.0.1")),
            "a name is not enough for loopback"
        );
    }

    #[test]
    fn a_list_restricts_to_its_hosts_and_networks() {
        let d = Destinations::parse(&["hooks.example.com".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(d.permits("hooks.example.com", ip("203.0.113.5")));
        assert!(d.permits("am.svc", ip("10.9.9.9")));
        assert!(!d.permits("evil.example", ip("203.0.113.6")));
        assert!(Destinations::parse(&["not a host".into()]).is_err());
    }

    #[test]
    fn urls_are_logged_without_secrets() {
        assert_eq!(
            display("https://user:pass@hooks.example.com:8443/T0ken/secret?key=abc"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(display("http://10.0.0.1/x"), "http://10.0.0.1");
        assert!(check_literal(&Destinations::default(), "http://127.0.0.1:9/x").is_err());
        assert!(check_literal(&Destinations::default(), "http://hooks.example/x").is_ok());
    }
}
