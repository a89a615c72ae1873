//! Prometheus metrics: the exposition text and the small HTTP server that serves it, shared
//! by the node (`node.metrics`, [`crate::node::metrics`]) and the manager
//! (`manager.metrics`, [`crate::manager::metrics`]).
//!
//! - [`http`]: sans-IO HTTP/1.1 request parsing and responses (`GET /metrics` only).
//! - [`MetricsServer`]: the TCP listener, a thread per connection, bounded in connections,
//!   request size and time ([`server`]).
//! - [`Exposition`] and [`Histogram`] here: what a source writes its families with, on
//!   top of `prometheus-client`'s encoder, in the Prometheus text format 0.0.4
//!   ([`CONTENT_TYPE`]).
//!
//! How values get here: nothing in the data plane or the manager's core counts for
//! Prometheus. On each scrape the source takes the snapshot its own tools show (the
//! node's `status`, exactly what `skywire status --json` prints; the manager core's
//! `stats`) and writes it as families; a scrape costs one status request and no work per
//! packet. So `/metrics` and `status` cannot disagree, and a series exists only as long as
//! the thing it counts.
//!
//! Names follow Prometheus' practice: the `skywire_` prefix, one base unit in the name
//! (`_bytes`, `_seconds`), `_total` on counters (added by the encoder), the direction in
//! the name (`rx`/`tx`), and labels only with a small, closed set of values (`reason`,
//! `state`, `result`); per-route series (`route`, `peer`) only when the operator asks for
//! them (`node.metrics.per_route`), as their number grows with the routes.
//!
//! Why `prometheus-client` (the official Rust client) rather than formatting by hand: its
//! encoder owns the fiddly parts of the format (escaping of help and label values, the
//! `_total` suffix, histogram buckets with `le` and `+Inf`, number formatting), and its
//! `Collector` trait is made for values read from elsewhere at scrape time, which is all
//! this needs. Its Prometheus text encoder (0.26) is used rather than its default
//! OpenMetrics one: `promtool check metrics` (Prometheus 2.42, Debian's) lints
//! OpenMetrics counters as families without help. No HTTP framework: one path, one
//! method, a few scrapers; a hyper or axum server would bring tokio for that.

pub mod http;
pub mod server;

use core::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use server::{MetricsServer, Source};

/// The `Content-Type` of the exposition: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The version label of `skywire_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Labels of one series: names and values.
pub type Labels<'a> = Vec<(&'static str, &'a str)>;

/// What a source writes its families with (see [`render`]). Every family is written whole
/// in one call: its help, its type and all its series.
pub struct Exposition<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl fmt::Debug for Exposition<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exposition")
    }
}

impl Exposition<'_> {
    /// A counter family without labels. `name` has no `_total`: the encoder adds it.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(encoder)
    }

    /// A gauge family without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(encoder)
    }

    /// A gauge family of floating-point values, without labels.
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(encoder)
    }

    /// A counter family with one series per label set.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in series {
            ConstCounter::new(value).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family with one series per label set.
    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, i64)>,
    ) -> fmt::Result {
        let mut encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in series {
            ConstGauge::new(value).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family of floating-point values with one series per label set.
    pub fn gauges_f64<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut encoder = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in series {
            ConstGauge::new(value).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram family without labels.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> fmt::Result {
        let mut encoder =
            self.encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?;
        let buckets = histogram.buckets();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            histogram.sum,
            histogram.count,
            &buckets,
            None,
        )
    }

    /// `skywire_build_info{version}` 1, the pseudo-metric that says what runs.
    pub fn build_info(&mut self) -> fmt::Result {
        self.gauges(
            "skywire_build_info",
            "The skywire version running, as a label; always 1.",
            [(vec![("version", VERSION)], 1)],
        )
    }
}

/// The exposition text of what `write` writes, in the Prometheus text format.
pub fn render(
    write: impl Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync + 'static,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Writer(Box::new(write))));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// [`render`]'s closure as a `prometheus-client` collector, called once by the encoder.
type WriteFn = Box<dyn Fn(&mut Exposition<'_>) -> fmt::Result + Send + Sync>;

struct Writer(WriteFn);

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Writer")
    }
}

impl Collector for Writer {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        (self.0)(&mut Exposition { encoder })
    }
}

/// A histogram of durations in seconds, plain data: the manager's core keeps one (no
/// atomics, no clock), and [`Exposition::histogram`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending; `+Inf` is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`, for `+Inf`.
    counts: Vec<u64>,
    /// The sum of the observations.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

impl Histogram {
    /// Buckets for work that takes from microseconds to a second or so (a route search
    /// over a few nodes to ten thousand): 10 µs to 2.5 s.
    pub const COMPUTE_BOUNDS: &'static [f64] = &[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];

    /// An empty histogram with these bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Count one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get_mut(bucket) {
            *count = count.saturating_add(1);
        }
        self.sum += seconds;
        self.count = self.count.saturating_add(1);
    }

    /// `(upper bound, observations above the previous bound and at or below this one)`
    /// per bucket, `+Inf` last; the encoder adds them up into Prometheus' cumulative `le`
    /// buckets.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_in_the_prometheus_text_format() {
        let text = render(|e| {
            e.counter("skywire_test_rx_bytes", "Bytes in.", 5)?;
            e.gauge("skywire_test_routes", "Routes.", 2)?;
            e.counters(
                "skywire_test_drops",
                "Drops by reason.",
                [
                    (vec![("reason", "bad tag")], 1),
                    (vec![("reason", "a \"quoted\"\\ one\n")], 2),
                ],
            )?;
            e.build_info()
        })
        .unwrap();
        let expected = format!(
            "# HELP skywire_test_rx_bytes_total Bytes in.\n\
             # TYPE skywire_test_rx_bytes_total counter\n\
             skywire_test_rx_bytes_total 5\n\
             # HELP skywire_test_routes Routes.\n\
             # TYPE skywire_test_routes gauge\n\
             skywire_test_routes 2\n\
             # HELP skywire_test_drops_total Drops by reason.\n\
             # TYPE skywire_test_drops_total counter\n\
             skywire_test_drops_total{{reason=\"bad tag\"}} 1\n\
             skywire_test_drops_total{{reason=\"a \\\"quoted\\\"\\\\ one\\n\"}} 2\n\
             # HELP skywire_build_info The skywire version running, as a label; always 1.\n\
             # TYPE skywire_build_info gauge\n\
             skywire_build_info{{version=\"{VERSION}\"}} 1\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let mut h = Histogram::new(&[0.001, 0.01]);
        for s in [0.0005, 0.001, 0.005, 3.0] {
            h.observe(s);
        }
        assert_eq!(h.buckets(), vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)]);
        assert_eq!(h.count, 4);
        let text = render(move |e| e.histogram("skywire_test_seconds", "Time.", &h)).unwrap();
        assert!(
            text.contains("# TYPE skywire_test_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("skywire_test_seconds_bucket{le=\"0.01\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("skywire_test_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("skywire_test_seconds_count 4\n"), "{text}");
        assert!(text.contains("skywire_test_seconds_sum 3.0065"), "{text}");
    }
}
