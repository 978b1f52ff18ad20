//! The request headers a record uses, found in one pass over the header map Envoy returned in
//! one host call, borrowed from that buffer (no copy, no allocation for the common ones).

use crate::host::Pairs;

/// What the configuration asks for beyond the fixed headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `record.captured_headers` (lower case).
    pub captured: Vec<String>,
    /// `identity.api_key_header` (lower case; empty: none).
    pub api_key: String,
    /// `identity.ext_authz_user_header` (lower case; empty: none).
    pub ext_authz_user: String,
    /// `identity.basic_auth_user_header` (lower case; empty: none).
    pub basic_auth_user: String,
    /// `identity.api_key_client_header` (lower case; empty: none).
    pub api_key_client: String,
}

/// The headers of one request (first value of each; empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders<'a> {
    /// `:authority`.
    pub authority: &'a [u8],
    /// `:method`.
    pub method: &'a [u8],
    /// `:path`.
    pub path: &'a [u8],
    /// `user-agent`.
    pub user_agent: &'a [u8],
    /// `x-request-id`.
    pub request_id: &'a [u8],
    /// `x-forwarded-for`.
    pub x_forwarded_for: &'a [u8],
    /// `authorization` (read for the basic-auth user name; never recorded).
    pub authorization: Option<&'a [u8]>,
    /// The configured API-key header.
    pub api_key: Option<&'a [u8]>,
    /// The configured ext_authz identity header.
    pub ext_authz_user: Option<&'a [u8]>,
    /// The configured basic_auth forwarded-user header.
    pub basic_auth_user: Option<&'a [u8]>,
    /// The configured api_key_auth forwarded-client header.
    pub api_key_client: Option<&'a [u8]>,
    /// Captured headers: index into [`Wanted::captured`] and value.
    pub captured: Vec<(usize, &'a [u8])>,
}

fn set<'a>(slot: &mut &'a [u8], value: &'a [u8]) {
    if slot.is_empty() {
        *slot = value;
    }
}

fn set_opt<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

impl<'a> RequestHeaders<'a> {
    /// Scans a serialised header map (names are lower case in Envoy).
    pub fn scan(pairs: &'a [u8], wanted: &Wanted) -> Self {
        let mut h = RequestHeaders::default();
        for (name, value) in Pairs::new(pairs) {
            match name {
                b":authority" => set(&mut h.authority, value),
                b":method" => set(&mut h.method, value),
                b":path" => set(&mut h.path, value),
                b"user-agent" => set(&mut h.user_agent, value),
                b"x-request-id" => set(&mut h.request_id, value),
                b"x-forwarded-for" => set(&mut h.x_forwarded_for, value),
                b"authorization" => set_opt(&mut h.authorization, value),
                _ => {}
            }
            if !wanted.api_key.is_empty() && name == wanted.api_key.as_bytes() {
                set_opt(&mut h.api_key, value);
            }
            if !wanted.ext_authz_user.is_empty() && name == wanted.ext_authz_user.as_bytes() {
                set_opt(&mut h.ext_authz_user, value);
            }
            if !wanted.api_key_client.is_empty() && name == wanted.api_key_client.as_bytes() {
                set_opt(&mut h.api_key_client, value);
            }
            if !wanted.basic_auth_user.is_empty() && name == wanted.basic_auth_user.as_bytes() {
                set_opt(&mut h.basic_auth_user, value);
            }
            if let Some(i) = wanted.captured.iter().position(|c| c.as_bytes() == name)
                && !h.captured.iter().any(|(j, _)| *j == i)
            {
                h.captured.push((i, value));
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::serialize_pairs;

    #[test]
    fn finds_fixed_configured_and_captured_headers_first_value_wins() {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":authority", b"shop.test"),
            (b":path", b"/a?b=1"),
            (b":method", b"GET"),
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2"),
            (b"x-tenant", b"acme"),
            (b"x-api-key", b"k"),
            (b"authorization", b"Basic eDp5"),
        ];
        let mut bytes = Vec::new();
        serialize_pairs(headers.into_iter(), &mut bytes);
        let wanted = Wanted {
            captured: vec!["x-missing".into(), "x-tenant".into()],
            api_key: "x-api-key".into(),
            ext_authz_user: String::new(),
            basic_auth_user: String::new(),
            api_key_client: String::new(),
        };
        let h = RequestHeaders::scan(&bytes, &wanted);
        assert_eq!(h.authority, b"shop.test");
        assert_eq!(h.method, b"GET");
        assert_eq!(h.x_forwarded_for, b"1.1.1.1");
        assert_eq!(h.api_key, Some(&b"k"[..]));
        assert_eq!(h.authorization, Some(&b"Basic eDp5"[..]));
        assert_eq!(h.ext_authz_user, None);
        assert_eq!(h.captured, vec![(1, &b"acme"[..])]);
        assert_eq!(h.user_agent, b"");
    }
}
