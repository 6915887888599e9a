//! Acceptance: Postgres stops in the middle of a stream of 100,000 events through a real broker
//! and the real bus loop, and starts again; every event ends up in the database exactly once.
//! The Postgres is a throwaway cluster of the test's own, never the shared server.

mod support;

use std::time::{Duration, Instant};

use bus::{Bus, Output, PipelineOptions, Producer};
use schemas::topics::{DEAD_LETTERS, SESSIONS_RAW, SESSIONS_SCORED, THREATS};
use schemas::SessionEventKind;
use sink::SinkStage;
use support::*;

const SESSIONS: u32 = 12_000;
const SCORED: u32 = 8_000;
const THREATS_COUNT: u32 = 20_000;

/// 60,000 raw events (five per session), 20,000 scored sessions (the ended event of every session
/// and an older stats event of the first 8,000) and 20,000 threats: 100,000 records.
fn stream() -> Vec<Output> {
    let mut outputs: Vec<Output> = (0..SESSIONS)
        .flat_map(session_lifecycle)
        .map(|event| raw_output(&event))
        .collect();
    for n in 0..SESSIONS {
        let event = session_event(n, SessionEventKind::Ended, 4);
        outputs.push(scored_output(&scored(event, f64::from(n % 100))));
    }
    for n in 0..SCORED {
        let event = session_event(n, SessionEventKind::Stats, 3);
        outputs.push(scored_output(&scored(event, 99.0)));
    }
    outputs.extend((0..THREATS_COUNT).map(|n| threat_output(&threat(n))));
    outputs
}

async fn count(url: &str, sql: &str) -> Option<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.ok().map(|r| r.get(0))
}

const PROGRESS: &str =
    "SELECT (SELECT count(*) FROM vnc_sessions WHERE last_event_ended AND scored_event_ended) \
     + (SELECT count(*) FROM threat_logs)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = ThrowawayCluster::create();
    cluster.start();
    let (admin, connection) =
        tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("CREATE DATABASE vncguard")
        .await
        .unwrap();
    drop(admin);
    let url = cluster.url("vncguard");
    let pool = sink::connect_pool(&url, 2, Duration::from_secs(2)).unwrap();
    sink::migrate::migrate(&mut pool.get().await.unwrap())
        .await
        .unwrap();

    let (_broker, bus) =
        testkit::broker_with_topics(2, &[SESSIONS_RAW, SESSIONS_SCORED, THREATS, DEAD_LETTERS])
            .await;
    let producer = bus.producer().unwrap();
    let outputs = stream();
    assert_eq!(outputs.len(), 100_000);
    for chunk in outputs.chunks(5_000) {
        producer.send(chunk.to_vec()).await.unwrap();
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = bus
        .consumer(
            "sink-outage",
            &[SESSIONS_RAW.name, SESSIONS_SCORED.name, THREATS.name],
        )
        .unwrap();
    let options = PipelineOptions {
        batch_size: 500,
        linger: Duration::from_millis(20),
        max_backoff: Duration::from_secs(1),
        ..PipelineOptions::default()
    };
    let retries = telemetry::counter(
        "vncguard_bus_stage_retries_total",
        "Batches the stage failed with a retryable error and was offered again.",
        &[("stage", "sink")],
    );
    let pipeline = tokio::spawn(bus::pipeline::run(
        consumer,
        producer,
        SinkStage::new(pool.clone()),
        options,
        async {
            let _ = stopped.await;
        },
    ));

    // Stop Postgres once some, but far from all, of the stream is in.
    let total = i64::from(SESSIONS + THREATS_COUNT);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut written = 0;
    let rows = "SELECT (SELECT count(*) FROM vnc_sessions) + (SELECT count(*) FROM threat_logs)";
    while written < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        written = count(&url, rows).await.unwrap_or(0);
    }
    assert!(
        written < 20_000,
        "the stream went too fast to interrupt: {written} rows"
    );
    cluster.stop();
    let retries_before = retries.get();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start();
    assert!(
        retries.get() > retries_before,
        "the loop never saw the outage"
    );

    let mut done = 0;
    while done < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        done = count(&url, PROGRESS).await.unwrap_or(0);
    }
    assert_eq!(done, total, "not every event arrived after the restart");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), pipeline)
        .await
        .unwrap()
        .unwrap();

    let client = pool.get().await.unwrap();
    let sessions = client
        .query(
            "SELECT id, last_event_seq, status, bytes_c2s, bytes_s2c, key_events, end_reason, risk_score::float8 FROM vnc_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sessions.len(), SESSIONS as usize);
    for row in &sessions {
        let id: String = row.get(0);
        let n: u32 = id.trim_start_matches("s-").parse().unwrap();
        let last = session_event(n, SessionEventKind::Ended, 4).summary;
        assert_eq!(row.get::<_, i64>(1), 4, "{id}");
        assert_eq!(row.get::<_, String>(2), "terminated", "{id}");
        assert_eq!(row.get::<_, i64>(3), last.bytes_c2s, "{id}");
        assert_eq!(row.get::<_, i64>(4), last.bytes_s2c, "{id}");
        assert_eq!(row.get::<_, i64>(5), last.key_events, "{id}");
        assert_eq!(
            row.get::<_, Option<String>>(6).as_deref(),
            Some("fin"),
            "{id}"
        );
        assert_eq!(
            row.get::<_, f64>(7),
            f64::from(n % 100),
            "{id}: the ended event's score wins"
        );
    }
    let threats: Vec<String> = client
        .query("SELECT id FROM threat_logs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected: Vec<String> = (0..THREATS_COUNT).map(|n| format!("t-{n}")).collect();
    expected.sort();
    assert_eq!(threats, expected);

    // Nothing went to the dead-letter topic.
    let mut dead = bus
        .consumer("sink-outage-dlq", &[DEAD_LETTERS.name])
        .unwrap();
    let letters = bus::Consumer::next_batch(&mut dead, 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(letters.is_empty(), "{} dead letters", letters.len());
}
