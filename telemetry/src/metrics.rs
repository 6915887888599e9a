//! A minimal metrics registry: counters and gauges are registered once by name and labels and
//! live for the life of the process, so hot paths only touch an atomic.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// A monotonically increasing count (drops, retries, dead letters, records).
#[derive(Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (active flows, queue depth).
#[derive(Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy)]
enum Metric {
    Counter(&'static Counter),
    Gauge(&'static Gauge),
}

struct Family {
    help: &'static str,
    series: BTreeMap<String, Metric>,
}

fn families() -> &'static Mutex<BTreeMap<&'static str, Family>> {
    static FAMILIES: OnceLock<Mutex<BTreeMap<&'static str, Family>>> = OnceLock::new();
    FAMILIES.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn label_text(labels: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(text, "{k}=\"{escaped}\"");
    }
    text
}

/// The metric `name{labels}`, made by `make` on first use.
fn register(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    make: impl FnOnce() -> Metric,
) -> Metric {
    let mut families = families().lock().unwrap_or_else(|e| e.into_inner());
    let family = families.entry(name).or_insert_with(|| Family {
        help,
        series: BTreeMap::new(),
    });
    *family.series.entry(label_text(labels)).or_insert_with(make)
}

/// The counter `name{labels}`, registered on first use.
pub fn counter(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
) -> &'static Counter {
    let make = || Metric::Counter(Box::leak(Box::new(Counter(AtomicU64::new(0)))));
    match register(name, help, labels, make) {
        Metric::Counter(c) => c,
        Metric::Gauge(_) => panic!("metric {name} registered as a gauge and a counter"),
    }
}

/// The gauge `name{labels}`, registered on first use.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> &'static Gauge {
    let make = || Metric::Gauge(Box::leak(Box::new(Gauge(AtomicI64::new(0)))));
    match register(name, help, labels, make) {
        Metric::Gauge(g) => g,
        Metric::Counter(_) => panic!("metric {name} registered as a counter and a gauge"),
    }
}

/// Prometheus text exposition of every registered metric.
pub fn render() -> String {
    let families = families().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for (name, family) in families.iter() {
        let kind = match family.series.values().next() {
            Some(Metric::Gauge(_)) => "gauge",
            _ => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, metric) in &family.series {
            let value = match metric {
                Metric::Counter(c) => c.get() as i64,
                Metric::Gauge(g) => g.get(),
            };
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_labels() {
        counter("test_records_total", "Records.", &[("stage", "a\"b")]).add(3);
        gauge("test_depth", "Depth.", &[]).set(-2);
        let text = render();
        assert!(text.contains("# TYPE test_records_total counter"), "{text}");
        assert!(
            text.contains("test_records_total{stage=\"a\\\"b\"} 3"),
            "{text}"
        );
        assert!(text.contains("test_depth -2"), "{text}");
    }

    #[test]
    fn same_name_and_labels_is_the_same_counter() {
        let a = counter("test_same_total", "Same.", &[("k", "v")]);
        let b = counter("test_same_total", "Same.", &[("k", "v")]);
        a.inc();
        assert_eq!(b.get(), 1);
    }
}
