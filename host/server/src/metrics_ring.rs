//! The last 15 minutes of some of the server's own metrics, in memory, for
//! the console's charts: request latency per tenant and route, and each
//! plugin stage's time, fuel, failures and skips. A [`RingRecorder`] wraps
//! the Prometheus recorder, so every `metrics::histogram!`/`counter!` call
//! that feeds `/metrics` feeds this ring too, and nothing else in the
//! server records twice. A leaf.
//!
//! Time is cut into [`SLOTS`] slots of [`SLOT_SECONDS`]; each series keeps
//! only the slots in which something was recorded (an idle tenant costs
//! nothing). A histogram slot counts values in log-scale buckets, four per
//! doubling from 1 µs, so a quantile read from it is within a bucket's
//! width (about ±9 %) of the exact one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Width of one slot.
pub const SLOT_SECONDS: u64 = 10;
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 90;
/// Histogram buckets per doubling.
const PER_DOUBLING: f64 = 4.0;
/// Buckets of one histogram slot: 1 µs up to 2^(BUCKETS/4) µs (about 18 min).
const BUCKETS: usize = 120;

/// The metrics the ring keeps (the others go to Prometheus only).
pub const TRACKED: &[&str] = &[REQUEST_SECONDS, PLUGIN_SECONDS, PLUGIN_FUEL, PLUGIN_ERRORS, PLUGIN_SKIPS];
/// Request latency, labels `route`, `tenant`, `status`-less.
pub const REQUEST_SECONDS: &str = "edgerec_request_seconds";
/// One plugin stage call's wall time, labels `tenant`, `stage`.
pub const PLUGIN_SECONDS: &str = "edgerec_plugin_seconds";
/// Fuel a stage used, labels `tenant`, `stage`.
pub const PLUGIN_FUEL: &str = "edgerec_plugin_fuel_total";
/// Stage calls that failed (the request failed or the stage was skipped), labels `tenant`, `stage`.
pub const PLUGIN_ERRORS: &str = "edgerec_plugin_errors_total";
/// Stage calls that failed and were skipped (`on_error: skip`), labels `tenant`, `stage`.
pub const PLUGIN_SKIPS: &str = "edgerec_plugin_skips_total";

/// The process's ring: the metrics recorder is one per process, so is this.
static RING: LazyLock<MetricsRing> = LazyLock::new(MetricsRing::default);

/// The process's ring (empty until a [`RingRecorder`] is installed).
pub fn global() -> &'static MetricsRing {
    &RING
}

/// The current slot number (unix seconds / [`SLOT_SECONDS`]).
pub fn current_slot() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) / SLOT_SECONDS
}

/// The bucket of a duration in seconds.
fn bucket_of(seconds: f64) -> usize {
    let micros = seconds * 1e6;
    if micros.is_nan() || micros <= 1.0 {
        return 0;
    }
    ((micros.log2() * PER_DOUBLING).ceil() as usize).min(BUCKETS - 1)
}

/// A bucket's representative value in seconds: the geometric middle of its bounds.
fn bucket_value(bucket: usize) -> f64 {
    if bucket == 0 {
        return 1e-6;
    }
    2f64.powf((bucket as f64 - 0.5) / PER_DOUBLING) * 1e-6
}

/// What one series recorded in one slot.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// The slot number.
    pub slot: u64,
    /// Values recorded (histograms) or increments (counters).
    pub count: u64,
    /// Their sum (seconds; a counter's total).
    pub sum: f64,
    /// Histograms only: counts per log-scale bucket.
    buckets: Option<Box<[u32; BUCKETS]>>,
}

impl Slot {
    fn empty(slot: u64) -> Slot {
        Slot { slot, count: 0, sum: 0.0, buckets: None }
    }

    fn add(&mut self, other: &Slot) {
        self.count += other.count;
        self.sum += other.sum;
        if let Some(theirs) = &other.buckets {
            let mine = self.buckets.get_or_insert_with(|| Box::new([0; BUCKETS]));
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a = a.saturating_add(*b);
            }
        }
    }

    /// The `q` quantile (0..=1) of a histogram slot in seconds; `None` when
    /// nothing was recorded (or it is a counter's).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let buckets = self.buckets.as_ref()?;
        let total: u64 = buckets.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        // The rank of the q-th value, 1-based, as a sorted list would give it.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (bucket, &count) in buckets.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(bucket_value(bucket));
            }
        }
        None
    }
}

/// One series (a metric name with its labels): its recent slots, oldest first.
#[derive(Default)]
struct Series {
    slots: Mutex<VecDeque<Slot>>,
}

impl Series {
    fn slot_at(&self, now: u64, update: impl FnOnce(&mut Slot)) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.back().is_none_or(|s| s.slot != now) {
            slots.push_back(Slot::empty(now));
        }
        while slots.front().is_some_and(|s| s.slot + SLOTS as u64 <= now) {
            slots.pop_front();
        }
        if let Some(slot) = slots.back_mut() {
            update(slot);
        }
    }

    fn record_at(&self, now: u64, seconds: f64) {
        self.slot_at(now, |slot| {
            slot.count += 1;
            slot.sum += seconds;
            let buckets = slot.buckets.get_or_insert_with(|| Box::new([0; BUCKETS]));
            let bucket = &mut buckets[bucket_of(seconds)];
            *bucket = bucket.saturating_add(1);
        });
    }

    fn increment_at(&self, now: u64, by: u64) {
        self.slot_at(now, |slot| {
            slot.count += 1;
            slot.sum += by as f64;
        });
    }
}

/// The last [`SLOTS`] slots of the tracked metrics, by series.
#[derive(Default)]
pub struct MetricsRing {
    series: RwLock<HashMap<Key, Arc<Series>>>,
}

/// Several series summed slot by slot over the window: one entry per slot,
/// oldest first, the last the current one.
#[derive(Clone, Debug)]
pub struct Window {
    /// [`SLOTS`] slots ending at the current one (empty slots included).
    pub slots: Vec<Slot>,
}

impl Window {
    /// All slots of the window in one.
    pub fn total(&self) -> Slot {
        self.last(self.slots.len())
    }

    /// The last `n` slots in one.
    pub fn last(&self, n: usize) -> Slot {
        let mut sum = Slot::empty(self.slots.last().map_or(0, |s| s.slot));
        for slot in self.slots.iter().rev().take(n) {
            sum.add(slot);
        }
        sum
    }
}

impl MetricsRing {
    fn series(&self, key: &Key) -> Arc<Series> {
        if let Some(series) = self.series.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return series.clone();
        }
        self.series.write().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone()
    }

    /// Records a duration (seconds) of `name` with `labels` in slot `now`.
    pub fn record_at(&self, name: &str, labels: &[(&str, &str)], now: u64, seconds: f64) {
        self.series(&key(name, labels)).record_at(now, seconds);
    }

    /// Adds `by` to the counter `name` with `labels` in slot `now`.
    pub fn increment_at(&self, name: &str, labels: &[(&str, &str)], now: u64, by: u64) {
        self.series(&key(name, labels)).increment_at(now, by);
    }

    /// The series of `name` whose labels include every `(label, value)` of
    /// `filter`, summed slot by slot over the [`SLOTS`] slots ending at `now`.
    pub fn window(&self, name: &str, filter: &[(&str, &str)], now: u64) -> Window {
        let first = now.saturating_sub(SLOTS as u64 - 1);
        let mut slots: Vec<Slot> = (first..=now).map(Slot::empty).collect();
        let matching: Vec<Arc<Series>> = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(key, _)| key.name() == name && filter.iter().all(|(l, v)| has_label(key, l, v)))
            .map(|(_, series)| series.clone())
            .collect();
        for series in matching {
            for slot in series.slots.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                if let Some(index) = slot.slot.checked_sub(first).filter(|&i| i < slots.len() as u64) {
                    slots[index as usize].add(slot);
                }
            }
        }
        Window { slots }
    }

    /// The values of `label` among the series of `name` that match `filter`, sorted.
    pub fn label_values(&self, name: &str, label: &str, filter: &[(&str, &str)]) -> Vec<String> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut values: Vec<String> = series
            .keys()
            .filter(|key| key.name() == name && filter.iter().all(|(l, v)| has_label(key, l, v)))
            .filter_map(|key| key.labels().find(|l| l.key() == label).map(|l| l.value().to_string()))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<metrics::Label> =
        labels.iter().map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string())).collect();
    Key::from_parts(name.to_string(), labels)
}

fn has_label(key: &Key, label: &str, value: &str) -> bool {
    key.labels().any(|l| l.key() == label && l.value() == value)
}

/// A recorder that hands everything to `inner` (the Prometheus recorder)
/// and also keeps the [`TRACKED`] metrics in the [`global`] ring.
pub struct RingRecorder<R> {
    inner: R,
}

impl<R> RingRecorder<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        RingRecorder { inner }
    }
}

struct TeeHistogram {
    inner: Histogram,
    series: Arc<Series>,
}

impl HistogramFn for TeeHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.series.record_at(current_slot(), value);
    }
}

struct TeeCounter {
    inner: Counter,
    series: Arc<Series>,
}

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        self.series.increment_at(current_slot(), value);
    }

    fn absolute(&self, value: u64) {
        // Only the exporter keeps absolute values; the ring counts increments.
        self.inner.absolute(value);
    }
}

impl<R: Recorder> Recorder for RingRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let inner = self.inner.register_counter(key, metadata);
        if !TRACKED.contains(&key.name()) {
            return inner;
        }
        Counter::from_arc(Arc::new(TeeCounter { inner, series: global().series(key) }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        if !TRACKED.contains(&key.name()) {
            return inner;
        }
        Histogram::from_arc(Arc::new(TeeHistogram { inner, series: global().series(key) }))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The plain reference: the value at rank ceil(q·n) of the sorted list.
    fn exact_quantile(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).max(1);
        values[rank - 1]
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_exact_ones_on_random_latencies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ring = MetricsRing::default();
        let mut values = Vec::new();
        for i in 0..5000 {
            // Log-uniform from 20 µs to 2 s: every decade the charts show.
            let seconds = 10f64.powf(rng.random_range(-4.7..0.3));
            values.push(seconds);
            ring.record_at(REQUEST_SECONDS, &[("tenant", "a"), ("route", "r")], 1000 + i % 3, seconds);
        }
        let total = ring.window(REQUEST_SECONDS, &[("tenant", "a")], 1002).total();
        assert_eq!(total.count, 5000);
        assert!((total.sum - values.iter().sum::<f64>()).abs() < 1e-9 * total.sum.max(1.0));
        // One bucket spans a factor 2^(1/4); its middle is within 2^(1/8) (≈ 9 %) of any value in it.
        let tolerance = 2f64.powf(1.0 / 8.0) + 1e-9;
        for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
            let exact = exact_quantile(&mut values, q);
            let estimate = total.quantile(q).unwrap();
            let ratio = estimate / exact;
            assert!(ratio <= tolerance && ratio >= 1.0 / tolerance, "q {q}: {estimate} vs exact {exact}");
        }
    }

    #[test]
    fn the_window_keeps_fifteen_minutes_and_filters_by_label() {
        // Slot numbers as the clock gives them (far from zero).
        const T: u64 = 177_000_000;
        let ring = MetricsRing::default();
        ring.increment_at(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "boost")], T + 10, 7);
        ring.increment_at(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "in-stock")], T + 10, 5);
        ring.increment_at(PLUGIN_FUEL, &[("tenant", "b"), ("stage", "boost")], T + 10, 100);
        ring.increment_at(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "boost")], T + 12, 1);
        let window = ring.window(PLUGIN_FUEL, &[("tenant", "a")], T + 12);
        assert_eq!(window.slots.len(), SLOTS);
        assert_eq!(window.slots.last().map(|s| (s.slot, s.sum)), Some((T + 12, 1.0)));
        assert_eq!(window.total().sum, 13.0);
        assert_eq!(window.last(1).sum, 1.0);
        assert_eq!(ring.window(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "boost")], T + 12).total().sum, 8.0);
        assert_eq!(ring.label_values(PLUGIN_FUEL, "stage", &[("tenant", "a")]), ["boost", "in-stock"]);
        // 90 slots later, slot 10 has left the window; a new record drops it from memory too.
        let later = T + 10 + SLOTS as u64;
        assert_eq!(ring.window(PLUGIN_FUEL, &[("tenant", "a")], later).total().sum, 1.0);
        ring.increment_at(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "boost")], later + 2, 4);
        let series = ring.series(&key(PLUGIN_FUEL, &[("tenant", "a"), ("stage", "boost")]));
        assert_eq!(series.slots.lock().unwrap().len(), 1);
        // A counter has no quantiles; an empty window neither.
        assert_eq!(window.total().quantile(0.5), None);
        assert_eq!(ring.window(REQUEST_SECONDS, &[], T + 12).total().quantile(0.5), None);
    }
}
