//! Target for the node's own files in `node.state_dir`, read at start after a crash or
//! from another version: the state file's contents (`node::state::Owned`), a usage ledger's
//! day file (`node::usage::DayRecord`), and the day names of its files and of `skywire
//! usage --since` (`civil::Day`).

use skywire_control::civil::Day;
use skywire_control::node::state::Owned;
use skywire_control::node::usage::DayRecord;

/// Parse the input as each; whatever parses writes back to what parses to the same value.
pub fn node_state(data: &[u8]) {
    if let Ok(owned) = serde_json::from_slice::<Owned>(data) {
        let again = serde_json::to_vec(&owned).expect("a state writes");
        let back: Owned = serde_json::from_slice(&again).expect("and reads back");
        assert_eq!(back, owned);
    }
    if let Ok(record) = serde_json::from_slice::<DayRecord>(data) {
        let again = serde_json::to_vec(&record).expect("a day writes");
        let back: DayRecord = serde_json::from_slice(&again).expect("and reads back");
        assert_eq!(back, record);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(day) = text.parse::<Day>()
    {
        assert_eq!(day.to_string(), text, "a day prints as it was read");
        assert_eq!(day.next().minus(1), day);
    }
}
