//! Retraining by replay: read a time range of the enriched topic, keep each session's latest
//! event, keep the normal use of [`crate::learn`] (authenticated, no rule of medium or worse,
//! not judged by an analyst) and the rule-flagged sessions for validation, fit a forest on
//! the normal sessions not held out, validate it, write the model file and announce it on the
//! compacted model topic, where running scorers pick it up.
//!
//! **Feature encoding.** A model's row is `schemas::features::model_names()` in order (every
//! feature but the evidence-only ones, see `schemas::features::EVIDENCE_ONLY`), raw values:
//! counts, bytes, rates and seconds as measured, flags as 0/1, hour of day 0-23 and weekday
//! 0-6 as integers. A feature the enricher could not compute (absent, or not finite) reads as
//! 0 in training and in scoring alike. There is no scaling: an Isolation Forest draws each
//! split uniformly between a node's minimum and maximum of one feature, so it is invariant to
//! any affine rescaling of a feature, and a feature constant over the training rows (such as
//! `auth_ok` on normal use) is never split on. What encoding does change is the spacing of
//! splits: heavy-tailed volumes are split mostly among their large values, and hour 23 and
//! hour 0 are far apart (the hour is not encoded on a circle).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus::{Bus, Consumer, Output, Producer};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::{Column, DataFrame, PolarsError};
use schemas::{EnrichedSession, ModelAnnouncement, Timestamp};
use sha2::{Digest, Sha256};

use crate::forest::{ForestError, ForestParams, IsolationForest};
use crate::learn::{self, ForestArgs, Sample, SessionUse, TrainingSet};
use crate::model::DEFAULT_MODEL_NAME;
use crate::risk::{self, AnomalyInput, RiskConfig};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
    #[error("no sessions to train on in the range read")]
    NoSessions,
    #[error("feature table: {0}")]
    Frame(#[from] PolarsError),
    #[error("fitting: {0}")]
    Forest(#[from] ForestError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("encoding the announcement: {0}")]
    Codec(#[from] schemas::CodecError),
}

/// What `scorer train` reads, leaves out, fits and writes.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Name of the model on the model topic (its key).
    #[arg(long, env = "MODEL_NAME", default_value = DEFAULT_MODEL_NAME)]
    pub model_name: String,
    /// Train on sessions that started at or after this time (RFC 3339).
    #[arg(long, env = "TRAIN_SINCE")]
    pub since: Option<Timestamp>,
    /// Train on sessions that started before this time (RFC 3339).
    #[arg(long, env = "TRAIN_UNTIL")]
    pub until: Option<Timestamp>,
    /// Stop reading once the topic has been quiet this long, in milliseconds (the end of
    /// the replay).
    #[arg(long, env = "TRAIN_IDLE_MS", default_value_t = 10_000)]
    pub idle_ms: u64,
    /// File of session ids to leave out, one per line (`#` comments).
    #[arg(long, env = "EXCLUDE_SESSIONS")]
    pub exclude_sessions: Option<PathBuf>,
    /// Postgres whose `threat_logs` closed by analysts (true or false positives) name
    /// sessions to leave out.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub forest: ForestArgs,
    /// The rules that decide which sessions are normal use (and the anomaly threshold of the
    /// validation's precision).
    #[command(flatten)]
    pub risk: RiskConfig,
    /// Where to write the model file.
    #[arg(long, env = "MODEL_FILE", default_value = "session-forest.json")]
    pub output: PathBuf,
}

/// A fitted model and its announcement, as published.
pub struct TrainedModel {
    pub forest: IsolationForest,
    pub announcement: ModelAnnouncement,
}

fn progress(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

/// Reads the enriched topic from its start with a group of its own until it has been quiet
/// for `idle`, and keeps the latest event of every session that started in `[since, until)`.
/// Undecodable records are counted and skipped.
pub async fn read_sessions<B: Bus>(
    bus: &B,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    idle: Duration,
) -> Result<Vec<EnrichedSession>, TrainError> {
    let group = format!(
        "vncguard-scorer-train-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut consumer = bus.consumer(&group, &[schemas::topics::SESSIONS_ENRICHED.name])?;
    let undecodable = telemetry::counter(
        "vncguard_scorer_train_undecodable_total",
        "Enriched records training skipped because they did not decode.",
        &[],
    );
    let bar = progress("reading enriched sessions");
    let mut latest: HashMap<String, EnrichedSession> = HashMap::new();
    let mut records = 0u64;
    loop {
        let batch = consumer.next_batch(1000, idle).await?;
        if batch.is_empty() {
            break;
        }
        records += batch.len() as u64;
        for record in &batch {
            let session = match schemas::decode::<EnrichedSession>(&record.payload) {
                Ok(session) => session,
                Err(e) => {
                    undecodable.inc();
                    tracing::warn!(offset = record.offset, partition = record.partition, error = %e, "skipping an undecodable record");
                    continue;
                }
            };
            let start = session.event.summary.start_time;
            if since.is_some_and(|since| start < since) || until.is_some_and(|until| start >= until)
            {
                continue;
            }
            let id = session.event.summary.session_id.clone();
            match latest.get(&id) {
                Some(kept) if kept.event.seq >= session.event.seq => {}
                _ => {
                    latest.insert(id, session);
                }
            }
        }
        bar.set_message(format!("read {records} records, {} sessions", latest.len()));
    }
    bar.finish_and_clear();
    tracing::info!(records, sessions = latest.len(), "read the enriched topic");
    let mut sessions: Vec<EnrichedSession> = latest.into_values().collect();
    sessions.sort_by(|a, b| {
        (a.event.summary.start_time, &a.event.summary.session_id)
            .cmp(&(b.event.summary.start_time, &b.event.summary.session_id))
    });
    Ok(sessions)
}

/// Session ids listed in `path`, one per line; blank lines and `#` comments are skipped.
pub fn read_exclusion_file(path: &Path) -> Result<HashSet<String>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Sessions of threats analysts judged: closed as a true positive (an attack) or a false
/// positive (a session a rule picked out). A database without the `threat_logs` table or its
/// `status`/`close_reason` columns (an older schema) has none.
pub async fn judged_sessions(database_url: &str) -> Result<HashSet<String>, TrainError> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT DISTINCT session_id::text FROM threat_logs \
             WHERE status = 'closed' AND close_reason IN ('false_positive', 'true_positive') \
             AND session_id IS NOT NULL",
            &[],
        )
        .await;
    drop(client);
    let _ = connection.await;
    match rows {
        Ok(rows) => Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect()),
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) =>
        {
            tracing::warn!(error = %e, "threat_logs cannot name judged sessions yet; excluding none");
            Ok(HashSet::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// One column per model feature (`schemas::features::model_names`), one row per session; a feature
/// the session lacks (or that is not finite) is null.
pub fn feature_frame(sessions: &[EnrichedSession]) -> Result<DataFrame, PolarsError> {
    let columns = schemas::features::model_names()
        .map(|name| {
            let values: Vec<Option<f64>> = sessions
                .iter()
                .map(|s| s.features.get(name).copied().filter(|v| v.is_finite()))
                .collect();
            Column::new(name.into(), values)
        })
        .collect();
    DataFrame::new(sessions.len(), columns)
}

/// The frame as the row-major matrix the forest takes, nulls read as 0, and its column names.
pub fn frame_rows(frame: &DataFrame) -> Result<(Vec<f64>, Vec<String>), PolarsError> {
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let width = names.len();
    let mut rows = vec![0.0; frame.height() * width];
    for (feature, name) in names.iter().enumerate() {
        for (row, value) in frame.column(name)?.f64()?.iter().enumerate() {
            rows[row * width + feature] = value.unwrap_or(0.0);
        }
    }
    Ok((rows, names))
}

/// Fits a forest on `sessions` and builds its announcement (no selection, no validation: for
/// a caller that chose the sessions itself).
pub fn fit_sessions(
    sessions: &[EnrichedSession],
    model_name: &str,
    params: &ForestParams,
) -> Result<TrainedModel, TrainError> {
    if sessions.is_empty() {
        return Err(TrainError::NoSessions);
    }
    let frame = feature_frame(sessions)?;
    let (rows, names) = frame_rows(&frame)?;
    let bar = progress(&format!(
        "fitting {} trees on {} sessions x {} features",
        params.n_trees,
        frame.height(),
        names.len()
    ));
    let forest = IsolationForest::fit(&rows, names.len(), names.clone(), params)?;
    bar.finish_and_clear();
    let window = (
        sessions.iter().map(|s| s.event.summary.start_time).min(),
        sessions.iter().map(|s| s.event.summary.start_time).max(),
    );
    let announcement = announce(&forest, &rows, model_name, params, window, BTreeMap::new())?;
    Ok(TrainedModel {
        forest,
        announcement,
    })
}

/// The announcement of `forest`, fitted on `rows` of sessions that started within `window`,
/// with `metrics` besides the training figures. The version names the model, its creation
/// time and a digest of its body.
pub fn announce(
    forest: &IsolationForest,
    rows: &[f64],
    model_name: &str,
    params: &ForestParams,
    window: (Option<Timestamp>, Option<Timestamp>),
    mut metrics: BTreeMap<String, f64>,
) -> Result<ModelAnnouncement, TrainError> {
    let training_rows = rows.len() / forest.n_features().max(1);
    let mut scores = Vec::new();
    forest.score_batch(rows, &mut scores);
    let mean_score = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    let model_json = forest.to_json()?;
    let created_at = chrono::Utc::now();
    let digest = hex::encode(&Sha256::digest(model_json.as_bytes())[..4]);
    metrics.extend([
        ("training_rows".to_string(), training_rows as f64),
        ("trees".to_string(), params.n_trees as f64),
        ("subsample".to_string(), params.subsample_size as f64),
        ("mean_training_score".to_string(), mean_score),
    ]);
    let announcement = ModelAnnouncement {
        model_name: model_name.to_string(),
        version: format!(
            "{model_name}-{}-{digest}",
            created_at.format("%Y%m%dT%H%M%S%.3fZ")
        ),
        created_at,
        feature_names: forest.feature_names().to_vec(),
        training_rows: training_rows as i64,
        training_window_start: window.0,
        training_window_end: window.1,
        metrics,
        model_json,
    };
    tracing::info!(version = %announcement.version, rows = training_rows, mean_score, "fitted the model");
    Ok(announcement)
}

/// `scorer train`: read, keep normal use and the flagged sessions, fit, validate, write the
/// model file, announce it.
pub async fn train<B: Bus>(bus: &B, args: &TrainArgs) -> Result<TrainedModel, TrainError> {
    let mut excluded = HashSet::new();
    if let Some(path) = &args.exclude_sessions {
        excluded.extend(read_exclusion_file(path)?);
    }
    if let Some(url) = &args.database_url {
        excluded.extend(judged_sessions(url).await?);
    }
    let sessions = read_sessions(
        bus,
        args.since,
        args.until,
        Duration::from_millis(args.idle_ms),
    )
    .await?;
    let names: Vec<String> = schemas::features::model_names()
        .map(str::to_string)
        .collect();
    let mut normal = Vec::new();
    let mut flagged = Vec::new();
    for session in &sessions {
        if excluded.contains(&session.event.summary.session_id) {
            continue;
        }
        let assessment = risk::assess(session, AnomalyInput::NoModel, &args.risk);
        match learn::session_use(session, &assessment) {
            Some(SessionUse::Normal) => normal.push(Sample::of(session, &names)),
            Some(SessionUse::Flagged) => flagged.push(Sample::of(session, &names)),
            None => {}
        }
    }
    tracing::info!(
        sessions = sessions.len(),
        excluded = excluded.len(),
        normal = normal.len(),
        flagged = flagged.len(),
        "kept normal use to train on and flagged sessions to validate on"
    );
    let set = TrainingSet {
        normal: normal.iter().collect(),
        flagged: flagged.iter().collect(),
    };
    let candidate = learn::fit_validated(
        &set,
        &names,
        &args.model_name,
        &args.forest.params(),
        args.risk.rules.anomaly_threshold,
    )?;
    let trained = TrainedModel {
        forest: candidate.forest,
        announcement: candidate.announcement,
    };
    std::fs::write(&args.output, &trained.announcement.model_json).map_err(|source| {
        TrainError::File {
            path: args.output.clone(),
            source,
        }
    })?;
    bus.ensure_topics(&[schemas::topics::MODELS]).await?;
    bus.producer()?
        .send(vec![Output::encode(
            &schemas::topics::MODELS,
            args.model_name.clone(),
            &trained.announcement,
        )?])
        .await?;
    tracing::info!(version = %trained.announcement.version, file = %args.output.display(), "published the model");
    Ok(trained)
}
