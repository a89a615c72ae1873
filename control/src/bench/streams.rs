//! Apps' streams on the bench's chain, next to the TUN path on the same nodes: the same
//! two skywire ends carry iperf3's kernel TCP through their TUN devices and the bench's own
//! app streams through their stacks (the app sockets, `docs/APPS.md`).
//!
//! Measured, each as `skywire-streams` in the report:
//! - `stream_1_gbps` and `stream_4_gbps`: one and four streams from the near end's app
//!   socket to a sink on the far end's, for the run's seconds; `stream_cpu_seconds_per_gbit`
//!   from the tunnel processes' CPU time during the one-stream runs;
//! - `stream_ttfb_p50_ms` and `_p99_ms`: 1000 new dials, each timed from the dial to the
//!   first byte the far app sends back on it;
//! - `stream_1_idle_N_gbps`: one stream while N (1000, 5000) other streams are open and
//!   idle, next to `stream_1_gbps` (the cost per packet must not grow with N);
//! - `rss_per_idle_stream_kib`: the larger node's RSS growth with 5000 idle streams open,
//!   per stream;
//! - on the chains with relays, `stream_1_gbps` only, next to the TUN path's one stream.
//!
//! The bench process is the app at both ends; it raises its own open-file limit for the
//! idle streams (two connections each).

use core::time::Duration;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;

use super::{BenchError, Run, Tunnel, largest_rss, total_cpu};
use crate::bench::chain::Chain;
use crate::node::apps::client::ListenRequest;
use crate::node::apps::protocol::{AppRequest, MAX_REQUEST};
use crate::node::apps::{AppClient, AppListener, AppStream};

/// The report's name for these figures.
pub(super) const NAME: &str = "skywire-streams";
/// The sink's port and the echo's.
const SINK: u16 = 9;
const FIRST_BYTE: u16 = 10;
const IDLE_PORT: u16 = 11;
/// Dials timed for the time to first byte.
const DIALS: usize = 1000;
/// Idle stream counts measured besides none.
const IDLE: [usize; 2] = [1000, 5000];

/// Where the app sockets of a skywire tunnel's two ends are.
#[derive(Debug, Clone)]
pub(super) struct Ends {
    /// The near end's app socket.
    pub(super) near: PathBuf,
    /// The far end's app socket.
    pub(super) far: PathBuf,
    /// The far end's key.
    pub(super) far_key: PublicKey,
    /// The near end's key (whom the far end's apps serve).
    pub(super) near_key: PublicKey,
}

fn failed(what: &str, e: impl std::error::Error) -> BenchError {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        why = format!("{why}: {cause}");
        source = cause.source();
    }
    BenchError::Io {
        what: format!("streams: {what}"),
        source: std::io::Error::other(why),
    }
}

/// Accept streams on `listener` until it ends, each on its own thread running `serve`.
fn serve_all(
    mut listener: AppListener,
    serve: fn(AppStream),
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok(stream) => {
                    // Small stacks: thousands of idle streams each hold a thread here.
                    let spawned = thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || serve(stream));
                    if spawned.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

fn sink(mut stream: AppStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    let _ = stream.shutdown_write();
}

fn first_byte(mut stream: AppStream) {
    let _ = stream.write_all(b"!");
    let _ = stream.shutdown_write();
    let mut buf = [0u8; 64];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Send as fast as the streams take for `time`, on `count` streams at once; Gbit/s.
fn blast(app: &AppClient, ends: &Ends, count: usize, time: Duration) -> Result<f64, BenchError> {
    let total = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for _ in 0..count {
        streams.push(
            app.dial(ends.far_key, SINK, Duration::from_secs(10))
                .map_err(|e| failed("dial the sink", e))?,
        );
    }
    let started = Instant::now();
    let workers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let total = Arc::clone(&total);
            thread::spawn(move || {
                let buf = vec![0x5au8; 256 * 1024];
                while started.elapsed() < time {
                    if stream.write_all(&buf).is_err() {
                        return;
                    }
                    total.fetch_add(buf.len() as u64, Ordering::Relaxed);
                }
                let _ = stream.shutdown_write();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let took = started.elapsed().as_secs_f64();
    Ok(total.load(Ordering::Relaxed) as f64 * 8.0 / took / 1e9)
}

/// Open a stream with `request` on the app socket at `path`, keeping only the connection
/// (one descriptor: thousands of idle streams fit in the bench's open-file limit).
fn raw_open(path: &std::path::Path, request: &AppRequest) -> std::io::Result<UnixStream> {
    let mut socket = UnixStream::connect(path)?;
    socket.set_read_timeout(Some(Duration::from_secs(15)))?;
    socket.write_all(&request.to_line())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        if line.len() > MAX_REQUEST {
            return Err(std::io::Error::other(
                "the node's answer is longer than a line",
            ));
        }
        socket.read_exact(&mut byte)?;
        line.push(byte[0]);
    }
    if !line.starts_with(b"{\"ok\"") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&line).into_owned(),
        ));
    }
    Ok(socket)
}

/// Take every stream arriving on `listener`, keeping only their connections.
fn hold_all(mut listener: AppListener, path: PathBuf) -> thread::JoinHandle<Vec<UnixStream>> {
    thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(incoming) = listener.next_incoming() {
            match raw_open(
                &path,
                &AppRequest::Accept {
                    stream: incoming.stream,
                },
            ) {
                Ok(socket) => held.push(socket),
                Err(_) => return held,
            }
        }
        held
    })
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(rank).copied()
}

/// One stream's throughput only (the chains with relays).
pub(super) fn one_stream(
    run: &mut Run<'_>,
    chain: &mut Chain,
    ends: &Ends,
    reps: usize,
) -> Result<(), BenchError> {
    let hops = chain.relays + 1;
    let time = Duration::from_secs(run.options.seconds);
    let near = AppClient::new(&ends.near);
    let far = AppClient::new(&ends.far);
    let stop = Arc::new(AtomicBool::new(false));
    let listener = far
        .listen(ListenRequest::on(SINK))
        .map_err(|e| failed("listen on the far end", e))?;
    let server = serve_all(listener, sink, Arc::clone(&stop));
    for _ in 0..reps {
        chain.check_interrupted()?;
        let gbps = blast(&near, ends, 1, time)?;
        run.report.add("stream_1_gbps", "Gbit/s", NAME, hops, gbps);
        run.progress(&format!(
            "  stream_1_gbps, {NAME}, {hops} hop(s): {gbps:.2} Gbit/s"
        ));
    }
    stop.store(true, Ordering::Relaxed);
    drop(server);
    Ok(())
}

/// Every stream measurement on a chain whose skywire `tunnel` has its app sockets at
/// `ends`.
pub(super) fn measure(
    run: &mut Run<'_>,
    chain: &mut Chain,
    tunnel: &Tunnel,
    ends: &Ends,
    reps: usize,
) -> Result<(), BenchError> {
    let hops = chain.relays + 1;
    let time = Duration::from_secs(run.options.seconds);
    let near = AppClient::new(&ends.near);
    let far = AppClient::new(&ends.far);
    let stop = Arc::new(AtomicBool::new(false));
    let mut request = ListenRequest::on(SINK);
    request.backlog = 1024;
    let sink_listener = far
        .listen(request.clone())
        .map_err(|e| failed("listen on the far end", e))?;
    request.port = FIRST_BYTE;
    let echo_listener = far
        .listen(request)
        .map_err(|e| failed("listen on the far end", e))?;
    let servers = [
        serve_all(sink_listener, sink, Arc::clone(&stop)),
        serve_all(echo_listener, first_byte, Arc::clone(&stop)),
    ];

    run.progress(&format!(
        "app streams (the stack) next to the TUN path: {reps} runs each"
    ));
    for _ in 0..reps {
        chain.check_interrupted()?;
        let cpu0 = total_cpu(tunnel);
        let gbps = blast(&near, ends, 1, time)?;
        let cpu = total_cpu(tunnel) - cpu0;
        run.report.add("stream_1_gbps", "Gbit/s", NAME, hops, gbps);
        let gbit = gbps * time.as_secs_f64();
        if gbit > 0.0 {
            run.report.add(
                "stream_cpu_seconds_per_gbit",
                "s/Gbit",
                NAME,
                hops,
                cpu / gbit,
            );
        }
        run.progress(&format!(
            "  stream_1_gbps: {gbps:.2} Gbit/s, {:.2} CPU s/Gbit",
            if gbit > 0.0 { cpu / gbit } else { 0.0 }
        ));
        let gbps4 = blast(&near, ends, 4, time)?;
        run.report.add("stream_4_gbps", "Gbit/s", NAME, hops, gbps4);
        run.progress(&format!("  stream_4_gbps: {gbps4:.2} Gbit/s"));
    }

    // Time to first byte of new dials.
    let mut ttfb = Vec::with_capacity(DIALS);
    for _ in 0..DIALS {
        chain.check_interrupted()?;
        let started = Instant::now();
        let mut stream = near
            .dial(ends.far_key, FIRST_BYTE, Duration::from_secs(10))
            .map_err(|e| failed("dial for the first byte", e))?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .map_err(|e| failed("read the first byte", e))?;
        ttfb.push(started.elapsed().as_secs_f64() * 1e3);
        let _ = stream.shutdown_write();
    }
    ttfb.sort_by(f64::total_cmp);
    for (metric, p) in [("stream_ttfb_p50_ms", 0.5), ("stream_ttfb_p99_ms", 0.99)] {
        if let Some(v) = percentile(&ttfb, p) {
            run.report.add(metric, "ms", NAME, hops, v);
        }
    }
    run.progress(&format!(
        "  time to first byte over {DIALS} dials: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&ttfb, 0.5).unwrap_or(0.0),
        percentile(&ttfb, 0.99).unwrap_or(0.0)
    ));

    // One stream with idle ones open: their far ends are held on a port of their own.
    // The idle streams need two connections each.
    crate::local::raise_fd_limit();
    let mut idle_request = ListenRequest::on(IDLE_PORT);
    idle_request.backlog = 1024;
    let idle_listener = far
        .listen(idle_request)
        .map_err(|e| failed("listen on the far end", e))?;
    let holder = hold_all(idle_listener, ends.far.clone());
    let rss0 = largest_rss(tunnel);
    let mut idle: Vec<UnixStream> = Vec::new();
    let dial = AppRequest::Dial {
        peer: ends.far_key,
        port: IDLE_PORT,
        timeout: Duration::from_secs(10),
    };
    for &count in &IDLE {
        while idle.len() < count {
            chain.check_interrupted()?;
            idle.push(
                raw_open(&ends.near, &dial)
                    .map_err(|e| failed(&format!("open idle stream {}", idle.len() + 1), e))?,
            );
        }
        thread::sleep(Duration::from_millis(500));
        let metric = format!("stream_1_idle_{count}_gbps");
        for _ in 0..reps {
            let gbps = blast(&near, ends, 1, time)?;
            run.report.add(&metric, "Gbit/s", NAME, hops, gbps);
            run.progress(&format!("  {metric}: {gbps:.2} Gbit/s"));
        }
    }
    if let (Some(before), Some(after)) = (rss0, largest_rss(tunnel)) {
        let per = (after - before) * 1024.0 / idle.len().max(1) as f64;
        run.report
            .add("rss_per_idle_stream_kib", "KiB", NAME, hops, per);
        run.progress(&format!(
            "  RSS: {before:.1} MiB -> {after:.1} MiB with {} idle streams: {per:.1} KiB each",
            idle.len()
        ));
    }
    drop(idle);
    stop.store(true, Ordering::Relaxed);
    drop(servers);
    drop(holder);
    Ok(())
}
