//! The capture file reader, link decoding, TCP reassembly and the whole agent over arbitrary
//! input: no panic, no unbounded allocation.
//!
//! Input: a mode byte. Even: the rest is a capture file (pcap or pcapng). Odd: the rest is a
//! sequence of TCP segments between one client and one VNC server, each 8 header bytes (flags
//! with bit 7 = from the server, sequence and acknowledgement deltas, payload length) and its
//! payload, so the reassembler sees overlaps, holes, retransmissions and reordering.
#![no_main]

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};

use capture_agent::capture::file::CaptureFile;
use capture_agent::flow::TcpSegment;
use capture_agent::{analyze_capture, Agent, AgentConfig, EndReason, ReplayOptions};
use libfuzzer_sys::fuzz_target;
use schemas::SessionEvent;

fn config() -> AgentConfig {
    AgentConfig {
        // Small limits so the fuzzer reaches the eviction and buffer-cap paths.
        max_flows: 4,
        max_buffered_per_flow: 4096,
        max_buffered_total: 16384,
        any_port: true,
        ..AgentConfig::default()
    }
}

fn run_segments(mut rest: &[u8]) {
    let client = IpAddr::V4(Ipv4Addr::new(10, 200, 9, 2));
    let server = IpAddr::V4(Ipv4Addr::new(10, 200, 9, 1));
    let mut agent = Agent::new(config());
    let mut seq = [1000u32, 5000u32];
    let mut ts: i64 = 1_000_000_000;
    while rest.len() >= 8 {
        let (header, tail) = rest.split_at(8);
        let flags = header[0];
        let from_server = flags & 0x80 != 0;
        let d = usize::from(from_server);
        let seq_delta = i16::from_be_bytes([header[1], header[2]]);
        let ack_delta = i16::from_be_bytes([header[3], header[4]]);
        let len = usize::from(u16::from_be_bytes([header[5], header[6]]) % 1500).min(tail.len());
        ts += i64::from(header[7]) * 10_000_000;
        let (payload, after) = tail.split_at(len);
        let this_seq = seq[d].wrapping_add(seq_delta as i32 as u32);
        let ack = seq[1 - d].wrapping_add(ack_delta as i32 as u32);
        let (src, dst, src_port, dst_port) = if from_server {
            (server, client, 5900, 40000)
        } else {
            (client, server, 40000, 5900)
        };
        let segment = TcpSegment {
            src,
            dst,
            src_port,
            dst_port,
            seq: this_seq,
            ack,
            syn: flags & 0x01 != 0,
            ack_flag: flags & 0x02 != 0,
            fin: flags & 0x04 != 0,
            rst: flags & 0x08 != 0,
            payload,
            missing: 0,
        };
        agent.handle_segment(ts, &segment);
        seq[d] = this_seq.wrapping_add(len as u32);
        agent.drain_events().for_each(drop);
        rest = after;
    }
    agent.finish(EndReason::CaptureEnd);
    agent.drain_events().for_each(drop);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        run_segments(rest);
        return;
    }
    let Ok(file) = CaptureFile::new(Cursor::new(rest)) else {
        return;
    };
    let mut events: Vec<SessionEvent> = Vec::new();
    let _ = analyze_capture(file, &config(), &mut events, ReplayOptions::default());
});
