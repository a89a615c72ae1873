//! The YAML edge: text in, a serde value or a located [`ConfigError`] out.
//!
//! `serde-saphyr` parses and reports the line and column of the first error;
//! `serde_path_to_error` wraps its deserializer and records the key path that led there. The
//! parser runs under a [`Budget`] sized for config files, so a small file with aliases cannot
//! expand into a large one, and accepts exactly one YAML document.
//!
//! Checks that span several values (two routes with one name) run after parsing, on typed
//! values that no longer know where they came from. For those, [`Layout`] is the document's
//! shape with the position of every key and list item, read in a second pass over the same
//! text, and [`KeyPath`] names a value in it the way parse errors do (`node.routes[1].in_id`).

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_path_to_error::Segment;
use serde_saphyr::{
    Budget, Localizer, Location, Options, RenderOptions, SnippetMode, Spanned, UserMessageFormatter,
};

use super::MAX_CONFIG_LEN;
use super::error::{ConfigError, Position, Problem};
use crate::keyfile::KeyFileError;

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

/// For a field `#[serde(default, deserialize_with = "yaml::written")]` of type
/// `Option<Option<T>>`: `None` when the key is left out, `Some(None)` when it is written with
/// no value (`manager:`), `Some(Some(value))` otherwise. For the few keys where being written
/// at all means something.
pub(super) fn written<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
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
    let message = redact(&message_without_location(err));
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
            Segment::Seq { index } => push_index(&mut out, *index),
            Segment::Map { key } | Segment::Enum { variant: key } => push_key(&mut out, key),
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

/// Append `.key` (just `key` at the start), quoted unless it is a plain word; a key that
/// could not be a config key is not shown ([`shown_key`]).
fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    if !shown_key(key) {
        out.push_str(&hidden(key));
    } else if is_plain_word(key) {
        out.push_str(key);
    } else {
        out.push_str(&format!("{key:?}"));
    }
}

/// At most this many characters of the file are quoted in an error.
const MAX_QUOTED: usize = 64;

/// Whether an error may quote `key`: something a config's keys could be (an app's name
/// included: words, spaces, dots, dashes), at most [`MAX_QUOTED`] characters. Anything else
/// is not shown, so that a path that names some other file (a symlink to `/etc/shadow`,
/// given to a root daemon) does not get that file's lines printed.
fn shown_key(key: &str) -> bool {
    key.chars().count() <= MAX_QUOTED
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
}

/// Whether an error may quote `value`: at most [`MAX_QUOTED`] printable ASCII characters,
/// none of them `$` (crypt(3) hashes have them).
fn shown_value(value: &str) -> bool {
    value.chars().count() <= MAX_QUOTED
        && value.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !value.contains('$')
}

/// What stands for text of the file that is not shown.
fn hidden(text: &str) -> String {
    format!("<{} characters not shown>", text.chars().count())
}

/// The parser's message with the file's text it quotes (between backticks: keys; between
/// double quotes: values) replaced by [`hidden`] where it may not be shown.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['`', '"']) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let quote = if from.starts_with('`') { '`' } else { '"' };
        let inner = &from[1..];
        let Some(end) = inner.find(quote) else {
            // An unmatched quote: the rest is not shown unless it may be.
            if shown_value(inner) {
                out.push_str(from);
            } else {
                out.push(quote);
                out.push_str(&hidden(inner));
            }
            return out;
        };
        let quoted = &inner[..end];
        let shown = if quote == '`' {
            shown_key(quoted)
        } else {
            shown_value(quoted)
        };
        out.push(quote);
        if shown {
            out.push_str(quoted);
        } else {
            out.push_str(&hidden(quoted));
        }
        out.push(quote);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Append `[index]`.
fn push_index(out: &mut String, index: usize) {
    out.push_str(&format!("[{index}]"));
}

fn is_plain_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A path to a value, shown as parse errors show theirs: `node.routes[1].in_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Step>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The value of a key in a map.
    Key(String),
    /// An item of a list.
    Index(usize),
}

impl KeyPath {
    /// The path to the top-level key `key`.
    pub(super) fn top(key: &str) -> Self {
        Self(vec![Step::Key(key.to_owned())])
    }

    /// The path to `key` in the map this path names.
    pub(super) fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        Self(steps)
    }

    /// The path to item `index` of the list this path names.
    pub(super) fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(key) => push_key(&mut out, key),
                Step::Index(index) => push_index(&mut out, *index),
            }
        }
        f.write_str(&out)
    }
}

/// Where each key and list item of a document is: its shape, without its values.
///
/// Built by [`Layout::of`] from text that [`deserialize`] has accepted, so its second pass
/// cannot meet a syntax error or a budget the first did not; if it fails anyway, the layout
/// is empty and errors lose their line, never their key.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Layout(Option<Spot>);

/// A node of the document and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spot {
    position: Option<Position>,
    shape: Shape,
}

/// What a node holds: the positions of its children, or nothing for a scalar.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// A scalar (or anything else without children).
    Leaf,
    /// A list: its items.
    Seq(Vec<Spot>),
    /// A map: each key as text, where the key is written, and its value.
    Map(Vec<(String, Option<Position>, Spot)>),
}

impl Layout {
    /// The layout of `text`, a document [`deserialize`] has accepted.
    pub(super) fn of(text: &str) -> Self {
        Self(serde_saphyr::from_str_with_options::<Spot>(text, options()).ok())
    }

    /// Where the value at `path` is: for a map key, where the key is written (the line of
    /// `in_id: 5`); for a list item, where the item starts. A path that goes further than the
    /// document (a key left out, so a default) gives the position of the deepest part of it
    /// that is written, so an error about a default still points at its section.
    pub(super) fn position(&self, path: &KeyPath) -> Option<Position> {
        let mut spot = self.0.as_ref()?;
        let mut found = None;
        for step in &path.0 {
            let next = match (step, &spot.shape) {
                (Step::Key(key), Shape::Map(entries)) => entries
                    .iter()
                    .rev()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, at, value)| (at.or(value.position), value)),
                (Step::Index(index), Shape::Seq(items)) => {
                    items.get(*index).map(|item| (item.position, item))
                }
                _ => None,
            };
            let Some((at, value)) = next else { break };
            found = at.or(found);
            spot = value;
        }
        found
    }
}

/// The tree is as large as the document; only say whether there is one.
impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("parsed", &self.0.is_some())
            .finish_non_exhaustive()
    }
}

/// Errors about values after parsing, located by a [`Layout`]: the same `FILE:LINE:COL: KEY`
/// as parse errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Locator<'a> {
    /// The config file, as named in errors.
    pub(super) file: &'a Path,
    /// Its layout.
    pub(super) layout: &'a Layout,
}

impl Locator<'_> {
    /// Where the value at `key` is (see [`Layout::position`]).
    pub(super) fn position(&self, key: &KeyPath) -> Option<Position> {
        self.layout.position(key)
    }

    /// The value at `key` is not allowed.
    pub(super) fn invalid(&self, key: &KeyPath, problem: Problem) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            position: self.position(key),
            key: Some(key.to_string()),
            problem,
        }
    }

    /// The private key file named at `key` cannot be used, for the reason in `source`.
    pub(super) fn unusable_key(&self, key: &KeyPath, source: KeyFileError) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_owned(),
            position: self.position(key),
            key: Some(key.to_string()),
            source,
        }
    }

    /// The value at `key` clashes with the one at `first`, which came before it.
    pub(super) fn conflict(&self, key: &KeyPath, first: &KeyPath, problem: Problem) -> ConfigError {
        ConfigError::Conflict {
            file: self.file.to_owned(),
            position: self.position(key),
            key: Some(key.to_string()),
            problem,
            other_key: first.to_string(),
            other_position: self.position(first),
        }
    }
}

/// A parser location as a [`Position`]; `None` when the parser does not know it.
fn known(location: Location) -> Option<Position> {
    (location != Location::UNKNOWN).then(|| Position {
        line: location.line(),
        column: location.column(),
    })
}

impl<'de> Deserialize<'de> for Spot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Shape>::deserialize(deserializer)?;
        Ok(Self {
            // Where the node is used: for an alias, the `*name`, which is what the reader of
            // an error looks for.
            position: known(spanned.referenced),
            shape: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// Accepts any node; keeps the structure and drops the scalars.
struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_none<E>(self) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        Shape::deserialize(deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Shape, D::Error> {
        Shape::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spot>()? {
            items.push(item);
        }
        Ok(Shape::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spot>()?;
            entries.push((key.value.0, known(key.referenced), value));
        }
        Ok(Shape::Map(entries))
    }
}

/// A map key as text: scalars as written by their value (`1`, `true`); a key that is itself
/// a list or a map, which no section of ours has, as `?`.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }

            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<KeyText, E> {
                Ok(KeyText("?".to_owned()))
            }
            fn visit_none<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText("?".to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText("?".to_owned()))
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
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

    fn at(line: u64, column: u64) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn key_paths_show_like_parse_errors() {
        let routes = KeyPath::top("node").key("routes");
        assert_eq!(routes.to_string(), "node.routes");
        assert_eq!(
            routes.index(1).key("prefixes").index(0).to_string(),
            "node.routes[1].prefixes[0]"
        );
        assert_eq!(KeyPath::top("apps").key("a b").to_string(), "apps.\"a b\"");
    }

    #[test]
    fn the_layout_knows_where_keys_and_items_are() {
        let text = "\
# comment
node:
  key: k
  routes:
    - name: a
      prefixes: [10.0.0.0/8, 10.1.0.0/16]
    -   name: b
        in_id: 5
  relays:
    - { in_id: 7, out_id: 8 }
";
        let layout = Layout::of(text);
        let node = KeyPath::top("node");
        let routes = node.key("routes");
        assert_eq!(layout.position(&node), at(2, 1));
        assert_eq!(layout.position(&node.key("key")), at(3, 3));
        assert_eq!(layout.position(&routes), at(4, 3));
        assert_eq!(layout.position(&routes.index(0)), at(5, 7));
        assert_eq!(layout.position(&routes.index(0).key("name")), at(5, 7));
        let prefixes = routes.index(0).key("prefixes");
        assert_eq!(layout.position(&prefixes.index(1)), at(6, 30));
        assert_eq!(layout.position(&routes.index(1)), at(7, 9));
        assert_eq!(layout.position(&routes.index(1).key("in_id")), at(8, 9));
        let relay = node.key("relays").index(0);
        assert_eq!(layout.position(&relay.key("out_id")), at(10, 19));
        // What is not written points at the deepest part that is.
        assert_eq!(layout.position(&routes.index(1).key("peer")), at(7, 9));
        assert_eq!(layout.position(&node.key("tun").key("mtu")), at(2, 1));
        assert_eq!(layout.position(&KeyPath::top("apps")), None);
        assert_eq!(Layout::of("").position(&node), None);
    }

    #[test]
    fn the_layout_takes_any_document() {
        let text = "a: &x {1: [true, 2.5, ~, !!binary aGk=]}\nb: *x\n? [k]\n: v\n";
        let layout = Layout::of(text);
        assert_eq!(layout.position(&KeyPath::top("b")), at(2, 1));
        assert_eq!(
            layout.position(&KeyPath::top("a").key("1").index(3)),
            at(1, 35)
        );
        assert_eq!(layout.position(&KeyPath::top("?")), at(3, 3));
    }
}
