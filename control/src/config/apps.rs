//! The `apps:` section: the programs the viscript launcher can start, in the original
//! Viscript schema (REFERENCE.md, "Viscript app config").
//!
//! Each entry is keyed by the app's name:
//!
//! | field | type | required | default |
//! |---|---|---|---|
//! | `path` | string | yes | (an app with no executable cannot start) |
//! | `daemon` | bool | no | `false` |
//! | `desc` | string | no | `""` |
//! | `default_args` | list of strings | no | `[]` |
//! | `help` | string, usually a `|` block | no | `""` |
//! | `outlives_viscript` | bool | no | `false`: the app ends with viscript, also when viscript is killed |
//!
//! The optional fields were optional in the original too (Go zero values), so existing
//! configs keep loading. Scalars in `default_args` are taken as written (`8000` is the
//! argument `"8000"`). Apps keep the order of the file. Whether `path` exists and is
//! executable is not checked here: the launcher reports that when the app is started.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::error::Problem;
use super::paths::PathText;

/// The apps, in the order of the file. Names are unique (a repeated key is a parse error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Apps(Vec<App>);

impl Apps {
    /// The app called `name`.
    pub fn get(&self, name: &str) -> Option<&App> {
        self.0.iter().find(|app| app.name.as_str() == name)
    }

    /// The apps, in the order of the file.
    pub fn iter(&self) -> std::slice::Iter<'_, App> {
        self.0.iter()
    }

    /// How many apps there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Apps {
    type Item = &'a App;
    type IntoIter = std::slice::Iter<'a, App>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One app, `apps.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct App {
    /// The key of the entry.
    pub name: AppName,
    /// A long-running service (restarted on crash with backoff) rather than a one-shot.
    pub daemon: bool,
    /// One-line description shown by `apps`.
    pub desc: String,
    /// The executable.
    pub path: AppPath,
    /// The arguments used when `start` is given none.
    pub default_args: Vec<String>,
    /// Shown by `help <app>`, newlines kept; documents the positional arguments.
    pub help: String,
    /// Keeps running when viscript is gone (killed included); by default an app gets
    /// SIGKILL when viscript's process ends.
    pub outlives_viscript: bool,
}

/// An app's name: not empty, no whitespace or control characters, so that it is one word
/// on the console (`start NAME ARGS...`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct AppName(String);

impl AppName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = Problem;

    fn try_from(name: String) -> Result<Self, Problem> {
        if name.is_empty() {
            Err(Problem::EmptyAppName)
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(Problem::AppNameNotOneWord)
        } else {
            Ok(Self(name))
        }
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An app's `path`: as written (for display) and resolved against the config file's folder
/// (for running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPath {
    written: String,
    resolved: PathBuf,
}

impl AppPath {
    /// The path as written in the config file.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// The path to execute: relative paths joined to the config file's folder.
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }
}

/// `apps:` as written: entries in file order.
#[derive(Debug, Default)]
pub(super) struct RawApps(Vec<(AppName, RawApp)>);

/// `apps.<name>` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(default)]
    daemon: bool,
    #[serde(default)]
    desc: String,
    path: PathText,
    #[serde(default)]
    default_args: Vec<String>,
    #[serde(default)]
    help: String,
    #[serde(default)]
    outlives_viscript: bool,
}

impl RawApps {
    /// The typed section, relative paths resolved against `base`.
    pub(super) fn resolve(self, base: &Path) -> Apps {
        Apps(
            self.0
                .into_iter()
                .map(|(name, raw)| App {
                    name,
                    daemon: raw.daemon,
                    desc: raw.desc,
                    path: AppPath {
                        resolved: raw.path.resolve(base),
                        written: raw.path.into_string(),
                    },
                    default_args: raw.default_args,
                    help: raw.help,
                    outlives_viscript: raw.outlives_viscript,
                })
                .collect(),
        )
    }
}

/// A map read into a list, to keep the order of the file. The parser refuses duplicate keys
/// before they get here.
impl<'de> Deserialize<'de> for RawApps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesInOrder;

        impl<'de> Visitor<'de> for EntriesInOrder {
            type Value = RawApps;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from app names to apps")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawApps, A::Error> {
                // No capacity from `size_hint`: the input decides it, and the file is small.
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawApps(entries))
            }
        }

        deserializer.deserialize_map(EntriesInOrder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_one_word() {
        assert_eq!(
            AppName::try_from("vpn-client_2".to_owned())
                .unwrap()
                .as_str(),
            "vpn-client_2"
        );
        assert_eq!(
            AppName::try_from("meshnet.socks".to_owned())
                .unwrap()
                .to_string(),
            "meshnet.socks"
        );
        assert_eq!(AppName::try_from(String::new()), Err(Problem::EmptyAppName));
        for bad in ["a b", "a\tb", " a", "a\n", "a\u{7}b", "a\u{a0}b"] {
            assert_eq!(
                AppName::try_from(bad.to_owned()),
                Err(Problem::AppNameNotOneWord),
                "{bad:?}"
            );
        }
    }
}
