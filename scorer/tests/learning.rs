//! The scorer learns its own model of normal use: the anomaly component says "learning (k of N
//! sessions)" until N normal sessions have ended, then the stage fits, switches to and
//! announces a model; a fit trains on normal use only (no flagged session, no session an
//! analyst judged in a real Postgres) and validates on the held-out and flagged sessions; and a
//! model that validates worse than the one in use is not promoted.

mod support;

use std::collections::HashSet;

use bus::{Outcome, Output, Stage};
use schemas::topics::{MODELS, SESSIONS_ENRICHED, SESSIONS_SCORED};
use schemas::{EnrichedSession, ModelAnnouncement, ScoredSession, SessionEventKind};
use scorer::forest::{ForestParams, IsolationForest};
use scorer::learn::{self, FitOutcome, ForestArgs, LearnConfig, Learner, Sample, SessionUse};
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::{assess, AnomalyInput, RiskConfig};
use scorer::stage::ScoringStage;
use scorer::train::{fit_sessions, judged_sessions};

/// `days` copies of the normal lab sessions' events, each a session of its own.
fn normal_days(days: usize) -> Vec<EnrichedSession> {
    let sessions: Vec<EnrichedSession> = support::NORMAL
        .iter()
        .flat_map(|name| support::enrich_capture(name))
        .collect();
    (0..days)
        .flat_map(|day| sessions.iter().map(move |s| support::replayed(s, day)))
        .collect()
}

fn ended(sessions: &[EnrichedSession]) -> usize {
    sessions
        .iter()
        .filter(|s| s.event.kind == SessionEventKind::Ended)
        .count()
}

/// The attack sessions of the lab captures (every event).
fn attacks() -> Vec<EnrichedSession> {
    support::ATTACKS
        .iter()
        .chain(&["b_clipboard_classic", "d_noauth_session"])
        .flat_map(|name| support::enrich_capture(name))
        .collect()
}

fn session_record(offset: usize, session: &EnrichedSession) -> bus::Record {
    let key = session.event.summary.client_ip.clone();
    support::record(
        offset,
        Output::encode(&SESSIONS_ENRICHED, key, session).unwrap(),
    )
}

fn config(min_sessions: usize) -> LearnConfig {
    LearnConfig {
        min_sessions,
        retrain_interval_secs: 3600,
        forest: ForestArgs {
            seed: 3,
            ..ForestArgs::default()
        },
        ..LearnConfig::default()
    }
}

/// Feeds `sessions` to `learner` as the stage would: each assessed without a model.
fn observe_all(learner: &mut Learner, sessions: &[EnrichedSession]) {
    for session in sessions {
        let assessment = assess(session, AnomalyInput::NoModel, &RiskConfig::default());
        learner.observe(session, &assessment);
    }
}

#[tokio::test]
async fn the_anomaly_component_says_learning_until_the_stage_fits_and_announces_a_model() {
    const NEEDED: usize = 12;
    let mut stage = ScoringStage::new(
        ModelStore::new(DEFAULT_MODEL_NAME),
        RiskConfig::default(),
        10_000,
    )
    .with_learner(Learner::new(config(NEEDED), DEFAULT_MODEL_NAME), None);
    let sessions = normal_days(20);
    assert!(ended(&sessions) > NEEDED + 2);

    let mut normal_ended = 0;
    let mut announced: Option<ModelAnnouncement> = None;
    let mut after_model = 0;
    for (offset, session) in sessions.iter().enumerate() {
        // One record per batch: the model is fitted after the batch that completes the period.
        let outcomes = stage
            .process(&[session_record(offset, session)])
            .await
            .unwrap();
        let Outcome::Emit(outputs) = &outcomes[0] else {
            panic!("dead letter: {outcomes:?}");
        };
        let scored: ScoredSession = outputs
            .iter()
            .find(|o| o.topic == SESSIONS_SCORED.name)
            .map(|o| schemas::decode(&o.payload).unwrap())
            .unwrap();
        let models: Vec<ModelAnnouncement> = outputs
            .iter()
            .filter(|o| o.topic == MODELS.name)
            .map(|o| schemas::decode(&o.payload).unwrap())
            .collect();
        match &announced {
            None => {
                assert_eq!(scored.model_version, "none");
                // The status counts the normal sessions ended before this one was scored.
                assert_eq!(
                    scored.components.anomaly_status.as_deref(),
                    Some(format!("learning ({normal_ended} of {NEEDED} sessions)").as_str()),
                );
                assert!(scored.reasons.iter().any(|r| r.rule == "learning"));
                if session.event.kind == SessionEventKind::Ended {
                    normal_ended += 1;
                }
                if let [model] = models.as_slice() {
                    assert_eq!(normal_ended, NEEDED, "fitted when the period ended");
                    announced = Some(model.clone());
                } else {
                    assert!(models.is_empty());
                }
            }
            Some(model) => {
                assert!(
                    models.is_empty(),
                    "no second fit within the retraining interval"
                );
                assert_eq!(scored.model_version, model.version);
                assert_eq!(scored.components.anomaly_status, None);
                assert!(scored.reasons.iter().any(|r| r.rule == "isolation_forest"));
                after_model += 1;
            }
        }
    }
    let model = announced.expect("a model was announced");
    assert!(after_model > 0);
    assert_eq!(stage.model_version(), model.version);
    // Its figures: trained on the normal sessions not held out, within their time span.
    let held_out = sessions
        .iter()
        .filter(|s| s.event.kind == SessionEventKind::Ended)
        .take(NEEDED)
        .filter(|s| learn::held_out(&s.event.summary.session_id))
        .count();
    assert_eq!(model.training_rows as usize, NEEDED - held_out);
    assert_eq!(
        model.metrics["validation_normal_sessions"] as usize,
        held_out
    );
    assert!(model.training_window_start <= model.training_window_end);
    assert!(model.training_window_start.is_some());
    // A scorer reading its own announcement back keeps the model it has.
    let mut store = ModelStore::new(DEFAULT_MODEL_NAME);
    assert!(store.apply(&model).unwrap());
    assert_eq!(store.version(), model.version);
}

#[tokio::test]
async fn training_leaves_out_flagged_sessions_and_those_analysts_judged() {
    let normal = normal_days(30);
    let attacks = attacks();
    // Two normal sessions an analyst judged, in a real Postgres: one closed as a false
    // positive, one as a true positive.
    let ended_normal: Vec<&EnrichedSession> = normal
        .iter()
        .filter(|s| s.event.kind == SessionEventKind::Ended)
        .filter(|s| !learn::held_out(&s.event.summary.session_id))
        .collect();
    let (judged_fp, judged_tp) = (
        ended_normal[0].event.summary.session_id.clone(),
        ended_normal[1].event.summary.session_id.clone(),
    );
    let db = testkit::TestDatabase::create().await.expect("postgres");
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE TABLE threat_logs (id TEXT PRIMARY KEY, session_id TEXT, status TEXT, close_reason TEXT);
             INSERT INTO threat_logs VALUES ('t1', '{judged_fp}', 'closed', 'false_positive'),
                                            ('t2', '{judged_tp}', 'closed', 'true_positive');"
        ))
        .await
        .unwrap();

    let mut learner = Learner::new(config(10), DEFAULT_MODEL_NAME);
    observe_all(&mut learner, &normal);
    observe_all(&mut learner, &attacks);
    learner.set_judged(judged_sessions(db.url()).await.unwrap());

    // What the learner should have kept, by the same public rules.
    let mut flagged = HashSet::new();
    for session in attacks
        .iter()
        .filter(|s| s.event.kind == SessionEventKind::Ended)
    {
        let assessment = assess(session, AnomalyInput::NoModel, &RiskConfig::default());
        if learn::session_use(session, &assessment) == Some(SessionUse::Flagged) {
            flagged.insert(session.event.summary.session_id.clone());
        }
        assert_ne!(
            learn::session_use(session, &assessment),
            Some(SessionUse::Normal),
            "{}: an attack is never normal use",
            session.event.summary.session_id
        );
    }
    assert!(!flagged.is_empty());

    assert!(learner.is_due(false));
    let FitOutcome::Promote(candidate) = learner.fit(None, 0.65) else {
        panic!("the first model is promoted");
    };
    let announcement = &candidate.announcement;
    assert_eq!(
        announcement.training_rows as usize,
        ended_normal.len() - 2,
        "every normal session not held out, less the two judged ones"
    );
    assert_eq!(
        announcement.metrics["validation_flagged_sessions"] as usize,
        flagged.len()
    );
    let auc = announcement.metrics["validation_auc"];
    assert!(
        auc > 0.9,
        "a forest of normal use ranks the attacks above it: {auc}"
    );
    assert!(announcement.metrics.contains_key("validation_precision"));
    // The flagged sessions that authenticated (the clipboard exfiltration after a correct
    // login), the forest's own job, rank above normal use too.
    let authenticated = announcement.metrics["validation_auc_authenticated"];
    println!("validation AUC {auc:.3}, authenticated flagged only {authenticated:.3}");
    assert!(authenticated > 0.9, "{authenticated}");
}

/// A forest fitted on `sessions` (their last events), as a model in use.
fn forest_of(sessions: &[EnrichedSession]) -> IsolationForest {
    let last: Vec<EnrichedSession> = sessions
        .iter()
        .filter(|s| s.event.kind == SessionEventKind::Ended)
        .cloned()
        .collect();
    fit_sessions(&last, DEFAULT_MODEL_NAME, &ForestParams::default())
        .unwrap()
        .forest
}

#[test]
fn a_model_validating_worse_than_the_one_in_use_is_not_promoted() {
    let normal = normal_days(30);
    let attacks = attacks();
    let names: Vec<String> = schemas::features::model_names()
        .map(str::to_string)
        .collect();
    // A weak candidate: one tree on a sample of two rows.
    let weak = LearnConfig {
        forest: ForestArgs {
            trees: 1,
            subsample: 2,
            seed: 3,
        },
        ..config(10)
    };
    let mut learner = Learner::new(weak.clone(), DEFAULT_MODEL_NAME);
    observe_all(&mut learner, &normal);
    observe_all(&mut learner, &attacks);

    // The premise, on the same held-out and flagged sessions the learner validates on: a
    // 100-tree forest of normal use validates better than the weak candidate.
    let samples = |sessions: &[EnrichedSession], wanted: SessionUse| -> Vec<Sample> {
        sessions
            .iter()
            .filter(|s| s.event.kind == SessionEventKind::Ended)
            .filter(|s| {
                let assessment = assess(s, AnomalyInput::NoModel, &RiskConfig::default());
                learn::session_use(s, &assessment) == Some(wanted)
            })
            .map(|s| Sample::of(s, &names))
            .collect()
    };
    let normal_samples = samples(&normal, SessionUse::Normal);
    let flagged_samples = samples(&attacks, SessionUse::Flagged);
    let holdout: Vec<&Sample> = normal_samples
        .iter()
        .filter(|s| learn::held_out(&s.session_id))
        .collect();
    let flagged: Vec<&Sample> = flagged_samples.iter().collect();
    let good = forest_of(&normal);
    let good_auc = learn::validate(&good, &names, &holdout, &flagged, 0.65)
        .auc
        .unwrap();
    let set = learn::TrainingSet {
        normal: normal_samples.iter().collect(),
        flagged: flagged.clone(),
    };
    let weak_auc = learn::fit_validated(
        &set,
        &names,
        DEFAULT_MODEL_NAME,
        &weak.forest.params(),
        0.65,
    )
    .unwrap()
    .validation
    .auc
    .unwrap();
    assert!(
        weak_auc < good_auc,
        "premise: weak {weak_auc} < good {good_auc}"
    );

    let not_promoted =
        || telemetry::counter("vncguard_scorer_learn_not_promoted_total", "", &[]).get();
    let before = not_promoted();
    assert!(matches!(
        learner.fit(Some(&good), 0.65),
        FitOutcome::Refused
    ));
    assert_eq!(not_promoted(), before + 1, "the refusal is counted");

    // Against a model that learned the attacks as normal (the inverted forest of issue 21),
    // the same candidate is promoted.
    let mut learner = Learner::new(weak, DEFAULT_MODEL_NAME);
    observe_all(&mut learner, &normal);
    observe_all(&mut learner, &attacks);
    let inverted = forest_of(&attacks);
    let FitOutcome::Promote(candidate) = learner.fit(Some(&inverted), 0.65) else {
        panic!("a candidate better than an inverted model is promoted");
    };
    let previous = candidate.announcement.metrics["previous_model_validation_auc"];
    assert!(
        candidate.validation.auc.unwrap() >= previous,
        "{:?} >= {previous}",
        candidate.validation.auc
    );
}

#[test]
fn the_training_buffer_keeps_the_newest_sessions_up_to_its_cap_each_once() {
    let cap = 4;
    let mut learner = Learner::new(
        LearnConfig {
            buffer_sessions: cap,
            ..config(cap)
        },
        DEFAULT_MODEL_NAME,
    );
    let normal = normal_days(10);
    let ended_normal = ended(&normal);
    assert!(ended_normal > cap);
    let evictions = || telemetry::counter("vncguard_scorer_learn_evictions_total", "", &[]).get();
    let before = evictions();
    observe_all(&mut learner, &normal);
    assert_eq!(learner.progress(), (ended_normal, cap));
    assert_eq!(evictions() - before, (ended_normal - cap) as u64);
    // The newest sessions delivered again (at least once) are not taken twice.
    let newest = &normal[normal.len() - 4..];
    observe_all(&mut learner, newest);
    assert_eq!(learner.progress().0, ended_normal);

    let FitOutcome::Promote(candidate) = learner.fit(None, 0.65) else {
        panic!("promoted");
    };
    let kept = candidate.announcement.training_rows as usize
        + candidate.announcement.metrics["validation_normal_sessions"] as usize;
    assert_eq!(kept, cap, "the fit saw the {cap} newest sessions");
    let newest_start = normal.iter().map(|s| s.event.summary.start_time).max();
    assert!(candidate.announcement.training_window_end <= newest_start);
}
