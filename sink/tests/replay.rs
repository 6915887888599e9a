//! Acceptance: replaying the whole input a second time (a new consumer group from the earliest
//! offset) changes no row count and no row content, `updated_at` included.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{Bus, Output, PipelineOptions, Producer};
use schemas::topics::{
    Topic, AGENT_HEARTBEATS, DEAD_LETTERS, DECISIONS, MODELS, SESSIONS_RAW, SESSIONS_SCORED,
    THREATS,
};
use schemas::{
    AgentHeartbeat, Decision, DecisionAction, DecisionOrigin, DecisionScope, ModelAnnouncement,
    SessionEventKind,
};
use sink::SinkStage;
use support::*;

const SESSIONS: u32 = 2_000;

fn stream() -> Vec<Output> {
    let mut outputs = Vec::new();
    for n in 0..SESSIONS {
        outputs.extend(session_lifecycle(n).iter().map(raw_output));
        let event = session_event(n, SessionEventKind::Stats, 3);
        outputs.push(scored_output(&scored(event, 12.5)));
        outputs.push(threat_output(&threat(n)));
    }
    for n in 0..50 {
        let decision = Decision {
            decision_id: format!("d-{n}"),
            action: if n % 2 == 0 {
                DecisionAction::Block
            } else {
                DecisionAction::Unblock
            },
            origin: DecisionOrigin::Automatic,
            scope: DecisionScope::Ip,
            value: format!("203.0.113.{n}"),
            duration_secs: 600,
            created_at: at(n),
            until: at(n + 600),
            reason: "brute force".into(),
            threat_id: Some(format!("t-{n}")),
            target_decision_id: (n % 2 == 1).then(|| format!("d-{}", n - 1)),
            created_by: None,
            dry_run: false,
            key_id: None,
            signature: None,
        };
        outputs.push(Output::encode(&DECISIONS, decision.decision_id.clone(), &decision).unwrap());
    }
    for n in 0..20 {
        let heartbeat = AgentHeartbeat {
            agent_id: format!("agent-{}", n % 3),
            hostname: "probe".into(),
            version: "0.1.0".into(),
            time: at(n),
            started_at: at(0),
            packets: n * 100,
            bytes: n * 10_000,
            pcap_drops: 0,
            flows_active: 3,
            flows_evicted: 0,
            sessions_active: 2,
            sessions_total: n,
            parse_errors: 0,
            enforcing: false,
            capture_sources: vec!["eth0".into()],
        };
        outputs.push(
            Output::encode(&AGENT_HEARTBEATS, heartbeat.agent_id.clone(), &heartbeat).unwrap(),
        );
    }
    let model = ModelAnnouncement {
        model_name: "isolation_forest".into(),
        version: "m1".into(),
        created_at: at(0),
        feature_names: vec!["bytes_c2s".into(), "duration".into()],
        training_rows: 1000,
        training_window_start: Some(at(-86_400)),
        training_window_end: Some(at(0)),
        metrics: BTreeMap::from([("auc".to_string(), 0.93)]),
        model_json: "{}".into(),
    };
    outputs.push(Output::encode(&MODELS, "isolation_forest", &model).unwrap());
    outputs.push(Output::new(
        THREATS.name,
        "x",
        b"not an avro record".to_vec(),
    ));
    outputs
}

const INPUTS: [Topic; 6] = [
    SESSIONS_RAW,
    SESSIONS_SCORED,
    THREATS,
    DECISIONS,
    AGENT_HEARTBEATS,
    MODELS,
];
const TABLES: [(&str, &str); 5] = [
    ("vnc_sessions", "id"),
    ("threat_logs", "id"),
    ("decisions", "decision_id"),
    ("agents", "agent_id"),
    ("models", "name, version"),
];

async fn consume_everything(
    bus: &KafkaBus,
    group: &str,
    pool: &deadpool_postgres::Pool,
    until_records_in: u64,
) {
    let records_in = telemetry::counter(
        "vncguard_bus_records_in_total",
        "Records handed to the stage.",
        &[("stage", "sink")],
    );
    let names: Vec<&str> = INPUTS.iter().map(|t| t.name).collect();
    let consumer = bus.consumer(group, &names).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = PipelineOptions {
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    let pipeline = tokio::spawn(bus::pipeline::run(
        consumer,
        bus.producer().unwrap(),
        SinkStage::new(pool.clone()),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(180);
    while records_in.get() < until_records_in && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        records_in.get(),
        until_records_in,
        "group {group} did not read everything"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), pipeline)
        .await
        .unwrap()
        .unwrap();
}

async fn digests(pool: &deadpool_postgres::Pool) -> Vec<(i64, String)> {
    let client = pool.get().await.unwrap();
    let mut all = Vec::new();
    for (table, key) in TABLES {
        all.push(table_digest(&client, table, key).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_every_topic_changes_no_row() {
    let (_db, pool) = migrated_database().await;
    let mut topics = INPUTS.to_vec();
    topics.push(DEAD_LETTERS);
    let (_broker, bus) = testkit::broker_with_topics(2, &topics).await;
    let outputs = stream();
    let total = outputs.len() as u64;
    let producer = bus.producer().unwrap();
    for chunk in outputs.chunks(2_000) {
        producer.send(chunk.to_vec()).await.unwrap();
    }

    consume_everything(&bus, "sink-first", &pool, total).await;
    let first = digests(&pool).await;
    let counts: Vec<i64> = first.iter().map(|(count, _)| *count).collect();
    assert_eq!(
        counts,
        vec![i64::from(SESSIONS), i64::from(SESSIONS), 50, 3, 1]
    );
    let client = pool.get().await.unwrap();
    let revoked: i64 = client
        .query_one(
            "SELECT count(*) FROM decisions WHERE revoked_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 25);

    consume_everything(&bus, "sink-replay", &pool, 2 * total).await;
    assert_eq!(digests(&pool).await, first, "the replay changed rows");
}
