//! The risk scale on every lab capture, every event scored: a session with a critical finding
//! scores at least 90, a high one at least 70, a medium one at least 40, and a session with no
//! finding of medium or worse and an ordinary forest score (a model fitted on the normal
//! sessions) at most 20.

mod support;

use schemas::{EnrichedSession, ScoredSession, Severity};
use scorer::forest::ForestParams;
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::{assess, AnomalyInput, RiskConfig};
use scorer::stage::ScoringStage;
use scorer::train::fit_sessions;

const CAPTURES: &[&str] = &[
    "a_normal_vncauth",
    "a2_normal_tigervnc_viewer",
    "b_clipboard_classic",
    "b2_clipboard_extended_tigervnc",
    "c_bruteforce_vncauth",
    "c2_bruteforce_nmap_success",
    "d_noauth_session",
    "e_scanner",
    "g1_rfb33_server",
    "g2_rfb33_client_x11vnc",
    "g3_rfb37_x11vnc",
];

/// The worst severity among the session's findings, as the assessment of the score saw them.
fn worst_severity(session: &EnrichedSession, forest_score: Option<f64>) -> Option<Severity> {
    let anomaly = forest_score.map_or(AnomalyInput::NoModel, AnomalyInput::Scored);
    assess(session, anomaly, &RiskConfig::default())
        .findings
        .iter()
        .filter_map(|f| f.severity)
        .max()
}

fn check_bounds(scored: &ScoredSession, worst: Option<Severity>, ordinary: bool) {
    let risk = scored.risk_score;
    let id = &scored.enriched.event.event_id;
    match worst {
        Some(Severity::Critical) => assert!(risk >= 90.0, "{id}: critical at {risk}"),
        Some(Severity::High) => assert!((70.0..=90.0).contains(&risk), "{id}: high at {risk}"),
        Some(Severity::Medium) => assert!((40.0..=70.0).contains(&risk), "{id}: medium at {risk}"),
        Some(Severity::Low) | None => {
            assert!(risk < 40.0, "{id}: no finding at {risk}");
            if ordinary {
                assert!(risk <= 20.0, "{id}: ordinary session at {risk}");
            }
        }
    }
    assert_eq!(
        scored.components.floor.as_deref(),
        worst
            .filter(|s| *s >= Severity::Medium)
            .map(Severity::as_str),
        "{id}: the floor named is the worst finding's"
    );
}

#[test]
fn every_severity_scores_in_its_band_without_a_model() {
    let mut stage = ScoringStage::new(
        ModelStore::new(DEFAULT_MODEL_NAME),
        RiskConfig::default(),
        10_000,
    );
    let mut seen = std::collections::BTreeSet::new();
    for capture in CAPTURES {
        for session in support::enrich_capture(capture) {
            let worst = worst_severity(&session, None);
            let tier = worst.filter(|s| *s >= Severity::Medium);
            seen.insert(tier.map_or("below medium", Severity::as_str));
            let (scored, _) = stage.score_session(session);
            check_bounds(&scored, worst, true);
        }
    }
    // The captures hold every tier, so each bound was tested.
    for tier in ["critical", "high", "medium", "below medium"] {
        assert!(seen.contains(tier), "no {tier} session among {seen:?}");
    }
}

#[test]
fn with_a_model_of_normal_use_ordinary_sessions_stay_at_most_20() {
    let normal: Vec<EnrichedSession> = support::NORMAL
        .iter()
        .flat_map(|name| support::final_sessions(name))
        .flat_map(|session| (0..30).map(move |day| support::replayed(&session, day)))
        .collect();
    let trained = fit_sessions(&normal, DEFAULT_MODEL_NAME, &ForestParams::default()).unwrap();
    let mut models = ModelStore::new(DEFAULT_MODEL_NAME);
    models.apply(&trained.announcement).unwrap();
    let mut scorer_models = ModelStore::new(DEFAULT_MODEL_NAME);
    scorer_models.apply(&trained.announcement).unwrap();
    let mut stage = ScoringStage::new(scorer_models, RiskConfig::default(), 10_000);
    let mut ordinary_sessions = 0;
    for capture in CAPTURES {
        for session in support::final_sessions(capture) {
            let forest_score = models.score(&session);
            let worst = worst_severity(&session, forest_score);
            let (scored, _) = stage.score_session(session);
            assert_eq!(scored.model_version, trained.announcement.version);
            assert_eq!(scored.components.anomaly_status, None);
            let ordinary = worst.is_none_or(|s| s < Severity::Medium);
            ordinary_sessions += usize::from(ordinary);
            check_bounds(&scored, worst, ordinary);
        }
    }
    assert!(ordinary_sessions > 0);
}
