//! Red team: evidence an off-path attacker forges, and memory under a SYN flood.
//!
//! - `forged_scan_from_a_victim_address_blocks_nothing`: in network namespaces, an attacker
//!   sends forged segments "from" the victim's address to five VNC ports of a real Xvnc host
//!   (the 15 packets, plus a forged handshake with a guessed acknowledgement). The agent
//!   captures them live; its events go through the real enricher, scorer and responder code.
//!   A scan is detected and shown (unverified), no block is decided, and the victim's real
//!   `vncdo` session afterwards connects and is the only verified one.
//! - `syn_flood_of_a_million_forged_syns_leaves_real_sessions_whole`: 1,000,000 forged SYNs
//!   from random sources, merged by time into a real recorded brute force, replayed through the
//!   real `capture-agent` binary: every real session is reported exactly as without the flood,
//!   only half-open flows are evicted, and the agent's peak RSS (VmHWM) stays under the bound
//!   the README documents.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use enricher::{EnricherConfig, GeoDatabases, PartitionWindows, Reputation, WindowConfig};
use etherparse::PacketBuilder;
use responder::{Policy, Responder, Verdict};
use schemas::{SessionEvent, SessionEventKind, Threat};
use scorer::risk::{assess, RiskConfig};
use testkit::netns::{Lab, VncSession, VncTools, VNC_PORT};
use testkit::wait_for;

const PASSWORD: &str = "secret12";

/// The documented bound on the agent's peak RSS with the default `--max-flows` (100,000) under
/// the flood: README "Memory under a SYN flood".
const RSS_BOUND_MIB: u64 = 96;

/// A small deterministic generator (xorshift64*), so a failing flood can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One Ethernet frame of a TCP segment.
#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(ports.0, ports.1, seq, 64_240);
    let builder = if syn { builder.syn() } else { builder };
    let builder = match ack {
        Some(ack) => builder.ack(ack),
        None => builder,
    };
    let builder = if payload.is_empty() {
        builder
    } else {
        builder.psh()
    };
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("frame");
    frame
}

/// The pipeline after the agent, in this process: enricher windows and features, scorer rules,
/// responder policy (the defaults, which block scanning). Every threat with its verdict.
fn decide(events: &[SessionEvent]) -> Vec<(Threat, Verdict)> {
    let geo = GeoDatabases::empty();
    let reputation = Reputation::default();
    let mut windows = PartitionWindows::new(WindowConfig::default());
    let timezone = EnricherConfig::default().server_timezone;
    let config = RiskConfig::default();
    let mut responder = Responder::new(Policy::default());
    let mut out = Vec::new();
    for event in events {
        let enriched =
            enricher::stage::enrich_event(&geo, &reputation, timezone, &mut windows, event.clone());
        let assessment = assess(&enriched, scorer::risk::AnomalyInput::NoModel, &config);
        for (threat, _) in scorer::stage::threats(
            &enriched,
            &assessment,
            None,
            config.threat_threshold,
            "none",
        ) {
            let verdict = responder.decide(&threat, chrono::Utc::now());
            out.push((threat, verdict));
        }
    }
    out
}

fn mac_of(lab: &Lab, i: usize) -> [u8; 6] {
    let path = format!("/sys/class/net/{}/address", lab.interface(i));
    let text = lab.run_in(i, &["cat", &path]).expect("mac address");
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// Sends raw frames out of namespace `i`'s interface (AF_PACKET, Python's standard library).
fn send_frames(lab: &Lab, i: usize, frames: &[Vec<u8>]) {
    let script = format!(
        "import socket, sys\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{}', 0))\nfor line in sys.stdin:\n    s.send(bytes.fromhex(line.strip()))\n",
        lab.interface(i)
    );
    let mut child = lab
        .command(Some(i), Path::new("python3"))
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    for frame in frames {
        writeln!(stdin, "{}", hex::encode(frame)).expect("write frame");
    }
    drop(stdin);
    assert!(child.wait().expect("python3").success(), "sending frames");
}

fn events_in(log: &str) -> Vec<SessionEvent> {
    log.lines()
        .filter(|l| l.starts_with("{\"type\":\"session_event\""))
        .map(|l| serde_json::from_str(l).expect("session event"))
        .collect()
}

#[test]
fn forged_scan_from_a_victim_address_blocks_nothing() {
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    const SERVER: usize = 0;
    const VICTIM: usize = 1;
    const ATTACKER: usize = 2;
    let Some(mut lab) = Lab::create_or_skip(88, 3) else {
        return;
    };
    let server_ip: Ipv4Addr = lab.ip(SERVER).parse().unwrap();
    let victim_ip: Ipv4Addr = lab.ip(VICTIM).parse().unwrap();
    let password_file = lab.vnc_password_file(&tools.vncpasswd, PASSWORD);
    lab.start_vnc_server(
        SERVER,
        &tools.xvnc,
        &password_file,
        400 + std::process::id() % 200,
    );

    let mut agent = lab.command(Some(SERVER), Path::new(env!("CARGO_BIN_EXE_capture-agent")));
    agent
        .args(["--interface", &lab.interface(SERVER), "--sink", "stdout"])
        .args(["--agent-id", "red-team", "--vnc-ports", "5900-5905"])
        .env("LOG_FORMAT", "json");
    let agent = lab.spawn(agent, "agent.log");
    wait_for("agent capturing", Duration::from_secs(30), || {
        lab.log("agent.log").contains("capturing")
    });

    // The attacker's frames carry the victim's address; it never sees the server's replies.
    let macs = (mac_of(&lab, ATTACKER), mac_of(&lab, SERVER));
    let mut rng = Rng(0x5eed_0ff0_e5e5);
    let mut frames = Vec::new();
    // The 15 packets: three data segments to each of five VNC ports, no handshake.
    for port in 5900..=5904 {
        let (sport, seq, ack) = (40_000 + port - 5900, rng.next() as u32, rng.next() as u32);
        for (n, payload) in [&b"RFB 003.008\n"[..], &[0x01], &[0x00; 16]]
            .iter()
            .enumerate()
        {
            let seq = seq.wrapping_add(n as u32 * 16);
            frames.push(tcp_frame(
                macs,
                victim_ip,
                server_ip,
                (sport, port),
                seq,
                Some(ack),
                false,
                payload,
            ));
        }
    }
    // A forged handshake on the listening port: the SYN-ACK goes to the real victim (which
    // resets it), so the forger guesses the server's sequence number.
    let (sport, isn) = (41_000, rng.next() as u32);
    frames.push(tcp_frame(
        macs,
        victim_ip,
        server_ip,
        (sport, VNC_PORT),
        isn,
        None,
        true,
        b"",
    ));
    send_frames(&lab, ATTACKER, &frames);
    let guess = rng.next() as u32;
    let forged_ack = tcp_frame(
        macs,
        victim_ip,
        server_ip,
        (sport, VNC_PORT),
        isn.wrapping_add(1),
        Some(guess),
        false,
        b"RFB 003.008\n",
    );
    send_frames(&lab, ATTACKER, &[forged_ack]);

    // Afterwards the victim's own session connects and logs in.
    let session = VncSession {
        server: &lab.ip(SERVER),
        password: PASSWORD,
        limit: Duration::from_secs(30),
    };
    let login = lab.vnc_client(VICTIM, &tools.vncdo, session, &["pause", "0.2"]);
    assert!(login.is_ok(), "the victim's real login: {login:?}");
    assert!(lab.stop(agent).is_some(), "agent stops on SIGTERM");

    let events = events_in(&lab.log("agent.log"));
    let ended: Vec<&SessionEvent> = events
        .iter()
        .filter(|e| e.kind == SessionEventKind::Ended)
        .collect();
    let forged: Vec<_> = ended
        .iter()
        .filter(|e| !e.summary.handshake_verified)
        .collect();
    let real: Vec<_> = ended
        .iter()
        .filter(|e| e.summary.handshake_verified)
        .collect();
    assert!(
        forged.len() >= 5,
        "the forged segments are sessions (counted and shown): {ended:#?}"
    );
    assert!(forged
        .iter()
        .all(|e| e.summary.client_ip == victim_ip.to_string()));
    assert_eq!(real.len(), 1, "only the victim's real session is verified");
    assert_eq!(real[0].summary.auth_result, schemas::AuthResult::Ok);
    assert_eq!(real[0].summary.client_ip, victim_ip.to_string());

    let verdicts = decide(&events);
    let scans: Vec<&(Threat, Verdict)> = verdicts
        .iter()
        .filter(|(t, _)| t.threat_type == "scanning")
        .collect();
    assert!(
        !scans.is_empty(),
        "the forged scan is detected: {verdicts:#?}"
    );
    for (threat, verdict) in &verdicts {
        assert!(
            verdict.decision().is_none(),
            "no block from forged evidence: {threat:#?} → {verdict:?}"
        );
    }
    for (threat, verdict) in scans {
        assert!(!threat.verified);
        assert_eq!(threat.evidence["verified"], "false");
        // At most the victim's own session, on one port.
        let verified_ports: f64 = threat.evidence["verified_distinct_ports_in_window"]
            .parse()
            .unwrap();
        assert!(verified_ports <= 1.0, "{threat:#?}");
        assert_eq!(*verdict, Verdict::Unverified);
    }
}

/// One record of a classic pcap: seconds, microseconds, frame.
type PcapRecord = (u32, u32, Vec<u8>);

/// A classic pcap's file header and records (little-endian, microseconds).
fn read_pcap(path: &Path) -> (Vec<u8>, Vec<PcapRecord>) {
    let bytes = std::fs::read(path).expect("capture");
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "{}: classic pcap",
        path.display()
    );
    let header = bytes[..24].to_vec();
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let (secs, micros, len) = (word(0), word(4), word(8) as usize);
        records.push((secs, micros, bytes[at + 16..at + 16 + len].to_vec()));
        at += 16 + len;
    }
    (header, records)
}

fn write_record(out: &mut impl Write, secs: u32, micros: u32, frame: &[u8]) {
    let len = (frame.len() as u32).to_le_bytes();
    out.write_all(&secs.to_le_bytes()).unwrap();
    out.write_all(&micros.to_le_bytes()).unwrap();
    out.write_all(&len).unwrap();
    out.write_all(&len).unwrap();
    out.write_all(frame).unwrap();
}

/// The real capture with `syns` forged SYNs to `server:5900` from random sources and ports,
/// spread evenly over its time span and merged in time order.
fn flood_capture(real: &Path, server: Ipv4Addr, syns: u64, out: &Path) {
    let (header, records) = read_pcap(real);
    let first = records.first().expect("packets");
    let last = records.last().expect("packets");
    let start = u64::from(first.0) * 1_000_000 + u64::from(first.1);
    let span = (u64::from(last.0) * 1_000_000 + u64::from(last.1) - start).max(1);
    let macs = ([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]);
    let mut rng = Rng(0xf100_d5ee_d5ee);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("flood file"));
    file.write_all(&header).unwrap();
    let mut real_records = records.iter().peekable();
    for n in 0..syns {
        let at = start + span * n / syns;
        while let Some((secs, micros, frame)) = real_records.peek() {
            if u64::from(*secs) * 1_000_000 + u64::from(*micros) > at {
                break;
            }
            write_record(&mut file, *secs, *micros, frame);
            real_records.next();
        }
        let r = rng.next();
        // Random sources outside the capture's own addresses (TEST-NET-free 100.64/10 space).
        let source = Ipv4Addr::from(0x6440_0000 | (r as u32 & 0x003f_ffff));
        let frame = tcp_frame(
            macs,
            source,
            server,
            ((r >> 32) as u16 | 1024, 5900),
            (r >> 16) as u32,
            None,
            true,
            b"",
        );
        write_record(
            &mut file,
            (at / 1_000_000) as u32,
            (at % 1_000_000) as u32,
            &frame,
        );
    }
    for (secs, micros, frame) in real_records {
        write_record(&mut file, *secs, *micros, frame);
    }
    file.flush().unwrap();
}

/// The agent binary on `capture`: its session summaries by id, its final log line, and its
/// peak resident set (VmHWM, KiB) read from /proc while it runs.
fn run_agent(capture: &Path) -> (BTreeMap<String, serde_json::Value>, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capture-agent"))
        .arg("--pcap")
        .arg(capture)
        .args(["--sink", "stdout", "--agent-id", "red-team"])
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capture-agent");
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut peak_kib = 0;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = reader.join().unwrap();
    let log = log.join().unwrap();
    let summaries = output
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"session_summary\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["session_id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    (summaries, log, peak_kib)
}

#[test]
fn syn_flood_of_a_million_forged_syns_leaves_real_sessions_whole() {
    let real = testkit::lab_capture("c_bruteforce_vncauth.pcap");
    let (baseline, _, baseline_kib) = run_agent(&real);
    assert!(baseline.len() >= 5, "the brute force's sessions");
    let server: Ipv4Addr = baseline.values().next().unwrap()["server_ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let flood =
        std::env::temp_dir().join(format!("vncguard-syn-flood-{}.pcap", std::process::id()));
    flood_capture(&real, server, 1_000_000, &flood);
    let (flooded, log, peak_kib) = run_agent(&flood);
    std::fs::remove_file(&flood).ok();

    // Every real session is reported, field for field as without the flood.
    for (id, summary) in &baseline {
        assert_eq!(summary["handshake_verified"], true, "{id}");
        assert_eq!(
            flooded.get(id),
            Some(summary),
            "session {id} under the flood"
        );
    }
    assert_eq!(flooded.len(), baseline.len(), "no forged SYN is a session");
    // Only half-open flows made room.
    let done = log
        .lines()
        .find(|l| l.contains("capture file done"))
        .unwrap_or_else(|| panic!("no final line in {log}"));
    let done: serde_json::Value = serde_json::from_str(done).unwrap();
    let fields = &done["fields"];
    assert!(
        fields["evicted_half_open"].as_u64().unwrap() >= 900_000,
        "{done}"
    );
    assert_eq!(fields["evicted_unverified"], 0, "{done}");
    assert_eq!(fields["evicted_verified"], 0, "{done}");
    println!(
        "SYN flood: peak RSS {} MiB (without the flood {} MiB), bound {RSS_BOUND_MIB} MiB",
        peak_kib / 1024,
        baseline_kib / 1024
    );
    assert!(
        peak_kib < RSS_BOUND_MIB * 1024,
        "peak RSS {peak_kib} KiB over the documented {RSS_BOUND_MIB} MiB"
    );
}
