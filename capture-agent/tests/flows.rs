//! Connection handling on real captures with packets taken away or the table kept small:
//! mid-stream pickup, capture gaps, eviction, idle timeout and periodic stats.

mod common;

use std::time::Duration;

use capture_agent::{Agent, AgentConfig, EndReason};
use common::{analyse_segments, config, load_segments, pcaps_dir, summaries, Seg};
use schemas::{AuthResult, SessionEventKind, SessionSummary};

fn lab(name: &str) -> Vec<Seg> {
    load_segments(&pcaps_dir().join("lab").join(name))
}

fn one(summaries: &[SessionSummary]) -> &SessionSummary {
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    &summaries[0]
}

fn from_server(s: &Seg) -> bool {
    (5900..=5905).contains(&s.src_port)
}

#[test]
fn midstream_pickup_is_partial_and_resynchronises_the_client() {
    // vncdotool typing into Xvnc: drop everything before its first pointer event.
    let segs = lab("a_normal_vncauth.pcap");
    let full = analyse_segments(&segs, &config(false));
    let full = one(&full);
    let first_key = segs
        .iter()
        .position(|s| !from_server(s) && s.payload.first() == Some(&5))
        .expect("a pointer event");
    let late = &segs[first_key..];
    let got = analyse_segments(late, &config(false));
    let s = one(&got);
    assert!(s.partial, "picked up mid-stream");
    assert!(s.desynced);
    assert_eq!(s.server_version, None);
    assert_eq!(
        s.auth_result,
        AuthResult::Unknown,
        "the handshake was not seen"
    );
    assert_eq!((s.client_ip.as_str(), s.client_port), ("127.0.0.1", 60810));
    assert_eq!(s.server_port, 5900, "the VNC port decides the server");
    // The client direction found message boundaries again: its key events are all counted.
    assert_eq!(s.key_events, full.key_events);
    assert_eq!(s.pointer_events, full.pointer_events);
    assert_eq!(
        s.framebuffer_updates, 0,
        "no pixel format: the server side stays unframed"
    );

    // Without a VNC port to go by (any-port mode, server on another port), a mid-stream
    // connection that never shows a banner is not reported.
    let moved: Vec<Seg> = late
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if s.src_port == 5900 {
                s.src_port = 7000;
            }
            if s.dst_port == 5900 {
                s.dst_port = 7000;
            }
            s
        })
        .collect();
    assert!(analyse_segments(&moved, &config(true)).is_empty());
}

#[test]
fn gap_inside_pixel_data_keeps_framing() {
    let segs = lab("b_clipboard_classic.pcap");
    let full = analyse_segments(&segs, &config(false));
    let full = one(&full);
    // Drop one large server segment in the middle of the raw framebuffer data.
    let victim = segs
        .iter()
        .enumerate()
        .filter(|(_, s)| from_server(s) && s.payload.len() > 30_000)
        .map(|(i, _)| i)
        .nth(3)
        .expect("big server segments");
    let lost = segs[victim].payload.len() as i64;
    let mut cut = segs.clone();
    cut.remove(victim);
    let got = analyse_segments(&cut, &config(false));
    let s = one(&got);
    assert_eq!(s.gap_bytes, lost, "the receiver's ACKs show the hole");
    assert_eq!(s.bytes_s2c, full.bytes_s2c - lost);
    assert!(
        !s.desynced,
        "a gap inside pixel data is skipped, not lost framing"
    );
    assert_eq!(s.framebuffer_updates, full.framebuffer_updates);
    assert_eq!(s.server_cut_text_count, full.server_cut_text_count);
    assert_eq!(s.key_events, full.key_events);
}

#[test]
fn gap_in_client_messages_desyncs_then_resyncs() {
    let segs = lab("d_noauth_session.pcap");
    let full = analyse_segments(&segs, &config(false));
    let full = one(&full);
    // Drop the client's cut text segment: the gap hits a message header.
    let victim = segs
        .iter()
        .position(|s| !from_server(s) && s.payload.first() == Some(&6))
        .expect("cut text segment");
    let lost = segs[victim].payload.len() as i64;
    let mut cut = segs.clone();
    cut.remove(victim);
    let got = analyse_segments(&cut, &config(false));
    let s = one(&got);
    assert_eq!(s.gap_bytes, lost, "the server's ACKs show the hole");
    assert!(s.desynced, "the gap hit a message header");
    assert_eq!(s.parse_errors, 0, "missing bytes are not invalid bytes");
    assert_eq!(s.client_cut_text_count, full.client_cut_text_count - 1);
    assert_eq!(s.key_events, full.key_events);
    assert_eq!(
        s.framebuffer_update_requests, full.framebuffer_update_requests,
        "the next segment is framed again"
    );
    assert_eq!(
        s.framebuffer_updates, full.framebuffer_updates,
        "server side unaffected"
    );
    assert_eq!(s.auth_result, AuthResult::Ok);
}

#[test]
fn flow_table_evicts_the_oldest_and_counts_it() {
    let segs = load_segments(&pcaps_dir().join("lab/e_scanner.pcap"));
    let cfg = AgentConfig {
        max_flows: 4,
        ..config(false)
    };
    let mut agent = Agent::new(cfg);
    let mut events = Vec::new();
    for s in &segs {
        agent.handle_segment(s.ts, &s.view());
        events.extend(agent.drain_events());
    }
    assert!(agent.stats().flows_active <= 4);
    agent.finish(EndReason::CaptureEnd);
    events.extend(agent.drain_events());
    let stats = agent.stats();
    assert!(stats.flows_evicted > 0, "{stats:?}");
    let ended = summaries(&events);
    assert!(!ended.is_empty());
    assert!(ended.iter().all(|s| matches!(
        s.end_reason.as_deref(),
        Some("fin" | "rst" | "evicted" | "capture_end")
    )));
}

#[test]
fn idle_sessions_time_out_and_open_ones_report_stats() {
    // Two copies of a session 10 minutes apart on the same ports: the first is idle-timed-out
    // (its FIN packets removed), stats events fall every interval while it is open.
    let segs = lab("g1_rfb33_server.pcap");
    let first_client = segs[0].src_port;
    let session: Vec<Seg> = segs
        .iter()
        .filter(|s| s.src_port == first_client || s.dst_port == first_client)
        .filter(|s| !s.fin)
        .cloned()
        .collect();
    let cfg = AgentConfig {
        idle_timeout: Duration::from_secs(30),
        stats_interval: Duration::from_millis(20),
        ..config(false)
    };
    let mut agent = Agent::new(cfg);
    let mut events = Vec::new();
    for s in &session {
        agent.handle_segment(s.ts, &s.view());
        events.extend(agent.drain_events());
    }
    // Time passes without packets (a live agent advances with the wall clock).
    let last = session.last().unwrap().ts;
    agent.advance(last + 2_000_000_000);
    agent.advance(last + 31_000_000_000);
    events.extend(agent.drain_events());
    let ended = summaries(&events);
    let s = one(&ended);
    assert_eq!(s.end_reason.as_deref(), Some("idle_timeout"));
    assert_eq!(s.auth_result, AuthResult::Ok);
    let kinds: Vec<SessionEventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&SessionEventKind::Started));
    assert_eq!(kinds.last(), Some(&SessionEventKind::Ended));
    let stats = kinds
        .iter()
        .filter(|k| **k == SessionEventKind::Stats)
        .count();
    assert!(stats >= 1, "{kinds:?}");
    for e in &events {
        if e.kind != SessionEventKind::Ended {
            assert!(
                e.summary.end_time.is_none(),
                "open sessions have no end time"
            );
        }
    }
}

#[test]
fn reused_ports_make_two_sessions() {
    let segs = lab("g1_rfb33_server.pcap");
    let first_client = segs[0].src_port;
    let one_session: Vec<Seg> = segs
        .iter()
        .filter(|s| s.src_port == first_client || s.dst_port == first_client)
        .cloned()
        .collect();
    let shift = 5_000_000_000;
    let mut twice = one_session.clone();
    twice.extend(one_session.iter().map(|s| Seg {
        ts: s.ts + shift,
        seq: s.seq.wrapping_add(77_777),
        ack: s.ack.wrapping_add(if s.ack_flag { 77_777 } else { 0 }),
        ..s.clone()
    }));
    let got = analyse_segments(&twice, &config(false));
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].session_id, got[1].session_id);
    assert_eq!(got[0].framebuffer_updates, got[1].framebuffer_updates);
    assert!(got.iter().all(|s| s.auth_result == AuthResult::Ok));
}

#[test]
fn a_reused_port_whose_close_was_missed_is_a_new_session_once_the_server_answers() {
    let segs = lab("g1_rfb33_server.pcap");
    let first_client = segs[0].src_port;
    let one_session: Vec<Seg> = segs
        .iter()
        .filter(|s| s.src_port == first_client || s.dst_port == first_client)
        .cloned()
        .collect();
    // The capture lost the first connection's FINs and RSTs: its end is unknown when the
    // client's SYN comes again. The SYN alone is held (it may be forged); the server's SYN-ACK
    // to it shows the server had no connection left, so it is a new one.
    let mut twice: Vec<Seg> = one_session
        .iter()
        .filter(|s| !s.fin && !s.rst)
        .cloned()
        .collect();
    twice.extend(one_session.iter().map(|s| Seg {
        ts: s.ts + 5_000_000_000,
        seq: s.seq.wrapping_add(77_777),
        ack: s.ack.wrapping_add(if s.ack_flag { 77_777 } else { 0 }),
        ..s.clone()
    }));
    let got = analyse_segments(&twice, &config(false));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].end_reason.as_deref(), Some("idle_timeout"));
    assert_eq!(got[0].framebuffer_updates, got[1].framebuffer_updates);
    assert!(got.iter().all(|s| s.auth_result == AuthResult::Ok));
}
