//! The YAML edge: text in, a serde value or a located [`ConfigError`] out.
//!
//! `serde-saphyr` parses and reports the line and column of the first error;
//! `serde_path_to_error` wraps its deserializer and records the key path that led there. The
//! parser runs under a [`Budget`] sized for config files, so a small file with aliases cannot
//! expand into a large one, and accepts exactly one YAML document.

use std::borrow::Cow;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_saphyr::{
    Budget, Localizer, Location, Options, RenderOptions, SnippetMode, UserMessageFormatter,
};

use super::MAX_CONFIG_LEN;
use super::error::{ConfigError, Position, Problem};

/// Parse `text` (the content of `file`) into `T`.
pub(super) fn deserialize<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let mut key_path = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            key_path = dotted(err.path());
            err.into_inner()
        })
    });
    result.map_err(|err| located_error(&err, key_path, file))
}

/// Parser options: plain one-line errors and limits sized for a config file. (One document
/// per file is enforced by the single-document entry point, with a clearer message than a
/// document budget would give.)
fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = 32;
    budget.max_nodes = 100_000;
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_total_scalar_bytes = MAX_CONFIG_LEN;

    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    // Errors are shown as one line, `FILE:LINE:COL: KEY: MESSAGE`, not as annotated snippets.
    options.with_snippet = false;
    options
}

/// The parser's error as a [`ConfigError`]: our own checks become [`ConfigError::Invalid`],
/// everything else [`ConfigError::Parse`].
fn located_error(err: &serde_saphyr::Error, key: Option<String>, file: &Path) -> ConfigError {
    let position = err
        .location()
        .filter(|loc| *loc != Location::UNKNOWN)
        .map(|loc| Position {
            line: loc.line(),
            column: loc.column(),
        });
    let message = message_without_location(err);
    match Problem::from_message(&message) {
        Some(problem) => ConfigError::Invalid {
            file: file.to_owned(),
            position,
            key,
            problem,
        },
        None => ConfigError::Parse {
            file: file.to_owned(),
            position,
            key,
            message,
        },
    }
}

/// The parser's message in its wording for operators (no advice about Rust types), without
/// the `at line X, column Y` suffix: the position leads our own format instead.
fn message_without_location(err: &serde_saphyr::Error) -> String {
    let formatter = UserMessageFormatter.with_localizer(&NoLocationSuffix);
    let mut render = RenderOptions::new(&formatter);
    render.snippets = SnippetMode::Off;
    err.render_with_options(render)
}

/// English wording, minus the location suffix.
struct NoLocationSuffix;

impl Localizer for NoLocationSuffix {
    fn attach_location<'a>(&self, base: Cow<'a, str>, _location: Location) -> Cow<'a, str> {
        base
    }
}

/// `apps.foo.default_args[2]`; `None` for the root. Keys that are not plain words are quoted
/// (`apps."my app"`, `apps.""`), so a dot inside a key cannot be mistaken for a separator.
///
/// A syntax error while reading a key leaves an unknown last segment; the path then ends at
/// the map that holds the key (`apps`, not `apps.?`).
fn dotted(path: &serde_path_to_error::Path) -> Option<String> {
    let segments: Vec<&Segment> = path.iter().collect();
    let known = segments
        .iter()
        .rposition(|s| !matches!(s, Segment::Unknown))
        .map_or(0, |last| last + 1);
    let mut out = String::new();
    for segment in segments.into_iter().take(known) {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if is_plain_word(key) {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_plain_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse_err<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> ConfigError {
        deserialize::<T>(text, Path::new("t.yaml")).unwrap_err()
    }

    #[test]
    fn plain_keys_stay_bare_and_odd_ones_are_quoted() {
        type Nested = BTreeMap<String, BTreeMap<String, Vec<u8>>>;
        let err = parse_err::<Nested>("a:\n  \"x.y z\": [1, 2, nope]\n");
        assert_eq!(err.key(), Some("a.\"x.y z\"[2]"), "{err}");
        assert_eq!(
            err.position(),
            Some(Position {
                line: 2,
                column: 19
            })
        );
        let err = parse_err::<Nested>("a_b-1:\n  ok: [x]\n");
        assert_eq!(err.key(), Some("a_b-1.ok[0]"), "{err}");
    }

    #[test]
    fn a_syntax_error_in_a_key_ends_the_path_at_its_map() {
        let err = parse_err::<BTreeMap<String, BTreeMap<String, u8>>>("a:\n  b: 1\n c: 2\n");
        assert_eq!(err.key(), None, "{err}");
        assert_eq!(
            err.position(),
            Some(Position { line: 3, column: 2 }),
            "{err}"
        );
        let err = parse_err::<BTreeMap<String, BTreeMap<String, u8>>>("a: {b: 1\n");
        assert_eq!(err.key(), Some("a"), "{err}");
    }

    #[test]
    fn root_errors_have_no_key_and_one_line() {
        let err = parse_err::<BTreeMap<String, u8>>("a: 1\n---\nb: 2\n");
        assert!(
            matches!(err, ConfigError::Parse { key: None, .. }),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.starts_with("t.yaml:"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
        assert!(!shown.contains("at line"), "{shown}");
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, \
                 *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_err::<BTreeMap<String, serde::de::IgnoredAny>>(&text);
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(err.is_bad_config());
    }
}
