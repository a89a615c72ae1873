//! `skywire completions SHELL` and `skywire man --dir DIR`: shell completions and man pages
//! generated from the clap definitions of this binary, so they always match the command
//! line (`clap_complete`, `clap_mangen`: the clap project's own generators).
//!
//! Generated when asked, by the binary, rather than in `build.rs`: the command line is
//! spread over `src/*.rs` and takes value parsers from the control crate, so a build script
//! would have to compile all of it a second time (or keep a copy of it that drifts); a
//! packager runs `skywire completions bash > ...` and `skywire man --dir ...` once after
//! the build instead, as for `rg --generate` or `uv generate-shell-completion`. The README's
//! install section says where the files go.
//!
//! Both render into memory first and then write: the generators panic on a failed write
//! (a closed pipe), which is reported here as an error instead. Man pages are written
//! through `output_file` (never through a symlink or a hard link at the path, since this
//! often runs as root into a shared folder). Hidden subcommands (`lab`, a test tool) get
//! no page.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;
use skywire_control::output_file;

/// The name the completions complete, and the man pages are named after.
const BIN: &str = "skywire";

/// Print a shell completion script for skywire's commands and options
///
/// bash: `skywire completions bash > /usr/share/bash-completion/completions/skywire`;
/// zsh: `skywire completions zsh > /usr/local/share/zsh/site-functions/_skywire`;
/// fish: `skywire completions fish > /usr/share/fish/vendor_completions.d/skywire.fish`.
/// Also elvish and powershell.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

/// Write a man page for skywire and one for each of its subcommands
///
/// Pages in section 1, named as man looks them up: skywire.1, skywire-node.1,
/// skywire-route-add.1 and so on. `skywire man --dir /usr/local/share/man/man1` installs
/// them (then `mandb` refreshes man's index). Existing pages of the same names are
/// replaced; a symlink or hard link at a page's path is refused.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The folder to write the pages to (created if missing)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

/// The completion script for `shell`, for the command line `cli`.
pub(crate) fn completion_script(shell: Shell, cli: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut without_hidden(cli), BIN, &mut script);
    script
}

/// `cmd` without its hidden subcommands, at every level: some generators (bash's) would
/// offer them.
fn without_hidden(cmd: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .map(without_hidden)
        .collect();
    // A command keeps its subcommands once given: start from its arguments instead.
    let mut rebuilt = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .subcommands(visible);
    if let Some(about) = cmd.get_about() {
        rebuilt = rebuilt.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        rebuilt = rebuilt.version(version.to_owned());
    }
    rebuilt
}

pub(crate) fn completions(args: &CompletionsArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    let script = completion_script(args.shell, cli);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Every page for the command line `cli`: (file name, roff text), the top command's first,
/// then its subcommands' depth first; hidden ones and `help` left out.
pub(crate) fn man_pages(cli: clap::Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone())
            .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
            .manual(BIN);
        let mut text = Vec::new();
        man.render(&mut text)
            .with_context(|| format!("cannot render the man page of {}", cmd.get_name()))?;
        pages.push((man.get_filename(), text));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), pages)?;
        }
        Ok(())
    }
    // `build` names every subcommand for its page (`skywire-route-add`); `help` would get
    // a page that only says to use --help.
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let mut pages = Vec::new();
    walk(cli, &mut pages)?;
    Ok(pages)
}

pub(crate) fn man(args: &ManArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    let pages = man_pages(cli)?;
    // Every path is checked before anything is written, so a refused one leaves no half
    // set behind.
    let paths: Vec<PathBuf> = pages.iter().map(|(name, _)| args.dir.join(name)).collect();
    if args.dir.exists() {
        for path in &paths {
            output_file::check(path)?;
        }
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    for (path, (_, text)) in paths.iter().zip(&pages) {
        output_file::write(path, text)?;
    }
    println!(
        "wrote {} man pages to {} ({})",
        pages.len(),
        args.dir.display(),
        names(&paths)
    );
    Ok(ExitCode::SUCCESS)
}

/// `skywire.1, skywire-node.1, ...`
fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name().map(Path::new))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_visible_subcommand_has_a_page_and_hidden_ones_none() {
        let pages = man_pages(Cli::command()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"skywire.1"));
        for name in [
            "skywire-node.1",
            "skywire-manager.1",
            "skywire-viscript.1",
            "skywire-viscript-exec.1",
            "skywire-route-add.1",
            "skywire-completions.1",
            "skywire-man.1",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("lab")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        for (name, text) in &pages {
            let text = String::from_utf8(text.clone()).unwrap();
            assert!(
                text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH "),
                "{name}"
            );
        }
    }

    #[test]
    fn completion_scripts_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(shell, Cli::command())).unwrap();
            for word in ["viscript", "route", "completions", "log-level"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
    }
}
