//! The Prometheus text format (0.0.4) read back, for `skywire demo daemon` to check what
//! its node serves on `/metrics`: a demo's check of its own node's output, not a parser
//! the product relies on (nothing in the node or the manager reads an exposition; they
//! only write one, through `prometheus-client`'s encoder, [`crate::metrics`]). `promtool
//! check metrics`, when installed, is the authority beside it.
//!
//! What it reads: `# HELP` and `# TYPE` lines, other comments, empty lines, and samples
//! (`name{label="value",...} value [timestamp]`, label values with `\\`, `\"` and `\n`
//! escapes). It is stricter than the format in one way: every sample must belong to the
//! family the last `# TYPE` line opened, as a scraper groups them (see
//! [`parse_exposition`]). It reads text from a socket, so it is fuzzed like every reader
//! (`fuzz/`, target `metrics_text`).

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its metric name.
    pub name: String,
    /// Its labels, names and values (unescaped), in order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl core::fmt::Display for Sample {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

/// An exposition read by [`parse_exposition`].
#[derive(Debug, Default)]
pub struct Exposition {
    /// Families opened by a `# TYPE` line.
    pub families: usize,
    /// `# HELP` lines.
    pub helps: usize,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The first sample named `name` (with the label `label`, if given).
    pub fn find(&self, name: &str, label: Option<(&str, &str)>) -> Option<&Sample> {
        self.samples.iter().find(|s| {
            s.name == name
                && label.is_none_or(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The value of [`Self::find`]'s sample.
    pub fn value(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        self.find(name, label).map(|s| s.value)
    }
}

/// Why a text is not an exposition, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ExpositionError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Read `text` as the Prometheus text format (see the module docs). A sample belongs to
/// the family of the last `# TYPE` line when it has the family's name, or the family's name
/// and `_bucket`, `_sum` or `_count` for a histogram (`_sum`, `_count` for a summary;
/// `_total`, `_created` for a counter). The error names the first line that is not right.
pub fn parse_exposition(text: &str) -> Result<Exposition, ExpositionError> {
    let mut parsed = Exposition::default();
    let mut typed: Vec<String> = Vec::new();
    let mut family: Option<(String, &str)> = None;
    for (index, line) in text.lines().enumerate() {
        let fail = |problem| ExpositionError {
            line: index + 1,
            problem,
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(fail("a HELP line without a metric name"));
                    }
                    parsed.helps += 1;
                }
                Some("TYPE") => {
                    let name = words.next().unwrap_or_default();
                    let kind = words.next().unwrap_or_default().trim();
                    if !is_metric_name(name) {
                        return Err(fail("a TYPE line without a metric name"));
                    }
                    let kind = ["counter", "gauge", "histogram", "summary", "untyped"]
                        .into_iter()
                        .find(|k| *k == kind)
                        .ok_or_else(|| fail("a TYPE that is none of counter, gauge, histogram, summary, untyped"))?;
                    if typed.iter().any(|t| t == name) {
                        return Err(fail("a second TYPE line for one family"));
                    }
                    typed.push(name.to_owned());
                    family = Some((name.to_owned(), kind));
                    parsed.families += 1;
                }
                // Any other comment.
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(fail)?;
        let Some((name, kind)) = &family else {
            return Err(fail("a sample before any TYPE line"));
        };
        let suffixes: &[&str] = match *kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count"],
            "counter" => &["_total", "_created"],
            _ => &[],
        };
        let in_family = sample.name == *name
            || sample
                .name
                .strip_prefix(name.as_str())
                .is_some_and(|rest| suffixes.contains(&rest));
        if !in_family {
            return Err(fail("a sample outside the family its TYPE line opened"));
        }
        parsed.samples.push(sample);
    }
    Ok(parsed)
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One sample line.
fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let end = line
        .find(['{', ' ', '\t'])
        .ok_or("a sample without a value")?;
    let (name, mut rest) = line
        .split_at_checked(end)
        .ok_or("a sample without a value")?;
    if !is_metric_name(name) {
        return Err("a sample whose name is not a metric name");
    }
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before a sample's value");
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or("a sample whose value is not a number")?;
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err("a timestamp that is not whole milliseconds");
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp after a sample's name");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The labels after a sample's `{`, into `labels`; returns the text after the `}`.
fn parse_labels<'t>(
    mut text: &'t str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'t str, &'static str> {
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return Ok(rest);
        }
        let (name, rest) = text.split_once('=').ok_or("a label without `=`")?;
        if !is_label_name(name) {
            return Err("a label whose name is not a label name");
        }
        let rest = rest
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let after = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("a label value with an unknown escape"),
                },
                Some((i, '"')) => break rest.get(i + 1..).unwrap_or_default(),
                Some((_, c)) => value.push(c),
                None => return Err("a label value without its closing quote"),
            }
        };
        labels.push((name.to_owned(), value));
        text = match after.strip_prefix(',') {
            Some(next) => next,
            None if after.starts_with('}') => after,
            None => return Err("labels not separated by `,`"),
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn an_exposition_is_read_with_its_families_labels_and_values() {
        let text = "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\n\
                    x_bytes_total{route=\"to-b\",peer=\"a\\\"b\\\\c\\nd\"} 1234\n\
                    # a comment\n\n# TYPE x_seconds histogram\n\
                    x_seconds_bucket{le=\"0.1\"} 1\nx_seconds_bucket{le=\"+Inf\"} 2\n\
                    x_seconds_sum 0.3\nx_seconds_count 2 1700000000000\n\
                    # TYPE up gauge\nup{} NaN\n";
        let parsed = parse_exposition(text).unwrap();
        assert_eq!((parsed.families, parsed.helps), (3, 1));
        assert_eq!(parsed.samples.len(), 6);
        let bytes = parsed
            .find("x_bytes_total", Some(("route", "to-b")))
            .unwrap();
        assert_eq!(bytes.value, 1234.0);
        assert_eq!(bytes.labels[1].1, "a\"b\\c\nd");
        assert_eq!(
            parsed.value("x_seconds_bucket", Some(("le", "+Inf"))),
            Some(2.0)
        );
        assert!(parsed.value("up", None).unwrap().is_nan());
        assert_eq!(parsed.value("x_bytes_total", Some(("route", "to-c"))), None);
    }

    #[test]
    fn what_is_not_an_exposition_is_refused_with_its_line() {
        let cases = [
            ("x 1\n", 1, "a sample before any TYPE line"),
            (
                "# TYPE x gauge\nx one\n",
                2,
                "a sample whose value is not a number",
            ),
            (
                "# TYPE x gauge\nx{a=\"1} 1\n",
                2,
                "a label value without its closing quote",
            ),
            (
                "# TYPE x gauge\nx{a=\"1\" b=\"2\"} 1\n",
                2,
                "labels not separated by `,`",
            ),
            (
                "# TYPE x gauge\nx{1a=\"1\"} 1\n",
                2,
                "a label whose name is not a label name",
            ),
            (
                "# TYPE x gauge\nx{a=\"\\t\"} 1\n",
                2,
                "a label value with an unknown escape",
            ),
            (
                "# TYPE x gauge\n# TYPE x gauge\n",
                2,
                "a second TYPE line for one family",
            ),
            (
                "# TYPE x meter\n",
                1,
                "a TYPE that is none of counter, gauge, histogram, summary, untyped",
            ),
            (
                "# TYPE x gauge\ny 1\n",
                2,
                "a sample outside the family its TYPE line opened",
            ),
            (
                "# TYPE x gauge\nx 1 2 3\n",
                2,
                "more than a value and a timestamp after a sample's name",
            ),
            (
                "# TYPE x gauge\nx{}1\n",
                2,
                "no space before a sample's value",
            ),
            (
                "# TYPE x gauge\n9x 1\n",
                2,
                "a sample whose name is not a metric name",
            ),
        ];
        for (text, line, problem) in cases {
            assert_eq!(
                parse_exposition(text).unwrap_err(),
                ExpositionError { line, problem },
                "{text:?}"
            );
        }
    }
}
