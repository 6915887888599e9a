//! Truncated and corrupt copies of real captures: a clear error naming the byte offset, and the
//! sessions read before it still come out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use capture_agent::{CaptureError, RunError};
use common::{config, pcaps_dir, run, summaries};

fn temp_copy(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capture-agent-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp capture");
    path
}

/// Offsets of the records of a little-endian pcap file.
fn pcap_records(bytes: &[u8]) -> Vec<usize> {
    assert_eq!(
        &bytes[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "a little-endian pcap"
    );
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= bytes.len() {
        out.push(at);
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
    }
    out
}

/// Offsets and types of the blocks of a little-endian pcapng file.
fn pcapng_blocks(bytes: &[u8]) -> Vec<(usize, u32)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, kind));
        at += len;
    }
    out
}

fn capture_error(result: Result<(), RunError>) -> CaptureError {
    match result {
        Err(RunError::Capture(e)) => e,
        other => panic!("expected a capture error, got {other:?}"),
    }
}

#[test]
fn truncated_pcap_names_the_offset_and_keeps_earlier_sessions() {
    let original = pcaps_dir().join("lab/c_bruteforce_vncauth.pcap");
    let bytes = std::fs::read(&original).unwrap();
    let (full_events, _) = run(&original, &config(false));
    let full = summaries(&full_events);

    let records = pcap_records(&bytes);
    let cut_record = records[records.len() * 2 / 3];
    let cut = cut_record + 10; // inside the record header
    let path = temp_copy("truncated.pcap", &bytes[..cut]);
    let (events, result) = run(&path, &config(false));
    let err = capture_error(result);
    assert_eq!(err.offset(), Some(cut_record as u64), "{err}");
    let text = err.to_string();
    assert!(text.contains("truncated"), "{text}");
    assert!(
        text.contains(&format!("byte offset {cut_record}")),
        "{text}"
    );

    let got = summaries(&events);
    assert!(
        got.len() >= 3,
        "sessions before the cut come out: {}",
        got.len()
    );
    for s in &got {
        let whole = full
            .iter()
            .find(|f| f.session_id == s.session_id)
            .expect("same session");
        if s.end_reason.as_deref() == Some("capture_end") {
            assert!(s.end_time <= whole.end_time);
        } else {
            assert_eq!(s, whole, "a session ended before the cut is complete");
        }
    }

    // A cut inside a record's data is named the same way.
    let cut = records[records.len() / 2] + 20;
    let path = temp_copy("truncated-data.pcap", &bytes[..cut]);
    let (events, result) = run(&path, &config(false));
    let err = capture_error(result);
    assert_eq!(
        err.offset(),
        Some(records[records.len() / 2] as u64),
        "{err}"
    );
    assert!(!summaries(&events).is_empty());
}

#[test]
fn corrupt_pcap_record_names_the_offset() {
    let original = pcaps_dir().join("lab/c2_bruteforce_nmap_success.pcap");
    let mut bytes = std::fs::read(&original).unwrap();
    let records = pcap_records(&bytes);
    let bad = records[records.len() / 2];
    bytes[bad + 8..bad + 12].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    let path = temp_copy("corrupt.pcap", &bytes);
    let (events, result) = run(&path, &config(false));
    let err = capture_error(result);
    assert!(matches!(err, CaptureError::Corrupt { .. }), "{err}");
    assert_eq!(err.offset(), Some(bad as u64));
    assert!(
        err.to_string().contains(&format!("byte offset {bad}")),
        "{err}"
    );
    let got = summaries(&events);
    assert!(!got.is_empty(), "sessions before the damage come out");
    assert!(got
        .iter()
        .any(|s| s.end_reason.as_deref() == Some("capture_end")));
}

#[test]
fn corrupt_and_truncated_pcapng() {
    let original = pcaps_dir().join("public/ntop-nDPI__vnc.pcap");
    let bytes = std::fs::read(&original).unwrap();
    let blocks = pcapng_blocks(&bytes);
    let packets: Vec<usize> = blocks.iter().filter(|b| b.1 == 6).map(|b| b.0).collect();
    let bad = packets[packets.len() / 2];

    let mut damaged = bytes.clone();
    damaged[bad + 4..bad + 8].copy_from_slice(&13u32.to_le_bytes()); // not a multiple of 4
    let path = temp_copy("corrupt.pcapng", &damaged);
    let (events, result) = run(&path, &config(true));
    let err = capture_error(result);
    assert_eq!(err.offset(), Some(bad as u64), "{err}");
    assert!(
        err.to_string().contains(&format!("byte offset {bad}")),
        "{err}"
    );
    let got = summaries(&events);
    assert_eq!(got.len(), 1, "the first RealVNC session was under way");
    assert_eq!(got[0].end_reason.as_deref(), Some("capture_end"));
    assert!(got[0].encrypted);

    let path = temp_copy("truncated.pcapng", &bytes[..bad + 30]);
    let (events, result) = run(&path, &config(true));
    let err = capture_error(result);
    assert_eq!(err.offset(), Some(bad as u64), "{err}");
    assert_eq!(summaries(&events).len(), 1);
}

#[test]
fn not_a_capture_file() {
    let path = temp_copy("text.pcap", b"this is not a capture file at all");
    let (events, result) = run(&path, &config(false));
    let err = capture_error(result);
    assert!(
        err.to_string().contains("not a pcap or pcapng file"),
        "{err}"
    );
    assert!(events.is_empty());
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_capture-agent"))
}

#[test]
fn binary_prints_sessions_then_fails_on_a_truncated_file() {
    let original = pcaps_dir().join("lab/c_bruteforce_vncauth.pcap");
    let bytes = std::fs::read(&original).unwrap();
    let records = pcap_records(&bytes);
    let cut = records[records.len() * 2 / 3] + 3;
    let path = temp_copy("binary-truncated.pcap", &bytes[..cut]);
    let out = Command::new(binary())
        .args(["--pcap", path.to_str().unwrap(), "--sink", "stdout"])
        .env("AGENT_ID", "bin-test")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("run capture-agent");
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("byte offset"), "{stderr}");
    let summaries = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"session_summary\""))
        .count();
    assert!(summaries >= 3, "{stdout}");
    assert!(stdout.contains("\"agent_id\":\"bin-test\""));
}

#[test]
fn binary_help_names_every_flag_and_variable() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--pcap",
        "--interface",
        "--any-port",
        "--sink",
        "--stats-interval",
        "VNC_PORTS",
        "AGENT_ID",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
