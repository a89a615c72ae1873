//! What can be wrong with a config file, and how it is shown: `FILE:LINE:COL: KEY: MESSAGE`.
//!
//! Every variant names the file. Those about the content also carry the position (1-based
//! line and column, when the parser knows it) and the dotted key path (`apps.foo.daemon`;
//! list items as `default_args[2]`; keys that are not plain words quoted, `apps."a b"`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::MAX_CONFIG_LEN;

/// A config file could not be loaded. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read: missing, not permitted, or a read failed.
    #[error("{}: cannot read the config file", .file.display())]
    Io {
        /// The config file path.
        file: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The path names something other than a regular file (a directory, a FIFO, a device).
    #[error("{}: not a regular file, so not a config file", .file.display())]
    NotRegularFile {
        /// The config file path.
        file: PathBuf,
    },
    /// The file is longer than [`MAX_CONFIG_LEN`]; it was refused before being parsed.
    #[error(
        "{}: {len} bytes is too large for a config file (at most {MAX_CONFIG_LEN})",
        .file.display()
    )]
    TooLarge {
        /// The config file path.
        file: PathBuf,
        /// The length in bytes, as far as it was measured.
        len: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{}:{position}: not UTF-8 text", .file.display())]
    NotUtf8 {
        /// The config file path.
        file: PathBuf,
        /// Where the first byte that is not UTF-8 is.
        position: Position,
    },
    /// The text is not YAML, or its YAML does not fit the schema: an unknown key, a missing
    /// key, a value of the wrong type, a duplicate key.
    #[error("{}: {message}", Origin::new(.file, .position.as_ref(), .key.as_deref()))]
    Parse {
        /// The config file path.
        file: PathBuf,
        /// Where the parser stopped, when it knows.
        position: Option<Position>,
        /// The dotted key path of the offending value, when known.
        key: Option<String>,
        /// The parser's description of the problem (never a snippet of the file).
        message: String,
    },
    /// The YAML fits the schema, but a value is not allowed (an empty app name, an empty path).
    #[error("{}: {problem}", Origin::new(.file, .position.as_ref(), .key.as_deref()))]
    Invalid {
        /// The config file path.
        file: PathBuf,
        /// Where the value is, when known.
        position: Option<Position>,
        /// The dotted key path of the value, when known.
        key: Option<String>,
        /// What is wrong with it.
        problem: Problem,
    },
}

impl ConfigError {
    /// The config file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            Self::Io { file, .. }
            | Self::NotRegularFile { file }
            | Self::TooLarge { file, .. }
            | Self::NotUtf8 { file, .. }
            | Self::Parse { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }

    /// Where in the file the error is, when that is known.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::NotUtf8 { position, .. } => Some(*position),
            Self::Parse { position, .. } | Self::Invalid { position, .. } => *position,
            Self::Io { .. } | Self::NotRegularFile { .. } | Self::TooLarge { .. } => None,
        }
    }

    /// The dotted key path the error is about, when that is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Parse { key, .. } | Self::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// Whether this is a configuration mistake for the operator to fix (exit code 78).
    ///
    /// That is every case except an I/O failure other than "not found": a config file that
    /// was named explicitly and does not exist is a bad configuration too, while a permission
    /// problem or a failing disk is not (the caller maps those by their `io::Error`).
    pub fn is_bad_config(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Self::NotRegularFile { .. }
            | Self::TooLarge { .. }
            | Self::NotUtf8 { .. }
            | Self::Parse { .. }
            | Self::Invalid { .. } => true,
        }
    }
}

/// A place in a config file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The line, from 1.
    pub line: u64,
    /// The column, from 1, in characters.
    pub column: u64,
}

impl Position {
    /// The position just after `prefix`, a text that starts at line 1, column 1.
    pub(super) fn after(prefix: &str) -> Self {
        let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
        let line = prefix.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = prefix.get(line_start..).unwrap_or_default().chars().count() + 1;
        Self {
            line: u64::try_from(line).unwrap_or(u64::MAX),
            column: u64::try_from(column).unwrap_or(u64::MAX),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value that is well-formed YAML of the right type but not allowed.
///
/// The messages are fixed (the offending value is in the key path or the file, never
/// repeated here), and each is distinct: the YAML layer recognises them by their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// An app name is the empty string.
    #[error("app names must not be empty")]
    EmptyAppName,
    /// An app name contains whitespace or a control character, which the console's
    /// whitespace-separated commands (`start NAME ARGS...`) could not address.
    #[error("app names must not contain whitespace or control characters")]
    AppNameNotOneWord,
    /// A path is the empty string.
    #[error("paths must not be empty")]
    EmptyPath,
    /// A path contains a NUL byte, which no system call accepts.
    #[error("paths must not contain a NUL character")]
    NulInPath,
}

impl Problem {
    /// Every problem, for [`Problem::from_message`].
    const ALL: [Self; 4] = [
        Self::EmptyAppName,
        Self::AppNameNotOneWord,
        Self::EmptyPath,
        Self::NulInPath,
    ];

    /// The problem whose message is exactly `message`.
    ///
    /// Our checks run inside deserialization (so the parser attaches the position and the
    /// key path), and serde carries their errors as text; this turns that text back into the
    /// typed problem. No parser message can be mistaken for one: they are whole-string
    /// matches against fixed sentences of ours.
    pub(super) fn from_message(message: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.to_string() == message)
    }
}

/// `FILE:LINE:COL: KEY`, leaving out what is unknown.
struct Origin<'a> {
    file: &'a Path,
    position: Option<&'a Position>,
    key: Option<&'a str>,
}

impl<'a> Origin<'a> {
    fn new(file: &'a Path, position: Option<&'a Position>, key: Option<&'a str>) -> Self {
        Self {
            file,
            position,
            key,
        }
    }
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(position) = self.position {
            write!(f, ":{position}")?;
        }
        if let Some(key) = self.key {
            write!(f, ": {key}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_column_key_message() {
        let err = ConfigError::Parse {
            file: "conf/x.yaml".into(),
            position: Some(Position { line: 3, column: 5 }),
            key: Some("apps.foo.daemon".into()),
            message: "invalid boolean".into(),
        };
        assert_eq!(
            err.to_string(),
            "conf/x.yaml:3:5: apps.foo.daemon: invalid boolean"
        );
        let err = ConfigError::Invalid {
            file: "x.yaml".into(),
            position: None,
            key: None,
            problem: Problem::EmptyPath,
        };
        assert_eq!(err.to_string(), "x.yaml: paths must not be empty");
    }

    #[test]
    fn problems_round_trip_through_their_messages() {
        for problem in Problem::ALL {
            assert_eq!(Problem::from_message(&problem.to_string()), Some(problem));
        }
        assert_eq!(Problem::from_message("app names must not be"), None);
        assert_eq!(Problem::from_message(""), None);
    }

    #[test]
    fn position_after_counts_lines_and_characters() {
        assert_eq!(Position::after(""), Position { line: 1, column: 1 });
        assert_eq!(Position::after("ab"), Position { line: 1, column: 3 });
        assert_eq!(Position::after("a\n"), Position { line: 2, column: 1 });
        assert_eq!(Position::after("a\nxé"), Position { line: 2, column: 3 });
    }

    #[test]
    fn only_io_failures_other_than_not_found_are_not_bad_config() {
        let io = |kind| ConfigError::Io {
            file: "x".into(),
            source: io::Error::from(kind),
        };
        assert!(io(io::ErrorKind::NotFound).is_bad_config());
        assert!(!io(io::ErrorKind::PermissionDenied).is_bad_config());
        assert!(
            ConfigError::TooLarge {
                file: "x".into(),
                len: 1
            }
            .is_bad_config()
        );
    }
}
