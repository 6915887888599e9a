//! The scorer on the bus: reads enriched sessions and model announcements (one consumer, both
//! topics), publishes scored sessions and threats, and, with a [`Learner`], fits and announces
//! its own models (see [`crate::learn`]).
//!
//! A threat is one per session and rule (`threat_id` = hash of both), published when a rule
//! fires, or as `high_risk` when the risk reaches the threshold and no rule of high severity
//! or worse already reports the session (with the default threshold, 70, the risk reaches it
//! only through such a rule; a lower threshold reports medium sessions with much evidence). Every event of a session is scored
//! again, so the same threat would come back with every stats event: a bounded memory of the
//! threats published (threat id → severity and score, least recently seen evicted first)
//! publishes a threat again only when its severity or score changed.

use std::collections::{BTreeMap, HashMap};

use bus::{Outcome, Output, Record, RetryableError, Stage};
use schemas::topics::{MODELS, SESSIONS_SCORED, THREATS};
use schemas::{EnrichedSession, ModelAnnouncement, ScoredSession, Severity, Threat};
use sha2::{Digest, Sha256};
use telemetry::Counter;

use crate::learn::{FitOutcome, Learner};
use crate::model::ModelStore;
use crate::risk::{self, AnomalyInput, Assessment, RiskConfig};

/// Threats remembered by default for the "updated rather than repeated" rule.
pub const DEFAULT_THREAT_MEMORY: usize = 100_000;

/// The deterministic id of the threat `rule` raised on `session_id`.
pub fn threat_id(session_id: &str, rule: &str) -> String {
    let digest = Sha256::digest(format!("{session_id}\u{0}{rule}").as_bytes());
    hex::encode(&digest[..16])
}

/// What was last published for each threat, bounded: least recently seen evicted first.
pub struct ThreatMemory {
    capacity: usize,
    last: HashMap<String, (Severity, i64, bool, u64)>,
    by_age: BTreeMap<u64, String>,
    clock: u64,
    evictions: &'static Counter,
}

impl ThreatMemory {
    pub fn new(capacity: usize) -> Self {
        ThreatMemory {
            capacity: capacity.max(1),
            last: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            evictions: telemetry::counter(
                "vncguard_scorer_threat_memory_evictions_total",
                "Threats forgotten by the bounded memory of published threats.",
                &[],
            ),
        }
    }

    /// True when the threat is new or its severity, (whole) score or verification changed
    /// since it was last published; remembers it either way. A scan first raised on forged
    /// probes and later backed by enough verified ones keeps its score, and must reach the
    /// responder again to block.
    pub fn changed(
        &mut self,
        threat_id: &str,
        severity: Severity,
        score: f64,
        verified: bool,
    ) -> bool {
        self.clock += 1;
        let score = score.round() as i64;
        let changed = match self.last.get(threat_id) {
            Some(&(last_severity, last_score, last_verified, stamp)) => {
                self.by_age.remove(&stamp);
                last_severity != severity || last_score != score || last_verified != verified
            }
            None => true,
        };
        self.last.insert(
            threat_id.to_string(),
            (severity, score, verified, self.clock),
        );
        self.by_age.insert(self.clock, threat_id.to_string());
        while self.last.len() > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.last.remove(&oldest);
            self.evictions.inc();
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The threats `assessment` of `session` raises: one per threat rule that fired, and
/// `high_risk` when the risk reaches the threshold and no rule of high severity or worse fired.
pub fn threats(
    session: &EnrichedSession,
    assessment: &Assessment,
    forest_score: Option<f64>,
    threshold: f64,
    model_version: &str,
) -> Vec<(Threat, f64)> {
    let summary = &session.event.summary;
    let threat = |rule: &str,
                  severity: Severity,
                  description: String,
                  mut evidence: BTreeMap<String, String>,
                  verified: bool| {
        // Also in the evidence, which the store keeps as the threat's metadata for the API and
        // the dashboard.
        evidence.insert("verified".to_string(), verified.to_string());
        Threat {
            threat_id: threat_id(&summary.session_id, rule),
            session_id: summary.session_id.clone(),
            threat_type: rule.to_string(),
            severity,
            description,
            source_ip: summary.client_ip.clone(),
            target_ip: Some(summary.server_ip.clone()),
            target_port: Some(summary.server_port),
            risk_score: assessment.risk_score,
            ml_confidence: forest_score,
            evidence,
            model_version: model_version.to_string(),
            detected_at: chrono::Utc::now(),
            verified,
        }
    };
    let mut threats: Vec<(Threat, f64)> = assessment
        .findings
        .iter()
        .filter_map(|finding| {
            let severity = finding.severity?;
            Some((
                threat(
                    finding.rule,
                    severity,
                    finding.reason.clone(),
                    finding.evidence.clone(),
                    finding.verified,
                ),
                finding.score,
            ))
        })
        .collect();
    let reported_high = assessment
        .findings
        .iter()
        .any(|f| f.severity.is_some_and(|s| s >= Severity::High));
    if assessment.risk_score >= threshold && !reported_high {
        let severity = if assessment.risk_score >= 90.0 {
            Severity::Critical
        } else {
            Severity::High
        };
        let components = &assessment.components;
        let evidence = BTreeMap::from([
            (
                "risk_score".to_string(),
                format!("{:.1}", assessment.risk_score),
            ),
            ("threshold".to_string(), threshold.to_string()),
            ("anomaly".to_string(), format!("{:.1}", components.anomaly)),
            ("threat".to_string(), format!("{:.1}", components.threat)),
            (
                "behavioral".to_string(),
                format!("{:.1}", components.behavioral),
            ),
            (
                "geographic".to_string(),
                format!("{:.1}", components.geographic),
            ),
            (
                "temporal".to_string(),
                format!("{:.1}", components.temporal),
            ),
        ]);
        threats.push((
            threat(
                "high_risk",
                severity,
                format!(
                    "risk score {:.1} reached the threshold {threshold}",
                    assessment.risk_score
                ),
                evidence,
                summary.handshake_verified,
            ),
            assessment.risk_score,
        ));
    }
    threats
}

struct StageCounters {
    scored: &'static Counter,
    threats: &'static Counter,
    threats_unchanged: &'static Counter,
    models_loaded: &'static Counter,
    models_refused: &'static Counter,
    models_ignored: &'static Counter,
}

impl StageCounters {
    fn new() -> Self {
        StageCounters {
            scored: telemetry::counter(
                "vncguard_scorer_sessions_scored_total",
                "Enriched session events scored.",
                &[],
            ),
            threats: telemetry::counter(
                "vncguard_scorer_threats_published_total",
                "Threat records published (new or changed).",
                &[],
            ),
            threats_unchanged: telemetry::counter(
                "vncguard_scorer_threats_unchanged_total",
                "Threats raised again with the same severity and score, not republished.",
                &[],
            ),
            models_loaded: telemetry::counter(
                "vncguard_scorer_models_loaded_total",
                "Model announcements switched to.",
                &[],
            ),
            models_refused: telemetry::counter(
                "vncguard_scorer_models_refused_total",
                "Model announcements that did not load (sent to the dead-letter topic).",
                &[],
            ),
            models_ignored: telemetry::counter(
                "vncguard_scorer_models_ignored_total",
                "Model announcements for another model name.",
                &[],
            ),
        }
    }
}

/// The scoring stage: see the module documentation.
pub struct ScoringStage {
    models: ModelStore,
    config: RiskConfig,
    published: ThreatMemory,
    counters: StageCounters,
    learner: Option<Learner>,
    /// Postgres whose triaged threats name the sessions a fit leaves out.
    judged_from: Option<String>,
}

impl ScoringStage {
    pub fn new(models: ModelStore, config: RiskConfig, threat_memory: usize) -> Self {
        ScoringStage {
            models,
            config,
            published: ThreatMemory::new(threat_memory),
            counters: StageCounters::new(),
            learner: None,
            judged_from: None,
        }
    }

    /// Learns its own models with `learner`; before each fit, the sessions analysts judged are
    /// read from `database_url` if given.
    pub fn with_learner(mut self, learner: Learner, database_url: Option<String>) -> Self {
        self.learner = Some(learner);
        self.judged_from = database_url;
        self
    }

    pub fn model_version(&self) -> &str {
        self.models.version()
    }

    /// Scores one session: the scored record and the threats that are new or changed.
    pub fn score_session(&mut self, session: EnrichedSession) -> (ScoredSession, Vec<Threat>) {
        let forest_score = self.models.score(&session);
        self.assess(session, forest_score)
    }

    /// The scored record of `session`, whose forest score is `forest_score`, and the threats
    /// that are new or changed.
    fn assess(
        &mut self,
        session: EnrichedSession,
        forest_score: Option<f64>,
    ) -> (ScoredSession, Vec<Threat>) {
        let anomaly = match (forest_score, &self.learner) {
            (Some(score), _) => AnomalyInput::Scored(score),
            (None, Some(learner)) if learner.config().min_sessions > 0 => {
                let (seen, needed) = learner.progress();
                AnomalyInput::Learning { seen, needed }
            }
            (None, _) => AnomalyInput::NoModel,
        };
        let assessment = risk::assess(&session, anomaly, &self.config);
        if let Some(learner) = &mut self.learner {
            learner.observe(&session, &assessment);
        }
        let model_version = self.models.version().to_string();
        let mut published = Vec::new();
        for (threat, score) in threats(
            &session,
            &assessment,
            forest_score,
            self.config.threat_threshold,
            &model_version,
        ) {
            if self
                .published
                .changed(&threat.threat_id, threat.severity, score, threat.verified)
            {
                published.push(threat);
            } else {
                self.counters.threats_unchanged.inc();
            }
        }
        let scored = ScoredSession {
            risk_score: assessment.risk_score,
            anomaly_score: assessment.anomaly_score,
            reasons: assessment.reasons(),
            components: assessment.components,
            model_version,
            scored_at: chrono::Utc::now(),
            enriched: session,
        };
        (scored, published)
    }

    /// Fits a model when the learner says one is due and, if it is promoted, switches to it
    /// and announces it with the last record of the run that emits (the announcement is then
    /// delivered, like the scored records, before the run's offsets are stored). A run of
    /// dead letters only waits for the next run.
    async fn learn(&mut self, outcomes: &mut [Outcome]) {
        let has_model = self.models.forest().is_some();
        let Some(learner) = self.learner.as_mut() else {
            return;
        };
        if !learner.is_due(has_model) {
            return;
        }
        let Some(Outcome::Emit(outputs)) = outcomes
            .iter_mut()
            .rev()
            .find(|outcome| matches!(outcome, Outcome::Emit(_)))
        else {
            return;
        };
        if let Some(url) = &self.judged_from {
            match crate::train::judged_sessions(url).await {
                Ok(judged) => learner.set_judged(judged),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the sessions analysts judged; using those read before")
                }
            }
        }
        let FitOutcome::Promote(candidate) =
            learner.fit(self.models.forest(), self.config.rules.anomaly_threshold)
        else {
            return;
        };
        let crate::learn::Candidate {
            forest,
            announcement,
            ..
        } = *candidate;
        match Output::encode(&MODELS, announcement.model_name.clone(), &announcement) {
            Ok(output) => {
                outputs.push(output);
                self.models.install(&announcement.version, forest);
                self.counters.models_loaded.inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the model announcement; not promoting it")
            }
        }
    }

    fn process_model(&mut self, record: &Record) -> Outcome {
        let announcement = match schemas::decode::<ModelAnnouncement>(&record.payload) {
            Ok(announcement) => announcement,
            Err(e) => return Outcome::DeadLetter(format!("model announcement: {e}")),
        };
        match self.models.apply(&announcement) {
            Ok(true) => self.counters.models_loaded.inc(),
            Ok(false) => self.counters.models_ignored.inc(),
            Err(e) => {
                self.counters.models_refused.inc();
                return Outcome::DeadLetter(e.to_string());
            }
        }
        Outcome::Emit(Vec::new())
    }

    /// Scores a run of session records that one model scores: the forest scores them as one
    /// batch, then each is assessed in order.
    fn process_sessions(&mut self, records: &[Record]) -> Vec<Outcome> {
        let decoded: Vec<Result<EnrichedSession, String>> = records
            .iter()
            .map(|record| {
                schemas::decode::<EnrichedSession>(&record.payload)
                    .map_err(|e| format!("enriched session: {e}"))
            })
            .collect();
        let sessions: Vec<&EnrichedSession> = decoded
            .iter()
            .filter_map(|session| session.as_ref().ok())
            .collect();
        let mut forest_scores = self.models.score_all(&sessions).into_iter();
        decoded
            .into_iter()
            .map(|session| match session {
                Ok(session) => {
                    let forest_score = forest_scores.next().flatten();
                    self.emit_session(session, forest_score)
                }
                Err(reason) => Outcome::DeadLetter(reason),
            })
            .collect()
    }

    fn emit_session(&mut self, session: EnrichedSession, forest_score: Option<f64>) -> Outcome {
        let key = session.event.summary.client_ip.clone();
        let (scored, threats) = self.assess(session, forest_score);
        self.counters.scored.inc();
        self.counters.threats.add(threats.len() as u64);
        let outputs = std::iter::once(Output::encode(&SESSIONS_SCORED, key.clone(), &scored))
            .chain(
                threats
                    .iter()
                    .map(|threat| Output::encode(&THREATS, threat.source_ip.clone(), threat)),
            )
            .collect::<Result<Vec<_>, _>>();
        match outputs {
            Ok(outputs) => Outcome::Emit(outputs),
            Err(e) => Outcome::DeadLetter(format!("encoding the scored session: {e}")),
        }
    }
}

impl Stage for ScoringStage {
    fn name(&self) -> &str {
        "scorer"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        let is_model = |record: &Record| record.topic == MODELS.name;
        let mut outcomes = Vec::with_capacity(batch.len());
        // A model record switches the model between the sessions before and after it, so the
        // sessions are scored in runs between model records.
        for run in batch.chunk_by(|a, b| is_model(a) == is_model(b)) {
            if is_model(&run[0]) {
                outcomes.extend(run.iter().map(|record| self.process_model(record)));
            } else {
                let mut run_outcomes = self.process_sessions(run);
                self.learn(&mut run_outcomes).await;
                outcomes.extend(run_outcomes);
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threat_memory_republishes_only_changes_and_stays_bounded() {
        let mut memory = ThreatMemory::new(2);
        assert!(memory.changed("a", Severity::High, 70.0, true));
        assert!(!memory.changed("a", Severity::High, 70.2, true));
        assert!(memory.changed("a", Severity::Critical, 70.0, true));
        assert!(memory.changed("b", Severity::Low, 20.0, true));
        assert!(memory.changed("c", Severity::Low, 20.0, true));
        assert_eq!(memory.len(), 2);
        // "a" was the least recently seen, so it was forgotten and counts as new.
        assert!(memory.changed("a", Severity::Critical, 70.0, true));
        assert!(!memory.changed("c", Severity::Low, 20.0, true));
        // Verified evidence arriving for the same threat publishes it again.
        assert!(memory.changed("c", Severity::Low, 20.0, false));
        assert!(memory.changed("c", Severity::Low, 20.0, true));
    }

    #[test]
    fn threat_ids_are_deterministic_per_session_and_rule() {
        assert_eq!(
            threat_id("s1", "brute_force"),
            threat_id("s1", "brute_force")
        );
        assert_ne!(threat_id("s1", "brute_force"), threat_id("s1", "scanning"));
        assert_ne!(
            threat_id("s1", "brute_force"),
            threat_id("s2", "brute_force")
        );
    }
}
