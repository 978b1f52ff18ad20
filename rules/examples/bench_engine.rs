//! Engine throughput and memory, without criterion.
//!
//! `cargo run -p warden-rules --release --example bench_engine [RECORDS] [ADDRESSES]`
//!
//! 1. Throughput: RECORDS (default 2,000,000) synthetic records from ADDRESSES (default 100,000)
//!    clients (80% IPv4, 20% IPv6 spread over many /64s, a few noisy attackers) through 20 rules,
//!    on one thread; prints records/s, decisions, keys held and resident memory growth.
//! 2. Memory: 1,000,000 distinct client addresses within one minute of record time (nothing can
//!    be evicted yet), then the same an hour later after eviction.

use std::error::Error;
use std::time::Instant;
use warden_proto::pb::{AccessRecord, Principal};
use warden_rules::{Engine, RuleSet};

const RULES: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 10
window = "1m"
path_prefixes = ["/login"]
action = "deny"
ban_ttl = "15m"
escalation = { factor = 2.0, max_ttl = "24h", period = "7d" }

[[rules]]
name = "auth-failures-slow"
kind = "auth_failures"
threshold = 50
window = "10m"
action = "deny"
ban_ttl = "1h"

[[rules]]
name = "scanner-4xx"
kind = "status_flood"
status_class = "4xx"
threshold = 30
window = "1m"
action = "deny"
ban_ttl = "1h"

[[rules]]
name = "errors-5xx"
kind = "status_flood"
status_class = "5xx"
threshold = 20
window = "1m"
action = "alert"
ban_ttl = "15m"

[[rules]]
name = "path-probe"
kind = "distinct_paths"
threshold = 20
window = "1m"
action = "deny"
ban_ttl = "1h"

[[rules]]
name = "admin-probe"
kind = "distinct_paths"
threshold = 5
window = "5m"
path_prefixes = ["/admin", "/wp-"]
action = "deny"
ban_ttl = "1h"

[[rules]]
name = "per-address-rate"
kind = "rate"
limit = 600
period = "1m"
action = "throttle"
ban_ttl = "5m"

[[rules]]
name = "per-address-burst"
kind = "rate"
limit = 50
period = "1s"
action = "throttle"
ban_ttl = "1m"

[[rules]]
name = "per-host-rate"
kind = "rate"
limit = 300
period = "1m"
key = "address_host"
action = "throttle"
ban_ttl = "5m"

[[rules]]
name = "api-prefix-rate"
kind = "rate"
limit = 120
period = "1m"
key = "address_path_prefix"
path_prefixes = ["/api/"]
action = "throttle"
ban_ttl = "5m"

[[rules]]
name = "per-principal-rate"
kind = "rate"
limit = 1000
period = "1m"
key = "principal"
action = "alert"
ban_ttl = "10m"

[[rules]]
name = "per-24-rate"
kind = "rate"
limit = 5000
period = "1m"
ipv4_prefix = 24
ipv6_prefix = 48
action = "alert"
ban_ttl = "10m"

[[rules]]
name = "post-rate"
kind = "rate"
limit = 60
period = "1m"
methods = ["POST", "PUT", "DELETE"]
action = "throttle"
ban_ttl = "5m"

[[rules]]
name = "shop-rate"
kind = "rate"
limit = 200
period = "1m"
hosts = ["shop.example.com"]
action = "throttle"
ban_ttl = "5m"

[[rules]]
name = "api-4xx"
kind = "status_flood"
status_class = "4xx"
threshold = 100
window = "5m"
hosts = ["api.example.com"]
action = "alert"
ban_ttl = "30m"

[[rules]]
name = "login-post-failures"
kind = "auth_failures"
threshold = 5
window = "1m"
methods = ["POST"]
path_prefixes = ["/login"]
hosts = ["*.example.com"]
action = "deny"
ban_ttl = "30m"
dry_run = true

[[rules]]
name = "static-rate"
kind = "rate"
limit = 2000
period = "1m"
path_prefixes = ["/static/"]
action = "alert"
ban_ttl = "5m"

[[rules]]
name = "scanner-4xx-v6-wide"
kind = "status_flood"
status_class = "4xx"
threshold = 200
window = "5m"
ipv6_prefix = 48
action = "deny"
ban_ttl = "1h"

[[rules]]
name = "server-errors-per-host"
kind = "rate"
limit = 30
period = "1m"
key = "address_host"
status_classes = ["5xx"]
action = "alert"
ban_ttl = "15m"

[[rules]]
name = "known-bad"
kind = "ip_list"
entries = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:bad::/48"]
action = "deny"
"#;

const HOSTS: [&str; 5] = [
    "www.example.com",
    "api.example.com",
    "shop.example.com",
    "login.example.com",
    "static.example.com",
];

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn address(i: u64) -> String {
    if i % 5 == 4 {
        // IPv6: spread over many /64s.
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            (i >> 16) & 0xffff,
            i & 0xffff,
            i.wrapping_mul(2_654_435_761) & 0xffff
        )
    } else {
        format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
    }
}

fn record(rng: &mut Rng, addresses: u64, seq: u64) -> AccessRecord {
    let r = rng.next();
    // 1% of records come from 20 noisy clients, the rest spread evenly.
    let client = if r.is_multiple_of(100) {
        r % 20
    } else {
        r % addresses
    };
    let status = match (r >> 12) % 100 {
        0..=79 => 200,
        80..=87 => 404,
        88..=90 => 401,
        91..=92 => 403,
        93..=94 => 500,
        _ => 302,
    };
    let path = match (r >> 20) % 10 {
        0 => format!("/api/v1/items/{}", (r >> 24) % 1000),
        1 => "/login".to_string(),
        2 => format!("/static/app-{}.js", (r >> 24) % 50),
        3 => format!("/admin/{}", (r >> 24) % 10),
        _ => format!("/page/{}", (r >> 24) % 200),
    };
    AccessRecord {
        sequence: seq,
        request_id: format!("{:016x}-{seq}", r),
        client_address: address(client),
        authority: HOSTS[(r >> 32) as usize % HOSTS.len()].to_string(),
        method: if (r >> 40).is_multiple_of(10) {
            "POST"
        } else {
            "GET"
        }
        .to_string(),
        path,
        protocol: "HTTP/2".to_string(),
        status,
        user_agent: "bench/1.0".to_string(),
        principal: (r >> 44).is_multiple_of(3).then(|| Principal {
            name: format!("user-{}", client % 5000),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Resident set size in MiB, from /proc/self/statm (Linux); 0 elsewhere.
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (pages * 4096) as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let addresses: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rules = RuleSet::from_toml_str(RULES, "bench-rules.toml")?;
    println!("rules: {}", rules.rules().len());

    // A pool of distinct records, reused with fresh timestamps, so generation is not measured.
    let pool_size = 400_000.min(total) as usize;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut pool: Vec<AccessRecord> = (0..pool_size as u64)
        .map(|i| record(&mut rng, addresses, i))
        .collect();

    // Record time advances 50 µs per record (20,000 requests/s of traffic), so windows and
    // limiters see realistic per-client rates: 2M records span 100 s.
    let t0: i64 = 1_700_000_000_000;
    let rss_before = rss_mib();
    let mut engine = Engine::new(rules.clone());
    let mut decisions = 0usize;
    let mut out = Vec::new();
    let start = Instant::now();
    for i in 0..total {
        let idx = (i % pool_size as u64) as usize;
        if let Some(r) = pool.get_mut(idx) {
            r.time_ms = t0 + (i / 20) as i64;
            out.clear();
            engine.observe_into(r, &mut out);
            decisions += out.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "throughput: {total} records, {addresses} addresses, 20 rules: {:.2} s, {:.0} records/s, {decisions} decisions",
        secs,
        total as f64 / secs
    );
    println!(
        "memory: {} keys held, RSS +{:.1} MiB over the record pool",
        engine.tracked_keys(),
        rss_mib() - rss_before
    );
    drop(engine);
    drop(pool);

    // One million distinct clients within a minute, each one request.
    let rss_before = rss_mib();
    let mut engine = Engine::new(rules);
    let mut r = record(&mut rng, 1, 0);
    r.status = 200;
    r.path = "/page/1".to_string();
    r.principal = None;
    let start = Instant::now();
    for i in 0..1_000_000u64 {
        r.client_address.clear();
        let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        if i % 5 == 4 {
            use std::fmt::Write;
            write!(
                r.client_address,
                "2001:db8:{:x}:{:x}::1",
                i >> 16,
                i & 0xffff
            )?;
        } else {
            use std::fmt::Write;
            write!(r.client_address, "10.{a}.{b}.{c}")?;
        }
        r.time_ms = t0 + (i / 20_000) as i64 * 1_000; // 50 s in total
        engine.observe(&r);
    }
    let secs = start.elapsed().as_secs_f64();
    let rss_full = rss_mib();
    let keys = engine.tracked_keys();
    println!(
        "1M distinct clients: {keys} keys held, RSS +{:.1} MiB ({:.0} bytes per client), {:.0} records/s",
        rss_full - rss_before,
        (rss_full - rss_before) * 1024.0 * 1024.0 / 1_000_000.0,
        1_000_000.0 / secs
    );
    r.time_ms = t0 + 3_600_000;
    engine.observe(&r);
    engine.maintain();
    println!(
        "an hour later: {} keys held, RSS {:+.1} MiB vs before (freed memory stays with the allocator)",
        engine.tracked_keys(),
        rss_mib() - rss_before
    );
    Ok(())
}
