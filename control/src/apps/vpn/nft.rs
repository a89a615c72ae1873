//! nftables rulesets (in progress).
