//! Shared test support: where the shared captures are, and running the agent over them.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use capture_agent::capture::decode::tcp_segment;
use capture_agent::capture::file::CaptureFile;
use capture_agent::flow::TcpSegment;
use capture_agent::{analyze_file, Agent, AgentConfig, EndReason, JsonLines, RunError};
use schemas::{SessionEvent, SessionEventKind, SessionSummary};

pub use testkit::shared_pcaps as pcaps_dir;

/// Every capture in `public/` and `lab/`, sorted.
pub fn all_captures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["public", "lab"] {
        let dir = pcaps_dir().join(sub);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path
                .extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no captures under {}",
        pcaps_dir().display()
    );
    files
}

pub fn config(any_port: bool) -> AgentConfig {
    AgentConfig {
        agent_id: "test-agent".to_string(),
        any_port,
        ..AgentConfig::default()
    }
}

/// Events of one run (whatever the outcome) and the outcome.
pub fn run(path: &Path, config: &AgentConfig) -> (Vec<SessionEvent>, Result<(), RunError>) {
    let mut events: Vec<SessionEvent> = Vec::new();
    let result = analyze_file(path, config, &mut events).map(|_| ());
    (events, result)
}

/// The stdout sink's output for a run.
pub fn run_json(path: &Path, config: &AgentConfig) -> String {
    let mut sink = JsonLines::new(Vec::new());
    analyze_file(path, config, &mut sink).expect("capture reads");
    String::from_utf8(sink.into_inner()).expect("JSON is UTF-8")
}

/// Final summaries (from the `ended` events), in emission order.
pub fn summaries(events: &[SessionEvent]) -> Vec<SessionSummary> {
    events
        .iter()
        .filter(|e| e.kind == SessionEventKind::Ended)
        .map(|e| e.summary.clone())
        .collect()
}

/// One TCP segment of a capture, owned, so tests can cut, copy and reorder them.
#[derive(Debug, Clone)]
pub struct Seg {
    pub ts: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    pub window: u16,
    pub window_scale: Option<u8>,
    pub payload: Vec<u8>,
}

impl Seg {
    pub fn view(&self) -> TcpSegment<'_> {
        TcpSegment {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: self.seq,
            ack: self.ack,
            syn: self.syn,
            ack_flag: self.ack_flag,
            fin: self.fin,
            rst: self.rst,
            window: self.window,
            window_scale: self.window_scale,
            payload: &self.payload,
            missing: 0,
        }
    }
}

/// The TCP segments of a capture, owned.
pub fn load_segments(path: &Path) -> Vec<Seg> {
    let mut file = CaptureFile::open(path).expect("open");
    let mut out = Vec::new();
    while let Some(p) = file.next_packet().expect("read") {
        if let Ok(s) = tcp_segment(p.link, p.data) {
            out.push(Seg {
                ts: p.ts,
                src: s.src,
                dst: s.dst,
                src_port: s.src_port,
                dst_port: s.dst_port,
                seq: s.seq,
                ack: s.ack,
                syn: s.syn,
                ack_flag: s.ack_flag,
                fin: s.fin,
                rst: s.rst,
                window: s.window,
                window_scale: s.window_scale,
                payload: s.payload.to_vec(),
            });
        }
    }
    out
}

/// Runs the agent over segments; the final summaries in emission order.
pub fn analyse_segments(segments: &[Seg], config: &AgentConfig) -> Vec<SessionSummary> {
    let mut agent = Agent::new(config.clone());
    let mut events = Vec::new();
    for s in segments {
        agent.handle_segment(s.ts, &s.view());
        events.extend(agent.drain_events());
    }
    agent.finish(EndReason::CaptureEnd);
    events.extend(agent.drain_events());
    summaries(&events)
}
