//! Text from other programs, made safe to show on a terminal.
//!
//! Viscript shows people what its apps send: their output lines, the figures they report
//! over signal, their error messages. A terminal obeys the control characters in that text:
//! ESC starts sequences that move the cursor, clear the screen, hide text (SGR 8) or set
//! the window title (OSC), a CR lets a line overwrite itself, and the C1 controls
//! (U+0080..U+009F, such as U+009B, CSI) do the same in one character where the terminal
//! reads them. The wrappers here write such text with every one of those characters
//! shown escaped instead, so an app cannot do any of it:
//!
//! | character | shown as |
//! |---|---|
//! | TAB, LF, CR, ESC | `\t`, `\n`, `\r`, `\e` |
//! | other C0 controls and DEL (U+0000..U+001F, U+007F) | `\xNN`, e.g. `\x07` |
//! | C1 controls (U+0080..U+009F) | `\u{NN}`, e.g. `\u{9b}` |
//! | bidirectional formatting (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) and the line and paragraph separators (U+2028, U+2029) | `\u{NNNN}` |
//!
//! The bidirectional controls cannot move the cursor, but they reorder what a line shows
//! on terminals that honour them, which hides what it says. Everything else, including
//! any printable Unicode, is written as it is; a backslash is not doubled (the point is a
//! terminal that does what its user expects, not a reversible encoding: JSON output, which
//! escapes by itself, is where text stays exact).
//!
//! [`safe`] is for one line (a newline is escaped too); [`safe_text`] keeps newlines,
//! for text meant to span lines.

use std::fmt::{self, Write as _};

/// `text` as one line that is safe to print: see the module doc.
pub fn safe(text: &str) -> Safe<'_> {
    Safe {
        text,
        newlines: false,
    }
}

/// `text` safe to print, keeping its newlines (a CR before a newline is escaped too).
pub fn safe_text(text: &str) -> Safe<'_> {
    Safe {
        text,
        newlines: true,
    }
}

/// Text written with its control characters escaped ([`safe`], [`safe_text`]).
#[derive(Debug, Clone, Copy)]
pub struct Safe<'a> {
    text: &'a str,
    newlines: bool,
}

/// Whether `c` must not reach a terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.text;
        while let Some(at) = rest.find(|c: char| is_unsafe(c) && !(self.newlines && c == '\n')) {
            let (clean, tail) = rest.split_at(at);
            f.write_str(clean)?;
            let mut chars = tail.chars();
            if let Some(c) = chars.next() {
                escape(c, f)?;
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// Write `c` escaped.
fn escape(c: char, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match c {
        '\t' => f.write_str("\\t"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\u{1b}' => f.write_str("\\e"),
        '\0'..='\u{7f}' => write!(f, "\\x{:02x}", u32::from(c)),
        _ => {
            f.write_str("\\u{")?;
            write!(f, "{:x}", u32::from(c))?;
            f.write_char('}')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_control_is_shown_escaped() {
        let cases = [
            ("plain text, ünïcödé ✓", "plain text, ünïcödé ✓"),
            ("\u{1b}]2;title\u{7}", r"\e]2;title\x07"),
            (
                "\u{1b}[2J\u{1b}[8mhidden\u{1b}[0m",
                r"\e[2J\e[8mhidden\e[0m",
            ),
            ("over\rwrite\ttab\nline", r"over\rwrite\ttab\nline"),
            ("\0\u{8}\u{7f}", r"\x00\x08\x7f"),
            (
                "c1 \u{9b}31m \u{9d}0;t\u{9c}",
                r"c1 \u{9b}31m \u{9d}0;t\u{9c}",
            ),
            (
                "abc\u{202e}fed\u{2066}x\u{2028}",
                r"abc\u{202e}fed\u{2066}x\u{2028}",
            ),
            (r"a \ backslash", r"a \ backslash"),
        ];
        for (raw, shown) in cases {
            assert_eq!(safe(raw).to_string(), shown, "{raw:?}");
        }
        assert_eq!(safe_text("one\r\ntwo\n").to_string(), "one\\r\ntwo\n");
        assert_eq!(safe("one\ntwo").to_string(), "one\\ntwo");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Nothing unsafe gets through (in text mode, newlines only); text without
            /// anything unsafe is written unchanged.
            #[test]
            fn nothing_unsafe_gets_through(text in any::<String>(), newlines in any::<bool>()) {
                let shown = if newlines { safe_text(&text) } else { safe(&text) }.to_string();
                prop_assert!(!shown.chars().any(|c| is_unsafe(c) && !(newlines && c == '\n')));
                if !text.chars().any(is_unsafe) {
                    prop_assert_eq!(&shown, &text);
                }
                let lines = text.chars().filter(|&c| c == '\n').count();
                if newlines {
                    prop_assert_eq!(shown.chars().filter(|&c| c == '\n').count(), lines);
                }
            }
        }
    }
}
