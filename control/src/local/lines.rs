//! Newline-delimited requests read with a bound: a peer that never sends a newline is
//! cut off after the limit, without the line ever being buffered whole.

use std::io::{self, BufRead};

/// How reading a line ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer, without its newline.
    Line,
    /// The peer closed the connection at a line boundary.
    Eof,
    /// More than the limit arrived without a newline; the rest was not read.
    TooLong,
    /// The peer closed the connection in the middle of a line.
    Truncated,
}

/// Read one `\n`-terminated line of at most `max` bytes into `buf` (cleared first, newline
/// stripped), never reading or buffering more than `max + 1` bytes of it.
pub fn read_line(reader: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let read = io::Read::take(&mut *reader, limit).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(LineRead::Line);
    }
    if buf.len() > max {
        Ok(LineRead::TooLong)
    } else {
        Ok(LineRead::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    #[test]
    fn lines_are_read_within_the_limit() {
        let mut buf = Vec::new();
        let mut input = io::BufReader::new(&b"abc\n\ndef"[..]);
        assert_eq!(read_line(&mut input, 8, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"abc");
        assert_eq!(read_line(&mut input, 8, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"");
        assert_eq!(
            read_line(&mut input, 8, &mut buf).unwrap(),
            LineRead::Truncated
        );
        assert_eq!(read_line(&mut input, 8, &mut buf).unwrap(), LineRead::Eof);

        // Exactly the limit is fine; one more byte is not.
        let mut input = io::BufReader::new(&b"12345678\n123456789\n"[..]);
        assert_eq!(read_line(&mut input, 8, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"12345678");
        assert_eq!(
            read_line(&mut input, 8, &mut buf).unwrap(),
            LineRead::TooLong
        );
        assert_eq!(buf.len(), 9);
    }

    #[test]
    fn an_endless_line_is_cut_off_without_reading_it_all() {
        // An infinite stream: an unbounded reader would never return.
        let mut input = io::BufReader::with_capacity(4096, io::repeat(b'a'));
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut input, LIMIT, &mut buf).unwrap(),
            LineRead::TooLong
        );
        assert_eq!(buf.len(), LIMIT + 1);
        assert!(buf.capacity() <= 2 * (LIMIT + 1));
    }
}
