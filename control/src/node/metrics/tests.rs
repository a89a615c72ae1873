#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::node::ctl::protocol::tests::sample_status;
use crate::node::ctl::protocol::{Drops, RetiredReply};

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample line belongs to a family with HELP and TYPE written before it, and has a
/// number as its value: what a scraper needs of the text (promtool checks the rest, in the
/// namespace test).
fn check_shape(text: &str) {
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = typed.last().expect("a sample before any TYPE");
            assert!(
                name == family
                    || [
                        format!("{family}_bucket"),
                        format!("{family}_sum"),
                        format!("{family}_count")
                    ]
                    .contains(&name.to_owned()),
                "{name} outside its family {family}"
            );
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "not a number: {line}");
        }
    }
}

#[test]
fn node_wide_families_are_status_summed_with_what_went() {
    let mut status = StatusReply::from(&sample_status());
    let text = exposition(status.clone(), MetricsOptions::default()).unwrap();
    check_shape(&text);
    assert_eq!(
        value(&text, "skywire_node_rx_bytes_total"),
        Some(1_268_776.0)
    );
    assert_eq!(value(&text, "skywire_node_tx_packets_total"), Some(2330.0));
    assert_eq!(
        value(&text, "skywire_node_relayed_bytes_total"),
        Some(3_649_044.0)
    );
    assert_eq!(value(&text, "skywire_node_routes"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "skywire_node_route_dropped_packets_total{reason=\"bad tag\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "skywire_node_dropped_packets_total{reason=\"no route\"}"
        ),
        Some(0.0)
    );
    assert_eq!(value(&text, "skywire_node_under_load"), Some(0.0));
    assert!(text.contains("skywire_build_info{version="));
    // No per-route series unless asked for; no manager line without a manager.
    assert!(!text.contains("skywire_route_"));
    assert!(!text.contains("skywire_relay_"));
    assert!(!text.contains("skywire_node_manager_registered"));

    // The route and the relay go (a repair): the totals stay.
    status.retired = RetiredReply {
        rx_bytes: 1_268_776,
        tx_packets: 2330,
        handshakes: 1,
        drops: Drops(vec![("bad tag".into(), 2), ("replay".into(), 1)]),
        relayed_bytes: 3_649_044,
        ..RetiredReply::default()
    };
    status.routes.clear();
    status.relays.clear();
    let after = exposition(status, MetricsOptions::default()).unwrap();
    for series in [
        "skywire_node_rx_bytes_total",
        "skywire_node_tx_packets_total",
        "skywire_node_relayed_bytes_total",
        "skywire_node_handshakes_total",
        "skywire_node_route_dropped_packets_total{reason=\"bad tag\"}",
    ] {
        assert_eq!(value(&after, series), value(&text, series), "{series}");
    }
    assert_eq!(value(&after, "skywire_node_routes"), Some(0.0));
}

#[test]
fn per_route_series_only_when_asked() {
    let status = StatusReply::from(&sample_status());
    let text = exposition(status, MetricsOptions { per_route: true }).unwrap();
    check_shape(&text);
    let peer = "cccccccccccccccc";
    assert_eq!(
        value(
            &text,
            &format!("skywire_route_rx_bytes_total{{route=\"to-c\",peer=\"{peer}\"}}")
        ),
        Some(1_268_776.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "skywire_route_dropped_packets_total{{route=\"to-c\",peer=\"{peer}\",reason=\"replay\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("skywire_route_last_handshake_age_seconds{{route=\"to-c\",peer=\"{peer}\"}}")
        ),
        Some(3.25)
    );
    assert_eq!(
        value(
            &text,
            "skywire_relay_forwarded_packets_total{in_id=\"100\"}"
        ),
        Some(2330.0)
    );
}

#[test]
fn a_stopped_engine_is_an_error_not_a_panic() {
    #[derive(Debug)]
    struct Gone;
    impl NodeApi for Gone {
        fn status(
            &self,
            _: core::time::Duration,
        ) -> Result<skywire_dataplane::engine::NodeStatus, skywire_dataplane::engine::EngineGone>
        {
            Err(skywire_dataplane::engine::EngineGone::Stopped)
        }
    }
    assert!(scrape(&Gone, MetricsOptions::default()).is_err());
}
