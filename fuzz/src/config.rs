//! Target for the config loader (`control::config::Config::parse`): the text of a config
//! file, which a user may point at any file (a symlink to something that is not YAML, a
//! log, a file another program wrote).
//!
//! `config_parse`: the input as text (lossily, so that every input reaches the parser the
//! way [`Config::load`](skywire_control::config::Config::load)'s UTF-8 check would let only
//! some through) is parsed as the file [`CONFIG_FILE`]. Checks: nothing panics; an error
//! names the file first, as every config error must; a config that loads is written again
//! by the config's own writer ([`ConfigFile`], all four sections it writes: `node:`,
//! `manager:`, `socks:`, `vpn:`) without an error, and that text loads to the same typed
//! values.

use skywire_control::config::{Config, ConfigFile, ManagerSection, NodeSection};

/// The file the text is parsed as: absolute, so relative paths in it resolve to absolute
/// ones and the text written back means the same wherever it is parsed.
pub const CONFIG_FILE: &str = "/etc/skywire/config.yaml";

/// Every check on the input: see the module doc.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = match Config::parse(&text, CONFIG_FILE) {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(CONFIG_FILE),
                "an error that does not name the file: {message}"
            );
            return;
        }
    };
    let file = ConfigFile {
        comment: "written back by the config_parse target".into(),
        node: Some(NodeSection::from(&config.node)),
        manager: Some(ManagerSection::from(&config.manager)),
        socks: Some(config.socks.clone()),
        vpn: Some(config.vpn.clone()),
    };
    let written = match file.to_yaml() {
        Ok(written) => written,
        Err(e) => panic!("a loaded config does not write back: {e:?}\n{text}"),
    };
    let again = match Config::parse(&written, CONFIG_FILE) {
        Ok(again) => again,
        Err(e) => panic!("the text written does not load: {e}\n{written}"),
    };
    assert_eq!(
        again.node, config.node,
        "node: changed by writing\n{written}"
    );
    assert_eq!(again.manager, config.manager, "manager: changed\n{written}");
    assert_eq!(again.socks, config.socks, "socks: changed\n{written}");
    assert_eq!(again.vpn, config.vpn, "vpn: changed\n{written}");
}
