//! Live capture end to end: a real VNC server (TigerVNC `Xvnc`) and a real client (vncdotool's
//! `vncdo`) in two network namespaces joined by a bridge, the agent capturing on that bridge and
//! publishing to a tansu broker, a consumer reading the session's events. A second client holds
//! its session open while the agent is stopped: that session ends with `shutdown`.
//!
//! Needs root (network namespaces), `Xvnc` and `vncpasswd` (Debian: tigervnc-standalone-server,
//! tigervnc-tools) and `vncdo` (PyPI: vncdotool; `$VNCDO` names it when it is not on PATH). The
//! test prints why and passes without running when one is missing. The lab is
//! `testkit::netns::Lab`.

use std::path::Path;
use std::time::Duration;

use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Consumer};
use schemas::topics::{AGENT_HEARTBEATS, SESSIONS_RAW};
use schemas::{AgentHeartbeat, AuthResult, SessionEvent, SessionEventKind};
use testkit::netns::{Lab, VncSession, VncTools};
use testkit::wait_for;

const PASSWORD: &str = "secret12";
const SERVER: usize = 0;
const CLIENT: usize = 1;

/// Reads `topic` until `done` holds for what was read (or a minute passes).
fn consume(
    rt: &tokio::runtime::Runtime,
    bus: &KafkaBus,
    group: &str,
    topic: &str,
    mut done: impl FnMut(&[bus::Record]) -> bool,
) -> Vec<bus::Record> {
    rt.block_on(async {
        let mut consumer = bus.consumer(group, &[topic]).expect("consumer");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(&records) && tokio::time::Instant::now() < deadline {
            let batch = consumer
                .next_batch(100, Duration::from_millis(300))
                .await
                .expect("consume");
            consumer.store(&batch);
            records.extend(batch);
        }
        records
    })
}

fn session_events(records: &[bus::Record]) -> Vec<SessionEvent> {
    records
        .iter()
        .map(|r| schemas::decode::<SessionEvent>(&r.payload).expect("decodes"))
        .collect()
}

fn ended(events: &[SessionEvent]) -> Vec<&SessionEvent> {
    events
        .iter()
        .filter(|e| e.kind == SessionEventKind::Ended)
        .collect()
}

#[test]
fn live_session_in_network_namespaces_reaches_kafka() {
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    // Two namespaces (server, client) whose veth peers sit on a bridge in this namespace,
    // where the agent captures.
    let Some(mut lab) = Lab::create_or_skip(77, 2) else {
        return;
    };
    let (server_ip, client_ip) = (lab.ip(SERVER), lab.ip(CLIENT));

    let broker = testkit::Broker::start().expect("tansu");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The VNC server, VNC authentication with a known password, no X11 over TCP.
    let password_file = lab.vnc_password_file(&tools.vncpasswd, PASSWORD);
    let display = 600 + std::process::id() % 300;
    lab.start_vnc_server(SERVER, &tools.xvnc, &password_file, display);

    // The agent on the bridge, publishing to the broker.
    let metrics_addr = format!("127.0.0.1:{}", testkit::free_port().expect("port"));
    let mut agent = lab.command(None, Path::new(env!("CARGO_BIN_EXE_capture-agent")));
    agent
        .args(["--interface", lab.bridge(), "--sink", "kafka"])
        .args(["--agent-id", "live-test", "--heartbeat-interval", "1s"])
        .args(["--metrics-addr", &metrics_addr])
        .env("KAFKA_BROKERS", broker.brokers())
        .env("LOG_FORMAT", "json");
    let agent = lab.spawn(agent, "agent.log");
    wait_for("agent capturing", Duration::from_secs(30), || {
        lab.log("agent.log").contains("capturing")
    });

    // One complete session: authenticate, type, leave.
    let session = VncSession {
        server: &server_ip,
        password: PASSWORD,
        limit: Duration::from_secs(30),
    };
    let login = lab.vnc_client(
        CLIENT,
        &tools.vncdo,
        session,
        &["type", "hello", "pause", "0.5"],
    );
    assert!(login.is_ok(), "the VNC client failed: {login:?}");

    let bus = KafkaBus::new(&BusArgs::for_brokers(&broker.brokers())).expect("bus");
    let records = consume(&rt, &bus, "live-first", SESSIONS_RAW.name, |r| {
        !ended(&session_events(r)).is_empty()
    });
    let events = session_events(&records);
    let kinds: Vec<SessionEventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            SessionEventKind::Started,
            SessionEventKind::Auth,
            SessionEventKind::Ended
        ],
        "agent log:\n{}",
        lab.log("agent.log")
    );
    for record in &records {
        assert_eq!(record.key.as_deref(), Some(client_ip.as_bytes()));
    }
    let summary = &events[2].summary;
    assert_eq!(summary.client_ip, client_ip);
    assert_eq!(summary.server_ip, server_ip);
    assert_eq!(summary.server_port, 5900);
    assert_eq!(summary.security_type, Some(2));
    assert_eq!(summary.auth_result, AuthResult::Ok);
    assert_eq!(events[1].summary.auth_result, AuthResult::Ok);
    assert_eq!((summary.width, summary.height), (Some(320), Some(240)));
    assert_eq!(summary.key_events, 10, "five keys pressed and released");
    assert_eq!(summary.agent_id, "live-test");

    let metrics = testkit::http_get(&metrics_addr, "/metrics").expect("metrics endpoint");
    assert!(metrics.contains("vncguard_agent_packets "), "{metrics}");
    assert!(
        metrics.contains("vncguard_agent_records_published_total"),
        "{metrics}"
    );

    // A session still open when the agent stops ends with `shutdown`.
    let holder_id = lab.spawn_vnc_client(
        CLIENT,
        &tools.vncdo,
        session,
        &["pause", "20"],
        "holder.log",
    );
    let records = consume(&rt, &bus, "live-second", SESSIONS_RAW.name, |r| {
        session_events(r)
            .iter()
            .filter(|e| e.kind == SessionEventKind::Auth)
            .count()
            >= 2
    });
    assert!(
        session_events(&records)
            .iter()
            .filter(|e| e.kind == SessionEventKind::Auth)
            .count()
            >= 2,
        "the second session authenticated (client {holder_id}): {}",
        lab.log("holder.log")
    );
    let status = lab.stop(agent);
    assert!(
        status.is_some_and(|s| s.success()),
        "agent: {status:?}\n{}",
        lab.log("agent.log")
    );
    let records = consume(&rt, &bus, "live-third", SESSIONS_RAW.name, |r| {
        ended(&session_events(r)).len() >= 2
    });
    let events = session_events(&records);
    let last = ended(&events).into_iter().last().expect("two ended events");
    assert_eq!(last.summary.end_reason.as_deref(), Some("shutdown"));
    assert_eq!(last.summary.auth_result, AuthResult::Ok);

    // Early heartbeats come before the sessions; the one sent at shutdown counts both.
    let decode_heartbeats = |records: &[bus::Record]| -> Vec<AgentHeartbeat> {
        records
            .iter()
            .map(|r| schemas::decode(&r.payload).expect("decodes"))
            .collect()
    };
    let records = consume(&rt, &bus, "live-hb", AGENT_HEARTBEATS.name, |r| {
        decode_heartbeats(r).iter().any(|h| h.sessions_total >= 2)
    });
    let heartbeats = decode_heartbeats(&records);
    let heartbeat = heartbeats
        .iter()
        .find(|h| h.sessions_total >= 2)
        .expect("a heartbeat counting both sessions");
    assert_eq!(heartbeat.agent_id, "live-test");
    assert_eq!(records[0].key.as_deref(), Some(&b"live-test"[..]));
    assert!(heartbeat.packets > 20, "{heartbeat:?}");
    assert_eq!(
        heartbeat.capture_sources,
        vec![format!("live:{}", lab.bridge())]
    );
}
