//! What `skywire usage` shows: a node's day records added up over a period, grouped by
//! route, peer or app (sans-IO; the figures come from the node's control socket), as a
//! table or as JSON.

use core::fmt;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{DayRecord, Tally};
use crate::manager::proto::Key;
use crate::node::ctl::show::Bytes;

/// How the figures are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum By {
    /// Originated traffic by route (name and peer), relayed traffic by neighbours.
    Route,
    /// Originated traffic by peer key (its routes added up), relayed traffic by neighbours.
    Peer,
    /// Traffic by app: `tun` (the kernel's, through the TUN device) and stream services.
    App,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// The route's name, or the app's (none when grouped by peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The peer (none for an app's line, which adds up its peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Key>,
    /// Sent: datagrams on the wire (routes, peers), or what the app sent.
    pub sent: Tally,
    /// Received.
    pub received: Tally,
    /// Of what was sent, the IP packets carried (routes and peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sent: Option<Tally>,
    /// Of what was received, the IP packets carried (routes and peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_received: Option<Tally>,
}

/// Relayed traffic between two neighbours (one direction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRow {
    /// The previous hop.
    pub from: SocketAddr,
    /// The next hop.
    pub to: SocketAddr,
    /// Datagrams forwarded.
    pub forwarded: Tally,
}

/// A node's usage over a period, grouped one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The node.
    pub node: Key,
    /// The first day, `YYYY-MM-DD` (UTC).
    pub since: String,
    /// The last day.
    pub until: String,
    /// The grouping.
    pub by: By,
    /// Days in the period with figures.
    pub days: usize,
    /// Originated traffic (by route or peer), or apps (by app).
    pub rows: Vec<Row>,
    /// Relayed traffic (by route or peer; empty by app).
    pub relayed: Vec<RelayRow>,
}

/// Add up `days` by `by`.
pub fn report(node: Key, since: &str, until: &str, days: &[DayRecord], by: By) -> Report {
    let mut rows: BTreeMap<(Option<String>, Option<Key>), Row> = BTreeMap::new();
    let mut relayed: BTreeMap<(SocketAddr, SocketAddr), Tally> = BTreeMap::new();
    let mut add = |name: Option<String>, peer: Option<Key>, sent, received, payload| {
        let row = rows.entry((name.clone(), peer)).or_insert_with(|| Row {
            name,
            peer,
            sent: Tally::default(),
            received: Tally::default(),
            payload_sent: None,
            payload_received: None,
        });
        row.sent.add(sent);
        row.received.add(received);
        if let Some((ps, pr)) = payload {
            row.payload_sent.get_or_insert_default().add(ps);
            row.payload_received.get_or_insert_default().add(pr);
        }
    };
    for day in days {
        match by {
            By::Route | By::Peer => {
                for r in &day.routes {
                    let name = (by == By::Route).then(|| r.route.clone());
                    let payload = Some((r.payload_sent, r.payload_received));
                    add(name, Some(r.peer), r.sent, r.received, payload);
                }
                for r in &day.relays {
                    relayed.entry((r.from, r.to)).or_default().add(r.forwarded);
                }
            }
            By::App => {
                for a in &day.apps {
                    add(Some(a.app.clone()), None, a.sent, a.received, None);
                }
            }
        }
    }
    Report {
        node,
        since: since.to_owned(),
        until: until.to_owned(),
        by,
        days: days.len(),
        rows: rows.into_values().collect(),
        relayed: relayed
            .into_iter()
            .map(|((from, to), forwarded)| RelayRow {
                from,
                to,
                forwarded,
            })
            .collect(),
    }
}

/// Packets and bytes as a person reads them: `1.21 MiB in 903 packets`.
struct Human(Tally, bool);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(f, "{} in {} packets", Bytes(self.0.bytes), self.0.packets)
        } else {
            write!(f, "{}", Bytes(self.0.bytes))
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = if self.since == self.until {
            self.since.clone()
        } else {
            format!("{} to {}", self.since, self.until)
        };
        writeln!(
            f,
            "node {}: usage on {period} (UTC), as counted at this node",
            self.node.0
        )?;
        if self.rows.is_empty() && self.relayed.is_empty() {
            return writeln!(f, "  nothing carried");
        }
        let (what, packets) = match self.by {
            By::Route => (
                "originated, by route (on the wire; IP packets inside)",
                true,
            ),
            By::Peer => ("originated, by peer (on the wire; IP packets inside)", true),
            By::App => (
                "by app (tun: IP packets; streams: bytes apps sent and received)",
                false,
            ),
        };
        if !self.rows.is_empty() {
            writeln!(f, "\n{what}:")?;
        }
        for row in &self.rows {
            match (&row.name, &row.peer) {
                (Some(name), Some(peer)) if name == super::MANAGED => {
                    writeln!(f, "  the manager's routes to {}", peer.0)?;
                }
                (Some(name), Some(peer)) => writeln!(f, "  route {name} to {}", peer.0)?,
                (Some(name), None) => writeln!(f, "  {name}")?,
                (None, Some(peer)) => writeln!(f, "  peer {}", peer.0)?,
                (None, None) => writeln!(f, "  (unnamed)")?,
            }
            let is_tun = row.name.as_deref() == Some("tun");
            writeln!(f, "    sent      {}", Human(row.sent, packets || is_tun))?;
            writeln!(
                f,
                "    received  {}",
                Human(row.received, packets || is_tun)
            )?;
            if let (Some(ps), Some(pr)) = (row.payload_sent, row.payload_received) {
                writeln!(
                    f,
                    "    carried   {} sent, {} received",
                    Human(ps, true),
                    Human(pr, true)
                )?;
            }
        }
        if !self.relayed.is_empty() {
            writeln!(f, "\nrelayed, by neighbours (on the wire):")?;
        }
        for r in &self.relayed {
            writeln!(f, "  {} -> {}: {}", r.from, r.to, Human(r.forwarded, true))?;
        }
        Ok(())
    }
}
