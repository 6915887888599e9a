//! Acceptance: the brute-force capture replayed through the real pipeline on tansu (capture
//! agent → enricher → scorer → `vnc.threats`) reaches a WebSocket client as `threat_detected`;
//! a client that never reads is dropped while another receives every event.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bus::{pipeline, Bus, Output, PipelineOptions, Producer};
use futures::{SinkExt, StreamExt};
use schemas::topics::{
    DEAD_LETTERS, DECISIONS, MODELS, SESSIONS_ENRICHED, SESSIONS_RAW, SESSIONS_SCORED, THREATS,
};
use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope, SessionEvent};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn decision(n: usize, reason: String) -> Decision {
    let now = chrono::Utc::now();
    Decision {
        decision_id: format!("ws-test-{n}"),
        action: DecisionAction::Block,
        origin: DecisionOrigin::Automatic,
        scope: DecisionScope::Ip,
        value: "203.0.113.77".into(),
        duration_secs: 60,
        created_at: now,
        until: now + chrono::Duration::seconds(60),
        reason,
        threat_id: None,
        target_decision_id: None,
        created_by: None,
        dry_run: false,
        key_id: None,
        signature: None,
    }
}

async fn publish_decisions(producer: &impl Producer, range: std::ops::Range<usize>, reason: &str) {
    let outputs = range
        .map(|n| {
            Output::encode(
                &DECISIONS,
                format!("ws-test-{n}"),
                &decision(n, reason.to_string()),
            )
            .unwrap()
        })
        .collect();
    producer.send(outputs).await.unwrap();
}

/// The next JSON event of a socket, answering nothing else.
async fn next_event(socket: &mut Socket, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_threats_reach_clients_and_slow_clients_are_dropped() {
    let (_broker, bus) = testkit::broker_with_topics(
        1,
        &[
            SESSIONS_RAW,
            SESSIONS_ENRICHED,
            SESSIONS_SCORED,
            THREATS,
            DECISIONS,
            MODELS,
            DEAD_LETTERS,
        ],
    )
    .await;
    let mut config = support::config();
    config.ws_queue = 256;
    let api = support::start(bus.clone(), config).await;
    let token = api.tokens[&api::auth::Role::Viewer].clone();

    // A client authenticated by query, one by the subprotocol header that never reads, and one
    // by its first message that only wants threats.
    let (mut reader, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", api.addr))
            .await
            .unwrap();
    let mut request = format!("ws://{}/ws", api.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    let (slow, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    let (mut threats_only, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?types=threat_detected", api.addr))
            .await
            .unwrap();
    threats_only
        .send(Message::Text(
            serde_json::json!({"type": "auth", "token": token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    reader
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut reader, Duration::from_secs(5))
            .await
            .unwrap()["type"],
        "pong"
    );

    // The tail consumer starts at the end once it has its partitions: wait until it delivers.
    let producer = bus.producer().unwrap();
    let mut warmed = false;
    for attempt in 0..60 {
        publish_decisions(&producer, attempt..attempt + 1, "warm-up").await;
        if let Some(event) = next_event(&mut reader, Duration::from_millis(500)).await {
            assert_eq!(event["type"], "firewall_action");
            warmed = true;
            break;
        }
    }
    assert!(warmed, "the live feed never started");
    while next_event(&mut reader, Duration::from_millis(500))
        .await
        .is_some()
    {}

    // The real stages on the bus.
    let options = PipelineOptions {
        batch_size: 100,
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let enricher = enricher::stage::EnricherStage::new(
        enricher::stage::Enricher::new(
            Arc::new(enricher::geo::GeoDatabases::empty()),
            enricher::reputation::Reputation::default(),
            enricher::stage::EnricherConfig::default(),
        ),
        enricher::history::NoHistory,
    );
    let enricher_task = tokio::spawn(pipeline::run(
        bus.consumer("api-test-enricher", &[SESSIONS_RAW.name])
            .unwrap(),
        producer.clone(),
        enricher,
        options.clone(),
        until_stopped(stopped.clone()),
    ));
    let scorer = scorer::stage::ScoringStage::new(
        scorer::model::ModelStore::new(scorer::model::DEFAULT_MODEL_NAME),
        scorer::risk::RiskConfig::default(),
        10_000,
    );
    let scorer_task = tokio::spawn(pipeline::run(
        bus.consumer("api-test-scorer", &[SESSIONS_ENRICHED.name, MODELS.name])
            .unwrap(),
        producer.clone(),
        scorer,
        options,
        until_stopped(stopped.clone()),
    ));

    let mut events: Vec<SessionEvent> = Vec::new();
    capture_agent::analyze_file(
        &testkit::lab_capture("c_bruteforce_vncauth.pcap"),
        &capture_agent::config::AgentConfig::default(),
        &mut events,
    )
    .unwrap();
    assert!(!events.is_empty());
    let outputs = events
        .iter()
        .map(|e| Output::encode(&SESSIONS_RAW, e.summary.client_ip.clone(), e).unwrap())
        .collect();
    producer.send(outputs).await.unwrap();

    let mut seen_started = false;
    let mut threat: Option<Value> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while threat.is_none() && tokio::time::Instant::now() < deadline {
        let Some(event) = next_event(&mut reader, Duration::from_secs(5)).await else {
            continue;
        };
        for field in ["type", "timestamp", "payload", "id"] {
            assert!(event.get(field).is_some(), "{field} missing: {event}");
        }
        match event["type"].as_str().unwrap() {
            "vnc_session_started" => seen_started = true,
            "threat_detected" if event["payload"]["threat_type"] == "brute_force" => {
                threat = Some(event)
            }
            _ => {}
        }
    }
    let threat = threat.expect("no brute_force threat_detected within 90 s");
    assert!(seen_started, "the session's start came before its threat");
    assert_eq!(threat["payload"]["source_ip"], events[0].summary.client_ip);
    let filtered = next_event(&mut threats_only, Duration::from_secs(10))
        .await
        .expect("the filtered client got nothing");
    assert_eq!(filtered["type"], "threat_detected");

    // A flood of large events: the client that never reads falls behind and is dropped; the
    // reader gets every one of them.
    let dropped = telemetry::counter(
        "api_ws_clients_dropped_total",
        "WebSocket clients dropped for falling behind",
        &[],
    );
    let dropped_before = dropped.get();
    let flood = 4000;
    let reason = "x".repeat(4096);
    let reading = tokio::spawn(async move {
        let mut received = 0;
        while received < flood {
            match next_event(&mut reader, Duration::from_secs(30)).await {
                Some(event)
                    if event["type"] == "firewall_action"
                        && event["payload"]["reason"]
                            .as_str()
                            .is_some_and(|r| r.len() == 4096) =>
                {
                    received += 1
                }
                Some(_) => {}
                None => break,
            }
        }
        // Hand the connection back: dropping it here would close it before the count below.
        (received, reader)
    });
    for chunk in (0..flood).step_by(100) {
        publish_decisions(&producer, 1000 + chunk..1000 + chunk + 100, &reason).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (received, reader) = reading.await.unwrap();
    assert_eq!(received, flood, "the reading client received every event");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dropped.get() == dropped_before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        dropped.get() > dropped_before,
        "the slow client was never dropped"
    );
    assert_eq!(
        api.state.hub.clients(),
        2,
        "the reader and the filtered client remain"
    );
    drop(slow);
    drop(reader);

    stop.send(true).unwrap();
    enricher_task.await.unwrap();
    scorer_task.await.unwrap();
}
