//! Learning in every mode: the scorer, embedded or distributed, fits its own model of this
//! installation's normal use, validates it, and announces it on `vnc.models`.
//!
//! **What is normal.** A session is normal use when it authenticated (`ok`, or `none_required`),
//! no threat rule found anything of medium severity or worse in it, and no analyst judged one
//! of its threats (closed as a true or a false positive: both name a session a rule picked out,
//! so neither is this installation's ordinary use). Low signals (off hours, weak
//! authentication) do not make a session abnormal: every VNC-password session raises one, and
//! a 3 a.m. login is for the forest to weigh, not to be left out of what it learns from. The
//! forest's own `anomalous_session` finding does not exclude a session either, or each model
//! would learn a narrower normal than the last. Pre-authentication attacks are the rules' job;
//! the forest's job is the authenticated session that does not look like the others.
//!
//! **When.** A session is taken once, at its `ended` event (its features are then final). The
//! first model is fitted once [`LearnConfig::min_sessions`] normal sessions have been seen;
//! after that the scorer refits every [`LearnConfig::retrain_interval_secs`] (the seed's weekly
//! retraining), when new normal sessions arrived since the last fit. Until the first model, the
//! anomaly component says `learning (k of N sessions)`.
//!
//! **Validation.** One normal session in [`HOLDOUT_ONE_IN`] (by a hash of its id, so a session
//! is held out of every fit alike and the model in use never trained on the candidate's
//! validation set) and every rule-flagged session are kept aside. The candidate and the model in
//! use are both scored on them: ROC AUC (flagged against held-out normal; also with only the
//! flagged sessions that authenticated, the forest's own job) and precision at the anomaly
//! threshold go into the announcement. A candidate whose AUC is below the current
//! model's on the same sessions is not promoted (counted and logged); without flagged sessions
//! there is no AUC to compare and the newer model is promoted.
//!
//! **Memory.** The normal and flagged buffers hold at most [`LearnConfig::buffer_sessions`] and
//! [`LearnConfig::flagged_sessions`] feature rows (one `f64` per feature and the session id);
//! the oldest is evicted first (counted), so a model learns the most recent normal use.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use schemas::{
    AuthResult, EnrichedSession, ModelAnnouncement, SessionEventKind, Severity, Timestamp,
};
use sha2::{Digest, Sha256};
use telemetry::Counter;

use crate::forest::{ForestParams, IsolationForest};
use crate::model::feature_row;
use crate::risk::Assessment;
use crate::train::{announce, TrainError};

/// One normal session in this many is held out of training for validation. 5 (20%) is the
/// usual validation share; more held out would leave the first model, fitted on a few dozen
/// sessions, with too few to learn from.
pub const HOLDOUT_ONE_IN: u64 = 5;

/// Default of [`LearnConfig::min_sessions`]: the learning period. 20 sessions give the first
/// model 16 to learn from and 4 to validate on; fewer and a forest isolates every session
/// after a split or two. The bundled samples hold more than that many normal sessions, so
/// `./dev up` trains its first model from the first replay.
pub const DEFAULT_MIN_SESSIONS: usize = 20;

/// Default of [`LearnConfig::retrain_interval_secs`]: weekly, as the seed retrains.
pub const DEFAULT_RETRAIN_INTERVAL_SECS: u64 = 7 * 24 * 3600;

/// Default of [`LearnConfig::buffer_sessions`]: about 10,000 x 38 features x 8 bytes = 3 MB,
/// weeks of normal use on a busy server; a forest draws 256 rows per tree anyway, so more rows
/// add coverage of rare normal use, not precision.
pub const DEFAULT_BUFFER_SESSIONS: usize = 10_000;

/// Default of [`LearnConfig::flagged_sessions`]: enough positives for a stable AUC.
pub const DEFAULT_FLAGGED_SESSIONS: usize = 2_000;

/// When the scorer learns and how much it keeps.
#[derive(Debug, Clone, clap::Args)]
pub struct LearnConfig {
    /// Normal authenticated sessions seen before the scorer fits its first model (the learning
    /// period); 0 turns learning off (models then come only from `scorer train`).
    #[arg(long, env = "LEARN_MIN_SESSIONS", default_value_t = DEFAULT_MIN_SESSIONS)]
    pub min_sessions: usize,
    /// Seconds between refits once a model exists (the seed retrains weekly).
    #[arg(long, env = "RETRAIN_INTERVAL_SECS", default_value_t = DEFAULT_RETRAIN_INTERVAL_SECS)]
    pub retrain_interval_secs: u64,
    /// Normal sessions kept for training, the oldest evicted first.
    #[arg(long, env = "LEARN_BUFFER_SESSIONS", default_value_t = DEFAULT_BUFFER_SESSIONS)]
    pub buffer_sessions: usize,
    /// Rule-flagged sessions kept for validation, the oldest evicted first.
    #[arg(long, env = "LEARN_FLAGGED_SESSIONS", default_value_t = DEFAULT_FLAGGED_SESSIONS)]
    pub flagged_sessions: usize,
    #[command(flatten)]
    pub forest: ForestArgs,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            min_sessions: DEFAULT_MIN_SESSIONS,
            retrain_interval_secs: DEFAULT_RETRAIN_INTERVAL_SECS,
            buffer_sessions: DEFAULT_BUFFER_SESSIONS,
            flagged_sessions: DEFAULT_FLAGGED_SESSIONS,
            forest: ForestArgs::default(),
        }
    }
}

/// Forest parameters, the same flags for `scorer train` and for learning.
#[derive(Debug, Clone, clap::Args)]
pub struct ForestArgs {
    /// Trees of the forest.
    #[arg(long, env = "FOREST_TREES", default_value_t = 100)]
    pub trees: usize,
    /// Rows drawn to grow each tree.
    #[arg(long, env = "FOREST_SUBSAMPLE", default_value_t = 256)]
    pub subsample: usize,
    /// Seed: the same sessions and seed give the same model.
    #[arg(long, env = "FOREST_SEED", default_value_t = 0)]
    pub seed: u64,
}

impl Default for ForestArgs {
    fn default() -> Self {
        ForestArgs {
            trees: 100,
            subsample: 256,
            seed: 0,
        }
    }
}

impl ForestArgs {
    pub fn params(&self) -> ForestParams {
        ForestParams {
            n_trees: self.trees,
            subsample_size: self.subsample,
            seed: self.seed,
            max_depth: None,
        }
    }
}

/// What a finished session is to the learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionUse {
    /// Normal use: trained on (or held out to validate).
    Normal,
    /// Flagged by a rule of medium severity or worse: a validation positive.
    Flagged,
}

/// Whether `assessment` of `session` makes it normal use, flagged, or neither (a session that
/// did not authenticate and that no rule flagged, such as an abandoned handshake).
pub fn session_use(session: &EnrichedSession, assessment: &Assessment) -> Option<SessionUse> {
    let flagged = assessment.findings.iter().any(|finding| {
        finding.rule != "anomalous_session"
            && finding.severity.is_some_and(|s| s >= Severity::Medium)
    });
    let authenticated = matches!(
        session.event.summary.auth_result,
        AuthResult::Ok | AuthResult::NoneRequired
    );
    match (flagged, authenticated) {
        (true, _) => Some(SessionUse::Flagged),
        (false, true) => Some(SessionUse::Normal),
        (false, false) => None,
    }
}

/// True when `session_id` is held out of training for validation.
pub fn held_out(session_id: &str) -> bool {
    let digest = Sha256::digest(session_id.as_bytes());
    let value = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    value % HOLDOUT_ONE_IN == 0
}

/// One session as the learner keeps it: its id, start and feature row.
#[derive(Debug, Clone)]
pub struct Sample {
    pub session_id: String,
    pub start: Timestamp,
    pub row: Vec<f64>,
    /// The session authenticated (`ok` or `none_required`): for a flagged one, the kind of
    /// anomaly the forest is for, after a correct login.
    pub authenticated: bool,
}

impl Sample {
    pub fn of(session: &EnrichedSession, names: &[String]) -> Self {
        Sample {
            session_id: session.event.summary.session_id.clone(),
            start: session.event.summary.start_time,
            row: feature_row(&session.features, names).collect(),
            authenticated: matches!(
                session.event.summary.auth_result,
                AuthResult::Ok | AuthResult::NoneRequired
            ),
        }
    }
}

/// The sessions one fit learns from and validates on.
#[derive(Debug, Default)]
pub struct TrainingSet<'a> {
    pub normal: Vec<&'a Sample>,
    pub flagged: Vec<&'a Sample>,
}

/// How a forest scores the validation sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    /// ROC AUC of the forest score, flagged sessions against held-out normal ones; `None`
    /// without sessions of both kinds.
    pub auc: Option<f64>,
    /// The same AUC with only the flagged sessions that authenticated (what the forest is for;
    /// pre-authentication attacks are the rules' job); `None` without any.
    pub auc_authenticated: Option<f64>,
    /// Of the validation sessions scored at or above the anomaly threshold, the share that
    /// are flagged; `None` when none is.
    pub precision: Option<f64>,
    pub normal: usize,
    pub flagged: usize,
}

/// ROC AUC of `positives` against `negatives` (higher scores positive): the probability that
/// a positive outscores a negative, ties counting half.
pub fn roc_auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let wins: f64 = positives
        .iter()
        .map(|p| {
            negatives
                .iter()
                .map(|n| match p.partial_cmp(n) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                })
                .sum::<f64>()
        })
        .sum();
    Some(wins / (positives.len() * negatives.len()) as f64)
}

fn scores_of(forest: &IsolationForest, names: &[String], samples: &[&Sample]) -> Vec<f64> {
    // Samples are laid out in `names` order; a forest of other features reads them by name.
    let rows: Vec<f64> = if forest.feature_names() == names {
        samples.iter().flat_map(|s| s.row.iter().copied()).collect()
    } else {
        samples
            .iter()
            .flat_map(|s| {
                let features: BTreeMap<String, f64> =
                    names.iter().cloned().zip(s.row.iter().copied()).collect();
                feature_row(&features, forest.feature_names()).collect::<Vec<f64>>()
            })
            .collect()
    };
    let mut scores = Vec::new();
    forest.score_batch(&rows, &mut scores);
    scores
}

/// Scores the held-out normal sessions and the flagged ones with `forest`.
pub fn validate(
    forest: &IsolationForest,
    names: &[String],
    holdout: &[&Sample],
    flagged: &[&Sample],
    anomaly_threshold: f64,
) -> Validation {
    let negatives = scores_of(forest, names, holdout);
    let positives = scores_of(forest, names, flagged);
    let authenticated_positives: Vec<f64> = positives
        .iter()
        .zip(flagged)
        .filter(|(_, sample)| sample.authenticated)
        .map(|(score, _)| *score)
        .collect();
    let alerted_positive = positives
        .iter()
        .filter(|s| **s >= anomaly_threshold)
        .count();
    let alerted = alerted_positive
        + negatives
            .iter()
            .filter(|s| **s >= anomaly_threshold)
            .count();
    Validation {
        auc: roc_auc(&positives, &negatives),
        auc_authenticated: roc_auc(&authenticated_positives, &negatives),
        precision: (alerted > 0).then(|| alerted_positive as f64 / alerted as f64),
        normal: negatives.len(),
        flagged: positives.len(),
    }
}

/// A fitted, validated model and its announcement.
pub struct Candidate {
    pub forest: IsolationForest,
    pub validation: Validation,
    pub announcement: ModelAnnouncement,
}

/// Fits a forest on the normal sessions of `set` that are not held out, validates it on the
/// held-out ones and the flagged ones, and builds its announcement. `names` is the feature
/// order of the samples' rows.
pub fn fit_validated(
    set: &TrainingSet,
    names: &[String],
    model_name: &str,
    params: &ForestParams,
    anomaly_threshold: f64,
) -> Result<Candidate, TrainError> {
    let (holdout, training): (Vec<&Sample>, Vec<&Sample>) =
        set.normal.iter().partition(|s| held_out(&s.session_id));
    if training.is_empty() {
        return Err(TrainError::NoSessions);
    }
    let rows: Vec<f64> = training
        .iter()
        .flat_map(|s| s.row.iter().copied())
        .collect();
    let forest = IsolationForest::fit(&rows, names.len(), names.to_vec(), params)?;
    let validation = validate(&forest, names, &holdout, &set.flagged, anomaly_threshold);
    let mut metrics = BTreeMap::from([
        (
            "validation_normal_sessions".to_string(),
            validation.normal as f64,
        ),
        (
            "validation_flagged_sessions".to_string(),
            validation.flagged as f64,
        ),
    ]);
    if let Some(auc) = validation.auc {
        metrics.insert("validation_auc".to_string(), auc);
    }
    if let Some(auc) = validation.auc_authenticated {
        metrics.insert("validation_auc_authenticated".to_string(), auc);
    }
    if let Some(precision) = validation.precision {
        metrics.insert("validation_precision".to_string(), precision);
    }
    let window = (
        training.iter().map(|s| s.start).min(),
        training.iter().map(|s| s.start).max(),
    );
    let announcement = announce(&forest, &rows, model_name, params, window, metrics)?;
    Ok(Candidate {
        forest,
        validation,
        announcement,
    })
}

struct LearnCounters {
    fits: &'static Counter,
    not_promoted: &'static Counter,
    fit_errors: &'static Counter,
    evicted: &'static Counter,
}

impl LearnCounters {
    fn new() -> Self {
        LearnCounters {
            fits: telemetry::counter(
                "vncguard_scorer_learn_fits_total",
                "Models the scorer fitted on the normal sessions it saw.",
                &[],
            ),
            not_promoted: telemetry::counter(
                "vncguard_scorer_learn_not_promoted_total",
                "Fitted models not promoted because they validated worse than the model in use.",
                &[],
            ),
            fit_errors: telemetry::counter(
                "vncguard_scorer_learn_fit_errors_total",
                "Fits that failed (no training rows, invalid forest parameters).",
                &[],
            ),
            evicted: telemetry::counter(
                "vncguard_scorer_learn_evictions_total",
                "Sessions the bounded training and validation buffers forgot, oldest first.",
                &[],
            ),
        }
    }
}

/// A bounded buffer of samples, oldest evicted first, each session once.
struct SampleBuffer {
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl SampleBuffer {
    fn new(capacity: usize) -> Self {
        SampleBuffer {
            capacity: capacity.max(1),
            samples: VecDeque::new(),
        }
    }

    /// Adds `sample`; returns the old samples it evicted.
    fn push(&mut self, sample: Sample) -> Vec<Sample> {
        self.samples.push_back(sample);
        let mut evicted = Vec::new();
        while self.samples.len() > self.capacity {
            evicted.extend(self.samples.pop_front());
        }
        evicted
    }
}

/// Why the learner did or did not fit at this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    First,
    Retrain,
}

/// The online learner of a scoring stage: see the module documentation.
pub struct Learner {
    config: LearnConfig,
    model_name: String,
    names: Vec<String>,
    normal: SampleBuffer,
    flagged: SampleBuffer,
    /// Sessions in either buffer, so a redelivered `ended` event is taken once (bounded with
    /// the buffers: an evicted session is forgotten here too).
    known: HashSet<String>,
    /// Normal sessions seen, for the learning status (a count, not the buffer's length, which
    /// stops at its cap).
    normal_seen: usize,
    new_since_fit: usize,
    last_fit: Instant,
    /// Sessions analysts judged, from the database at each fit; see [`Self::set_judged`].
    judged: HashSet<String>,
    counters: LearnCounters,
}

/// What a fit decided.
pub enum FitOutcome {
    /// Promote this model: switch to it and announce it.
    Promote(Box<Candidate>),
    /// Fitted but validated worse than the model in use; not promoted.
    Refused,
    /// Fitting failed.
    Failed,
}

impl Learner {
    pub fn new(config: LearnConfig, model_name: &str) -> Self {
        Learner {
            normal: SampleBuffer::new(config.buffer_sessions),
            flagged: SampleBuffer::new(config.flagged_sessions),
            config,
            model_name: model_name.to_string(),
            names: schemas::features::model_names()
                .map(str::to_string)
                .collect(),
            known: HashSet::new(),
            normal_seen: 0,
            new_since_fit: 0,
            last_fit: Instant::now(),
            judged: HashSet::new(),
            counters: LearnCounters::new(),
        }
    }

    pub fn config(&self) -> &LearnConfig {
        &self.config
    }

    /// Normal sessions seen so far and the number the first model needs.
    pub fn progress(&self) -> (usize, usize) {
        (self.normal_seen, self.config.min_sessions)
    }

    /// Sessions analysts judged (closed as a true or false positive): left out of every fit.
    pub fn set_judged(&mut self, judged: HashSet<String>) {
        self.judged = judged;
    }

    /// Takes `session` (at its `ended` event) into the buffers as `assessment` classifies it.
    pub fn observe(&mut self, session: &EnrichedSession, assessment: &Assessment) {
        if session.event.kind != SessionEventKind::Ended {
            return;
        }
        let Some(kind) = session_use(session, assessment) else {
            return;
        };
        let id = &session.event.summary.session_id;
        if self.known.contains(id) {
            return;
        }
        let sample = Sample::of(session, &self.names);
        let evicted = match kind {
            SessionUse::Normal => {
                self.normal_seen += 1;
                self.new_since_fit += 1;
                self.normal.push(sample)
            }
            SessionUse::Flagged => self.flagged.push(sample),
        };
        self.known.insert(id.clone());
        self.counters.evicted.add(evicted.len() as u64);
        for old in evicted {
            self.known.remove(&old.session_id);
        }
    }

    fn due(&self, has_model: bool) -> Option<Due> {
        if self.config.min_sessions == 0 {
            return None;
        }
        if !has_model {
            return (self.normal.samples.len() >= self.config.min_sessions).then_some(Due::First);
        }
        let interval = Duration::from_secs(self.config.retrain_interval_secs);
        (self.new_since_fit > 0 && self.last_fit.elapsed() >= interval).then_some(Due::Retrain)
    }

    /// True when a fit is due: the first model once the learning period is over, then one per
    /// retraining interval with new normal sessions.
    pub fn is_due(&self, has_model: bool) -> bool {
        self.due(has_model).is_some()
    }

    /// Fits a candidate on the buffers and decides whether it replaces `current` (the forest
    /// in use, if any): not when it validates worse on the same sessions.
    pub fn fit(&mut self, current: Option<&IsolationForest>, anomaly_threshold: f64) -> FitOutcome {
        self.last_fit = Instant::now();
        self.new_since_fit = 0;
        let judged = &self.judged;
        let set = TrainingSet {
            normal: self
                .normal
                .samples
                .iter()
                .filter(|s| !judged.contains(&s.session_id))
                .collect(),
            flagged: self.flagged.samples.iter().collect(),
        };
        let params = self.config.forest.params();
        let mut candidate = match fit_validated(
            &set,
            &self.names,
            &self.model_name,
            &params,
            anomaly_threshold,
        ) {
            Ok(candidate) => candidate,
            Err(e) => {
                self.counters.fit_errors.inc();
                tracing::warn!(error = %e, "fitting a model on the sessions seen failed");
                return FitOutcome::Failed;
            }
        };
        self.counters.fits.inc();
        if let Some(current) = current {
            let holdout: Vec<&Sample> = set
                .normal
                .iter()
                .copied()
                .filter(|s| held_out(&s.session_id))
                .collect();
            let in_use = validate(
                current,
                &self.names,
                &holdout,
                &set.flagged,
                anomaly_threshold,
            );
            if let Some(auc) = in_use.auc {
                candidate
                    .announcement
                    .metrics
                    .insert("previous_model_validation_auc".to_string(), auc);
            }
            if let (Some(new), Some(old)) = (candidate.validation.auc, in_use.auc) {
                if new < old {
                    self.counters.not_promoted.inc();
                    tracing::warn!(
                        version = %candidate.announcement.version,
                        validation_auc = new,
                        current_validation_auc = old,
                        "not promoting a model that validates worse than the one in use"
                    );
                    return FitOutcome::Refused;
                }
            }
        }
        tracing::info!(
            version = %candidate.announcement.version,
            training_rows = candidate.announcement.training_rows,
            validation_auc = ?candidate.validation.auc,
            validation_precision = ?candidate.validation.precision,
            "promoting a model fitted on the normal sessions seen"
        );
        FitOutcome::Promote(Box::new(candidate))
    }
}
