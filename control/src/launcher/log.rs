//! A bounded log of an app's output: the last [`MAX_LINES`] lines, each cut to
//! [`MAX_LINE`] bytes, numbered so a follower can ask for what came after the last line it
//! saw. Memory per app is bounded whatever the app prints.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Lines kept per app.
pub const MAX_LINES: usize = 2000;

/// Bytes kept of one line.
pub const MAX_LINE: usize = 4096;

/// The log of one app (all its restarts).
#[derive(Debug, Default)]
pub struct LogBuffer {
    inner: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    /// Number of the first line in `lines`.
    first: u64,
    lines: VecDeque<String>,
}

impl LogBuffer {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a line (without its newline); invalid UTF-8 is replaced, long lines cut.
    pub fn push(&self, bytes: &[u8]) {
        let bytes = bytes.get(..MAX_LINE).unwrap_or(bytes);
        let line = String::from_utf8_lossy(bytes).into_owned();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.lines.push_back(line);
        if inner.lines.len() > MAX_LINES {
            inner.lines.pop_front();
            inner.first = inner.first.saturating_add(1);
        }
    }

    /// The lines numbered `since` and later that are still kept, and the number the next
    /// line will have.
    pub fn since(&self, since: u64) -> (Vec<String>, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = usize::try_from(since.saturating_sub(inner.first)).unwrap_or(usize::MAX);
        let lines = inner.lines.iter().skip(skip).cloned().collect();
        let next = inner.first + inner.lines.len() as u64;
        (lines, next)
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = inner.lines.len().saturating_sub(n);
        inner.lines.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_numbered() {
        let log = LogBuffer::new();
        for i in 0..MAX_LINES + 5 {
            log.push(format!("line {i}").as_bytes());
        }
        let (lines, next) = log.since(0);
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(next, (MAX_LINES + 5) as u64);
        let (lines, _) = log.since(next - 2);
        assert_eq!(
            lines,
            [
                format!("line {}", MAX_LINES + 3),
                format!("line {}", MAX_LINES + 4)
            ]
        );
        assert!(log.since(next).0.is_empty());
        assert_eq!(log.tail(1), [format!("line {}", MAX_LINES + 4)]);
        log.push(&vec![b'x'; MAX_LINE * 2]);
        assert_eq!(log.tail(1)[0].len(), MAX_LINE);
        log.push(b"\xffok");
        assert_eq!(log.tail(1)[0], "\u{fffd}ok");
    }
}
