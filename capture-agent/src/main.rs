//! `capture-agent`: watch VNC traffic on an interface (`--interface`) or in a capture file
//! (`--pcap`) and publish session events (`--sink stdout` prints JSON lines).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs};
use capture_agent::capture::live::{bpf_filter, LiveCapture};
use capture_agent::config::parse_duration;
use capture_agent::enforce::{self, Enforcer, HostCommands, SessionIndex, SessionTracking};
use capture_agent::publish::{BusSink, Overflow, PublishOptions, PublishReport};
use capture_agent::{
    publish, Agent, AgentConfig, CaptureStats, EndReason, EventSink, JsonLines, PortSet,
};
use clap::{Parser, ValueEnum};
use telemetry::LogArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    /// One JSON object per line on standard output.
    Stdout,
    /// Session events to `vnc.sessions.raw` (keyed by client IP), heartbeats to
    /// `vnc.agents.heartbeat` (keyed by agent id).
    Kafka,
}

/// Watches VNC (RFB) traffic, reassembles TCP, parses RFB and emits session events.
#[derive(Debug, Parser)]
#[command(name = "capture-agent", version)]
struct Args {
    /// Read this pcap or pcapng file instead of capturing live.
    #[arg(
        long,
        env = "AGENT_PCAP",
        value_name = "FILE",
        conflicts_with = "interface",
        required_unless_present = "interface"
    )]
    pcap: Option<PathBuf>,
    /// Capture live on this interface (libpcap).
    #[arg(long, env = "AGENT_INTERFACE", value_name = "IF")]
    interface: Option<String>,
    /// TCP ports where VNC servers listen: a list of ports and ranges.
    #[arg(long, env = "VNC_PORTS", default_value = "5900-5905")]
    vnc_ports: PortSet,
    /// Also find RFB by its banner on any TCP port (captures all TCP live).
    #[arg(long, env = "AGENT_ANY_PORT")]
    any_port: bool,
    /// Identity of this agent in every event (default: the hostname).
    #[arg(long, env = "AGENT_ID")]
    agent_id: Option<String>,
    /// Where events go [default: kafka when KAFKA_BROKERS is set, else stdout].
    #[arg(long, env = "AGENT_SINK", value_enum)]
    sink: Option<SinkKind>,
    /// A stats event per open session this often (capture time), e.g. 30s, 5m.
    #[arg(long, env = "AGENT_STATS_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// A connection silent this long ends with idle_timeout.
    #[arg(long, env = "AGENT_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Most connections tracked at once (least recently active evicted past it).
    #[arg(long, env = "AGENT_MAX_FLOWS", default_value_t = 100_000)]
    max_flows: usize,
    /// Live: a heartbeat with capture counters this often.
    #[arg(long, env = "AGENT_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Kafka sink: records queued between capture and publisher; live, records past it are
    /// dropped (counted) so capture never waits for the broker.
    #[arg(long, env = "AGENT_QUEUE_CAPACITY", default_value_t = 10_000)]
    queue_capacity: usize,
    /// Kafka sink: at shutdown, how long to keep retrying records the broker has not taken.
    #[arg(long, env = "AGENT_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Live: apply the decisions of `vnc.decisions` to this host with nftables (table
    /// `inet vncguard`); needs the privilege to use nftables, else the agent only monitors.
    #[arg(long, env = "AGENT_ENFORCE", requires = "interface")]
    enforce: bool,
    /// Live: serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    log: LogArgs,
}

impl Args {
    fn sink_kind(&self) -> SinkKind {
        self.sink
            .unwrap_or(if std::env::var_os("KAFKA_BROKERS").is_some() {
                SinkKind::Kafka
            } else {
                SinkKind::Stdout
            })
    }
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

fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
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
    // Capture runs on this thread; the runtime carries the publisher, /metrics and signals.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            bus::pipeline::shutdown_signal().await;
            tracing::info!("shutting down");
            stop.store(true, Ordering::Relaxed);
        });
    }
    if let (Some(addr), Some(_)) = (args.metrics_addr, &args.interface) {
        runtime.spawn(telemetry::serve_metrics(addr));
    }

    let live = args.interface.is_some();
    let (mut sink, publisher): (Box<dyn EventSink>, _) = match args.sink_kind() {
        SinkKind::Stdout => (
            Box::new(JsonLines::new(std::io::BufWriter::new(std::io::stdout()))),
            None,
        ),
        SinkKind::Kafka => {
            let (sink, publisher) = start_publisher(&args, live, &runtime)?;
            (Box::new(sink), Some(publisher))
        }
    };

    let enforcing = if args.enforce {
        let sessions = SessionIndex::new(args.max_flows);
        sink = Box::new(SessionTracking::new(sink, sessions.clone()));
        start_enforcement(&args, &config.agent_id, &runtime, sessions)
    } else {
        if live {
            tracing::warn!("not enforcing (no --enforce): decisions are not applied on this host");
        }
        false
    };

    let result = match &args.pcap {
        Some(path) => run_file(path, &config, sink.as_mut(), &stop),
        None => {
            let interface = args
                .interface
                .as_deref()
                .expect("clap requires --interface");
            run_live(
                interface,
                &args,
                config,
                sink.as_mut(),
                &stop,
                &host,
                enforcing,
            )
        }
    };
    // Closing the sink lets the publisher send what is queued and finish.
    drop(sink);
    if let Some(publisher) = publisher {
        let report: PublishReport = runtime
            .block_on(publisher)
            .context("the publisher task failed")?;
        tracing::info!(
            published = report.published,
            failures = report.failures,
            abandoned = report.abandoned,
            "publisher done"
        );
        if report.abandoned > 0 && result.is_ok() {
            anyhow::bail!(
                "{} records could not be published before the drain timeout",
                report.abandoned
            );
        }
    }
    result
}

/// Creates missing topics and spawns the Kafka publisher. Live, a full queue drops records so
/// capture never waits; reading a file, the reader waits for the publisher instead.
fn start_publisher(
    args: &Args,
    live: bool,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(BusSink, tokio::task::JoinHandle<PublishReport>)> {
    let bus = KafkaBus::new(&args.bus).context("Kafka configuration")?;
    // rdkafka's clients spawn onto the runtime they are created in.
    let producer = runtime.block_on(async {
        bus.ensure_topics(schemas::topics::ALL)
            .await
            .with_context(|| format!("creating topics on {}", bus.brokers()))?;
        bus.producer().context("creating the Kafka producer")
    })?;
    let options = PublishOptions {
        queue_capacity: args.queue_capacity,
        batch_size: args.bus.batch_size,
        overflow: if live { Overflow::Drop } else { Overflow::Wait },
        drain_timeout: args.drain_timeout,
        ..PublishOptions::default()
    };
    Ok(capture_agent::publish::spawn(
        producer,
        options,
        runtime.handle(),
    ))
}

/// Starts applying decisions; false (said loudly) when this host cannot be enforced on.
fn start_enforcement(
    args: &Args,
    agent_id: &str,
    runtime: &tokio::runtime::Runtime,
    sessions: SessionIndex,
) -> bool {
    let enforcer = match Enforcer::start(HostCommands::local(), &args.vnc_ports, sessions) {
        Ok(enforcer) => enforcer,
        Err(e) => {
            tracing::error!(error = %e, "NOT ENFORCING: nftables unusable; monitoring goes on");
            return false;
        }
    };
    // A group per agent start: nothing is ever committed (every start reads the compacted topic
    // from its beginning), and a fresh group need not wait for a dead predecessor to time out.
    let group = format!("vncguard-enforce-{agent_id}-{}", wall_clock_ns());
    let consumer = KafkaBus::new(&args.bus)
        .map_err(anyhow::Error::from)
        .and_then(|bus| {
            runtime.block_on(async {
                bus.ensure_topics(&[schemas::topics::DECISIONS]).await?;
                Ok(bus.consumer(&group, &[schemas::topics::DECISIONS.name])?)
            })
        });
    match consumer {
        Ok(consumer) => {
            runtime.spawn(enforce::run(
                consumer,
                enforcer,
                bus::pipeline::shutdown_signal(),
            ));
            tracing::info!(table = enforce::TABLE, %group, "enforcing decisions from vnc.decisions with nftables");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "NOT ENFORCING: cannot read vnc.decisions; monitoring goes on");
            false
        }
    }
}

fn run_file(
    path: &std::path::Path,
    config: &AgentConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let file = capture_agent::capture::file::CaptureFile::open(path)?;
    let started = Instant::now();
    match capture_agent::analyze_capture(file, config, sink, Some(stop)) {
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
}

/// The live capture counters on `/metrics`.
struct LiveGauges {
    packets: &'static telemetry::Gauge,
    bytes: &'static telemetry::Gauge,
    pcap_drops: &'static telemetry::Gauge,
    flows_active: &'static telemetry::Gauge,
    flows_evicted: &'static telemetry::Gauge,
    sessions_active: &'static telemetry::Gauge,
    sessions_total: &'static telemetry::Gauge,
    parse_errors: &'static telemetry::Gauge,
    buffered_bytes: &'static telemetry::Gauge,
}

impl LiveGauges {
    fn register() -> LiveGauges {
        let gauge = telemetry::gauge;
        LiveGauges {
            packets: gauge("vncguard_agent_packets", "Frames captured.", &[]),
            bytes: gauge("vncguard_agent_bytes", "Bytes captured (wire length).", &[]),
            pcap_drops: gauge(
                "vncguard_agent_pcap_drops",
                "Frames dropped by the kernel or the interface (libpcap).",
                &[],
            ),
            flows_active: gauge("vncguard_agent_flows_active", "Connections tracked.", &[]),
            flows_evicted: gauge(
                "vncguard_agent_flows_evicted",
                "Connections evicted past --max-flows.",
                &[],
            ),
            sessions_active: gauge("vncguard_agent_sessions_active", "Open RFB sessions.", &[]),
            sessions_total: gauge("vncguard_agent_sessions_total", "RFB sessions seen.", &[]),
            parse_errors: gauge(
                "vncguard_agent_parse_errors",
                "RFB parse errors of ended sessions.",
                &[],
            ),
            buffered_bytes: gauge(
                "vncguard_agent_buffered_bytes",
                "Out-of-order bytes held for reassembly.",
                &[],
            ),
        }
    }

    fn update(&self, stats: &CaptureStats, pcap_drops: u64) {
        let set = |gauge: &telemetry::Gauge, value: u64| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX))
        };
        set(self.packets, stats.packets);
        set(self.bytes, stats.bytes);
        set(self.pcap_drops, pcap_drops);
        set(self.flows_active, stats.flows_active);
        set(self.flows_evicted, stats.flows_evicted);
        set(self.sessions_active, stats.sessions_active);
        set(self.sessions_total, stats.sessions_total);
        set(self.parse_errors, stats.parse_errors);
        set(self.buffered_bytes, stats.buffered_bytes);
    }
}

fn sink_result(result: Result<(), capture_agent::SinkError>) -> anyhow::Result<()> {
    result.map_err(anyhow::Error::from_boxed)
}

fn run_live(
    interface: &str,
    args: &Args,
    config: AgentConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
    host: &str,
    enforcing: bool,
) -> anyhow::Result<()> {
    let filter = bpf_filter(&config.ports, config.any_port);
    let mut capture = LiveCapture::open(interface, &filter)?;
    tracing::info!(interface, filter = %filter, link = capture.link_type().0, "capturing");
    let started_at = chrono::Utc::now();
    let sources = vec![format!("live:{interface}")];
    let gauges = LiveGauges::register();
    let mut agent = Agent::new(config);
    let mut next_heartbeat = Instant::now() + args.heartbeat_interval;
    let mut next_gauges = Instant::now();
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
            sink_result(sink.flush())?;
        }
        let now = Instant::now();
        if now >= next_gauges {
            next_gauges = now + Duration::from_secs(1);
            gauges.update(&agent.stats(), capture.stats().dropped);
        }
        if now >= next_heartbeat {
            next_heartbeat += args.heartbeat_interval;
            let drops = capture.stats().dropped;
            let mut hb =
                agent.heartbeat(host, started_at, chrono::Utc::now(), drops, sources.clone());
            hb.enforcing = enforcing;
            sink_result(sink.heartbeat(&hb))?;
            sink_result(sink.flush())?;
        }
    }
    agent.finish(EndReason::Shutdown);
    publish(&mut agent, sink)?;
    let drops = capture.stats().dropped;
    gauges.update(&agent.stats(), drops);
    let mut hb = agent.heartbeat(host, started_at, chrono::Utc::now(), drops, sources);
    hb.enforcing = enforcing;
    sink_result(sink.heartbeat(&hb))?;
    sink_result(sink.flush())?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
