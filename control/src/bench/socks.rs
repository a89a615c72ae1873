//! SOCKS5 proxies on the bench's chain without relays, next to the TUN path on the same
//! nodes: `skywire socks client` on the near end and `skywire socks exit` on the far end
//! (issue 13), and microsocks on plain loopback as the baseline a SOCKS proxy is held to.
//!
//! ```text
//!   skywire-socks:        near namespace                         far namespace
//!     proxychains4 iperf3 -c 127.0.0.1:5301          iperf3 -s -B 127.0.0.1 -p 5301
//!        -> socks client 127.0.0.1:1080 -> node ==mesh== node -> socks exit -> ^
//!   microsocks-loopback:  one namespace of its own (no link)
//!     proxychains4 iperf3 -c 127.0.0.1:5301 -> microsocks 127.0.0.1:1081 -> iperf3 -s
//! ```
//!
//! Measured for each, `reps` times, taking turns:
//! - `socks_1_gbps`, `socks_4_gbps`: `proxychains4 -q -f CONF iperf3 -c 127.0.0.1 -p 5301
//!   -t S -J` (and `-P 4`), receiver goodput. proxychains4 hands each of iperf3's
//!   connections (the control one and the data ones) to the proxy; its config is
//!   `strict_chain`, `proxy_dns` and the one proxy;
//! - `socks_cpu_seconds_per_gbit`: during the one-stream run, the CPU time of both skywire
//!   nodes and both SOCKS apps (microsocks': its own) per Gbit received;
//! - `socks_setup_p50_ms`, `_p99_ms`: 500 sequential SOCKS5 CONNECTs (no authentication,
//!   an IPv4 destination; the greeting, its answer, then the request, as proxychains4 and
//!   curl send them) from the bench itself inside the near namespace to a listener on
//!   127.0.0.1:5302 beside the iperf3 server that accepts and closes, each timed from the
//!   TCP connect to the proxy to its success reply (the exit's connection made).
//!
//! skywire's figures are recorded at 1 hop; microsocks' at 0 hops (no mesh: loopback in
//! one namespace). The exit serves the near node's key only, and allows the two loopback
//! ports (`--allow 127.0.0.1/32:PORT`; its policy refuses loopback otherwise); its
//! per-client limits are raised in its config (`socks.exit`), since the default of 50 new
//! connections a second would refuse the setup loop: these figures are the proxy's, not its
//! rate limiter's.
//!
//! Needs proxychains4 for the throughput runs and microsocks for the baseline (Debian
//! packages of those names); without one, that part is skipped and the report says which
//! package to install; a failed run of microsocks (a tool error, not an exit) leaves its
//! figures out with the reason, while a failure of skywire's ends the bench as every other
//! phase's does. Every process is started through the chain, which stops it on every path
//! out; the setup listeners are the bench's own sockets, closed on return.

use core::time::Duration;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};
use skywire_dataplane::sys::netns::in_namespace;

use super::chain::Chain;
use super::streams::Ends;
use super::tools::{TcpResult, cpu_seconds, installed, parse_tcp, run_in};
use super::{BenchError, Run, Tunnel, percentile};
use crate::apps::socks::wire::{self, Command, Dest, Rep, Request};
use crate::config::{ConfigFile, SocksConfig, SocksExitConfig};

/// The report's name for skywire's SOCKS figures.
pub(super) const NAME: &str = "skywire-socks";
/// The report's name for microsocks' figures.
pub(super) const MICROSOCKS: &str = "microsocks-loopback";
/// The Debian packages, as the report names them when missing.
const PROXYCHAINS_INSTALL: &str = "apt-get install -y proxychains4";
const MICROSOCKS_INSTALL: &str = "apt-get install -y microsocks";
/// The iperf3 server's port and the setup listener's, on 127.0.0.1 of the far namespace.
const IPERF_PORT: u16 = 5301;
const SETUP_PORT: u16 = 5302;
/// The SOCKS5 servers' ports.
const SKYWIRE_PROXY: u16 = 1080;
const MICROSOCKS_PROXY: u16 = 1081;
/// CONNECTs timed per repetition.
const SETUPS: usize = 500;
/// The host beside the chain that holds microsocks.
const LOOPBACK_HOST: &str = "loopback";
/// How long a started process gets to be ready.
const READY_WAIT: Duration = Duration::from_secs(10);

/// One SOCKS5 proxy under test.
struct Proxy {
    /// The report's name.
    name: &'static str,
    /// A comparison, not skywire: a failure of its runs leaves its figures out (and says
    /// why) instead of ending the bench.
    baseline: bool,
    /// Hops of its path.
    hops: usize,
    /// Where its clients (proxychains4 and iperf3, the setup loop) run.
    namespace: String,
    /// Its port on 127.0.0.1 there.
    port: u16,
    /// The proxychains4 config that points at it; `None` without proxychains4.
    proxychains: Option<PathBuf>,
    /// The processes whose CPU time is its cost.
    pids: Vec<u32>,
    /// The setup figures' destination, on the other side of the proxy: held, and closed
    /// with the proxy.
    _closer: Closer,
}

/// A listener on 127.0.0.1:[`SETUP_PORT`] of a namespace that accepts every connection
/// and closes it at once; stopped and closed when dropped.
struct Closer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Closer {
    fn start(namespace: &str) -> Result<Self, BenchError> {
        let failed = |source| BenchError::Io {
            what: format!("socks: cannot listen on 127.0.0.1:{SETUP_PORT} in {namespace}"),
            source,
        };
        // The socket stays in the namespace it was made in, whichever thread uses it.
        let listener = in_namespace(namespace, || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, SETUP_PORT))
        })
        .and_then(|bound| bound)
        .map_err(failed)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("bench-socks-closer".to_owned())
            .spawn(move || {
                // Wakes at least every 100 ms to see `stop`; a connection is taken at once.
                let tick = Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                while !stopped.load(Ordering::Relaxed) {
                    let mut fds = [PollFd::new(&listener, PollFlags::IN)];
                    match rustix::event::poll(&mut fds, Some(&tick)) {
                        Ok(0) => {}
                        Ok(_) => drop(listener.accept()),
                        Err(rustix::io::Errno::INTR) => {}
                        Err(_) => return,
                    }
                }
            })
            .map_err(failed)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every SOCKS figure on the chain without relays, whose skywire `tunnel` has its app
/// sockets at `ends`; the parts whose tools are missing are reported as skipped.
pub(super) fn measure(
    run: &mut Run<'_>,
    chain: &mut Chain,
    tunnel: &Tunnel,
    ends: &Ends,
    reps: usize,
) -> Result<(), BenchError> {
    let proxychains = installed("proxychains4");
    if !proxychains {
        skip(
            run,
            &format!(
                "SOCKS throughput: proxychains4 is not installed (it runs iperf3 through the \
                 proxies); install with: {PROXYCHAINS_INSTALL}"
            ),
        );
    }
    let program = run.options.program.clone();
    let mut proxies = vec![start_skywire(chain, &program, tunnel, ends, proxychains)?];
    if installed("microsocks") {
        proxies.push(start_microsocks(chain, proxychains)?);
    } else {
        skip(
            run,
            &format!(
                "{MICROSOCKS}: microsocks is not installed; install with: {MICROSOCKS_INSTALL}"
            ),
        );
    }
    run.progress(&format!(
        "SOCKS5 proxies ({}): {reps} runs each, taking turns",
        proxies
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for _ in 0..reps {
        let mut failed = Vec::new();
        for (i, proxy) in proxies.iter().enumerate() {
            match measure_once(run, chain, proxy) {
                Err(error @ BenchError::Tool { .. }) if proxy.baseline => {
                    skip(
                        run,
                        &format!("{}: {error}; its further runs are left out", proxy.name),
                    );
                    failed.push(i);
                }
                other => other?,
            }
        }
        for i in failed.into_iter().rev() {
            proxies.remove(i);
        }
    }
    Ok(())
}

fn skip(run: &mut Run<'_>, why: &str) {
    run.progress(&format!("skipped: {why}"));
    run.report.skipped.push(why.to_owned());
}

/// One run of each figure through `proxy`.
fn measure_once(run: &mut Run<'_>, chain: &mut Chain, proxy: &Proxy) -> Result<(), BenchError> {
    let (name, hops) = (proxy.name, proxy.hops);
    let mut line = format!("  {name}:");
    if let Some(conf) = &proxy.proxychains {
        chain.check_interrupted()?;
        let cpu0 = cpu_of(&proxy.pids);
        let one = iperf(run, chain, proxy, conf, 1)?;
        let cpu = cpu_of(&proxy.pids) - cpu0;
        chain.check_processes()?;
        match one {
            Some(r) => {
                run.report.add("socks_1_gbps", "Gbit/s", name, hops, r.gbps);
                let gbit = r.bytes * 8.0 / 1e9;
                if gbit > 0.0 {
                    run.report.add(
                        "socks_cpu_seconds_per_gbit",
                        "s/Gbit",
                        name,
                        hops,
                        cpu / gbit,
                    );
                }
                line.push_str(&format!(
                    " 1 stream {:.2} Gbit/s ({:.2} CPU s/Gbit),",
                    r.gbps,
                    if gbit > 0.0 { cpu / gbit } else { f64::NAN }
                ));
            }
            None => line.push_str(" 1 stream: iperf3 gave no result,"),
        }
        chain.check_interrupted()?;
        let four = iperf(run, chain, proxy, conf, 4)?;
        chain.check_processes()?;
        match four {
            Some(r) => {
                run.report.add("socks_4_gbps", "Gbit/s", name, hops, r.gbps);
                line.push_str(&format!(" 4 streams {:.2} Gbit/s,", r.gbps));
            }
            None => line.push_str(" 4 streams: iperf3 gave no result,"),
        }
    }
    chain.check_interrupted()?;
    let times = setups(proxy, &chain.interrupted())?;
    chain.check_processes()?;
    let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
    run.report.add("socks_setup_p50_ms", "ms", name, hops, p50);
    run.report.add("socks_setup_p99_ms", "ms", name, hops, p99);
    line.push_str(&format!(
        " setup p50 {p50:.3} ms, p99 {p99:.3} ms ({} CONNECTs)",
        times.len()
    ));
    run.progress(&line);
    Ok(())
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// iperf3 through `proxy` with `streams` streams (proxychains4 config `conf`).
fn iperf(
    run: &Run<'_>,
    chain: &Chain,
    proxy: &Proxy,
    conf: &Path,
    streams: usize,
) -> Result<Option<TcpResult>, BenchError> {
    let conf = conf.to_string_lossy();
    let (port, seconds, parallel) = (
        IPERF_PORT.to_string(),
        run.options.seconds.to_string(),
        streams.to_string(),
    );
    let mut args = vec![
        "-q",
        "-f",
        &conf,
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        &seconds,
        "-J",
    ];
    if let Some(cc) = &run.options.congestion_control {
        args.extend(["-C", cc.as_str()]);
    }
    if streams > 1 {
        args.extend(["-P", &parallel]);
    }
    let json = run_in(
        &proxy.namespace,
        "proxychains4",
        &args,
        &chain.interrupted(),
    )?;
    Ok(parse_tcp(&json))
}

/// [`SETUPS`] CONNECTs through `proxy`, one after the other: each one's time in ms.
fn setups(proxy: &Proxy, interrupted: &AtomicBool) -> Result<Vec<f64>, BenchError> {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port));
    let timed = in_namespace(&proxy.namespace, || -> Result<_, Option<ConnectError>> {
        let mut times = Vec::with_capacity(SETUPS);
        for _ in 0..SETUPS {
            if interrupted.load(Ordering::Relaxed) {
                return Err(None);
            }
            let started = Instant::now();
            let connection =
                connect(server, Dest::Ip(Ipv4Addr::LOCALHOST.into()), SETUP_PORT).map_err(Some)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            drop(connection);
        }
        Ok(times)
    })
    .map_err(|source| BenchError::Io {
        what: format!("socks: cannot enter {}", proxy.namespace),
        source,
    })?;
    match timed {
        Ok(times) => Ok(times),
        Err(None) => Err(BenchError::Interrupted),
        Err(Some(error)) => Err(BenchError::Tool {
            command: format!(
                "SOCKS5 CONNECT 127.0.0.1:{SETUP_PORT} through {} at {server} (in {})",
                proxy.name, proxy.namespace
            ),
            detail: error.to_string(),
        }),
    }
}

/// Why a timed CONNECT failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// Connecting, sending or reading failed (a read waits 10 s at most).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The proxy did not take "no authentication".
    #[error("the proxy answered the greeting with {0:?}")]
    Method([u8; 2]),
    /// The reply was not a reply.
    #[error("the proxy's reply is not SOCKS5: {0:?}")]
    Malformed([u8; wire::REPLY_LEN]),
    /// The proxy refused, or could not connect.
    #[error("reply {code} ({0})", code = u8::from(*.0))]
    Refused(Rep),
}

/// A SOCKS5 CONNECT to `dest`:`port` through `proxy`, made as proxychains4 and curl make
/// it: the greeting, its answer, then the request. The connection after a success reply.
///
/// Not the demo's `socks_connect`, which sends the greeting and the request at once:
/// microsocks 1.0.3 reads both with one `recv`, takes the greeting, drops the rest and
/// waits for a request that never comes.
fn connect(proxy: SocketAddr, dest: Dest, port: u16) -> Result<TcpStream, ConnectError> {
    let mut conn = TcpStream::connect(proxy)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(&[wire::VERSION, 1, wire::Method::NoAuth.into()])?;
    let mut method = [0u8; 2];
    conn.read_exact(&mut method)?;
    if method != wire::method_reply(wire::Method::NoAuth) {
        return Err(ConnectError::Method(method));
    }
    let mut request = Vec::with_capacity(wire::MAX_REQUEST_LEN);
    wire::encode_request(
        &Request {
            command: Command::Connect,
            dest,
            port,
        },
        &mut request,
    );
    conn.write_all(&request)?;
    let mut reply = [0u8; wire::REPLY_LEN];
    conn.read_exact(&mut reply)?;
    match wire::parse_reply(&reply) {
        Ok(Some((r, _))) if r.rep == Rep::Succeeded => Ok(conn),
        Ok(Some((r, _))) => Err(ConnectError::Refused(r.rep)),
        _ => Err(ConnectError::Malformed(reply)),
    }
}

/// Start `skywire socks exit` on the far end and `skywire socks client` on the near end,
/// with an iperf3 server (with proxychains4) and a setup listener behind the exit.
fn start_skywire(
    chain: &mut Chain,
    program: &Path,
    tunnel: &Tunnel,
    ends: &Ends,
    proxychains: bool,
) -> Result<Proxy, BenchError> {
    let (near, far) = (0, chain.last());
    let mut allow = vec![SETUP_PORT];
    if proxychains {
        allow.push(IPERF_PORT);
    }
    // The limits only: who is served and what is allowed are on the command line.
    let config = chain.write_config(
        "socks-exit.yaml",
        &ConfigFile::socks(SocksConfig {
            exit: SocksExitConfig {
                streams_per_client: SocksExitConfig::default().streams,
                rate_per_client: 100_000,
                ..SocksExitConfig::default()
            },
            ..SocksConfig::default()
        })
        .with_comment("skywire bench: the SOCKS exit's limits, raised for one client"),
    )?;
    let (config, far_socket, near_socket, near_key, far_key) = (
        config.to_string_lossy().into_owned(),
        ends.far.to_string_lossy().into_owned(),
        ends.near.to_string_lossy().into_owned(),
        ends.near_key.to_string(),
        ends.far_key.to_string(),
    );
    let allow: Vec<String> = allow
        .iter()
        .map(|port| format!("127.0.0.1/32:{port}"))
        .collect();
    let mut args = vec![
        "socks",
        "exit",
        "--config",
        &config,
        "--client",
        &near_key,
        "--socket",
        &far_socket,
    ];
    for a in &allow {
        args.extend(["--allow", a.as_str()]);
    }
    let exit = chain.spawn(far, "skywire socks exit", program, &args, "socks-exit.log")?;
    wait_for_log(
        chain,
        "skywire socks exit",
        "socks-exit.log",
        "skywire socks exit",
    )?;
    let listen = format!("127.0.0.1:{SKYWIRE_PROXY}");
    let client = chain.spawn(
        near,
        "skywire socks client",
        program,
        &[
            "socks",
            "client",
            "--exit",
            &far_key,
            "--socket",
            &near_socket,
            "--listen",
            &listen,
        ],
        "socks-client.log",
    )?;
    wait_for_log(
        chain,
        "skywire socks client",
        "socks-client.log",
        "skywire socks client: SOCKS5 on",
    )?;
    let far_ns = chain.namespace(far);
    let proxychains = if proxychains {
        start_iperf3_server(chain, &far.to_string(), &far_ns, "socks-iperf3.log")?;
        Some(write_proxychains(
            chain,
            "proxychains-skywire.conf",
            SKYWIRE_PROXY,
        )?)
    } else {
        None
    };
    let mut pids = tunnel.pids.clone();
    pids.extend([exit, client]);
    Ok(Proxy {
        name: NAME,
        baseline: false,
        hops: chain.relays + 1,
        namespace: chain.namespace(near),
        port: SKYWIRE_PROXY,
        proxychains,
        pids,
        _closer: Closer::start(&far_ns)?,
    })
}

/// Start microsocks, an iperf3 server (with proxychains4) and a setup listener in a
/// namespace of their own.
fn start_microsocks(chain: &mut Chain, proxychains: bool) -> Result<Proxy, BenchError> {
    let namespace = chain.add_host(LOOPBACK_HOST)?;
    let port = MICROSOCKS_PROXY.to_string();
    let pid = chain.spawn_on(
        LOOPBACK_HOST,
        "microsocks",
        Path::new("microsocks"),
        &["-i", "127.0.0.1", "-p", &port],
        "microsocks.log",
    )?;
    wait_listening(
        chain,
        "microsocks",
        "microsocks.log",
        &namespace,
        MICROSOCKS_PROXY,
    )?;
    let proxychains = if proxychains {
        start_iperf3_server(chain, LOOPBACK_HOST, &namespace, "microsocks-iperf3.log")?;
        Some(write_proxychains(
            chain,
            "proxychains-microsocks.conf",
            MICROSOCKS_PROXY,
        )?)
    } else {
        None
    };
    Ok(Proxy {
        name: MICROSOCKS,
        baseline: true,
        hops: 0,
        _closer: Closer::start(&namespace)?,
        namespace,
        port: MICROSOCKS_PROXY,
        proxychains,
        pids: vec![pid],
    })
}

/// Wait until the log `log` of the process `what` holds `text`.
fn wait_for_log(chain: &mut Chain, what: &str, log: &str, text: &str) -> Result<(), BenchError> {
    let path = chain.file(log);
    wait_until(chain, what, &path, |_| {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains(text))
    })
}

/// Wait until something listens on 127.0.0.1:`port` in `namespace` (asked of `ss`, so
/// that no test connection reaches the server).
fn wait_listening(
    chain: &mut Chain,
    what: &str,
    log: &str,
    namespace: &str,
    port: u16,
) -> Result<(), BenchError> {
    let filter = format!("src 127.0.0.1:{port}");
    let log = chain.file(log);
    wait_until(chain, what, &log, |chain| {
        run_in(namespace, "ss", &["-Hltn", &filter], &chain.interrupted())
            .is_ok_and(|out| !out.trim().is_empty())
    })
}

/// Poll `ready` until it holds, the process fails, or [`READY_WAIT`] passed.
fn wait_until(
    chain: &mut Chain,
    what: &str,
    log: &Path,
    mut ready: impl FnMut(&Chain) -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_WAIT;
    while !ready(chain) {
        chain.check_interrupted()?;
        chain.check_processes()?;
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines
                .get(lines.len().saturating_sub(20)..)
                .unwrap_or_default();
            return Err(BenchError::NotReady {
                what: what.to_owned(),
                waited: READY_WAIT,
                log: tail
                    .iter()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `iperf3 -s` on 127.0.0.1:[`IPERF_PORT`] of `host` (namespace `namespace`).
fn start_iperf3_server(
    chain: &mut Chain,
    host: &str,
    namespace: &str,
    log: &str,
) -> Result<(), BenchError> {
    let port = IPERF_PORT.to_string();
    chain.spawn_on(
        host,
        "iperf3 server (SOCKS)",
        Path::new("iperf3"),
        &["-s", "-B", "127.0.0.1", "-p", &port],
        log,
    )?;
    wait_listening(chain, "iperf3 server (SOCKS)", log, namespace, IPERF_PORT)
}

/// A proxychains4 config in the chain's folder that sends every TCP connection through the
/// SOCKS5 server on 127.0.0.1:`port`, names included (`proxy_dns`); its path.
fn write_proxychains(chain: &Chain, name: &str, port: u16) -> Result<PathBuf, BenchError> {
    let path = chain.file(name);
    let text = format!(
        "# skywire bench: iperf3 through the SOCKS5 server on 127.0.0.1:{port}\n\
         strict_chain\nproxy_dns\n[ProxyList]\nsocks5 127.0.0.1 {port}\n"
    );
    std::fs::write(&path, text).map_err(|source| BenchError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    Ok(path)
}
