//! The measuring instruments: iperf3 (TCP and UDP), ping, and the kernel's per-process
//! accounting in `/proc`. Each runs as a child inside a namespace and is parsed into
//! numbers here; nothing in this file decides what to measure.

use core::time::Duration;
use std::fs;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::BenchError;
use crate::lab::netns_command;

/// Whether `program` can be run (found on `PATH` and answers `--version`).
pub(super) fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?.trim().to_owned();
    (out.status.success() || !first.is_empty()).then_some(first)
}

/// Whether `program` is an executable file in a folder of `PATH` (for tools that have no
/// `--version`: `proxychains4` runs its argument, `microsocks` takes no such option).
pub(super) fn installed(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Run `cmd` to its end and collect its output, unless `interrupted` is raised first: then
/// kill it and return `None` (so a Ctrl-C ends a 30-second iperf3 run at once).
fn output_unless_interrupted(
    cmd: &mut Command,
    interrupted: &AtomicBool,
) -> std::io::Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if interrupted.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

/// Run `program args` inside namespace `ns` and return its standard output.
pub(super) fn run_in(
    ns: &str,
    program: &str,
    args: &[&str],
    interrupted: &AtomicBool,
) -> Result<String, BenchError> {
    let command = format!("ip netns exec {ns} {program} {}", args.join(" "));
    let out = output_unless_interrupted(netns_command(ns, program).args(args), interrupted)
        .map_err(|source| BenchError::Io {
            what: format!("cannot run `{command}`"),
            source,
        })?
        .ok_or(BenchError::Interrupted)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(BenchError::Tool {
            command,
            detail: if stderr.is_empty() {
                // iperf3 -J reports its errors inside the JSON.
                json_error(&stdout).unwrap_or_else(|| out.status.to_string())
            } else {
                stderr
            },
        })
    }
}

fn json_error(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    value.get("error")?.as_str().map(str::to_owned)
}

/// One iperf3 TCP result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct TcpResult {
    /// Goodput at the receiver, in Gbit/s.
    pub(super) gbps: f64,
    /// Bytes the receiver got.
    pub(super) bytes: f64,
    /// TCP retransmissions at the sender.
    pub(super) retransmits: u64,
}

/// Parse `iperf3 -J` output of a TCP test.
pub(super) fn parse_tcp(json: &str) -> Option<TcpResult> {
    let v: Value = serde_json::from_str(json).ok()?;
    let end = v.get("end")?;
    let received = end.get("sum_received")?;
    let sent = end.get("sum_sent")?;
    Some(TcpResult {
        gbps: received.get("bits_per_second")?.as_f64()? / 1e9,
        bytes: received.get("bytes")?.as_f64()?,
        retransmits: sent.get("retransmits").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// One iperf3 UDP result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct UdpResult {
    /// Datagrams received per second.
    pub(super) received_pps: f64,
    /// Datagrams sent per second.
    pub(super) sent_pps: f64,
    /// Lost, in percent of those sent.
    pub(super) loss_percent: f64,
}

/// Parse `iperf3 -u -J` output (the receiver's view, which iperf3 reports in `end.sum`).
pub(super) fn parse_udp(json: &str) -> Option<UdpResult> {
    let v: Value = serde_json::from_str(json).ok()?;
    let sum = v.get("end")?.get("sum")?;
    let packets = sum.get("packets")?.as_f64()?;
    let lost = sum.get("lost_packets")?.as_f64()?;
    let seconds = sum.get("seconds")?.as_f64()?.max(1e-9);
    Some(UdpResult {
        received_pps: (packets - lost).max(0.0) / seconds,
        sent_pps: packets / seconds,
        loss_percent: if packets > 0.0 {
            100.0 * lost / packets
        } else {
            100.0
        },
    })
}

/// Round-trip times in milliseconds from ping's output (`time=0.051 ms` lines).
pub(super) fn parse_ping(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|line| {
            let at = line.find("time=")?;
            let rest = line.get(at + 5..)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .collect()
}

/// `count` pings from namespace `ns` to `to`, `interval` apart; the round-trip times.
pub(super) fn ping(
    ns: &str,
    to: &str,
    count: u32,
    interval: Duration,
    interrupted: &AtomicBool,
) -> Result<Vec<f64>, BenchError> {
    let interval = format!("{:.3}", interval.as_secs_f64());
    let count = count.to_string();
    // A lost ping makes ping exit 1; what did come back is still a measurement.
    let out = output_unless_interrupted(
        netns_command(ns, "ping").args(["-n", "-c", &count, "-i", &interval, "-W", "1", to]),
        interrupted,
    )
    .map_err(|source| BenchError::Io {
        what: "cannot run ping".to_owned(),
        source,
    })?
    .ok_or(BenchError::Interrupted)?;
    Ok(parse_ping(&String::from_utf8_lossy(&out.stdout)))
}

/// CPU time (user + system) a process used so far, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) / ticks)
}

/// Resident memory of a process, in MiB.
pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_tcp_json() {
        let json = r#"{"start":{},"end":{"sum_sent":{"bytes":1000,"bits_per_second":2.5e9,
            "retransmits":7},"sum_received":{"bytes":999,"bits_per_second":2.4e9}}}"#;
        let r = parse_tcp(json).unwrap();
        assert_eq!(r.retransmits, 7);
        assert!((r.gbps - 2.4).abs() < 1e-9);
        assert_eq!(r.bytes, 999.0);
        assert!(parse_tcp("{}").is_none());
        assert!(parse_tcp("not json").is_none());
    }

    #[test]
    fn iperf3_udp_json() {
        let json = r#"{"end":{"sum":{"packets":1000,"lost_packets":10,"seconds":2.0,
            "lost_percent":1.0}}}"#;
        let r = parse_udp(json).unwrap();
        assert_eq!(r.received_pps, 495.0);
        assert_eq!(r.sent_pps, 500.0);
        assert!((r.loss_percent - 1.0).abs() < 1e-9);
        assert_eq!(
            json_error(r#"{"error":"unable to connect"}"#).unwrap(),
            "unable to connect"
        );
    }

    #[test]
    fn ping_lines() {
        let text = "PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.051 ms\n\
            64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=1.5 ms\n\
            \n--- 10.77.0.2 ping statistics ---\nrtt min/avg/max/mdev = 0.051/0.7/1.5/0.7 ms\n";
        assert_eq!(parse_ping(text), [0.051, 1.5]);
    }

    #[test]
    fn proc_figures_of_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        let rss = rss_mib(me).unwrap();
        assert!(rss > 0.1 && rss < 4096.0, "{rss}");
        assert!(cpu_seconds(u32::MAX).is_none());
    }

    #[test]
    fn programs_on_the_path() {
        assert!(installed("sh"));
        assert!(!installed("no-such-program-here"));
    }
}
