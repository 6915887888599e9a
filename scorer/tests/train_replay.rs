//! `scorer train` over a replayed enriched topic on a real broker (tansu): the model it
//! announces is fitted on normal use only (the flagged sessions and the one named a false
//! positive left out, the flagged ones validated on), scores the lab's authenticated anomalies
//! (clipboard exfiltration after a correct login) above the normal sessions, and running scorers
//! can load it.

mod support;

use std::time::Duration;

use bus::{Bus, Output, Producer};
use schemas::topics::{MODELS, SESSIONS_ENRICHED};
use schemas::EnrichedSession;
use scorer::learn::{self, ForestArgs, SessionUse};
use scorer::model::{load_latest, ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::{anomaly_from_forest_score, assess, AnomalyInput, RiskConfig};
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

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_model_scores_authenticated_anomalies_above_normal_sessions() {
    let (_broker, bus) = testkit::broker_with_topics(1, &[SESSIONS_ENRICHED, MODELS]).await;

    let mut topic: Vec<EnrichedSession> = Vec::new();
    for name in ORDINARY {
        let sessions = support::enrich_capture(name);
        topic.extend(
            (0..ORDINARY_DAYS)
                .flat_map(|day| sessions.iter().map(move |s| support::replayed(s, day))),
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
        forest: ForestArgs {
            trees: 100,
            subsample: 256,
            seed: 7,
        },
        risk: RiskConfig::default(),
        output: work.join("model.json"),
    };
    let trained = train(&bus, &train_args).await.unwrap();
    // It trained on normal use only: the last event of every authenticated session no rule
    // flagged, less those held out to validate on; the flagged ones (the attacks, the one named
    // a false positive excepted) are its validation positives.
    let mut latest = std::collections::BTreeMap::new();
    for session in &topic {
        latest.insert(session.event.summary.session_id.clone(), session.clone());
    }
    let (mut normal, mut flagged) = (0, 0);
    for session in latest.values() {
        let id = &session.event.summary.session_id;
        if *id == false_positive {
            continue;
        }
        let assessment = assess(session, AnomalyInput::NoModel, &RiskConfig::default());
        match learn::session_use(session, &assessment) {
            Some(SessionUse::Normal) if !learn::held_out(id) => normal += 1,
            Some(SessionUse::Flagged) => flagged += 1,
            _ => {}
        }
    }
    assert!(
        normal > 0 && flagged > 0,
        "normal {normal}, flagged {flagged}"
    );
    assert!(
        normal < latest.len() - flagged,
        "some normal sessions were held out"
    );
    assert_eq!(trained.announcement.training_rows as usize, normal);
    let metrics = &trained.announcement.metrics;
    assert_eq!(metrics["validation_flagged_sessions"] as usize, flagged);
    let auc = metrics["validation_auc"];
    println!("validation AUC {auc:.3}");
    assert!(
        auc > 0.5,
        "the forest ranks the flagged sessions above normal use: {auc}"
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
    // The forest's job is the authenticated session unlike normal use: the two clipboard
    // exfiltrations (a correct login, then a bulk copy out) score above every normal session.
    // Pre-authentication attacks (brute force, scans) are the rules' job: a forest of normal
    // use, where `auth_ok` never varies, does not isolate them sooner than normal sessions.
    let insiders = scores_of(&["b_clipboard_classic", "b2_clipboard_extended_tigervnc"]);
    let normal = scores_of(support::NORMAL);
    let attacks = scores_of(support::ATTACKS);
    println!(
        "anomaly (0-100): clipboard exfiltrations {insiders:.1?}; normal {normal:.1?}; pre-authentication attacks mean {:.1} median {:.1}",
        mean(&attacks),
        median(&attacks)
    );
    let highest_normal = normal.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        insiders.iter().all(|&score| score > highest_normal),
        "{insiders:?} above {normal:?}"
    );
    std::fs::remove_dir_all(&work).unwrap();
}
