//! The live capture loop: packets from libpcap into the agent, events and periodic heartbeats
//! into a sink, capture counters onto `/metrics`, until asked to stop. The `capture-agent`
//! binary and the embedded mode (`vncguard --interface`) both run it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::live::{bpf_filter, LiveCapture};
use crate::{publish, Agent, AgentConfig, CaptureStats, EndReason, EventSink, RunError};

/// What the live loop needs besides the agent's configuration.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub interface: String,
    /// Name of this host in heartbeats.
    pub host: String,
    pub heartbeat_interval: Duration,
    /// Whether decisions are applied on this host; reported in heartbeats.
    pub enforcing: bool,
}

/// Opens `options.interface` with the agent's BPF filter. Separate from [`run`] so a caller can
/// tell a missing privilege apart before it commits to live capture.
pub fn open(options: &LiveOptions, config: &AgentConfig) -> Result<LiveCapture, RunError> {
    let filter = bpf_filter(&config.ports, config.any_port);
    let capture = LiveCapture::open(&options.interface, &filter)?;
    tracing::info!(interface = %options.interface, filter = %filter, link = capture.link_type().0, "capturing");
    Ok(capture)
}

/// Captures until `stop` is set or the capture fails; open sessions then end with `shutdown` and
/// a last heartbeat goes out. A capture error is returned after everything read was emitted.
pub fn run(
    mut capture: LiveCapture,
    options: &LiveOptions,
    config: AgentConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
) -> Result<(), RunError> {
    let started_at = chrono::Utc::now();
    let sources = vec![format!("live:{}", options.interface)];
    let gauges = LiveGauges::register();
    let mut agent = Agent::new(config);
    let mut next_heartbeat = Instant::now() + options.heartbeat_interval;
    let mut next_gauges = Instant::now();
    let mut failure = None;
    // The agent runs on capture time: the kernel's packet timestamps. Between packets it moves
    // on by the monotonic time since the last one, never by the wall clock, which can disagree
    // with those stamps (a clock stepped by NTP, a NIC's own clock, a test's moved clock): ahead
    // of them, it made every open flow look idle and ended live sessions mid-stream. Before the
    // first packet there is nothing to expire.
    let mut last_packet: Option<(crate::session::Nanos, Instant)> = None;
    let heartbeat = |agent: &Agent, capture: &mut LiveCapture, sink: &mut dyn EventSink| {
        let drops = capture.stats().dropped;
        let mut beat = agent.heartbeat(
            &options.host,
            started_at,
            chrono::Utc::now(),
            drops,
            sources.clone(),
        );
        beat.enforcing = options.enforcing;
        sink.heartbeat(&beat).map_err(RunError::Sink)?;
        sink.flush().map_err(RunError::Sink)
    };
    while !stop.load(Ordering::Relaxed) {
        match capture.next_packet() {
            Ok(Some(packet)) => {
                last_packet = Some((packet.ts, Instant::now()));
                agent.handle_packet(&packet)
            }
            Ok(None) => {
                if let Some((ts, seen)) = last_packet {
                    let since = i64::try_from(seen.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    agent.advance(ts.saturating_add(since));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if agent.has_events() {
            publish(&mut agent, sink)?;
            sink.flush().map_err(RunError::Sink)?;
        }
        let now = Instant::now();
        if now >= next_gauges {
            next_gauges = now + Duration::from_secs(1);
            gauges.update(&agent.stats(), capture.stats().dropped);
        }
        if now >= next_heartbeat {
            next_heartbeat += options.heartbeat_interval;
            heartbeat(&agent, &mut capture, sink)?;
        }
    }
    agent.finish(EndReason::Shutdown);
    publish(&mut agent, sink)?;
    gauges.update(&agent.stats(), capture.stats().dropped);
    heartbeat(&agent, &mut capture, sink)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Nanoseconds since the Unix epoch, the wall clock.
pub fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// This host's name for heartbeats: `$HOSTNAME`, else the kernel's.
pub fn hostname() -> String {
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

/// The live capture counters on `/metrics`.
struct LiveGauges {
    packets: &'static telemetry::Gauge,
    bytes: &'static telemetry::Gauge,
    pcap_drops: &'static telemetry::Gauge,
    flows_active: &'static telemetry::Gauge,
    flows_evicted: &'static telemetry::Gauge,
    /// Evictions by kind: half-open, unverified, verified.
    flows_evicted_by_kind: [&'static telemetry::Gauge; 3],
    reassembly_cap_hits: [&'static telemetry::Gauge; 2],
    parse_buffered_bytes: &'static telemetry::Gauge,
    parse_budget_refusals: &'static telemetry::Gauge,
    sessions_active: &'static telemetry::Gauge,
    sessions_total: &'static telemetry::Gauge,
    parse_errors: &'static telemetry::Gauge,
    buffered_bytes: &'static telemetry::Gauge,
    wire: Vec<(&'static telemetry::Gauge, StatRead)>,
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
            flows_evicted_by_kind: ["half_open", "unverified", "verified"].map(|kind| {
                gauge(
                    "vncguard_agent_flows_evicted_by_kind",
                    "Connections evicted past --max-flows, by kind: half-open (no payload, no verified handshake) go first, then unverified, then verified.",
                    &[("kind", kind)],
                )
            }),
            reassembly_cap_hits: ["flow", "global"].map(|budget| {
                gauge(
                    "vncguard_agent_reassembly_budget_hits",
                    "Reassembly holes given up early because a budget was full (one direction's, or all connections').",
                    &[("budget", budget)],
                )
            }),
            parse_buffered_bytes: gauge(
                "vncguard_agent_parse_buffered_bytes",
                "Capacity of every session's RFB parse buffers.",
                &[],
            ),
            parse_budget_refusals: gauge(
                "vncguard_agent_parse_budget_refusals",
                "Session directions that lost framing because the global parse-buffer budget was full.",
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
            wire: wire_gauges(),
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
        let by_kind = [
            stats.flows_evicted_half_open,
            stats.flows_evicted_unverified,
            stats.flows_evicted_verified,
        ];
        for (gauge, value) in self.flows_evicted_by_kind.iter().zip(by_kind) {
            set(gauge, value);
        }
        let hits = [
            stats.reassembly_flow_cap_hits,
            stats.reassembly_global_cap_hits,
        ];
        for (gauge, value) in self.reassembly_cap_hits.iter().zip(hits) {
            set(gauge, value);
        }
        set(self.parse_buffered_bytes, stats.parse_buffered_bytes);
        set(self.parse_budget_refusals, stats.parse_budget_refusals);
        set(self.sessions_active, stats.sessions_active);
        set(self.sessions_total, stats.sessions_total);
        set(self.parse_errors, stats.parse_errors);
        set(self.buffered_bytes, stats.buffered_bytes);
        for (gauge, value) in &self.wire {
            set(gauge, value(stats));
        }
    }
}

/// Reads one counter of the capture statistics.
type StatRead = fn(&CaptureStats) -> u64;

/// The gauges of what the wire layer (fragments, checksums, RSTs) took and refused.
fn wire_gauges() -> Vec<(&'static telemetry::Gauge, StatRead)> {
    const FRAGMENTS: &str = "vncguard_agent_fragments";
    const FRAGMENTS_HELP: &str = "IP fragments and datagrams by what reassembly did with them.";
    let fragments: [(&str, StatRead); 8] = [
        ("received", |s| s.fragments.fragments),
        ("reassembled", |s| s.fragments.reassembled),
        ("duplicate", |s| s.fragments.duplicates),
        ("overlap_refused", |s| s.fragments.overlaps),
        ("oversize_refused", |s| s.fragments.oversize),
        ("malformed", |s| s.fragments.malformed),
        ("timed_out", |s| s.fragments.timed_out),
        ("evicted", |s| s.fragments.evicted),
    ];
    const CHECKSUMS: &str = "vncguard_agent_tcp_checksums";
    const CHECKSUMS_HELP: &str = "TCP segments by checksum validation outcome.";
    let checksums: [(&str, StatRead); 4] = [
        ("checked", |s| s.checksums.checked),
        ("dropped", |s| s.checksums.dropped),
        ("accepted_bad", |s| s.checksums.accepted_bad),
        ("unchecked", |s| s.checksums.unchecked),
    ];
    const RST: &str = "vncguard_agent_rst_ignored";
    const RST_HELP: &str = "RSTs ignored for a sequence number that is not the expected one.";
    let rst: [(&str, StatRead); 2] = [
        ("in_window", |s| s.rst_in_window),
        ("out_of_window", |s| s.rst_out_of_window),
    ];
    let labelled = |name, help, label, values: &[(&str, StatRead)]| {
        values
            .iter()
            .map(|&(value, read)| (telemetry::gauge(name, help, &[(label, value)]), read))
            .collect::<Vec<_>>()
    };
    let mut gauges = labelled(FRAGMENTS, FRAGMENTS_HELP, "outcome", &fragments);
    gauges.extend(labelled(CHECKSUMS, CHECKSUMS_HELP, "outcome", &checksums));
    gauges.extend(labelled(RST, RST_HELP, "verdict", &rst));
    let gauge = telemetry::gauge;
    gauges.push((
        gauge(
            "vncguard_agent_fragment_bytes",
            "Bytes held for incomplete IP datagrams (real allocation).",
            &[],
        ),
        |s| s.fragment_bytes,
    ));
    gauges.push((
        gauge(
            "vncguard_agent_syn_in_session",
            "SYNs on the tuple of an open connection, held as RFC 5961 challenge-ACK cases.",
            &[],
        ),
        |s| s.syn_in_session,
    ));
    gauges.push((
        gauge(
            "vncguard_agent_checksum_offload_assumed",
            "1 once CHECKSUM_VALIDATION=auto assumed checksum offload and stopped checking.",
            &[],
        ),
        |s| s.checksums.offload_assumed,
    ));
    gauges
}
