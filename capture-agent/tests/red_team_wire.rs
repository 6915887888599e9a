//! Red team against the capture itself: the ways a sender can make the agent see another
//! conversation than the server does. Each test is one attack, named after it.
//!
//! The decoder-level attacks are built from a real recorded session (the lab's
//! `a_normal_vncauth` capture) rewritten packet by packet: fragmented, with forged RSTs, with
//! bad checksums, moved to IPv6 behind a destination-options header; the summaries the agent
//! reports must be the untouched session's. The wire-level attack is a brute force from a real
//! client (vncdotool against TigerVNC in network namespaces) fragmented on the wire by a
//! router on a 68-byte MTU link, caught by the agent's live capture, and two RSTs injected into
//! a live session. These need root, `Xvnc`, `vncpasswd` and `vncdo`, and print why and pass
//! without running when one is missing.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture_agent::live::{self, LiveOptions};
use capture_agent::output::FnSink;
use testkit::netns::{Lab, VncSession, VncTools};

use capture_agent::capture::checksum::{tcp_checksum, ChecksumValidation};
use capture_agent::capture::file::CaptureFile;
use capture_agent::{analyze_file, AgentConfig, CaptureStats};
use schemas::{AuthResult, SessionEvent, SessionSummary};

/// One IP packet of a capture with its time.
#[derive(Debug, Clone)]
struct IpFrame {
    ts: i64,
    ip: Vec<u8>,
}

/// The IP packets of a capture (its link layer stripped).
fn ip_frames(path: &Path) -> Vec<IpFrame> {
    let mut file = CaptureFile::open(path).expect("open");
    let mut frames = Vec::new();
    while let Some(packet) = file.next_packet().expect("read") {
        let skip = match packet.link.0 {
            1 => 14,
            0 | 108 => 4,
            113 => 16,
            101 | 12 | 14 | 228 | 229 => 0,
            other => panic!("link type {other}"),
        };
        frames.push(IpFrame {
            ts: packet.ts,
            ip: packet.data[skip..].to_vec(),
        });
    }
    frames
}

/// A pcap of raw IP packets (LINKTYPE_RAW), nanosecond timestamps.
fn write_pcap(path: &Path, frames: &[IpFrame]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for frame in frames {
        let (sec, nsec) = (frame.ts / 1_000_000_000, frame.ts % 1_000_000_000);
        out.extend_from_slice(&(sec as u32).to_le_bytes());
        out.extend_from_slice(&(nsec as u32).to_le_bytes());
        out.extend_from_slice(&(frame.ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame.ip);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// A path for a crafted capture of this test process (removed once read).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vncguard-red-team-{}-{name}", std::process::id()))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Where the TCP header of an IPv4 packet starts.
fn ihl(ip: &[u8]) -> usize {
    usize::from(ip[0] & 0x0f) * 4
}

fn v4_addresses(ip: &[u8]) -> (IpAddr, IpAddr) {
    let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).expect("4 bytes"));
    (a(12), a(16))
}

/// Recomputes an IPv4 packet's header checksum and its TCP checksum (when it carries the
/// whole TCP header: unfragmented).
fn fix_v4_checksums(ip: &mut [u8]) {
    let header = ihl(ip);
    ip[10..12].fill(0);
    let mut sum: u32 = ip[..header].chunks(2).map(|w| u32::from(be16(w, 0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    if be16(ip, 6) & 0x3fff == 0 && ip[9] == 6 {
        let (src, dst) = v4_addresses(ip);
        let checksum = tcp_checksum(src, dst, &ip[header..]);
        ip[header + 16..header + 18].copy_from_slice(&checksum.to_be_bytes());
    }
}

/// The lab's recorded VNC session (loopback, so its checksums were left to an offload that
/// never ran), with every checksum made right, as on a wire.
fn recorded_session() -> Vec<IpFrame> {
    let mut frames = ip_frames(&testkit::lab_capture("a_normal_vncauth.pcap"));
    for frame in &mut frames {
        fix_v4_checksums(&mut frame.ip);
    }
    frames
}

fn config(checksums: ChecksumValidation) -> AgentConfig {
    AgentConfig {
        checksum_validation: checksums,
        ..common::config(false)
    }
}

/// The final summaries of a crafted capture and the agent's counters.
fn analyse(
    name: &str,
    frames: &[IpFrame],
    config: &AgentConfig,
) -> (Vec<SessionSummary>, CaptureStats) {
    let path = scratch(name);
    write_pcap(&path, frames);
    let mut events: Vec<SessionEvent> = Vec::new();
    let stats = analyze_file(&path, config, &mut events).expect("crafted capture reads");
    std::fs::remove_file(&path).expect("remove the crafted capture");
    (common::summaries(&events), stats)
}

/// TCP flags and payload length of an IPv4 TCP packet.
fn tcp_view(ip: &[u8]) -> (u8, usize, u32, u16) {
    let header = ihl(ip);
    let tcp = &ip[header..];
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let payload = usize::from(be16(ip, 2)) - header - data_offset;
    let seq = u32::from_be_bytes(tcp[4..8].try_into().expect("4 bytes"));
    (tcp[13], payload, seq, be16(tcp, 2))
}

/// An RST forged from `model` (a packet of the session): same addresses and ports, no payload,
/// sequence number `seq`.
fn forged_rst(model: &IpFrame, seq: u32) -> IpFrame {
    forged(model, seq, 0x04)
}

/// A segment with TCP flags `flags` forged from `model`: same addresses and ports, no payload,
/// sequence number `seq`.
fn forged(model: &IpFrame, seq: u32, flags: u8) -> IpFrame {
    let header = ihl(&model.ip);
    let data_offset = usize::from(model.ip[header + 12] >> 4) * 4;
    let mut ip = model.ip[..header + data_offset].to_vec();
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[header + 4..header + 8].copy_from_slice(&seq.to_be_bytes());
    ip[header + 13] = flags;
    fix_v4_checksums(&mut ip);
    IpFrame {
        ts: model.ts + 1,
        ip,
    }
}

/// The index of a client data segment after authentication (mid-session), and the sequence
/// number the server expects next from the client after it.
fn mid_session_client_segment(frames: &[IpFrame]) -> (usize, u32) {
    let client_data: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let (_, payload, _, dst_port) = tcp_view(&f.ip);
            dst_port == 5900 && payload > 0
        })
        .map(|(i, _)| i)
        .collect();
    let at = client_data[client_data.len() / 2];
    let (_, payload, seq, _) = tcp_view(&frames[at].ip);
    (at, seq.wrapping_add(payload as u32))
}

#[test]
fn forged_rst_with_a_bad_sequence_number_leaves_the_session_whole() {
    let frames = recorded_session();
    let cfg = config(ChecksumValidation::Yes);
    let (whole, _) = analyse("rst-none.pcap", &frames, &cfg);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].auth_result, AuthResult::Ok);

    let (at, next) = mid_session_client_segment(&frames);
    let mut forged = frames.clone();
    // In the window but 1,000 bytes ahead (RFC 5961: a challenge ACK, not a reset), and half
    // the sequence space away (out of any window), both "from the client".
    forged.insert(at + 1, forged_rst(&frames[at], next.wrapping_add(1000)));
    forged.insert(at + 2, forged_rst(&frames[at], next.wrapping_add(1 << 31)));
    let (attacked, stats) = analyse("rst-forged.pcap", &forged, &cfg);
    assert_eq!((stats.rst_in_window, stats.rst_out_of_window), (1, 1));
    assert_eq!(
        attacked, whole,
        "the session is reported as if no RST had been sent"
    );

    // The control: the exact sequence number is a real reset, and ends the session there.
    let mut reset = frames.clone();
    reset.insert(at + 1, forged_rst(&frames[at], next));
    let (cut, _) = analyse("rst-exact.pcap", &reset, &cfg);
    assert_eq!(cut[0].end_reason.as_deref(), Some("rst"));
    assert!(cut[0].bytes_c2s < whole[0].bytes_c2s || cut.len() > 1);
}

#[test]
fn forged_syn_on_the_tuple_of_an_open_session_leaves_it_whole() {
    let frames = recorded_session();
    let cfg = config(ChecksumValidation::Yes);
    let (whole, _) = analyse("syn-none.pcap", &frames, &cfg);
    let (at, next) = mid_session_client_segment(&frames);
    let mut forged_syn = frames.clone();
    forged_syn.insert(at + 1, forged(&frames[at], next.wrapping_add(77_777), 0x02));
    let (attacked, stats) = analyse("syn-forged.pcap", &forged_syn, &cfg);
    assert_eq!(stats.syn_in_session, 1);
    assert_eq!(
        attacked, whole,
        "the SYN neither ended nor split the session"
    );
}

/// `frames` with every TCP packet cut into IPv4 fragments of `size` bytes, each datagram's
/// fragments sent last first, the last one twice.
fn fragmented_v4(frames: &[IpFrame], size: usize) -> Vec<IpFrame> {
    let mut out = Vec::new();
    for (id, frame) in frames.iter().enumerate() {
        let header = ihl(&frame.ip);
        let payload = &frame.ip[header..usize::from(be16(&frame.ip, 2))];
        let mut pieces: Vec<IpFrame> = payload
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i * size;
                let more = offset + chunk.len() < payload.len();
                let mut ip = frame.ip[..header].to_vec();
                ip.extend_from_slice(chunk);
                let total = ip.len() as u16;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
                ip[6..8].copy_from_slice(&field.to_be_bytes());
                fix_v4_checksums(&mut ip);
                IpFrame { ts: frame.ts, ip }
            })
            .collect();
        pieces.reverse();
        pieces.insert(1, pieces[0].clone());
        out.extend(pieces);
    }
    out
}

#[test]
fn fragmented_session_out_of_order_is_reassembled_whole() {
    let frames = recorded_session();
    let cfg = config(ChecksumValidation::Yes);
    let (whole, _) = analyse("frag-none.pcap", &frames, &cfg);
    // 16-byte pieces: the TCP header itself is cut in two (RFC 1858's tiny fragments).
    let fragmented = fragmented_v4(&frames, 16);
    assert!(fragmented.len() > 3 * frames.len());
    let (reassembled, stats) = analyse("frag-16.pcap", &fragmented, &cfg);
    assert_eq!(reassembled, whole);
    assert_eq!(stats.fragments.reassembled, frames.len() as u64);
    assert_eq!(stats.fragments.duplicates, frames.len() as u64);
    assert_eq!(stats.fragment_bytes, 0, "nothing left held");
    assert_eq!(
        stats.checksums.dropped, 0,
        "every reassembled checksum is right"
    );

    // One datagram's fragment rewritten with other bytes (an overlap attack): that datagram is
    // refused and counted, the others still make the session.
    let mut attacked = fragmented.clone();
    let victim = attacked.len() / 2;
    let mut conflicting = attacked[victim].clone();
    let last = conflicting.ip.len() - 1;
    conflicting.ip[last] ^= 0xff;
    attacked.insert(victim + 1, conflicting);
    let (_, stats) = analyse("frag-overlap.pcap", &attacked, &cfg);
    assert_eq!(stats.fragments.overlaps, 1);
    assert_eq!(stats.fragments.reassembled, frames.len() as u64 - 1);
}

#[test]
fn bad_checksums_are_dropped_in_yes_mode_and_accepted_in_auto_on_offloaded_loopback() {
    // The recording as it is: loopback, no checksum right (offload).
    let offloaded = testkit::lab_capture("a_normal_vncauth.pcap");
    let run = |mode| {
        let mut events: Vec<SessionEvent> = Vec::new();
        let stats = analyze_file(&offloaded, &config(mode), &mut events).expect("reads");
        (common::summaries(&events), stats)
    };
    let (yes, yes_stats) = run(ChecksumValidation::Yes);
    assert!(yes.is_empty(), "every segment has a bad checksum: {yes:?}");
    assert_eq!(yes_stats.checksums.dropped, yes_stats.checksums.checked);
    assert_eq!(yes_stats.tcp_segments, 0, "none reached the flow table");
    let (auto, auto_stats) = run(ChecksumValidation::Auto);
    let (no, _) = run(ChecksumValidation::No);
    assert_eq!(auto.len(), 1);
    assert_eq!(auto, no, "auto reads an offloaded capture whole");
    assert_eq!(auto[0].auth_result, AuthResult::Ok);
    assert_eq!(auto_stats.checksums.offload_assumed, 1);

    // On a wire (checksums right), an exact-sequence RST with a bad checksum: the server's
    // stack drops it, so must the agent. Four copies of the session come first so that auto
    // has sampled 1,000 good segments and checks.
    let frames = recorded_session();
    let mut capture = Vec::new();
    for copy in 0..4u16 {
        let mut session: Vec<IpFrame> = frames
            .iter()
            .map(|f| {
                let mut ip = f.ip.clone();
                let header = ihl(&ip);
                // Another client port per copy, later in time.
                for at in [header, header + 2] {
                    if be16(&ip, at) != 5900 {
                        let port = be16(&ip, at) + copy;
                        ip[at..at + 2].copy_from_slice(&port.to_be_bytes());
                    }
                }
                fix_v4_checksums(&mut ip);
                IpFrame {
                    ts: f.ts + i64::from(copy) * 100_000_000_000,
                    ip,
                }
            })
            .collect();
        if copy == 3 {
            let (at, next) = mid_session_client_segment(&session);
            let mut rst = forged_rst(&session[at], next);
            let header = ihl(&rst.ip);
            rst.ip[header + 16] ^= 0x5a;
            session.insert(at + 1, rst);
        }
        capture.extend(session);
    }
    let ended_by = |mode| {
        let (summaries, stats) = analyse("checksum-insertion.pcap", &capture, &config(mode));
        let last = summaries.get(3).expect("the fourth session").clone();
        (summaries.len(), last.end_reason, last.bytes_c2s, stats)
    };
    // Unchecked, the forged RST works: the session ends, its rest is picked up as another.
    let (sessions, reason, _, _) = ended_by(ChecksumValidation::No);
    assert_eq!((sessions, reason.as_deref()), (5, Some("rst")));
    for mode in [ChecksumValidation::Yes, ChecksumValidation::Auto] {
        let (sessions, reason, bytes, stats) = ended_by(mode);
        assert_eq!((sessions, reason.as_deref()), (4, Some("fin")), "{mode:?}");
        assert_eq!(
            bytes,
            analyse("one.pcap", &frames, &config(mode)).0[0].bytes_c2s
        );
        assert_eq!(stats.checksums.dropped, 1, "{mode:?}");
        assert_eq!(stats.checksums.offload_assumed, 0, "{mode:?}");
    }
}

/// `frames` moved to IPv6 (the client and server become `fd00::1`, as both were 127.0.0.1)
/// with a destination-options header (a PadN option) in front of TCP.
fn ipv6_with_destination_options(frames: &[IpFrame]) -> Vec<IpFrame> {
    let address: IpAddr = "fd00::1".parse().expect("address");
    let IpAddr::V6(v6) = address else {
        unreachable!()
    };
    frames
        .iter()
        .map(|f| {
            let header = ihl(&f.ip);
            let mut tcp = f.ip[header..usize::from(be16(&f.ip, 2))].to_vec();
            tcp[16..18].fill(0);
            let checksum = tcp_checksum(address, address, &tcp);
            tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
            let options = [6u8, 0, 1, 4, 0, 0, 0, 0];
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&((options.len() + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[60, 64]);
            ip.extend_from_slice(&v6.octets());
            ip.extend_from_slice(&v6.octets());
            ip.extend_from_slice(&options);
            ip.extend_from_slice(&tcp);
            IpFrame { ts: f.ts, ip }
        })
        .collect()
}

#[test]
fn ipv6_session_behind_destination_options_is_captured_and_parsed() {
    let frames = recorded_session();
    let cfg = config(ChecksumValidation::Yes);
    let (v4, _) = analyse("v4.pcap", &frames, &cfg);
    let (v6, stats) = analyse(
        "v6-dstopts.pcap",
        &ipv6_with_destination_options(&frames),
        &cfg,
    );
    assert_eq!(v6.len(), 1, "{stats:?}");
    assert_eq!(stats.checksums.dropped, 0);
    let (a, b) = (&v4[0], &v6[0]);
    assert_eq!(b.client_ip, "fd00::1");
    assert_eq!(b.auth_result, AuthResult::Ok);
    assert_eq!(
        (b.bytes_c2s, b.bytes_s2c, b.packets_c2s, b.packets_s2c),
        (a.bytes_c2s, a.bytes_s2c, a.packets_c2s, a.packets_s2c)
    );
    assert_eq!(
        (
            &b.desktop_name,
            b.key_events,
            b.pointer_events,
            b.framebuffer_updates
        ),
        (
            &a.desktop_name,
            a.key_events,
            a.pointer_events,
            a.framebuffer_updates
        )
    );
}

/// Runs `ip` with `args`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of the `/metrics` series `series` of this process.
fn metric(series: &str) -> i64 {
    telemetry::render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The agent's live loop in this process, capturing on `interface` with its real BPF filter.
/// One at a time: its counters are this process's `/metrics` gauges.
struct LiveAgent {
    events: Arc<Mutex<Vec<SessionEvent>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), capture_agent::RunError>>,
    _alone: std::sync::MutexGuard<'static, ()>,
}

static LIVE_AGENTS: Mutex<()> = Mutex::new(());

impl LiveAgent {
    fn start(interface: &str) -> LiveAgent {
        let alone = LIVE_AGENTS.lock().unwrap_or_else(|e| e.into_inner());
        let config = AgentConfig {
            agent_id: "red-team-wire".to_string(),
            ..AgentConfig::default()
        };
        let options = LiveOptions {
            interface: interface.to_string(),
            host: "red-team".to_string(),
            heartbeat_interval: Duration::from_secs(3600),
            enforcing: false,
        };
        let capture = live::open(&options, &config).expect("capturing on the bridge");
        let events: Arc<Mutex<Vec<SessionEvent>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (events, stop) = (events.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut sink = FnSink(|event: &SessionEvent| {
                    events.lock().expect("events").push(event.clone())
                });
                live::run(capture, &options, config, &mut sink, &stop)
            })
        };
        LiveAgent {
            events,
            stop,
            thread,
            _alone: alone,
        }
    }

    fn ended(&self) -> Vec<SessionSummary> {
        common::summaries(&self.events.lock().expect("events"))
    }

    fn events(&self) -> Vec<SessionEvent> {
        self.events.lock().expect("events").clone()
    }

    /// Stops the loop (open sessions end with `shutdown`) and waits for it.
    fn stop(self) -> Vec<SessionEvent> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("agent thread")
            .expect("live capture");
        let events = self.events.lock().expect("events").clone();
        events
    }
}

#[test]
fn fragmented_brute_force_from_a_real_client_is_still_detected() {
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    const NET: u8 = 86;
    let (server, client, router) = (0, 1, 2);
    let Some(mut lab) = Lab::create_or_skip(NET, 3) else {
        return;
    };
    // The server sits behind a router: a private link server <-> router, and the router's leg
    // on the bridge has the smallest IPv4 MTU, 68 bytes. Server and client do not set DF
    // (ip_no_pmtu_disc), so the router fragments what the server sends, as a router on a small
    // MTU link does; the client's own packets of more than 68 bytes are fragmented by its
    // kernel. The agent captures on the bridge, where every fragment passes.
    let (server_link, router_link) = (format!("vgs{}", lab.id()), format!("vgt{}", lab.id()));
    let private = |host: u8| format!("10.210.{NET}.{host}");
    let (server_ns, router_ns, client_ns) = (
        lab.namespace(server).to_string(),
        lab.namespace(router).to_string(),
        lab.namespace(client).to_string(),
    );
    let leg = |i: usize| lab.interface(i);
    let (server_cidr, router_cidr) = (format!("{}/24", private(1)), format!("{}/24", private(2)));
    let (private_net, router_private, router_ip) =
        (format!("10.210.{NET}.0/24"), private(2), lab.ip(router));
    let (legs, links) = (
        [leg(server), leg(router), leg(client)],
        [&server_link, &router_link],
    );
    let [server_leg, router_leg, client_leg] = legs.each_ref().map(String::as_str);
    let [server_link, router_link] = links.map(String::as_str);
    let (sn, rn, cn) = (server_ns.as_str(), router_ns.as_str(), client_ns.as_str());
    for command in [
        &[
            sn,
            "link",
            "add",
            server_link,
            "type",
            "veth",
            "peer",
            "name",
            router_link,
            "netns",
            rn,
        ][..],
        &[sn, "addr", "add", &server_cidr, "dev", server_link],
        &[sn, "link", "set", server_link, "up"],
        &[rn, "addr", "add", &router_cidr, "dev", router_link],
        &[rn, "link", "set", router_link, "up"],
        // The server is reached through the router only.
        &[sn, "link", "set", server_leg, "down"],
        &[sn, "route", "add", "default", "via", &router_private],
        &[cn, "route", "add", &private_net, "via", &router_ip],
        &[rn, "link", "set", router_leg, "mtu", "68"],
        &[cn, "link", "set", client_leg, "mtu", "68"],
    ] {
        let mut args = vec!["-n"];
        args.extend_from_slice(command);
        ip(&args);
    }
    for (i, setting) in [
        (router, "net.ipv4.ip_forward=1"),
        (server, "net.ipv4.ip_no_pmtu_disc=1"),
        (client, "net.ipv4.ip_no_pmtu_disc=1"),
    ] {
        lab.run_in(i, &["sysctl", "-qw", setting]).expect("sysctl");
    }

    let password_file = lab.vnc_password_file(&tools.vncpasswd, "secret12");
    let display = 300 + std::process::id() % 300;
    lab.start_vnc_server(server, &tools.xvnc, &password_file, display);

    let agent = LiveAgent::start(lab.bridge());

    // The brute force: six logins with a wrong password, each its own session. TigerVNC
    // refuses the sixth for too many failures.
    let server_ip = private(1);
    let attempts = 6;
    for _ in 0..attempts {
        let guess = VncSession {
            server: &server_ip,
            password: "wrong-guess",
            limit: Duration::from_secs(30),
        };
        let outcome = lab.vnc_client(client, &tools.vncdo, guess, &["pause", "0.1"]);
        assert!(
            outcome.is_err(),
            "a wrong password was accepted: {outcome:?}"
        );
    }
    testkit::wait_for("every attempt ended", Duration::from_secs(60), || {
        agent.ended().len() >= attempts
    });
    let mut all = agent.stop();
    let summaries = common::summaries(&all);
    assert_eq!(summaries.len(), attempts, "{summaries:#?}");
    let failed = summaries
        .iter()
        .filter(|s| s.auth_result == AuthResult::Failed)
        .count();
    assert!(
        summaries.iter().all(|s| {
            s.client_ip == lab.ip(client)
                && s.server_ip == server_ip
                && matches!(s.auth_result, AuthResult::Failed | AuthResult::TooMany)
        }),
        "{summaries:#?}"
    );
    assert!(failed >= 5, "failures counted per session: {summaries:#?}");
    let reassembled = metric("vncguard_agent_fragments{outcome=\"reassembled\"}");
    // Each failure (SecurityResult and its reason, 30 bytes of payload) came in fragments.
    assert!(
        reassembled >= failed as i64,
        "the failures came in fragments:\n{}",
        telemetry::render()
    );

    // Through the real enricher and scorer: a brute-force threat against the client.
    all.sort_by_key(|e| e.time);
    let geo = enricher::geo::GeoDatabases::empty();
    let reputation = enricher::reputation::Reputation::default();
    let mut windows =
        enricher::windows::PartitionWindows::new(enricher::windows::WindowConfig::default());
    let mut scorer = scorer::stage::ScoringStage::new(
        scorer::model::ModelStore::new(scorer::model::DEFAULT_MODEL_NAME),
        scorer::risk::RiskConfig::default(),
        1000,
    );
    let threats: Vec<schemas::Threat> = all
        .into_iter()
        .flat_map(|event| {
            let enriched = enricher::stage::enrich_event(
                &geo,
                &reputation,
                chrono_tz::Tz::UTC,
                &mut windows,
                event,
            );
            scorer.score_session(enriched).1
        })
        .collect();
    assert!(
        threats
            .iter()
            .any(|t| t.threat_type == "brute_force" && t.source_ip == lab.ip(client)),
        "threats: {threats:#?}"
    );
}

#[test]
fn forged_rst_on_the_wire_mid_session_leaves_the_session_whole() {
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    let (server, client) = (0, 1);
    let Some(mut lab) = Lab::create_or_skip(87, 2) else {
        return;
    };
    let password_file = lab.vnc_password_file(&tools.vncpasswd, "secret12");
    let display = 600 + std::process::id() % 300;
    lab.start_vnc_server(server, &tools.xvnc, &password_file, display);
    let agent = LiveAgent::start(lab.bridge());
    // The attacker's view of the bridge: it learns the addresses, ports and the sequence
    // number it must miss, and injects its RSTs there.
    let (client_ip, server_ip) = (lab.ip(client), lab.ip(server));
    let mut attacker = pcap::Capture::from_device(lab.bridge())
        .and_then(|c| c.immediate_mode(true).open())
        .and_then(|c| c.setnonblock())
        .expect("attacker capture");
    attacker
        .filter(
            &format!("tcp and src host {client_ip} and dst port 5900"),
            true,
        )
        .expect("filter");

    // A session that types after a pause, in which the forged RSTs come.
    let session = VncSession {
        server: &server_ip,
        password: "secret12",
        limit: Duration::from_secs(30),
    };
    let actions = ["pause", "3", "type", "hello", "pause", "0.5"];
    let vncdo = lab.spawn_vnc_client(client, &tools.vncdo, session, &actions, "vncdo.log");
    testkit::wait_for("the session authenticated", Duration::from_secs(30), || {
        agent
            .events()
            .iter()
            .any(|e| e.kind == schemas::SessionEventKind::Auth)
    });
    // The last segment the client sent so far: where the server's window starts.
    let mut last: Option<Vec<u8>> = None;
    testkit::wait_for("a client segment seen", Duration::from_secs(10), || {
        while let Ok(packet) = attacker.next_packet() {
            last = Some(packet.data.to_vec());
        }
        last.is_some()
    });
    let frame = last.expect("a client segment");
    let seen = etherparse::SlicedPacket::from_ethernet(&frame).expect("an Ethernet frame");
    let Some(etherparse::TransportSlice::Tcp(tcp)) = seen.transport else {
        panic!("not TCP")
    };
    let next = tcp
        .sequence_number()
        .wrapping_add(tcp.payload().len() as u32);
    let client_port = tcp.source_port();
    let (server_mac, client_mac): ([u8; 6], [u8; 6]) = (
        frame[0..6].try_into().expect("MAC"),
        frame[6..12].try_into().expect("MAC"),
    );
    let octets = |ip: &str| ip.parse::<std::net::Ipv4Addr>().expect("IPv4").octets();
    for seq in [next.wrapping_add(1000), next.wrapping_add(1 << 31)] {
        let mut rst = Vec::new();
        etherparse::PacketBuilder::ethernet2(client_mac, server_mac)
            .ipv4(octets(&client_ip), octets(&server_ip), 64)
            .tcp(client_port, 5900, seq, 1024)
            .rst()
            .write(&mut rst, &[])
            .expect("forged RST");
        attacker.sendpacket(rst).expect("inject the RST");
    }

    testkit::wait_for("the client done", Duration::from_secs(30), || {
        lab.exited(vncdo)
    });
    testkit::wait_for("the session ended", Duration::from_secs(30), || {
        !agent.ended().is_empty()
    });
    let in_window = metric("vncguard_agent_rst_ignored{verdict=\"in_window\"}");
    let out_of_window = metric("vncguard_agent_rst_ignored{verdict=\"out_of_window\"}");
    let summaries = common::summaries(&agent.stop());
    assert_eq!(summaries.len(), 1, "one session, not split: {summaries:#?}");
    let s = &summaries[0];
    assert_eq!(s.client_port, i32::from(client_port));
    assert_eq!(s.auth_result, AuthResult::Ok);
    assert_eq!(
        s.key_events, 10,
        "hello, typed after the RSTs, is in the session"
    );
    assert_eq!(
        s.end_reason.as_deref(),
        Some("fin"),
        "{}",
        lab.log("vncdo.log")
    );
    assert!(!s.desynced && s.gap_bytes == 0, "{s:#?}");
    assert_eq!(
        (in_window, out_of_window),
        (1, 1),
        "{}",
        telemetry::render()
    );
}
