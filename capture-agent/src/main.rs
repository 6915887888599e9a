//! `capture-agent`: watch VNC traffic on an interface (`--interface`) or in a capture file
//! (`--pcap`) and publish session events (`--sink stdout` prints JSON lines).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs};
use capture_agent::capture::checksum::ChecksumValidation;
use capture_agent::capture::fragments::FragmentLimits;
use capture_agent::config::parse_duration;
use capture_agent::enforce::{
    self, DecisionTrust, Enforcer, HostCommands, SessionIndex, SessionTracking,
};
use capture_agent::live::{self, LiveOptions};
use capture_agent::publish::{BusSink, Overflow, PublishOptions, PublishReport};
use capture_agent::{AgentConfig, EventSink, JsonLines, PortSet, ReplayOptions};
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
    /// TCP checksums: `yes` drops every bad one, `no` never checks, `auto` samples the first
    /// segments and stops checking if 1 in 100 is bad (checksum offload at the capturing host).
    #[arg(long, env = "CHECKSUM_VALIDATION", value_enum, default_value_t = ChecksumValidation::Auto)]
    checksum_validation: ChecksumValidation,
    /// Bytes (real allocation) IP fragment reassembly may hold; the oldest incomplete datagrams
    /// are evicted past it.
    #[arg(long, env = "AGENT_MAX_FRAGMENT_BYTES", default_value_t = FragmentLimits::default().max_bytes)]
    max_fragment_bytes: usize,
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
    /// With --enforce: the public keys decisions must be signed with, comma-separated, each
    /// `key_id:BASE64` or a file of such lines (`responder keygen` and `api keygen` write them).
    /// Several at once during a key rotation; a decision signed by no key here is refused.
    #[arg(
        long,
        env = "DECISION_PUBLIC_KEYS",
        value_delimiter = ',',
        value_name = "KEYS"
    )]
    decision_public_keys: Vec<String>,
    #[command(flatten)]
    guardrails: trust::GuardrailArgs,
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let host = live::hostname();
    let config = AgentConfig {
        agent_id: args.agent_id.clone().unwrap_or_else(|| host.clone()),
        ports: args.vnc_ports.clone(),
        any_port: args.any_port,
        stats_interval: args.stats_interval,
        idle_timeout: args.idle_timeout,
        max_flows: args.max_flows,
        checksum_validation: args.checksum_validation,
        fragments: FragmentLimits {
            max_bytes: args.max_fragment_bytes,
            ..FragmentLimits::default()
        },
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

    let capturing_live = args.interface.is_some();
    let (mut sink, publisher): (Box<dyn EventSink>, _) = match args.sink_kind() {
        SinkKind::Stdout => (
            Box::new(JsonLines::new(std::io::BufWriter::new(std::io::stdout()))),
            None,
        ),
        SinkKind::Kafka => {
            let (sink, publisher) = start_publisher(&args, capturing_live, &runtime)?;
            (Box::new(sink), Some(publisher))
        }
    };

    let enforcing = if args.enforce {
        let trust = DecisionTrust {
            verifier: trust::DecisionVerifier::from_entries(&args.decision_public_keys)
                .context("--enforce needs the decision public keys (DECISION_PUBLIC_KEYS)")?,
            guardrails: args.guardrails.guardrails(),
        };
        let sessions = SessionIndex::new(args.max_flows);
        sink = Box::new(SessionTracking::new(sink, sessions.clone()));
        start_enforcement(&args, &config.agent_id, &runtime, sessions, trust)
    } else {
        if capturing_live {
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
            let options = LiveOptions {
                interface: interface.to_string(),
                host: host.clone(),
                heartbeat_interval: args.heartbeat_interval,
                enforcing,
            };
            live::open(&options, &config)
                .and_then(|capture| live::run(capture, &options, config, sink.as_mut(), &stop))
                .map_err(anyhow::Error::from)
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
    trust: DecisionTrust,
) -> bool {
    let enforcer = match Enforcer::start(HostCommands::local(), &args.vnc_ports, sessions, trust) {
        Ok(enforcer) => enforcer,
        Err(e) => {
            tracing::error!(error = %e, "NOT ENFORCING: nftables unusable; monitoring goes on");
            return false;
        }
    };
    // A group per agent start: nothing is ever committed (every start reads the compacted topic
    // from its beginning), and a fresh group need not wait for a dead predecessor to time out.
    let group = format!("vncguard-enforce-{agent_id}-{}", live::wall_clock_ns());
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
    match capture_agent::analyze_capture(
        file,
        config,
        sink,
        ReplayOptions {
            stop: Some(stop),
            ..ReplayOptions::default()
        },
    ) {
        Ok(stats) => {
            tracing::info!(
                packets = stats.packets,
                bytes = stats.bytes,
                sessions = stats.sessions_total,
                flows = stats.flows_created,
                evicted = stats.flows_evicted,
                evicted_half_open = stats.flows_evicted_half_open,
                evicted_unverified = stats.flows_evicted_unverified,
                evicted_verified = stats.flows_evicted_verified,
                reassembly_budget_hits =
                    stats.reassembly_flow_cap_hits + stats.reassembly_global_cap_hits,
                parse_budget_refusals = stats.parse_budget_refusals,
                parse_errors = stats.parse_errors,
                gap_bytes = stats.gap_bytes,
                fragments_reassembled = stats.fragments.reassembled,
                checksum_dropped = stats.checksums.dropped,
                rst_ignored = stats.rst_in_window + stats.rst_out_of_window,
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
