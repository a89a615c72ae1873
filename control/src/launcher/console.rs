//! The interactive console: a prompt with line editing and history (rustyline), each line
//! parsed as a [`Command`] and run by the [`Launcher`]. `attach <id>` prints the app's
//! output so far and follows it until Enter is pressed, each line with its control
//! characters escaped ([`crate::terminal`]), so the app cannot drive the terminal. `quit` or Ctrl-D leaves (the caller
//! then stops every app); Ctrl-C only clears the line.
//!
//! When standard input is not a terminal, lines are read plainly, so the console can be
//! scripted (`printf 's app\nla\nquit\n' | skywire viscript`).

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::command::{Command, parse_line};
use super::runtime::Launcher;
use crate::terminal;

/// The prompt.
pub const PROMPT: &str = "viscript> ";

/// Run the console until `quit`, end of input, or `stop` is set (checked between lines).
pub fn run(launcher: &Launcher, stop: &AtomicBool) -> io::Result<()> {
    let mut editor = DefaultEditor::new().map_err(io::Error::other)?;
    println!(
        "viscript: {} apps configured; type `help` for the commands, `quit` to leave",
        launcher.apps().len()
    );
    while !stop.load(Ordering::Relaxed) && !launcher.quit_requested() {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(io::Error::other(e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        match parse_line(&line) {
            Ok(None) => {}
            Ok(Some(Command::Attach(id))) => attach(launcher, id)?,
            Ok(Some(command)) => match launcher.execute(&command) {
                Ok(reply) => println!("{}", reply.text),
                Err(e) => println!("error: {e}"),
            },
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

/// Print `id`'s output and follow it until Enter.
fn attach(launcher: &Launcher, id: u64) -> io::Result<()> {
    if let Err(e) = launcher.output_since(id, 0) {
        println!("error: {e}");
        return Ok(());
    }
    println!("[attached to {id}; press Enter to detach]");
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let launcher = launcher.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut since = 0;
            while !done.load(Ordering::Relaxed) {
                if let Ok((lines, next, _)) = launcher.output_since(id, since) {
                    let mut out = io::stdout().lock();
                    for line in lines {
                        let _ = writeln!(out, "{}", terminal::safe(&line));
                    }
                    let _ = out.flush();
                    since = next;
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut enter = String::new();
    io::stdin().lock().read_line(&mut enter)?;
    done.store(true, Ordering::Relaxed);
    let _ = follower.join();
    println!("[detached from {id}]");
    Ok(())
}
