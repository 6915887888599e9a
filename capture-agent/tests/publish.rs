//! Session events and heartbeats onto the bus: the same events a capture gives in memory reach
//! `vnc.sessions.raw` keyed by client IP, on the in-process bus and on Kafka (tansu), through
//! the library and through the binary; a full queue drops (counted) instead of stalling
//! capture; an unreachable broker is retried with backoff and what is left is reported at the
//! drain timeout.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bus::kafka::KafkaBus;
use bus::memory::MemoryBus;
use bus::{Bus, BusArgs, Consumer, Record};
use capture_agent::publish::{self, Overflow, PublishOptions, PublishReport};
use capture_agent::{analyze_file, EventSink};
use schemas::topics::{AGENT_HEARTBEATS, SESSIONS_RAW};
use schemas::{AgentHeartbeat, SessionEvent, SessionEventKind, SessionSummary};

fn capture() -> PathBuf {
    common::pcaps_dir().join("lab/c_bruteforce_vncauth.pcap")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn read(consumer: &mut impl Consumer, want: usize) -> Vec<Record> {
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < want && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .next_batch(500, Duration::from_millis(200))
            .await
            .expect("consume");
        consumer.store(&batch);
        records.extend(batch);
    }
    records
}

fn heartbeat(agent_id: &str) -> AgentHeartbeat {
    let now = chrono::Utc::now();
    AgentHeartbeat {
        agent_id: agent_id.to_string(),
        hostname: "test-host".into(),
        version: "test".into(),
        time: now,
        started_at: now,
        packets: 42,
        bytes: 4200,
        pcap_drops: 0,
        flows_active: 1,
        flows_evicted: 0,
        sessions_active: 1,
        sessions_total: 3,
        parse_errors: 0,
        enforcing: false,
        capture_sources: vec!["test".into()],
    }
}

/// The events as records give them back, each checked against its key, sorted by event id.
fn decode_sessions(records: &[Record]) -> Vec<SessionEvent> {
    let mut events: Vec<SessionEvent> = records
        .iter()
        .map(|record| {
            let event: SessionEvent = schemas::decode(&record.payload).expect("decodes");
            assert_eq!(
                record.key.as_deref(),
                Some(event.summary.client_ip.as_bytes()),
                "session records are keyed by client IP"
            );
            event
        })
        .collect();
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    events
}

fn expected_events() -> Vec<SessionEvent> {
    let (mut events, result) = common::run(&capture(), &common::config(false));
    result.expect("capture reads");
    assert!(
        events.iter().any(|e| e.kind == SessionEventKind::Auth),
        "the capture has authentication attempts"
    );
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    events
}

/// Analyses the capture into a bus sink (waiting on a full queue, as for files), sends one
/// heartbeat, closes the sink and returns the publisher's report.
fn publish_capture<P: bus::Producer>(rt: &tokio::runtime::Runtime, producer: P) -> PublishReport {
    let options = PublishOptions {
        queue_capacity: 4,
        batch_size: 3,
        overflow: Overflow::Wait,
        ..PublishOptions::default()
    };
    let (mut sink, publisher) = publish::spawn(producer, options, rt.handle());
    analyze_file(&capture(), &common::config(false), &mut sink).expect("capture reads");
    sink.heartbeat(&heartbeat("agent-under-test"))
        .expect("heartbeat queued");
    sink.close();
    rt.block_on(publisher).expect("publisher task")
}

fn same_events_on<B: Bus>(rt: &tokio::runtime::Runtime, bus: B) {
    let expected = expected_events();
    // rdkafka's clients spawn onto the runtime they are created in.
    let (mut sessions, mut heartbeats, producer) = rt.block_on(async {
        bus.ensure_topics(schemas::topics::ALL)
            .await
            .expect("topics");
        (
            bus.consumer("publish-test", &[SESSIONS_RAW.name])
                .expect("consumer"),
            bus.consumer("publish-test-hb", &[AGENT_HEARTBEATS.name])
                .expect("consumer"),
            bus.producer().expect("producer"),
        )
    });
    let report = publish_capture(rt, producer);
    assert_eq!(report.published, expected.len() as u64 + 1);
    assert_eq!(report.abandoned, 0);

    let records = rt.block_on(read(&mut sessions, expected.len()));
    assert_eq!(decode_sessions(&records), expected);
    let records = rt.block_on(read(&mut heartbeats, 1));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(&b"agent-under-test"[..]));
    let hb: AgentHeartbeat = schemas::decode(&records[0].payload).expect("decodes");
    assert_eq!((hb.packets, hb.sessions_total), (42, 3));
}

#[test]
fn capture_events_reach_the_in_process_bus_keyed_by_client_ip() {
    let rt = runtime();
    same_events_on(&rt, MemoryBus::new(1000));
}

#[test]
fn capture_events_reach_kafka_keyed_by_client_ip() {
    let broker = testkit::Broker::start().expect("tansu");
    let rt = runtime();
    let bus = KafkaBus::new(&BusArgs::for_brokers(&broker.brokers())).expect("bus");
    same_events_on(&rt, bus);
}

#[test]
fn the_binary_publishes_a_capture_file_to_kafka() {
    let broker = testkit::Broker::start().expect("tansu");
    let expected = expected_events();
    let output = Command::new(env!("CARGO_BIN_EXE_capture-agent"))
        .args(["--pcap"])
        .arg(capture())
        .args(["--agent-id", "test-agent", "--sink", "kafka"])
        .env("KAFKA_BROKERS", broker.brokers())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "kafka sink prints nothing");

    let rt = runtime();
    let bus = KafkaBus::new(&BusArgs::for_brokers(&broker.brokers())).expect("bus");
    let records = rt.block_on(async {
        let mut consumer = bus
            .consumer("binary-test", &[SESSIONS_RAW.name])
            .expect("consumer");
        read(&mut consumer, expected.len()).await
    });
    assert_eq!(decode_sessions(&records), expected);
}

fn event(n: u16) -> SessionEvent {
    let summary = SessionSummary::new(
        format!("session-{n}"),
        "agent-1".into(),
        format!("192.0.2.7:{}", 40000 + n).parse().unwrap(),
        "198.51.100.1:5900".parse().unwrap(),
        chrono::Utc::now(),
    );
    SessionEvent::new(SessionEventKind::Started, 0, chrono::Utc::now(), summary)
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_stalling_capture() {
    let rt = runtime();
    // One record per topic and a group that never stores: the bus holds the publisher back.
    let bus = MemoryBus::new(1);
    let blocking_group = bus
        .consumer("never-stores", &[SESSIONS_RAW.name])
        .expect("consumer");
    let options = PublishOptions {
        queue_capacity: 2,
        batch_size: 1,
        overflow: Overflow::Drop,
        ..PublishOptions::default()
    };
    let (mut sink, publisher) = publish::spawn(bus.producer().unwrap(), options, rt.handle());
    let dropped_before = sink.dropped();
    let sent = 50;
    let started = std::time::Instant::now();
    for n in 0..sent {
        sink.session_event(&event(n)).expect("never blocks");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "queuing must not wait"
    );
    let dropped = sink.dropped() - dropped_before;
    assert!(
        dropped > 0,
        "a held-back publisher makes the queue overflow"
    );
    // The group leaves: the topic keeps its newest record and the publisher finishes.
    drop(blocking_group);
    sink.close();
    let report = rt.block_on(publisher).expect("publisher task");
    assert_eq!(report.published + dropped, u64::from(sent));
    assert_eq!(report.abandoned, 0);
}

#[test]
fn an_unreachable_broker_is_retried_and_the_rest_reported_at_the_drain_timeout() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("capture-agent-publish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let properties = dir.join("kafka.properties");
    std::fs::write(&properties, "message.timeout.ms=300\n").unwrap();
    let port = testkit::free_port().unwrap();
    let mut args = BusArgs::for_brokers(&format!("127.0.0.1:{port}"));
    args.kafka_config_file = Some(properties);
    let bus = KafkaBus::new(&args).unwrap();
    let producer = rt.block_on(async { bus.producer() }).unwrap();
    let options = PublishOptions {
        overflow: Overflow::Wait,
        initial_backoff: Duration::from_millis(50),
        drain_timeout: Duration::from_secs(2),
        ..PublishOptions::default()
    };
    let (mut sink, publisher) = publish::spawn(producer, options, rt.handle());
    for n in 0..3 {
        sink.session_event(&event(n)).expect("queued");
    }
    sink.close();
    let started = std::time::Instant::now();
    let report = rt.block_on(publisher).expect("publisher task");
    assert!(report.failures >= 2, "failed sends are retried: {report:?}");
    assert_eq!(report.published, 0);
    assert_eq!(report.abandoned, 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain timeout bounds shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
