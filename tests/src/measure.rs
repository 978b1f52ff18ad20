//! Measurements of a running Envoy for the fault and soak tests: its memory (admin `/memory`
//! and the resident set of the process, which holds the Wasm VMs' linear memories), all of its
//! counters and gauges at once, and latency histograms whose buckets can be subtracted to get
//! one phase of a test.
//!
//! Also the switch between the shortened fault tests of `make test` and the full-length ones of
//! `make soak`: `WARDEN_SOAK=1`.

use crate::Envoy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether the full-length soak versions of the fault tests run (`WARDEN_SOAK=1`, set by
/// `scripts/soak.sh`), rather than the shortened ones of `make test`.
pub fn soak_mode() -> bool {
    std::env::var("WARDEN_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A copy of the bootstrap `template`, written into `dir`, with `stats_flush_on_admin: true`:
/// histograms are merged whenever `/stats` is read, not every 5 s, so a test reads the
/// latencies of the phase it just ran.
pub fn template_flushing_stats_on_admin(template: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
    let path = dir.join("flush-on-admin.yaml.tmpl");
    std::fs::write(&path, format!("{text}\nstats_flush_on_admin: true\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Envoy's memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvoyMemory {
    /// Bytes allocated by Envoy's own heap (tcmalloc `allocated`; V8 keeps Wasm linear
    /// memories outside it).
    pub allocated: u64,
    /// Bytes tcmalloc holds from the system (`heap_size`).
    pub heap_size: u64,
    /// Resident set of the Envoy process (`VmRSS`), Wasm linear memories included.
    pub rss: u64,
    /// Peak resident set so far (`VmHWM`).
    pub rss_peak: u64,
}

/// Every counter and gauge of admin `/stats` (histograms left out), by full name.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub BTreeMap<String, u64>);

impl Stats {
    /// The value of the stat whose name ends with `suffix` (custom Wasm metrics carry an
    /// Envoy-chosen prefix), if there is one.
    pub fn get(&self, suffix: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(name, _)| name.ends_with(suffix))
            .map(|(_, v)| *v)
    }

    /// The value of the stat whose name ends with `suffix`, 0 when absent.
    pub fn value(&self, suffix: &str) -> u64 {
        self.get(suffix).unwrap_or(0)
    }
}

/// A latency histogram as Envoy's detailed buckets: (lower bound, width, count), cumulative
/// since Envoy started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// The buckets, in ascending order of their lower bound.
    pub buckets: Vec<HistogramBucket>,
}

/// One detailed bucket of an Envoy histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramBucket {
    /// Smallest value in the bucket (ms for `*_time` histograms).
    pub lower_bound: f64,
    /// Width of the bucket.
    pub width: f64,
    /// Values recorded in it.
    pub count: u64,
}

impl Histogram {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.count).sum()
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |lower: f64| {
            earlier
                .buckets
                .iter()
                .find(|b| b.lower_bound == lower)
                .map_or(0, |b| b.count)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| HistogramBucket {
                    count: b.count.saturating_sub(before(b.lower_bound)),
                    ..*b
                })
                .filter(|b| b.count > 0)
                .collect(),
        }
    }

    /// The lower bound of the bucket holding quantile `q` (0..=1), `None` when empty. Envoy
    /// records request times in whole milliseconds and a bucket holds one such value, so for
    /// them this is the recorded value itself.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.buckets.iter().find_map(|b| {
            seen += b.count;
            (seen >= rank).then_some(b.lower_bound)
        })
    }
}

impl Envoy {
    /// Envoy's memory: admin `/memory` and the process's resident set.
    pub async fn memory(&self) -> Result<EnvoyMemory, String> {
        let (_, body) = self.admin_get("/memory").await?;
        let memory: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let field = |name: &str| {
            memory[name]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name} in /memory: {body}"))
        };
        let status = self
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .map_or(0, |kib: u64| kib * 1024)
        };
        Ok(EnvoyMemory {
            allocated: field("allocated")?,
            heap_size: field("heap_size")?,
            rss: kib("VmRSS:"),
            rss_peak: kib("VmHWM:"),
        })
    }

    /// Every counter and gauge of admin `/stats`.
    pub async fn stats(&self) -> Result<Stats, String> {
        let (_, body) = self.admin_get("/stats").await?;
        Ok(Stats(
            body.lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(": ")?;
                    Some((name.to_string(), value.trim().parse().ok()?))
                })
                .collect(),
        ))
    }

    /// The histogram `name` (e.g. `http.ingress.downstream_rq_time`) as detailed buckets.
    /// Histograms are merged on Envoy's stats flush: read it from an Envoy started with
    /// [`template_flushing_stats_on_admin`] and poll until it holds what the test sent.
    pub async fn histogram(&self, name: &str) -> Result<Histogram, String> {
        let (_, body) = self
            .admin_get(&format!(
                "/stats?format=json&histogram_buckets=detailed&filter={name}"
            ))
            .await?;
        let stats: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let details = stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["histograms"]["details"].as_array())
            .flatten()
            .find(|d| d["name"] == name)
            .ok_or_else(|| format!("no histogram {name} in {body}"))?;
        let buckets = details["totals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| HistogramBucket {
                lower_bound: b["lower_bound"].as_f64().unwrap_or(0.0),
                width: b["width"].as_f64().unwrap_or(0.0),
                count: b["count"].as_u64().unwrap_or(0),
            })
            .collect();
        Ok(Histogram { buckets })
    }
}

/// Mebibytes, for tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A benchmark's numeric setting from the environment (`ROUNDS=7`), else `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins every thread of process `pid` to `cpu` (`taskset -a -p -c`), so that a benchmark's
/// server and its load generator do not share a core.
pub fn pin(pid: u32, cpu: u32) -> Result<(), String> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("run taskset (util-linux): {e}"))?;
    if !status.success() {
        return Err(format!("taskset -a -p -c {cpu} {pid} failed: {status}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(buckets: &[(f64, u64)]) -> Histogram {
        Histogram {
            buckets: buckets
                .iter()
                .map(|&(lower_bound, count)| HistogramBucket {
                    lower_bound,
                    width: 0.1,
                    count,
                })
                .collect(),
        }
    }

    #[test]
    fn a_phase_is_the_difference_of_two_snapshots_and_its_quantiles_are_recorded_values() {
        let before = histogram(&[(0.0, 90), (1.0, 10)]);
        let after = histogram(&[(0.0, 180), (1.0, 18), (3.0, 2)]);
        let phase = after.since(&before);
        assert_eq!(phase.count(), 100);
        assert_eq!(phase.quantile(0.5), Some(0.0));
        assert_eq!(phase.quantile(0.98), Some(1.0));
        assert_eq!(phase.quantile(0.99), Some(3.0));
        assert_eq!(Histogram::default().quantile(0.99), None);
    }
}
