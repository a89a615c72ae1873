//! The impairment relay's text (`skywire lab impair`): the settings of a direction, from
//! the command line and stdin, and the stdin command lines.
//!
//! Settings the parser accepts print back (`Display`) to text that parses to the same
//! value; a command line either parses or is refused, never panics.

use skywire_control::lab::impair::Impairments;
use skywire_control::lab::impair::driver::RelayCommand;

/// Settings and a command line from any bytes.
pub fn impair_settings(data: &[u8]) {
    if let Ok(settings) = Impairments::parse_bytes(data) {
        let text = settings.to_string();
        let again: Impairments = text.parse().unwrap_or_else(|e| {
            panic!("{text:?}, printed from accepted settings, is refused: {e}")
        });
        assert_eq!(again, settings, "{text:?} reads back to other settings");
    }
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = line.parse::<RelayCommand>();
    }
}
