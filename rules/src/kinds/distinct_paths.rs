//! `distinct_paths`: `threshold` distinct paths (query strings ignored) within `window` per
//! address: the signature of a client probing for what exists.

use super::{Kind, Trigger};
use crate::address::group_key;
use crate::clock::RecordClock;
use crate::config::{Escalation, MAX_THRESHOLD, RuleParser};
use crate::decision::AddressTrigger;
use crate::duration::{duration_ms, fmt_duration};
use crate::engine::Observation;
use crate::window::{Keyed, LazySamples};
use std::time::Duration;

/// The parameters of a `distinct_paths` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct DistinctPaths {
    /// Distinct paths that trigger.
    pub threshold: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Kind for DistinctPaths {
    const NAME: &'static str = "distinct_paths";
    const FIELDS: &'static [&'static str] = &["threshold", "window"];
    type State = Keyed<PathWindow>;

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<DistinctPaths> {
        let threshold = p.req_u32("threshold", MAX_THRESHOLD);
        let window = p.req_window("window");
        Some(DistinctPaths {
            threshold: threshold?,
            window: window?,
        })
    }

    fn new_state(&self, _: &RecordClock) -> Keyed<PathWindow> {
        Keyed::default()
    }

    fn observe(&self, windows: &mut Keyed<PathWindow>, cx: &mut Observation<'_, '_>) {
        let (v, rule) = (cx.view, cx.rule);
        let Some(addr) = v.addr else { return };
        let group = group_key(addr, rule.grouping);
        let cap = self.threshold as usize;
        let n = windows.entry(group).record(
            v.now_ms,
            duration_ms(self.window),
            cap,
            cx.keys.path(v.path),
            v.request_id,
        );
        if n >= cap {
            let samples = windows.take(group).map(|w| w.samples());
            let trigger = AddressTrigger { addr, group, n };
            cx.out
                .extend(trigger.decide(cx.offences, rule, samples, v.now_ms));
        }
    }

    fn maintain(&self, windows: &mut Keyed<PathWindow>, now_ms: i64, _: Option<&Escalation>) {
        let w = duration_ms(self.window);
        windows.evict_idle(|x| x.is_idle(now_ms, w));
    }

    fn tracked_keys(windows: &Keyed<PathWindow>) -> usize {
        windows.len()
    }

    fn trigger(&self, observed: u32) -> Trigger {
        Trigger::windowed(observed, "distinct paths", self.threshold, self.window)
    }

    fn summary(&self) -> String {
        format!(
            "distinct paths >= {} in {}",
            self.threshold,
            fmt_duration(self.window)
        )
    }
}

/// The distinct paths one key requested recently: (path hash, last seen), at most `cap`.
#[derive(Debug, Default, Clone)]
pub(crate) struct PathWindow {
    paths: Vec<(u64, i64)>,
    samples: LazySamples,
}

impl PathWindow {
    /// Records a request for the path with hash `path_hash` and returns the number of distinct
    /// paths seen in `(now - window, now]`, counting at most `cap` (the oldest path is forgotten
    /// to make room, which can only delay, never invent, a trigger).
    pub(crate) fn record(
        &mut self,
        now_ms: i64,
        window_ms: i64,
        cap: usize,
        path_hash: u64,
        request_id: &str,
    ) -> usize {
        let horizon = now_ms - window_ms;
        self.paths.retain(|&(_, seen)| seen > horizon);
        if let Some(entry) = self.paths.iter_mut().find(|(h, _)| *h == path_hash) {
            entry.1 = now_ms;
            return self.paths.len();
        }
        // Full: forget the least recently seen path (no let-chains: the workspace MSRV is 1.85).
        let oldest = if self.paths.len() >= cap {
            self.paths
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(i, _)| i)
        } else {
            None
        };
        if let Some(i) = oldest {
            self.paths.swap_remove(i);
        }
        self.paths.push((path_hash, now_ms));
        // Only new paths are evidence of probing.
        let n = self.paths.len();
        self.samples.push_if_near(n, cap, request_id);
        n
    }

    /// True when no path is left in the window.
    pub(crate) fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        self.paths
            .iter()
            .all(|&(_, seen)| seen <= now_ms - window_ms)
    }

    /// The evidence for a trigger.
    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::testing::*;

    #[test]
    fn distinct_paths_ignore_repeats_and_query_strings() {
        let mut engine = Engine::new(rules(
            "[[rules]]\nname = \"probe\"\nkind = \"distinct_paths\"\nthreshold = 3\nwindow = \"1m\"\naction = \"deny\"\n",
        ));
        for (i, path) in ["/a", "/a?x=1", "/a", "/b", "/b?y"].iter().enumerate() {
            assert!(
                engine
                    .observe(&rec(T0 + i as i64, "192.0.2.1", 200, path))
                    .is_empty()
            );
        }
        let d = engine.observe(&rec(T0 + 9, "192.0.2.1", 200, "/c"));
        assert_eq!(d[0].observed, 3);
        assert_eq!(d[0].samples.len(), 3, "one sample per new path");
    }

    #[test]
    fn repeated_paths_count_once_and_expire() {
        let mut p = PathWindow::default();
        assert_eq!(p.record(0, 60_000, 3, 1, "a"), 1);
        assert_eq!(p.record(10, 60_000, 3, 1, "b"), 1);
        assert_eq!(p.record(20, 60_000, 3, 2, "c"), 2);
        assert_eq!(
            p.record(60_015, 60_000, 3, 3, "d"),
            2,
            "path 1 was last seen at 10 and is out"
        );
        assert_eq!(p.samples(), ["a", "c", "d"]);
    }

    #[test]
    fn distinct_paths_are_bounded_by_the_cap() {
        let mut p = PathWindow::default();
        for h in 0..1000 {
            assert!(p.record(h as i64, 60_000, 20, h, "r") <= 20);
        }
        assert_eq!(p.paths.len(), 20);
    }
}
