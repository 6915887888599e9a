//! `capture-agent`: watch VNC traffic on an interface (`--interface`) or in a capture file
//! (`--pcap`) and publish session events (`--sink stdout` prints JSON lines).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use capture_agent::capture::live::{bpf_filter, LiveCapture};
use capture_agent::config::parse_duration;
use capture_agent::{publish, Agent, AgentConfig, EndReason, EventSink, JsonLines, PortSet};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SinkKind {
    /// One JSON object per line on standard output.
    Stdout,
}

/// Watches VNC (RFB) traffic, reassembles TCP, parses RFB and emits session events.
#[derive(Debug, Parser)]
#[command(name = "capture-agent", version)]
struct Args {
    /// Read this pcap or pcapng file instead of capturing live.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "interface",
        required_unless_present = "interface"
    )]
    pcap: Option<PathBuf>,
    /// Capture live on this interface (libpcap).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// TCP ports where VNC servers listen: a list of ports and ranges.
    #[arg(long, env = "VNC_PORTS", default_value = "5900-5905")]
    vnc_ports: PortSet,
    /// Also find RFB by its banner on any TCP port (captures all TCP live).
    #[arg(long)]
    any_port: bool,
    /// Identity of this agent in every event (default: the hostname).
    #[arg(long, env = "AGENT_ID")]
    agent_id: Option<String>,
    /// Where events go.
    #[arg(long, value_enum, default_value = "stdout")]
    sink: SinkKind,
    /// A stats event per open session this often (capture time), e.g. 30s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// A connection silent this long ends with idle_timeout.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Most connections tracked at once (least recently active evicted past it).
    #[arg(long, default_value_t = 100_000)]
    max_flows: usize,
    /// Live: a heartbeat with capture counters this often.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Log format on standard error.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    log_format: LogFormat,
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Sets `stop` on SIGINT or SIGTERM.
fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            stop.store(true, Ordering::Relaxed);
        });
    });
}

fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let host = hostname();
    let config = AgentConfig {
        agent_id: args.agent_id.clone().unwrap_or_else(|| host.clone()),
        ports: args.vnc_ports.clone(),
        any_port: args.any_port,
        stats_interval: args.stats_interval,
        idle_timeout: args.idle_timeout,
        max_flows: args.max_flows,
        ..AgentConfig::default()
    };
    // Emission sits behind `EventSink`: another sink (Kafka) is one more arm here.
    let mut sink: Box<dyn EventSink> = match args.sink {
        SinkKind::Stdout => Box::new(JsonLines::new(std::io::BufWriter::new(std::io::stdout()))),
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());

    if let Some(path) = &args.pcap {
        let file = capture_agent::capture::file::CaptureFile::open(path)?;
        let started = Instant::now();
        let result = capture_agent::analyze_capture(file, &config, sink.as_mut(), Some(&stop));
        match result {
            Ok(stats) => {
                tracing::info!(
                    packets = stats.packets,
                    bytes = stats.bytes,
                    sessions = stats.sessions_total,
                    flows = stats.flows_created,
                    evicted = stats.flows_evicted,
                    parse_errors = stats.parse_errors,
                    gap_bytes = stats.gap_bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "capture file done"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "capture file stopped early; sessions read so far were emitted");
                Err(e).with_context(|| format!("reading {}", path.display()))
            }
        }
    } else {
        let interface = args
            .interface
            .as_deref()
            .expect("clap requires --interface");
        run_live(interface, &args, config, sink.as_mut(), &stop, &host)
    }
}

fn run_live(
    interface: &str,
    args: &Args,
    config: AgentConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
    host: &str,
) -> anyhow::Result<()> {
    let filter = bpf_filter(&config.ports, config.any_port);
    let mut capture = LiveCapture::open(interface, &filter)?;
    tracing::info!(interface, filter = %filter, link = capture.link_type().0, "capturing");
    let started_at = chrono::Utc::now();
    let sources = vec![format!("live:{interface}")];
    let mut agent = Agent::new(config);
    let mut next_heartbeat = Instant::now() + args.heartbeat_interval;
    let mut failure = None;
    while !stop.load(Ordering::Relaxed) {
        match capture.next_packet() {
            Ok(Some(packet)) => agent.handle_packet(&packet),
            Ok(None) => {
                agent.advance(wall_clock_ns());
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if agent.has_events() {
            publish(&mut agent, sink)?;
            sink.flush().map_err(anyhow::Error::from_boxed)?;
        }
        if Instant::now() >= next_heartbeat {
            next_heartbeat += args.heartbeat_interval;
            let drops = capture.stats().dropped;
            let hb = agent.heartbeat(host, started_at, chrono::Utc::now(), drops, sources.clone());
            sink.heartbeat(&hb).map_err(anyhow::Error::from_boxed)?;
            sink.flush().map_err(anyhow::Error::from_boxed)?;
        }
    }
    agent.finish(EndReason::Shutdown);
    publish(&mut agent, sink)?;
    let drops = capture.stats().dropped;
    let hb = agent.heartbeat(host, started_at, chrono::Utc::now(), drops, sources);
    sink.heartbeat(&hb).map_err(anyhow::Error::from_boxed)?;
    sink.flush().map_err(anyhow::Error::from_boxed)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
