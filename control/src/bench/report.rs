//! Results: repeated samples per metric, tunnel and hop count, summarised as median and
//! min-max; the targets of the fast-path issue checked against them; and the three outputs
//! (a text table, JSON, an SVG picture).

use std::fmt::Write as _;

use serde::Serialize;

/// Facts about the run, for the record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// The TCP congestion control iperf3's connections use (the host's default).
    pub tcp_congestion_control: String,
    /// CPUs online and their model.
    pub cpus: String,
    /// This program's version and the git commit it was built from, if known.
    pub skywire: String,
    /// boringtun-cli's version, or why it was not run.
    pub boringtun: String,
    /// iperf3's version.
    pub iperf3: String,
    /// The command line.
    pub command: String,
    /// Seconds per measurement run.
    pub seconds: u64,
    /// Repetitions of each run.
    pub repetitions: usize,
}

/// All samples of one metric for one tunnel on one chain.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured (`tcp_1_stream_forward`, ...).
    pub metric: String,
    /// Its unit.
    pub unit: &'static str,
    /// `skywire`, `boringtun`, ...
    pub tunnel: String,
    /// Hops of the path: relays + 1.
    pub hops: usize,
    /// Every sample, in run order.
    pub samples: Vec<f64>,
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// One target of the issue, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What it says.
    pub name: String,
    /// The measured value it is about.
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// Whether the value meets it.
    pub met: bool,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Facts about the run.
    pub meta: Meta,
    /// The measurements.
    pub measurements: Vec<Measurement>,
    /// The targets checked.
    pub targets: Vec<Target>,
    /// Parts skipped, and why.
    pub skipped: Vec<String>,
}

/// Median of `values` (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        _ => {
            let (a, b) = (v.get(n / 2 - 1), v.get(n / 2));
            a.zip(b).map_or(f64::NAN, |(a, b)| (a + b) / 2.0)
        }
    }
}

/// The `p`-th percentile (0-100) of `values`, nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied().unwrap_or(f64::NAN)
}

impl Report {
    /// Add a sample.
    pub fn add(&mut self, metric: &str, unit: &'static str, tunnel: &str, hops: usize, value: f64) {
        let found = self
            .measurements
            .iter_mut()
            .find(|m| m.metric == metric && m.tunnel == tunnel && m.hops == hops);
        let m = match found {
            Some(m) => m,
            None => {
                self.measurements.push(Measurement {
                    metric: metric.to_owned(),
                    unit,
                    tunnel: tunnel.to_owned(),
                    hops,
                    samples: Vec::new(),
                    median: f64::NAN,
                    min: f64::NAN,
                    max: f64::NAN,
                });
                let Some(m) = self.measurements.last_mut() else {
                    return;
                };
                m
            }
        };
        m.samples.push(value);
        m.median = median(&m.samples);
        m.min = m.samples.iter().copied().fold(f64::INFINITY, f64::min);
        m.max = m.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    }

    /// The median of a metric, if measured.
    pub fn median_of(&self, metric: &str, tunnel: &str, hops: usize) -> Option<f64> {
        self.measurements
            .iter()
            .find(|m| m.metric == metric && m.tunnel == tunnel && m.hops == hops)
            .map(|m| m.median)
            .filter(|v| v.is_finite())
    }

    /// Check a target: `value` against `bound`, higher is better unless `at_most`.
    pub fn target(&mut self, name: &str, value: Option<f64>, bound: f64, at_most: bool) {
        let Some(value) = value else {
            self.skipped
                .push(format!("target not checked (not measured): {name}"));
            return;
        };
        let met = if at_most {
            value <= bound
        } else {
            value >= bound
        };
        self.targets.push(Target {
            name: name.to_owned(),
            value,
            bound,
            met,
        });
    }

    /// The tunnels measured, in first-seen order.
    fn tunnels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.measurements {
            if !out.contains(&m.tunnel) {
                out.push(m.tunnel.clone());
            }
        }
        out
    }

    /// The (metric, hops) rows, in first-seen order.
    fn rows(&self) -> Vec<(String, &'static str, usize)> {
        let mut out: Vec<(String, &'static str, usize)> = Vec::new();
        for m in &self.measurements {
            if !out
                .iter()
                .any(|(metric, _, hops)| *metric == m.metric && *hops == m.hops)
            {
                out.push((m.metric.clone(), m.unit, m.hops));
            }
        }
        out
    }

    /// The results as a text table (median and min-max per tunnel), then the targets.
    pub fn table(&self) -> String {
        let tunnels = self.tunnels();
        let m = &self.meta;
        let mut out = format!(
            "date {}; kernel {}; {} CPUs: {}\nskywire {}; boringtun: {}; {}; TCP congestion \
             control {}\n{} s per run, {} runs each; command: {}\n\n",
            m.date,
            m.kernel,
            m.cpus.split(' ').next().unwrap_or(""),
            m.cpus.split_once(" x ").map_or("", |(_, model)| model),
            m.skywire,
            m.boringtun,
            m.iperf3,
            m.tcp_congestion_control,
            m.seconds,
            m.repetitions,
            m.command,
        );
        let _ = write!(out, "{:<34} {:>4} {:<10}", "metric", "hops", "unit");
        for t in &tunnels {
            let _ = write!(out, " {t:>30}");
        }
        out.push('\n');
        for (metric, unit, hops) in self.rows() {
            let _ = write!(out, "{metric:<34} {hops:>4} {unit:<10}");
            for t in &tunnels {
                let cell = self
                    .measurements
                    .iter()
                    .find(|m| m.metric == metric && m.hops == hops && &m.tunnel == t)
                    .map_or_else(
                        || "-".to_owned(),
                        |m| {
                            format!(
                                "{} [{} - {}]",
                                number(m.median),
                                number(m.min),
                                number(m.max)
                            )
                        },
                    );
                let _ = write!(out, " {cell:>30}");
            }
            out.push('\n');
        }
        if !self.targets.is_empty() {
            out.push_str("\ntargets:\n");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "  [{}] {}: {} (bound {})",
                    if t.met { "met" } else { "MISSED" },
                    t.name,
                    number(t.value),
                    number(t.bound)
                );
            }
        }
        for s in &self.skipped {
            let _ = writeln!(out, "  skipped: {s}");
        }
        out
    }

    /// The comparison as an SVG bar chart: for each metric measured for more than one
    /// tunnel or hop count, a bar per tunnel and chain (median) with a min-max whisker,
    /// each panel scaled to its own largest value.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 760.0;
        const LABEL: f64 = 250.0;
        const BAR: f64 = 16.0;
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"];
        let tunnels = self.tunnels();
        let mut body = String::new();
        let mut y = 50.0;
        for (metric, unit, _) in self.rows_by_metric() {
            let bars: Vec<&Measurement> = self
                .measurements
                .iter()
                .filter(|m| m.metric == metric && m.median.is_finite())
                .collect();
            let scale = bars.iter().map(|m| m.max).fold(0.0, f64::max);
            if bars.is_empty() || scale <= 0.0 {
                continue;
            }
            let lower_is_better = ["latency", "ping", "cpu", "rss", "retransmits"]
                .iter()
                .any(|w| metric.contains(w));
            let _ = writeln!(
                body,
                r#"<text x="10" y="{y}" font-weight="bold">{} ({}, {} is better)</text>"#,
                escape(&metric),
                escape(unit),
                if lower_is_better { "lower" } else { "higher" }
            );
            y += 8.0;
            for m in bars {
                let colour = tunnels
                    .iter()
                    .position(|t| *t == m.tunnel)
                    .and_then(|i| colours.get(i % colours.len()))
                    .copied()
                    .unwrap_or("#777");
                let w = |v: f64| (v / scale) * (WIDTH - LABEL - 90.0);
                let _ = writeln!(
                    body,
                    "<text x=\"20\" y=\"{ty}\">{tunnel}, {hops} hop{s}</text>\n\
                     <rect x=\"{LABEL}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{BAR}\" fill=\"{colour}\"/>\n\
                     <line x1=\"{x1:.1}\" x2=\"{x2:.1}\" y1=\"{my}\" y2=\"{my}\" stroke=\"black\"/>\n\
                     <text x=\"{tx:.1}\" y=\"{ty}\">{value}</text>",
                    ty = y + 12.0,
                    tunnel = escape(&m.tunnel),
                    hops = m.hops,
                    s = if m.hops == 1 { "" } else { "s" },
                    bw = w(m.median),
                    x1 = LABEL + w(m.min),
                    x2 = LABEL + w(m.max),
                    my = y + BAR / 2.0,
                    tx = LABEL + w(m.max) + 6.0,
                    value = number(m.median),
                );
                y += BAR + 4.0;
            }
            y += 18.0;
        }
        let title = format!(
            "skywire bench, {} ({} s x {} runs; bars: median, whiskers: min-max)",
            self.meta.date, self.meta.seconds, self.meta.repetitions
        );
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"24\" font-size=\"14\">{t}</text>\n{body}</svg>\n",
            h = y + 10.0,
            t = escape(&title),
        )
    }

    /// Metrics in first-seen order, one entry each.
    fn rows_by_metric(&self) -> Vec<(String, &'static str, usize)> {
        let mut out: Vec<(String, &'static str, usize)> = Vec::new();
        for (metric, unit, hops) in self.rows() {
            if !out.iter().any(|(m, _, _)| *m == metric) {
                out.push((metric, unit, hops));
            }
        }
        out
    }
}

/// A number with three significant digits or so.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn samples_table_targets_and_svg() {
        let mut r = Report::default();
        for v in [2.0, 3.0, 2.5] {
            r.add("tcp_1_stream_forward", "Gbit/s", "skywire", 1, v);
        }
        r.add("tcp_1_stream_forward", "Gbit/s", "boringtun", 1, 0.5);
        let m = &r.measurements[0];
        assert_eq!((m.median, m.min, m.max), (2.5, 2.0, 3.0));
        assert_eq!(r.median_of("tcp_1_stream_forward", "skywire", 1), Some(2.5));
        assert_eq!(r.median_of("tcp_1_stream_forward", "skywire", 2), None);
        r.target("one stream >= 2.5 Gbit/s", Some(2.5), 2.5, false);
        r.target("rss <= 16", Some(20.0), 16.0, true);
        r.target("never measured", None, 1.0, false);
        assert!(r.targets[0].met && !r.targets[1].met);
        let table = r.table();
        assert!(table.contains("2.50 [2.00 - 3.00]"), "{table}");
        assert!(table.contains("[MISSED] rss <= 16"), "{table}");
        assert!(table.contains("skipped: target not checked"), "{table}");
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"median\":2.5"));
    }
}
