//! The terminal GUI (`skywire viscript --gui`, ratatui over crossterm): the started apps
//! with live CPU and memory at the top, the selected app's output in the middle, the last
//! command's answer, and the command line at the bottom.
//!
//! What came from an app (its output, and its name and detail in the table) is shown with
//! its control characters escaped ([`crate::terminal`]); the title counts refused signal
//! registrations, if there were any.
//!
//! Keys: type a console command and Enter to run it; Up and Down select an app (as does
//! `attach <id>`); Esc, Ctrl-C or `quit` leave. The screen is redrawn every 250 ms and
//! after every key. The terminal is restored on the way out, also after an error.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};

use super::command::{Command, parse_line};
use super::runtime::{Launcher, Row as AppRow, format_bytes, format_secs};
use crate::terminal;

/// What the GUI shows besides the launcher's table.
#[derive(Debug, Default)]
struct View {
    input: String,
    answer: String,
    selected: Option<u64>,
}

/// Run the GUI until the user leaves or `stop` is set.
pub fn run(launcher: &Launcher, stop: &AtomicBool) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, launcher, stop);
    ratatui::restore();
    result
}

/// Put the terminal back (raw mode off, main screen); harmless when the GUI is not running.
pub fn restore_terminal() {
    ratatui::restore();
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    launcher: &Launcher,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut view = View {
        answer: format!(
            "{} apps configured; type `apps`, `help`, or `s <app>`",
            launcher.apps().len()
        ),
        ..View::default()
    };
    while !stop.load(Ordering::Relaxed) && !launcher.quit_requested() {
        let rows = launcher.rows();
        if view
            .selected
            .is_none_or(|id| !rows.iter().any(|r| r.id == id))
        {
            view.selected = rows.last().map(|r| r.id);
        }
        terminal.draw(|frame| draw(frame, launcher, &rows, &view))?;
        if !event::poll(Duration::from_millis(250))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Char(c) => view.input.push(c),
            KeyCode::Backspace => {
                view.input.pop();
            }
            KeyCode::Up | KeyCode::Down => {
                let pos = rows.iter().position(|r| Some(r.id) == view.selected);
                let next = match (key.code, pos) {
                    (KeyCode::Up, Some(p)) => p.saturating_sub(1),
                    (KeyCode::Down, Some(p)) => (p + 1).min(rows.len().saturating_sub(1)),
                    _ => 0,
                };
                view.selected = rows.get(next).map(|r| r.id).or(view.selected);
            }
            KeyCode::Enter => {
                let line = std::mem::take(&mut view.input);
                run_line(launcher, &line, &mut view);
            }
            _ => {}
        }
    }
    Ok(())
}

fn run_line(launcher: &Launcher, line: &str, view: &mut View) {
    view.answer = match parse_line(line) {
        Ok(None) => return,
        Ok(Some(Command::Attach(id))) => match launcher.output_since(id, 0) {
            Ok(_) => {
                view.selected = Some(id);
                format!("showing the output of {id}")
            }
            Err(e) => format!("error: {e}"),
        },
        Ok(Some(command)) => match launcher.execute(&command) {
            Ok(reply) => {
                if let Command::Start { .. } = command
                    && let Some(id) = reply.data.get("id").and_then(serde_json::Value::as_u64)
                {
                    view.selected = Some(id);
                }
                reply.text
            }
            Err(e) => format!("error: {e}"),
        },
        Err(e) => format!("error: {e}"),
    };
}

fn draw(frame: &mut Frame<'_>, launcher: &Launcher, rows: &[AppRow], view: &View) {
    let [top, middle, answer, input] = Layout::vertical([
        Constraint::Percentage(35),
        Constraint::Min(5),
        Constraint::Length(7),
        Constraint::Length(3),
    ])
    .areas(frame.area());

    let header = Row::new([
        "ID", "APP", "PID", "STATE", "CPU%", "RSS", "UP", "RS", "SIG",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let table_rows = rows.iter().map(|r| {
        Row::new(vec![
            Cell::from(r.id.to_string()),
            Cell::from(terminal::safe(&r.app).to_string()),
            Cell::from(r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string())),
            Cell::from(r.state),
            Cell::from(
                r.cpu_percent
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            ),
            Cell::from(r.rss_bytes.map_or_else(|| "-".to_owned(), format_bytes)),
            Cell::from(r.uptime_secs.map_or_else(|| "-".to_owned(), format_secs)),
            Cell::from(r.restarts.to_string()),
            Cell::from(if r.signal { "yes" } else { "no" }),
            Cell::from(terminal::safe(&r.detail).to_string()),
        ])
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Length(20),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Min(10),
    ];
    let refused = launcher.refused_registrations();
    let title = if refused == 0 {
        " viscript: apps (Up/Down select) ".to_owned()
    } else {
        format!(" viscript: apps (Up/Down select); {refused} signal registrations refused ")
    };
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default();
    state.select(rows.iter().position(|r| Some(r.id) == view.selected));
    frame.render_stateful_widget(table, top, &mut state);

    let (title, lines) = match view
        .selected
        .and_then(|id| rows.iter().find(|r| r.id == id))
    {
        Some(row) => {
            let height = usize::from(middle.height.saturating_sub(2));
            (
                format!(" output of {} ({}) ", row.id, terminal::safe(&row.app)),
                launcher.tail(row.id, height),
            )
        }
        None => (" output ".to_owned(), Vec::new()),
    };
    let output: Vec<Line<'_>> = lines
        .iter()
        .map(|line| Line::from(terminal::safe(line).to_string()))
        .collect();
    frame.render_widget(
        Paragraph::new(output).block(Block::bordered().title(title)),
        middle,
    );
    frame.render_widget(
        Paragraph::new(view.answer.as_str())
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" answer ")),
        answer,
    );
    frame.render_widget(
        Paragraph::new(format!("> {}", view.input))
            .block(Block::bordered().title(" command (Enter run, Esc quit) ")),
        input,
    );
}
