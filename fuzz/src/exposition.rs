//! Target for the Prometheus text reader of `skywire demo daemon`
//! (`control::demo::exposition::parse_exposition`), which reads what a node serves on
//! `/metrics`: any text must give an exposition or an error naming a line of it, never a
//! panic.

use skywire_control::demo::exposition::parse_exposition;

/// Read the input, if it is UTF-8, as an exposition.
pub fn metrics_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    match parse_exposition(text) {
        Ok(parsed) => {
            // Each family, help and sample takes a line of its own.
            assert!(parsed.families + parsed.helps + parsed.samples.len() <= lines);
            for sample in &parsed.samples {
                assert!(!sample.name.is_empty());
                assert_eq!(
                    parsed.find(&sample.name, None).map(|s| &s.name),
                    Some(&sample.name)
                );
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines.max(1), "{e}"),
    }
}
