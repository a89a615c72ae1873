//! iperf3 between two TUN addresses of a topology, with the receiver's per-interval
//! figures timed as they arrive: throughput over a stretch of time, and when traffic
//! stopped and came back (the churn test, row 7 of RELIABILITY.md).
//!
//! The figures are the server's (the receiver's): what the client reports counts bytes
//! written into its socket buffer, which goes on for a while after the path is cut.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Proc, Topology};

/// iperf3's port (the default).
const PORT: &str = "5201";

/// One interval line of the server: when it was read, and the bit rate it gives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval {
    /// When the line arrived (the end of its interval, give or take the output's delay).
    pub(crate) at: Instant,
    /// Received in the interval, kbit/s.
    pub(crate) kbits: f64,
}

/// A running iperf3 test: the server (in the receiver's host) and the client.
pub(crate) struct Iperf {
    server: Proc,
    client: Proc,
    record: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The interval length, seconds.
    interval: f64,
}

/// `[  5]   0.00-0.10   sec   312 KBytes  25548 Kbits/sec` (the server's interval lines;
/// its summary lines end with `receiver`): the rate in kbit/s.
fn interval_kbits(line: &str) -> Option<f64> {
    if !line.starts_with('[') || line.contains("receiver") || line.contains("sender") {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let unit = words.iter().position(|w| w.ends_with("bits/sec"))?;
    let value: f64 = words.get(unit.checked_sub(1)?)?.parse().ok()?;
    let scale = match words.get(unit)?.chars().next()? {
        'b' => 1e-3,
        'K' => 1.0,
        'M' => 1e3,
        'G' => 1e6,
        _ => return None,
    };
    Some(value * scale)
}

impl Iperf {
    /// TCP from `from` (in host `client_host`) to `to` (in host `server_host`) for
    /// `seconds`, reported every `interval` seconds (0.1 at the least), at most `bitrate`
    /// (iperf3's `-b`, e.g. `200M`; `0` is as fast as it goes).
    pub(crate) fn start(
        topo: &Topology,
        (server_host, to): (&str, &str),
        (client_host, from): (&str, &str),
        seconds: u64,
        interval: f64,
        bitrate: &str,
    ) -> Self {
        let interval_text = interval.to_string();
        let mut server = topo.spawn(
            server_host,
            "iperf3-server",
            Path::new("iperf3"),
            &[
                "-s",
                "-1",
                "-B",
                to,
                "-p",
                PORT,
                "-i",
                &interval_text,
                "-f",
                "k",
                "--forceflush",
            ],
        );
        let record = server.record_lines();
        // The server is ready once its port is bound: "Server listening on 5201".
        let listening = super::wait_until(Duration::from_secs(10), || {
            record
                .lock()
                .is_ok_and(|r| r.iter().any(|(_, l)| l.contains("listening")))
        });
        assert!(listening.is_some(), "iperf3 -s: {}", server.stderr());
        let client = topo.spawn(
            client_host,
            "iperf3-client",
            Path::new("iperf3"),
            &[
                "-c",
                to,
                "-B",
                from,
                "-p",
                PORT,
                "-t",
                &seconds.to_string(),
                "-b",
                bitrate,
                "-i",
                "1",
                "-f",
                "k",
            ],
        );
        Self {
            server,
            client,
            record,
            interval,
        }
    }

    /// The server's interval lines so far.
    pub(crate) fn intervals(&self) -> Vec<Interval> {
        let record = self.record.lock().unwrap();
        record
            .iter()
            .filter_map(|(at, line)| interval_kbits(line).map(|kbits| Interval { at: *at, kbits }))
            .collect()
    }

    /// The mean rate (Mbit/s) of the intervals that began at `from` or later and ended by
    /// `to`, and the longest run of time without a byte in them.
    pub(crate) fn between(&self, from: Instant, to: Instant) -> (f64, Duration) {
        let step = Duration::from_secs_f64(self.interval);
        let inside: Vec<Interval> = self
            .intervals()
            .into_iter()
            .filter(|i| i.at >= from + step && i.at <= to)
            .collect();
        let mean = inside.iter().map(|i| i.kbits).sum::<f64>() / inside.len().max(1) as f64;
        let mut longest = Duration::ZERO;
        let mut run = Duration::ZERO;
        for i in &inside {
            if i.kbits > 0.0 {
                run = Duration::ZERO;
            } else {
                run += step;
                longest = longest.max(run);
            }
        }
        (mean / 1000.0, longest)
    }

    /// How long after `since` the first interval that began after it carried bytes
    /// (an upper bound, to the interval's length), waiting at most `deadline` for it.
    pub(crate) fn back_after(&self, since: Instant, deadline: Duration) -> Option<Duration> {
        let step = Duration::from_secs_f64(self.interval);
        let mut back = None;
        super::wait_until(deadline, || {
            back = self
                .intervals()
                .into_iter()
                .find(|i| i.at >= since + step && i.kbits > 0.0)
                .map(|i| i.at - since);
            back.is_some()
        });
        back
    }

    /// Wait for both ends to finish (at most `timeout`), successfully.
    pub(crate) fn finish(&mut self, timeout: Duration) {
        self.client.finish(timeout);
        self.server.finish(Duration::from_secs(10));
    }
}
