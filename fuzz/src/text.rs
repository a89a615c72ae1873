//! Target for the text parsers of `skywire-dataplane`: `route::Prefix::from_str` (config
//! files), `crypto::PublicKey::from_str` and `crypto::PrivateKey::from_hex` (config and key
//! files).
//!
//! The input, if it is UTF-8, goes to all three. Each accepted value must print back to
//! what was parsed (lower-case for hex) and parse again to the same value.

use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::route::Prefix;

/// Parse the input as a prefix and as keys.
pub fn parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(prefix) = text.parse::<Prefix>() {
        let shown = prefix.to_string();
        assert_eq!(shown.parse::<Prefix>(), Ok(prefix), "{shown}");
        assert_eq!(Prefix::new(prefix.addr(), prefix.len()), Some(prefix));
        assert!(prefix.contains(prefix.addr()));
        assert!(prefix.contains(prefix.network()));
        let network = Prefix::new(prefix.network(), prefix.len()).expect("same length");
        assert_eq!(network.network(), prefix.network());
    }

    if let Ok(key) = text.parse::<PublicKey>() {
        let shown = key.to_string();
        assert_eq!(shown, text.to_ascii_lowercase());
        assert_eq!(shown.parse::<PublicKey>(), Ok(key));
    }

    if let Ok(key) = PrivateKey::from_hex(text) {
        let file = key.to_key_file_text();
        assert_eq!(file, format!("{}\n", text.trim().to_ascii_lowercase()));
        let again = PrivateKey::from_hex(&file).expect("a key file parses");
        assert_eq!(again.public_key(), key.public_key());
    }
}
