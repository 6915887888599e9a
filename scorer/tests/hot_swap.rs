//! A new model announced while records flow, on a real broker (tansu): no record is lost or
//! scored twice, the version changes once, and every record after the switch carries the new
//! version.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bus::{pipeline, Bus, Consumer, Output, PipelineOptions, Producer};
use schemas::topics::{DEAD_LETTERS, MODELS, SESSIONS_ENRICHED, SESSIONS_SCORED, THREATS};
use schemas::{EnrichedSession, ScoredSession};
use scorer::forest::ForestParams;
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::RiskConfig;
use scorer::stage::ScoringStage;
use scorer::train::fit_sessions;

fn lab_sessions() -> Vec<EnrichedSession> {
    [
        "a_normal_vncauth",
        "b_clipboard_classic",
        "c_bruteforce_vncauth",
        "e_scanner",
    ]
    .iter()
    .flat_map(|name| support::enrich_capture(name))
    .collect()
}

/// The `n`th record to publish: a lab session with an id of its own.
fn numbered(sessions: &[EnrichedSession], n: usize) -> EnrichedSession {
    let mut session = sessions[n % sessions.len()].clone();
    session.event.event_id = n.to_string();
    session
}

async fn publish(
    producer: &impl Producer,
    sessions: &[EnrichedSession],
    range: std::ops::Range<usize>,
) {
    let outputs = range
        .map(|n| {
            let session = numbered(sessions, n);
            Output::encode(
                &SESSIONS_ENRICHED,
                session.event.summary.client_ip.clone(),
                &session,
            )
            .unwrap()
        })
        .collect();
    producer.send(outputs).await.unwrap();
}

async fn read_scored(consumer: &mut impl Consumer) -> Vec<ScoredSession> {
    let batch = consumer
        .next_batch(500, Duration::from_millis(200))
        .await
        .unwrap();
    consumer.store(&batch);
    batch
        .iter()
        .map(|r| schemas::decode::<ScoredSession>(&r.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_model_switches_between_records_without_loss_or_repeat() {
    let (_broker, bus) = testkit::broker_with_topics(
        1,
        &[
            SESSIONS_ENRICHED,
            SESSIONS_SCORED,
            THREATS,
            MODELS,
            DEAD_LETTERS,
        ],
    )
    .await;

    let sessions = lab_sessions();
    let model = |seed| {
        let mut trained = fit_sessions(
            &sessions,
            DEFAULT_MODEL_NAME,
            &ForestParams {
                seed,
                n_trees: 50,
                ..ForestParams::default()
            },
        )
        .unwrap();
        trained.announcement.version = format!("v{seed}");
        trained.announcement
    };
    let (first, second) = (model(1), model(2));

    let mut models = ModelStore::new(DEFAULT_MODEL_NAME);
    assert!(models.apply(&first).unwrap());
    let stage = ScoringStage::new(models, RiskConfig::default(), 10_000);
    let consumer = bus
        .consumer("scorer-hot-swap", &[SESSIONS_ENRICHED.name, MODELS.name])
        .unwrap();
    let producer = bus.producer().unwrap();
    let options = PipelineOptions {
        batch_size: 20,
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scorer = tokio::spawn(pipeline::run(
        consumer,
        producer.clone(),
        stage,
        options,
        async {
            let _ = stopped.await;
        },
    ));

    let mut scored_out = bus
        .consumer("scorer-hot-swap-check", &[SESSIONS_SCORED.name])
        .unwrap();
    let mut scored: Vec<ScoredSession> = Vec::new();
    // Records flow; the new model is announced among them.
    let mut sent = 0;
    for _ in 0..10 {
        publish(&producer, &sessions, sent..sent + 15).await;
        sent += 15;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    producer
        .send(vec![
            Output::encode(&MODELS, DEFAULT_MODEL_NAME, &second).unwrap()
        ])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !scored.iter().any(|s| s.model_version == "v2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new model never came into use"
        );
        publish(&producer, &sessions, sent..sent + 5).await;
        sent += 5;
        scored.extend(read_scored(&mut scored_out).await);
    }
    let after_switch = sent..sent + 50;
    publish(&producer, &sessions, after_switch.clone()).await;
    sent += 50;
    while scored.len() < sent {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {sent} scored",
            scored.len()
        );
        scored.extend(read_scored(&mut scored_out).await);
    }
    // Anything extra would be a record scored twice.
    scored.extend(read_scored(&mut scored_out).await);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), scorer)
        .await
        .unwrap()
        .unwrap();

    let mut times_scored: BTreeMap<usize, usize> = BTreeMap::new();
    for s in &scored {
        *times_scored
            .entry(s.enriched.event.event_id.parse().unwrap())
            .or_default() += 1;
    }
    assert_eq!(times_scored.len(), sent, "records lost");
    assert!(
        times_scored.values().all(|&n| n == 1),
        "records scored twice"
    );
    assert_eq!(
        times_scored.keys().copied().collect::<Vec<_>>(),
        (0..sent).collect::<Vec<_>>()
    );

    let versions: Vec<&str> = scored.iter().map(|s| s.model_version.as_str()).collect();
    let switch = versions.iter().position(|v| *v == "v2").unwrap();
    assert!(
        switch > 0,
        "records before the announcement were scored by the old model"
    );
    assert!(versions[..switch].iter().all(|v| *v == "v1"));
    assert!(
        versions[switch..].iter().all(|v| *v == "v2"),
        "the version went back"
    );
    for s in &scored {
        let n: usize = s.enriched.event.event_id.parse().unwrap();
        if after_switch.contains(&n) {
            assert_eq!(s.model_version, "v2");
        }
    }
}
