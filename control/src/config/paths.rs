//! Paths as written in a config file, and their resolution against the file's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::Problem;

/// A path as written in the config file: not empty, no NUL character.
///
/// Relative paths mean "relative to the folder holding the config file", never the current
/// directory of whoever reads the config later; [`PathText::resolve`] applies that. No `~`
/// expansion and no `$PATH` search: `skywire` is the file `skywire` next to the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct PathText(String);

impl PathText {
    /// The path, relative ones joined to `base` (the config file's folder).
    pub(super) fn resolve(&self, base: &Path) -> PathBuf {
        // `join` keeps an absolute path as it is.
        base.join(&self.0)
    }

    /// The text as written.
    pub(super) fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for PathText {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if text.is_empty() {
            Err(Problem::EmptyPath)
        } else if text.contains('\0') {
            Err(Problem::NulInPath)
        } else {
            Ok(Self(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_base_and_absolute_ones_stay() {
        let rel = PathText::try_from("bin/app".to_owned()).unwrap();
        assert_eq!(
            rel.resolve(Path::new("/etc/sky")),
            Path::new("/etc/sky/bin/app")
        );
        assert_eq!(rel.resolve(Path::new("")), Path::new("bin/app"));
        let abs = PathText::try_from("/usr/bin/app".to_owned()).unwrap();
        assert_eq!(
            abs.resolve(Path::new("/etc/sky")),
            Path::new("/usr/bin/app")
        );
    }

    #[test]
    fn empty_and_nul_are_refused() {
        assert_eq!(PathText::try_from(String::new()), Err(Problem::EmptyPath));
        assert_eq!(
            PathText::try_from("a\0b".to_owned()),
            Err(Problem::NulInPath)
        );
    }
}
