//! Converts Envoy's `response.flags` attribute (a bitmask) into the short flag names of access
//! logs (`UF`, `NR`, ...).
//!
//! Bit `n` is `1 << CoreResponseFlag(n)`; the order below is Envoy's `CoreResponseFlag` enum in
//! `envoy/stream_info/stream_info.h` (1.40), which the attribute's `legacyResponseFlags()` uses.
//! Checked against a real Envoy: a no-route request has bit 8 (NR), a refused upstream bit 5 (UF).

/// Short names by bit position.
const SHORT_NAMES: [&str; 30] = [
    "LH",    // FailedLocalHealthCheck
    "UH",    // NoHealthyUpstream
    "UT",    // UpstreamRequestTimeout
    "LR",    // LocalReset
    "UR",    // UpstreamRemoteReset
    "UF",    // UpstreamConnectionFailure
    "UC",    // UpstreamConnectionTermination
    "UO",    // UpstreamOverflow
    "NR",    // NoRouteFound
    "DI",    // DelayInjected
    "FI",    // FaultInjected
    "RL",    // RateLimited
    "UAEX",  // UnauthorizedExternalService
    "RLSE",  // RateLimitServiceError
    "DC",    // DownstreamConnectionTermination
    "URX",   // UpstreamRetryLimitExceeded
    "SI",    // StreamIdleTimeout
    "IH",    // InvalidEnvoyRequestHeaders
    "DPE",   // DownstreamProtocolError
    "UMSDR", // UpstreamMaxStreamDurationReached
    "RFCF",  // ResponseFromCacheFilter
    "NFCF",  // NoFilterConfigFound
    "DT",    // DurationTimeout
    "UPE",   // UpstreamProtocolError
    "NC",    // NoClusterFound
    "OM",    // OverloadManager
    "DF",    // DnsResolutionFailed
    "DO",    // DropOverLoad
    "DR",    // DownstreamRemoteReset
    "UDO",   // UnconditionalDropOverload
];

/// Comma-separated short names of the set bits, in bit order; unknown bits (flags newer than
/// this table) appear as `bit<n>` rather than vanishing.
pub(crate) fn short_names(bits: u64) -> String {
    let mut out = String::new();
    for n in 0..64u32 {
        if bits & (1u64 << n) == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        match SHORT_NAMES.get(n as usize) {
            Some(name) => out.push_str(name),
            None => {
                out.push_str("bit");
                out.push_str(&n.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_is_empty() {
        assert_eq!(short_names(0), "");
    }

    #[test]
    fn single_and_combined_flags() {
        assert_eq!(short_names(1 << 8), "NR");
        assert_eq!(short_names(1 << 5), "UF");
        assert_eq!(short_names((1 << 5) | (1 << 15)), "UF,URX");
        assert_eq!(short_names(1 << 14), "DC");
        assert_eq!(short_names(1 << 1), "UH");
        assert_eq!(short_names(1 << 29), "UDO");
    }

    #[test]
    fn unknown_bits_are_kept_visible() {
        assert_eq!(short_names((1 << 0) | (1 << 40)), "LH,bit40");
    }
}
