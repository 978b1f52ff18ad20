//! The request conditions every kind that observes records (all but `ip_list` and `change`) may
//! have (`hosts`, `path_prefixes`, `methods`, `status_classes`): parsed once from the rule's
//! table so that matching a record allocates nothing.

use crate::config::RuleParser;
use std::fmt;
use std::net::IpAddr;

/// Request match conditions (and the address grouping), for every kind but `ip_list` and
/// `change`.
pub(crate) const MATCH_FIELDS: &[&str] = &[
    "hosts",
    "path_prefixes",
    "methods",
    "status_classes",
    "ipv4_prefix",
    "ipv6_prefix",
];

/// A response status class, `1xx` to `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusClass(u8);

impl StatusClass {
    /// Parses `4xx` (any case); `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<StatusClass> {
        let b = s.as_bytes();
        if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
            Some(StatusClass(b[0] - b'0'))
        } else {
            None
        }
    }

    /// Whether `status` is in this class.
    pub(crate) fn contains(self, status: u32) -> bool {
        status / 100 == u32::from(self.0)
    }

    /// The class digit, 1 to 5.
    pub fn digit(self) -> u8 {
        self.0
    }

    fn bit(self) -> u8 {
        1 << self.0
    }
}

impl fmt::Display for StatusClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}xx", self.0)
    }
}

/// One host condition: exact, or `*.example.com` (any subdomain, not the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(Box<str>),
    /// Stored with its leading dot: `.example.com`.
    Suffix(Box<str>),
}

/// The request conditions of a rule, parsed once so that matching allocates nothing.
///
/// An empty list means "any". All non-empty lists must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matcher {
    hosts: Box<[HostPattern]>,
    path_prefixes: Box<[Box<str>]>,
    methods: Box<[Box<str>]>,
    /// Bit `n` set: class `n`xx matches. 0: any status.
    status_mask: u8,
}

impl Matcher {
    /// Whether a request with this host (lower-case, no port), method, path and status matches.
    pub(crate) fn matches(&self, host: &str, method: &str, path: &str, status: u32) -> bool {
        if self.status_mask != 0 {
            let class = status / 100;
            if class > 7 || self.status_mask & (1 << class) == 0 {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        if !self.path_prefixes.is_empty() && self.matched_prefix(path).is_none() {
            return false;
        }
        if !self.hosts.is_empty()
            && !self.hosts.iter().any(|h| match h {
                HostPattern::Exact(e) => e.eq_ignore_ascii_case(host),
                HostPattern::Suffix(s) => {
                    host.len() > s.len()
                        && host.is_char_boundary(host.len() - s.len())
                        && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            })
        {
            return false;
        }
        true
    }

    /// The longest configured path prefix `path` starts with.
    pub(crate) fn matched_prefix(&self, path: &str) -> Option<&str> {
        self.path_prefixes
            .iter()
            .filter(|p| path.starts_with(&***p))
            .max_by_key(|p| p.len())
            .map(|p| &**p)
    }

    /// Whether the rule has `path_prefixes`.
    pub fn has_path_prefixes(&self) -> bool {
        !self.path_prefixes.is_empty()
    }

    /// Reads `hosts`, `path_prefixes`, `methods` and `status_classes`, recording every error.
    pub(crate) fn parse(p: &mut RuleParser<'_, '_, '_>) -> Matcher {
        let mut hosts = Vec::new();
        for (i, h) in p
            .opt_string_list("hosts")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let lower = h.to_ascii_lowercase();
            let pattern = match lower.strip_prefix("*.") {
                Some(rest) if valid_host(rest) => HostPattern::Suffix(format!(".{rest}").into()),
                None if valid_host(&lower) => HostPattern::Exact(lower.into()),
                _ => {
                    p.err(
                        &format!("hosts[{i}]"),
                        format!("\"{h}\" is not a host name (or *.domain)"),
                    );
                    continue;
                }
            };
            hosts.push(pattern);
        }
        let mut path_prefixes = Vec::new();
        for (i, prefix) in p
            .opt_string_list("path_prefixes")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if prefix.starts_with('/') {
                path_prefixes.push(prefix.into_boxed_str());
            } else {
                p.err(
                    &format!("path_prefixes[{i}]"),
                    format!("\"{prefix}\" must start with '/'"),
                );
            }
        }
        let mut methods = Vec::new();
        for (i, m) in p
            .opt_string_list("methods")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) {
                methods.push(m.to_ascii_uppercase().into_boxed_str());
            } else {
                p.err(
                    &format!("methods[{i}]"),
                    format!("\"{m}\" is not an HTTP method"),
                );
            }
        }
        let mut status_mask = 0u8;
        for (i, c) in p
            .opt_string_list("status_classes")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match StatusClass::parse(&c) {
                Some(class) => status_mask |= class.bit(),
                None => p.err(
                    &format!("status_classes[{i}]"),
                    format!("\"{c}\" is not a status class (use 1xx to 5xx)"),
                ),
            }
        }
        Matcher {
            hosts: hosts.into(),
            path_prefixes: path_prefixes.into(),
            methods: methods.into(),
            status_mask,
        }
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && (h.parse::<IpAddr>().is_ok()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use crate::config::RuleSet;
    use crate::testing::*;

    #[test]
    fn match_conditions_are_parsed_once() {
        let text = rule_text(
            &[
                ("hosts", "[\"Login.Example.com\", \"*.example.org\"]"),
                ("path_prefixes", "[\"/login\", \"/login/api\"]"),
                ("methods", "[\"post\"]"),
                ("status_classes", "[\"4xx\"]"),
            ],
            &[],
        );
        let set = RuleSet::from_toml_str(&text, "rules.toml").unwrap();
        let m = &set.rules()[0].matcher;
        assert!(m.matches("login.example.com", "POST", "/login/api/x", 401));
        assert!(m.matches("a.example.org", "POST", "/login", 403));
        assert!(
            !m.matches("example.org", "POST", "/login", 403),
            "*. does not match the apex"
        );
        assert!(!m.matches("login.example.com", "GET", "/login", 401));
        assert!(!m.matches("login.example.com", "POST", "/logout", 401));
        assert!(!m.matches("login.example.com", "POST", "/login", 500));
        assert_eq!(m.matched_prefix("/login/api/x"), Some("/login/api"));
    }

    rejects!(hosts_must_be_host_names, set [("hosts", "[\"exa mple.com\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": hosts[0]: \"exa mple.com\" is not a host name (or *.domain)");

    rejects!(path_prefixes_start_with_a_slash, set [("path_prefixes", "[\"login\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": path_prefixes[0]: \"login\" must start with '/'");

    rejects!(methods_must_be_methods, set [("methods", "[\"GET POST\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": methods[0]: \"GET POST\" is not an HTTP method");

    rejects!(status_classes_must_be_classes, set [("status_classes", "[\"404\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": status_classes[0]: \"404\" is not a status class (use 1xx to 5xx)");
}
