//! `scorer train` over a replayed enriched topic on a real broker (tansu): the model it
//! announces scores the attack sessions of the lab captures above the normal ones, leaves out
//! the sessions named as false positives, and running scorers can load it.

mod support;

use std::time::Duration;

use bus::{Bus, Output, Producer};
use schemas::topics::{MODELS, SESSIONS_ENRICHED};
use schemas::EnrichedSession;
use scorer::model::{load_latest, ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::anomaly_from_forest_score;
use scorer::train::{train, TrainArgs};

/// Days of ordinary use replayed around the attacks: in production ordinary sessions are
/// most of the traffic, and the model must learn them as the norm.
const ORDINARY_DAYS: usize = 60;

/// Captures of ordinary use: interactive sessions, a few mistyped passwords.
const ORDINARY: &[&str] = &[
    "a_normal_vncauth",
    "a2_normal_tigervnc_viewer",
    "g1_rfb33_server",
    "g2_rfb33_client_x11vnc",
    "g3_rfb37_x11vnc",
];

/// A copy of `session` as if recorded `day` days later, its volumes varied by a few percent.
fn replayed(session: &EnrichedSession, day: usize) -> EnrichedSession {
    let mut copy = session.clone();
    let shift = chrono::Duration::days(day as i64 + 1);
    let summary = &mut copy.event.summary;
    summary.session_id = format!("{}-day{day}", summary.session_id);
    summary.start_time += shift;
    copy.event.event_id = format!("{}:{}", summary.session_id, copy.event.seq);
    copy.event.time += shift;
    let variation = 1.0 + 0.05 * ((day * 7 % 11) as f64 / 10.0 - 0.5);
    for name in [
        "duration_secs",
        "bytes_c2s",
        "bytes_s2c",
        "packets_c2s",
        "packets_s2c",
        "framebuffer_updates",
    ] {
        if let Some(value) = copy.features.get_mut(name) {
            *value *= variation;
        }
    }
    copy
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_model_scores_attacks_above_normal_sessions() {
    let (_broker, bus) = testkit::broker_with_topics(1, &[SESSIONS_ENRICHED, MODELS]).await;

    let mut topic: Vec<EnrichedSession> = Vec::new();
    for name in ORDINARY {
        let sessions = support::enrich_capture(name);
        topic.extend(
            (0..ORDINARY_DAYS).flat_map(|day| sessions.iter().map(move |s| replayed(s, day))),
        );
    }
    for name in support::ATTACKS
        .iter()
        .chain(&["b_clipboard_classic", "d_noauth_session"])
    {
        topic.extend(support::enrich_capture(name));
    }
    // An attack session an analyst closed as a false positive, and a record that is not one.
    let false_positive = support::final_sessions("e_scanner")[0]
        .event
        .summary
        .session_id
        .clone();
    let producer = bus.producer().unwrap();
    let mut outputs: Vec<Output> = topic
        .iter()
        .map(|s| Output::encode(&SESSIONS_ENRICHED, s.event.summary.client_ip.clone(), s).unwrap())
        .collect();
    outputs.push(Output::new(
        SESSIONS_ENRICHED.name,
        "x",
        b"not avro".to_vec(),
    ));
    for chunk in outputs.chunks(500) {
        producer.send(chunk.to_vec()).await.unwrap();
    }

    let work = std::env::temp_dir().join(format!("scorer-train-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let exclusions = work.join("false-positives.txt");
    std::fs::write(
        &exclusions,
        format!("# closed by an analyst\n{false_positive}\n"),
    )
    .unwrap();
    let train_args = TrainArgs {
        model_name: DEFAULT_MODEL_NAME.into(),
        since: None,
        until: None,
        idle_ms: 5_000,
        exclude_sessions: Some(exclusions),
        database_url: None,
        trees: 100,
        subsample: 256,
        seed: 7,
        output: work.join("model.json"),
    };
    let trained = train(&bus, &train_args).await.unwrap();
    let distinct_sessions = topic
        .iter()
        .map(|s| &s.event.summary.session_id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(
        trained.announcement.training_rows as usize,
        distinct_sessions - 1
    );
    let written = std::fs::read_to_string(&train_args.output).unwrap();
    assert_eq!(written, trained.announcement.model_json);

    // A starting scorer finds the announced model on the compacted topic.
    let mut models = ModelStore::new(DEFAULT_MODEL_NAME);
    load_latest(&bus, &mut models, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(models.version(), trained.announcement.version);

    let mut scores_of = |names: &[&str]| -> Vec<f64> {
        names
            .iter()
            .flat_map(|name| support::final_sessions(name))
            .map(|s| anomaly_from_forest_score(models.score(&s).unwrap()))
            .collect()
    };
    let attacks = scores_of(support::ATTACKS);
    let normal = scores_of(support::NORMAL);
    println!(
        "anomaly (0-100): attacks mean {:.3} median {:.3}; normal mean {:.3} median {:.3}",
        mean(&attacks),
        median(&attacks),
        mean(&normal),
        median(&normal)
    );
    assert!(mean(&attacks) > mean(&normal));
    assert!(median(&attacks) > median(&normal));
    std::fs::remove_dir_all(&work).unwrap();
}
