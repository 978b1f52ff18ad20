//! The ban soak of `make soak`: 100,000 bans, each with its own reason and address, pushed to a
//! real Envoy's filter over its deny-list stream leave the filter VMs' memory flat.
//!
//! Rule bans carry a reason unique to each ban and expire, so this is what a long-running
//! filter sees: the bans go in as ten waves of 10,000 through the collector's API
//! (`POST /api/v1/decisions`, the one way to give every ban its own reason), each living 30 s,
//! so the live deny list stays at a few thousand entries while the number of bans pushed grows
//! to 100,000. After every wave the test reads Envoy's `/memory`, the process's resident set
//! (where V8 keeps the Wasm linear memories), Envoy's Wasm stats and the filter's own; memory
//! after every later wave must be within 15% of memory after the first, no VM may have been
//! replaced or resubscribed (a fresh table would hide growth), and the deny list must still
//! answer right: a banned address gets 403, an unbanned one 200.
//!
//! It takes about 11 minutes on a 2-core machine, so `cargo test` skips it; `scripts/soak.sh`
//! runs it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use warden_e2e::measure::{EnvoyMemory, Stats, mib};
use warden_e2e::{Client, Stack, eventually_within};

const WAVES: u32 = 10;
const BANS_PER_WAVE: u32 = 10_000;
/// Long enough that a wave's bans overlap, short enough that the live set stays bounded.
const BAN_TTL: Duration = Duration::from_secs(30);
/// Ban calls outstanding at once (the collector commits each one before answering).
const CALLS_IN_FLIGHT: u32 = 8;
/// Memory after a later wave may exceed memory after the first by this fraction. The VMs'
/// linear memories keep the high-water mark of the live deny list, which moves with the ban
/// rate (a few thousand entries, ±30%); reasons kept for every ban ever pushed would take some
/// 30 MiB per VM, several times this.
const FLAT: f64 = 0.15;

/// A client address whose ban stays in force to the end.
const STILL_BANNED: &str = "127.0.0.150";
/// A client address banned and then unbanned.
const UNBANNED: &str = "127.0.0.151";

/// The filters and Envoy after one wave.
struct Sample {
    label: String,
    bans_pushed: u32,
    ban_rate: f64,
    stats: Stats,
    memory: EnvoyMemory,
    snapshots_sent: u64,
    live_decisions: u64,
}

impl Sample {
    async fn take(stack: &Stack, label: &str, bans_pushed: u32, ban_rate: f64) -> Sample {
        Sample {
            label: label.to_string(),
            bans_pushed,
            ban_rate,
            stats: stack.envoy.stats().await.unwrap(),
            memory: stack.envoy.memory().await.unwrap(),
            snapshots_sent: snapshots_sent(stack).await,
            live_decisions: stack.collector.metric("warden_decisions_entries").await,
        }
    }
}

/// Full deny-list snapshots the collector has sent this Envoy's filter VMs.
async fn snapshots_sent(stack: &Stack) -> u64 {
    let body = stack.collector.filters().await.unwrap();
    body["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["node_id"] == stack.envoy.options.node_id.as_str())
        .filter_map(|f| f["snapshots_sent"].as_u64())
        .sum()
}

fn print_samples(samples: &[Sample]) {
    eprintln!(
        "ban soak: {:<8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>6}",
        "after",
        "bans",
        "ban/s",
        "live",
        "entries",
        "version",
        "alloc MiB",
        "heap MiB",
        "RSS MiB",
        "peak MiB",
        "VMs",
        "reconn",
        "reject",
        "snaps"
    );
    for s in samples {
        eprintln!(
            "ban soak: {:<8} {:>7} {:>6.0} {:>8} {:>8} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>6} {:>6} {:>6}",
            s.label,
            s.bans_pushed,
            s.ban_rate,
            s.live_decisions,
            s.stats.value("warden.denylist_entries"),
            s.stats.value("warden.denylist_version"),
            mib(s.memory.allocated),
            mib(s.memory.heap_size),
            mib(s.memory.rss),
            mib(s.memory.rss_peak),
            format!(
                "{}/{}",
                s.stats.value("wasm.envoy.wasm.runtime.v8.active"),
                s.stats.value("wasm.envoy.wasm.runtime.v8.created")
            ),
            s.stats.value("warden.denylist_reconnects"),
            s.stats.value("warden.denylist_updates_rejected"),
            s.snapshots_sent,
        );
    }
    eprintln!(
        "ban soak: live = the collector's decisions; entries/version = the filter's deny-list \
         gauges; VMs = Wasm VMs active/created; reconn = deny-list stream (re)connections; \
         reject = updates the filter refused; snaps = full snapshots sent to this Envoy"
    );
}

/// `POST /api/v1/decisions` with `body`; panics unless the collector banned it.
async fn ban(http: &reqwest::Client, url: &str, body: &Value) {
    let response = http.post(url).json(body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "ban {body}: {text}");
}

/// Bans `BANS_PER_WAVE` addresses of 10.`wave`.0.0/16, each with its own reason, and returns
/// the bans per second.
async fn push_wave(stack: &Stack, wave: u32) -> f64 {
    let url = format!("{}/api/v1/decisions", stack.collector.base_url());
    let http = stack.collector.http();
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLS_IN_FLIGHT {
        let (url, http, next) = (url.clone(), http.clone(), Arc::clone(&next));
        callers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= BANS_PER_WAVE {
                    return;
                }
                let target = format!("10.{wave}.{}.{}", i / 256, i % 256);
                let body = json!({
                    "target": target,
                    "reason": format!("{} failed logins for user-{i} from {target} (wave {wave})", 20 + i % 7),
                    "ttl": format!("{}s", BAN_TTL.as_secs()),
                });
                ban(&http, &url, &body).await;
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    f64::from(BANS_PER_WAVE) / started.elapsed().as_secs_f64()
}

/// Waits until the filter's deny list holds `entries` entries, for at most `patience`.
async fn wait_for_entries(stack: &Stack, entries: u64, patience: Duration) {
    eventually_within(
        &format!("the deny list to hold {entries} entries"),
        patience,
        || async {
            match stack.envoy.stat("warden.denylist_entries").await {
                Some(now) if now == entries => Ok(()),
                now => Err(format!("it holds {now:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an 11-minute soak: run by `make soak` (scripts/soak.sh)"]
async fn a_hundred_thousand_bans_with_distinct_reasons_leave_filter_memory_flat() {
    let stack = Stack::start().await;
    let mut table = vec![Sample::take(&stack, "start", 0, 0.0).await];
    for wave in 1..=WAVES {
        let rate = push_wave(&stack, wave).await;
        stack.wait_for_filters().await;
        let label = format!("wave {wave}");
        table.push(Sample::take(&stack, &label, wave * BANS_PER_WAVE, rate).await);
    }

    // The deny list still answers right: one more ban holds, one lifted ban is gone.
    let http = stack.collector.http();
    let url = format!("{}/api/v1/decisions", stack.collector.base_url());
    let check = stack.envoy.url("/soak/check");
    for source in [STILL_BANNED, UNBANNED] {
        let reason = format!("the soak's check of {source}");
        ban(&http, &url, &json!({ "target": source, "reason": reason })).await;
        Client::from(source).wait_for_status(&check, 403).await;
    }
    let unban = http
        .delete(format!("{url}?target={UNBANNED}&reason=soak"))
        .send()
        .await
        .unwrap();
    assert_eq!(unban.status(), StatusCode::OK, "unban {UNBANNED}");
    Client::from(UNBANNED).wait_for_status(&check, 200).await;
    Client::from(STILL_BANNED)
        .wait_for_status(&check, 403)
        .await;
    // Every wave's bans expire; the one that stays in force is left.
    wait_for_entries(&stack, 1, BAN_TTL + Duration::from_secs(30)).await;
    table.push(Sample::take(&stack, "expired", WAVES * BANS_PER_WAVE + 2, 0.0).await);
    print_samples(&table);

    let (start, first, last) = (&table[0], &table[1], &table[table.len() - 1]);
    // Bans expire after BAN_TTL, so the live list grows until expiry keeps pace with the ban
    // rate (one wave's worth, or two or three on a slower machine) and then holds. Envoy's
    // resident set (which holds the VMs' linear memory, never returned to the system) may grow
    // with the live list; from the first wave at which it is near its largest, it must stay
    // flat. Envoy's own allocated heap must stay flat from the first wave.
    let most_live = table[1..]
        .iter()
        .map(|s| s.live_decisions)
        .max()
        .unwrap_or(0);
    let steady = table[1..]
        .iter()
        .position(|s| s.live_decisions as f64 >= most_live as f64 * 0.9)
        .map_or(1, |i| i + 1);
    let baseline = &table[steady];
    for (i, later) in table.iter().enumerate().skip(2) {
        let flat = |what: &str, base: &Sample, later_value: u64, base_value: u64| {
            assert!(
                later_value as f64 <= base_value as f64 * (1.0 + FLAT),
                "{what} grew from {:.1} MiB after {} to {:.1} MiB after {}",
                mib(base_value),
                base.label,
                mib(later_value),
                later.label
            );
        };
        if i > steady {
            flat(
                "Envoy's resident set",
                baseline,
                later.memory.rss,
                baseline.memory.rss,
            );
        }
        flat(
            "Envoy's allocated heap",
            first,
            later.memory.allocated,
            first.memory.allocated,
        );
    }
    for name in [
        "wasm.envoy.wasm.runtime.v8.created",
        "warden.denylist_reconnects",
        "warden.denylist_updates_rejected",
    ] {
        assert_eq!(
            last.stats.value(name),
            start.stats.value(name),
            "{name} changed: a VM was replaced or rebuilt its deny list, which would hide growth"
        );
    }
    assert_eq!(
        last.snapshots_sent, start.snapshots_sent,
        "the filters got a full snapshot, which would rebuild their tables"
    );
}
