//! The local reply for a listed client: status, body and headers, prepared once per
//! configuration so that answering an attacker allocates nothing. Only a throttle reply's
//! `retry-after` changes per request; it is written into a buffer kept across requests.

use crate::config::DenyListConfig;
use crate::denylist::Verdict;
use crate::host::serialize_pairs;

/// The prepared replies.
#[derive(Debug, Clone, Default)]
pub(crate) struct DenyReply {
    deny_status: u32,
    deny_body: Vec<u8>,
    throttle_status: u32,
    throttle_body: Vec<u8>,
    default_retry_after_s: u64,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The deny reply's headers, serialised as pairs.
    deny_headers: Vec<u8>,
    /// The last throttle reply's headers (reused).
    throttle_headers: Vec<u8>,
}

/// One reply to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply<'a> {
    /// Status code.
    pub status: u32,
    /// Body.
    pub body: &'a [u8],
    /// Headers serialised as pairs.
    pub headers: &'a [u8],
}

/// Writes `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

impl DenyReply {
    /// Prepares the replies of a configuration.
    pub(crate) fn new(config: &DenyListConfig) -> Self {
        let headers: Vec<(Vec<u8>, Vec<u8>)> = config
            .deny_headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v.clone().into_bytes()))
            .collect();
        let mut deny_headers = Vec::new();
        serialize_pairs(
            headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            &mut deny_headers,
        );
        Self {
            deny_status: config.deny_status,
            deny_body: config.deny_body.clone().into_bytes(),
            throttle_status: config.throttle_status,
            throttle_body: config.throttle_body.clone().into_bytes(),
            default_retry_after_s: config.default_retry_after_s,
            headers,
            deny_headers,
            throttle_headers: Vec::new(),
        }
    }

    /// The reply for an entry with `verdict` expiring at `expires_at_ms` (0: never), at `now_ms`.
    /// A throttle reply says in `retry-after` how many seconds are left (at least 1).
    pub(crate) fn reply(&mut self, verdict: Verdict, expires_at_ms: i64, now_ms: u64) -> Reply<'_> {
        match verdict {
            Verdict::Deny => Reply {
                status: self.deny_status,
                body: &self.deny_body,
                headers: &self.deny_headers,
            },
            Verdict::Throttle => {
                let retry_after = if expires_at_ms > 0 {
                    u64::try_from(expires_at_ms)
                        .unwrap_or(0)
                        .saturating_sub(now_ms)
                        .div_ceil(1000)
                        .max(1)
                } else {
                    self.default_retry_after_s
                };
                let mut digits = [0u8; 20];
                let value = decimal(retry_after, &mut digits);
                self.throttle_headers.clear();
                let all = self
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .chain(std::iter::once((&b"retry-after"[..], value)));
                serialize_pairs(all, &mut self.throttle_headers);
                Reply {
                    status: self.throttle_status,
                    body: &self.throttle_body,
                    headers: &self.throttle_headers,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Pairs;

    fn headers(bytes: &[u8]) -> Vec<(String, String)> {
        Pairs::new(bytes)
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_deny_reply_is_the_configured_status_body_and_headers() {
        let mut r = DenyReply::new(&DenyListConfig::default());
        let reply = r.reply(Verdict::Deny, 0, 0);
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body, b"Forbidden by Warden\n");
        assert_eq!(
            headers(reply.headers),
            vec![("content-type".to_string(), "text/plain".to_string())]
        );
    }

    #[test]
    fn a_throttle_reply_says_when_to_retry() {
        let mut r = DenyReply::new(&DenyListConfig::default());
        let reply = r.reply(Verdict::Throttle, 10_500, 1_000);
        assert_eq!(reply.status, 429);
        assert_eq!(reply.body, b"Too Many Requests\n");
        assert_eq!(
            headers(reply.headers).last().unwrap(),
            &("retry-after".to_string(), "10".to_string())
        );
        let reply = r.reply(Verdict::Throttle, 1_001, 1_000);
        assert_eq!(headers(reply.headers).last().unwrap().1, "1");
        let reply = r.reply(Verdict::Throttle, 0, 1_000);
        assert_eq!(
            headers(reply.headers).last().unwrap().1,
            "60",
            "never expires"
        );
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1234567, &mut b), b"1234567");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
