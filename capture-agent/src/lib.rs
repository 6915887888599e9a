//! vncguard's capture agent: watches VNC (RFB) traffic on an interface or in a capture file and
//! emits one [`schemas::SessionEvent`] stream per RFB session.
//!
//! The path of a packet, one module per step:
//! - [`capture`]: frames from a pcap/pcapng file ([`capture::file`]) or libpcap
//!   ([`capture::live`]), decoded to TCP segments ([`capture::decode`]);
//! - [`flow`]: connections, their orientation and TCP reassembly per direction
//!   ([`flow::reassembly`]), bounded in flows and buffered bytes;
//! - [`rfb`]: pure RFB parsers ([`rfb::parser`]) and the per-direction state machine
//!   ([`rfb::state`]);
//! - [`session`]: accounting into [`schemas::SessionSummary`] and the events;
//! - [`agent`]: the loop that ties them together, sweeps on capture time and evicts;
//! - [`output`]: where events go ([`output::EventSink`]; JSON lines on stdout);
//! - [`live`]: the live capture loop (libpcap, heartbeats, `/metrics` counters);
//! - [`enforce`]: decisions applied to the host with nftables (`--enforce`);
//! - [`publish`]: events and heartbeats onto the bus ([`publish::BusSink`] queues, a
//!   [`publish::Publisher`] sends through any `bus::Producer`, batching and retrying).
//!
//! Run over a file: [`analyze_file`] with any [`output::EventSink`] (a `Vec<SessionEvent>`
//! collects them). Packet counts count every TCP segment of a connection; byte counts count
//! payload bytes in stream order, each once (see [`session`]).

pub mod agent;
pub mod capture;
pub mod config;
pub mod enforce;
pub mod flow;
pub mod live;
pub mod output;
pub mod publish;
pub mod rfb;
pub mod session;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub use agent::{Agent, CaptureStats};
pub use capture::CaptureError;
pub use config::{AgentConfig, PortSet};
pub use output::{EventSink, JsonLines, SinkError};
pub use session::EndReason;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The capture could not be read further; the sessions read so far were emitted.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("event sink: {0}")]
    Sink(SinkError),
}

/// Analyses a capture file and emits its events to `sink`. Open sessions are ended with
/// `capture_end` at the end of the file — and also when the file is truncated or corrupt, in
/// which case the error (naming the byte offset) is returned after every event went out.
pub fn analyze_file(
    path: &Path,
    config: &AgentConfig,
    sink: &mut dyn EventSink,
) -> Result<CaptureStats, RunError> {
    replay_file(path, config, sink, ReplayOptions::default())
}

/// [`analyze_file`], as `replay` says.
pub fn replay_file(
    path: &Path,
    config: &AgentConfig,
    sink: &mut dyn EventSink,
    replay: ReplayOptions<'_>,
) -> Result<CaptureStats, RunError> {
    let file = capture::file::CaptureFile::open(path)?;
    analyze_capture(file, config, sink, replay)
}

/// How [`analyze_capture`] replays a capture.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions<'a> {
    /// Once this becomes true, reading stops and open sessions end with `shutdown`.
    pub stop: Option<&'a AtomicBool>,
    /// Added to every packet's timestamp. Session ids hash the time of a session's first
    /// packet, so a file replayed again with a new shift gives new sessions (the embedded
    /// mode's `--replay-loop` replays its samples as if they happened now).
    pub time_shift: session::Nanos,
}

impl ReplayOptions<'_> {
    /// Options that move the capture at `path` so its first packet is at `at` (ns since the
    /// Unix epoch). Replayed with them at `at` = now, recorded sessions happen now: "last 24 h"
    /// windows, retention, expiry and per-source windows treat them as today's traffic, whatever
    /// the date of the recording. Each file gets its own shift, since sample folders mix
    /// recordings years apart.
    pub fn starting_at(path: &Path, at: session::Nanos) -> Result<Self, CaptureError> {
        Ok(ReplayOptions {
            stop: None,
            time_shift: first_packet_time(path)?.map_or(0, |first| at.saturating_sub(first)),
        })
    }
}

/// The timestamp of the first packet of the capture at `path`; None when it holds none.
pub fn first_packet_time(path: &Path) -> Result<Option<session::Nanos>, CaptureError> {
    Ok(capture::file::CaptureFile::open(path)?
        .next_packet()?
        .map(|packet| packet.ts))
}

/// [`analyze_file`] over any reader, as `replay` says.
pub fn analyze_capture<R: Read>(
    mut file: capture::file::CaptureFile<R>,
    config: &AgentConfig,
    sink: &mut dyn EventSink,
    replay: ReplayOptions<'_>,
) -> Result<CaptureStats, RunError> {
    let mut agent = Agent::new(config.clone());
    let mut end = EndReason::CaptureEnd;
    let mut failure = None;
    let mut count: u64 = 0;
    loop {
        match file.next_packet() {
            Ok(Some(mut packet)) => {
                packet.ts = packet.ts.saturating_add(replay.time_shift);
                agent.handle_packet(&packet)
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if agent.has_events() {
            publish(&mut agent, sink)?;
        }
        count += 1;
        if count.is_multiple_of(4096) && replay.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            end = EndReason::Shutdown;
            break;
        }
    }
    agent.finish(end);
    publish(&mut agent, sink)?;
    sink.flush().map_err(RunError::Sink)?;
    match failure {
        Some(e) => Err(RunError::Capture(e)),
        None => Ok(agent.stats()),
    }
}

/// Hands the agent's pending events to the sink.
pub fn publish(agent: &mut Agent, sink: &mut dyn EventSink) -> Result<(), RunError> {
    for event in agent.drain_events() {
        sink.session_event(&event).map_err(RunError::Sink)?;
    }
    Ok(())
}
