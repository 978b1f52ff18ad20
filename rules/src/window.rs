//! Sliding windows of events per key, shared by the windowed kinds (`auth_failures` and
//! `status_flood` count events here; `distinct_paths` keeps its own window of paths, sampled the
//! same way), and the maps that hold them per client.
//!
//! Each key keeps the timestamps of its most recent events, at most `threshold` of them: a rule
//! only asks "are there `threshold` events in the last `window`?", and the answer depends on the
//! newest `threshold` events only. That makes counting exact (no sub-bucket rounding at the window
//! edge) with per-key memory bounded by the threshold. The window is half-open, `(now - window,
//! now]`: an event exactly `window` old no longer counts.

use std::collections::{HashMap, VecDeque};

/// Request ids kept per key as evidence.
pub(crate) const MAX_SAMPLES: usize = 5;

/// The request ids of a key's most recent events, oldest first.
///
/// Buffers are reused once five exist, so a busy key does not allocate per event.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    ids: Vec<String>,
    /// Where the next id goes once the ring is full.
    next: usize,
}

impl Samples {
    /// Remembers `id`, forgetting the oldest when five are held.
    pub(crate) fn push(&mut self, id: &str) {
        if self.ids.len() < MAX_SAMPLES {
            self.ids.push(id.to_string());
        } else if let Some(slot) = self.ids.get_mut(self.next) {
            slot.clear();
            slot.push_str(id);
            self.next = (self.next + 1) % MAX_SAMPLES;
        }
    }

    /// The held ids, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        let (newer, older) = self.ids.split_at(self.next.min(self.ids.len()));
        older.iter().chain(newer).cloned().collect()
    }
}

/// Sample ids, allocated only once a key comes near its threshold.
///
/// Most keys never get there, and a request id per key would dominate memory with a million
/// clients. Sampling only events recorded with a count above `cap - MAX_SAMPLES` still captures
/// the last five events of any trigger: the count when each of them was recorded was at least
/// the count at the trigger minus the events recorded since (expiry only lowers it later).
#[derive(Debug, Default, Clone)]
pub(crate) struct LazySamples(Option<Box<Samples>>);

impl LazySamples {
    /// Remembers `id` if `count` is close enough to `cap` for it to be evidence of a trigger.
    pub(crate) fn push_if_near(&mut self, count: usize, cap: usize, id: &str) {
        if count + MAX_SAMPLES > cap {
            self.0.get_or_insert_with(Box::default).push(id);
        }
    }

    /// The held ids, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.0.as_ref().map(|s| s.to_vec()).unwrap_or_default()
    }
}

/// The recent event times of one key.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventWindow {
    times: VecDeque<i64>,
    samples: LazySamples,
}

impl EventWindow {
    /// Records an event at `now_ms` and returns how many events fall in `(now - window, now]`,
    /// counting at most `cap`.
    pub(crate) fn record(
        &mut self,
        now_ms: i64,
        window_ms: i64,
        cap: usize,
        request_id: &str,
    ) -> usize {
        self.expire(now_ms, window_ms);
        if self.times.len() >= cap {
            self.times.pop_front();
        }
        self.times.push_back(now_ms);
        let n = self.times.len();
        self.samples.push_if_near(n, cap, request_id);
        n
    }

    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while self.times.front().is_some_and(|&t| t <= now_ms - window_ms) {
            self.times.pop_front();
        }
    }

    /// True when no event is left in the window: the state is the same as a fresh one.
    pub(crate) fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        self.times.back().is_none_or(|&t| t <= now_ms - window_ms)
    }

    /// The evidence for a trigger.
    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.to_vec()
    }
}

/// A map keyed by client-derived keys. foldhash, seeded per map, is several times faster than
/// SipHash on these `u128` keys (measured: the largest cost in the engine after the rules' own
/// logic) and the seed keeps a client from choosing colliding keys.
pub(crate) type KeyMap<V> = HashMap<u128, V, foldhash::fast::RandomState>;

/// Windows per key, with idle keys evicted by [`Keyed::evict_idle`].
#[derive(Debug, Default)]
pub(crate) struct Keyed<W> {
    map: KeyMap<W>,
}

impl<W: Default> Keyed<W> {
    /// The window of `key`, created empty.
    pub(crate) fn entry(&mut self, key: u128) -> &mut W {
        self.map.entry(key).or_default()
    }

    /// Forgets `key` (after it triggered: the next trigger needs fresh evidence).
    pub(crate) fn remove(&mut self, key: u128) {
        self.map.remove(&key);
    }

    /// Forgets `key` and returns its window (after it triggered: the window is the evidence,
    /// and the next trigger needs fresh evidence).
    pub(crate) fn take(&mut self, key: u128) -> Option<W> {
        self.map.remove(&key)
    }

    /// Drops every key for which `idle` holds and gives back memory after a burst of clients.
    pub(crate) fn evict_idle(&mut self, idle: impl Fn(&W) -> bool) {
        self.map.retain(|_, w| !idle(w));
        shrink(&mut self.map);
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Shrinks a map that is mostly empty; not every time, or a steady population would rehash on
/// every maintenance pass.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_events_inside_the_window_count_in_full() {
        let mut w = EventWindow::default();
        let mut n = 0;
        for i in 0..10 {
            n = w.record(1_000 + i * 6_000, 60_000, 10, "r");
        }
        // Events at 1s .. 55s, all within one minute of the last.
        assert_eq!(n, 10);
    }

    #[test]
    fn an_event_exactly_one_window_old_no_longer_counts() {
        let mut w = EventWindow::default();
        w.record(0, 60_000, 10, "a");
        assert_eq!(w.record(59_999, 60_000, 10, "b"), 2);
        assert_eq!(
            w.record(60_000, 60_000, 10, "c"),
            2,
            "the event at 0 is out"
        );
        assert!(!w.is_idle(119_999, 60_000));
        assert!(w.is_idle(120_000, 60_000));
    }

    #[test]
    fn counting_stops_at_the_cap() {
        let mut w = EventWindow::default();
        for i in 0..100 {
            assert!(w.record(i, 60_000, 10, "r") <= 10);
        }
        assert_eq!(w.times.len(), 10);
    }

    #[test]
    fn samples_are_the_last_five_events_and_only_kept_near_the_threshold() {
        let mut w = EventWindow::default();
        for i in 0..4 {
            w.record(i, 60_000, 10, &format!("r{i}"));
        }
        assert!(
            w.samples.0.is_none(),
            "far from the threshold: nothing allocated"
        );
        // Some events expire on the way: the last five are still all sampled.
        for i in 4..40 {
            w.record(i * 5_000, 60_000, 10, &format!("r{i}"));
        }
        assert_eq!(w.samples(), ["r35", "r36", "r37", "r38", "r39"]);
    }

    #[test]
    fn samples_keep_the_last_five_oldest_first() {
        let mut s = Samples::default();
        for i in 0..8 {
            s.push(&format!("r{i}"));
        }
        assert_eq!(s.to_vec(), ["r3", "r4", "r5", "r6", "r7"]);
    }
}
