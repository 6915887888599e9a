//! The model a scorer uses and how it changes: announcements on the compacted model topic
//! (`vnc.models`, key = model name) replace it between two records, with no restart.
//!
//! Without a model (a fresh deployment, during the learning period of [`crate::learn`]) the
//! scorer does not invent one: the anomaly component is 0 with the reason "learning (k of N
//! sessions)", and the scored record's `model_version` is [`NO_MODEL_VERSION`]. A bootstrap
//! forest fitted on a made-up sample would give scores that look meaningful and are not.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::{Bus, Consumer};
use schemas::{EnrichedSession, ModelAnnouncement};

use crate::forest::{ForestError, IsolationForest};

/// `model_version` of records scored without a model.
pub const NO_MODEL_VERSION: &str = "none";

/// Model name scorers load and `scorer train` publishes unless told otherwise.
pub const DEFAULT_MODEL_NAME: &str = "session-forest";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {version}: {source}")]
    Forest {
        version: String,
        source: ForestError,
    },
    #[error("model {version} lists features {listed:?} but its forest uses {used:?}")]
    FeatureMismatch {
        version: String,
        listed: Vec<String>,
        used: Vec<String>,
    },
}

/// The row of a session for a model with features `names`: a feature the enricher could not
/// compute (absent, or not finite) reads as 0, as it did when the model was trained.
pub fn feature_row<'a>(
    features: &'a BTreeMap<String, f64>,
    names: &'a [String],
) -> impl Iterator<Item = f64> + 'a {
    names.iter().map(|name| {
        features
            .get(name)
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    })
}

/// The model in use, if any.
pub struct ModelStore {
    model_name: String,
    current: Option<(String, IsolationForest)>,
    /// Scratch space kept between batches: a batch's rows and their scores.
    rows: Vec<f64>,
    scores: Vec<f64>,
}

impl ModelStore {
    /// A store that follows announcements of `model_name` and ignores the others.
    pub fn new(model_name: &str) -> Self {
        ModelStore {
            model_name: model_name.to_string(),
            current: None,
            rows: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// The version of the model in use, or [`NO_MODEL_VERSION`].
    pub fn version(&self) -> &str {
        self.current
            .as_ref()
            .map_or(NO_MODEL_VERSION, |(version, _)| version)
    }

    /// The forest in use, if any.
    pub fn forest(&self) -> Option<&IsolationForest> {
        self.current.as_ref().map(|(_, forest)| forest)
    }

    /// Switches to `forest`, fitted here, as `version` (the learner's promotion).
    pub fn install(&mut self, version: &str, forest: IsolationForest) {
        tracing::info!(model = %self.model_name, version, "switched model");
        self.current = Some((version.to_string(), forest));
    }

    /// Switches to the announced model. `Ok(false)` if the announcement is for another model
    /// name; an invalid model is refused and the current one stays. The model in use
    /// announced again (a scorer reading back its own announcement) changes nothing.
    pub fn apply(&mut self, announcement: &ModelAnnouncement) -> Result<bool, ModelError> {
        if announcement.model_name != self.model_name {
            return Ok(false);
        }
        if self.version() == announcement.version {
            return Ok(true);
        }
        let forest = IsolationForest::from_json(&announcement.model_json).map_err(|source| {
            ModelError::Forest {
                version: announcement.version.clone(),
                source,
            }
        })?;
        if !announcement.feature_names.is_empty()
            && announcement.feature_names != forest.feature_names()
        {
            return Err(ModelError::FeatureMismatch {
                version: announcement.version.clone(),
                listed: announcement.feature_names.clone(),
                used: forest.feature_names().to_vec(),
            });
        }
        tracing::info!(model = %self.model_name, version = %announcement.version, "switched model");
        self.current = Some((announcement.version.clone(), forest));
        Ok(true)
    }

    /// The forest score of `session`, `None` without a model.
    pub fn score(&mut self, session: &EnrichedSession) -> Option<f64> {
        self.score_all(&[session]).pop().flatten()
    }

    /// The forest scores of `sessions`, in order, scored as one batch (the forest's fast
    /// path); `None` for each without a model.
    pub fn score_all(&mut self, sessions: &[&EnrichedSession]) -> Vec<Option<f64>> {
        let Some((_, forest)) = self.current.as_ref() else {
            return vec![None; sessions.len()];
        };
        self.rows.clear();
        for session in sessions {
            self.rows
                .extend(feature_row(&session.features, forest.feature_names()));
        }
        forest.score_batch(&self.rows, &mut self.scores);
        self.scores.iter().copied().map(Some).collect()
    }
}

/// Reads the model topic from its start with a group of its own and applies every
/// announcement, so a starting scorer uses the newest model at once; stops once nothing has
/// arrived for `idle`. Announcements that do not load are logged and skipped.
pub async fn load_latest<B: Bus>(
    bus: &B,
    store: &mut ModelStore,
    idle: Duration,
) -> Result<(), bus::BusError> {
    let group = format!(
        "vncguard-scorer-models-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut consumer = bus.consumer(&group, &[schemas::topics::MODELS.name])?;
    loop {
        let batch = consumer.next_batch(100, idle).await?;
        if batch.is_empty() {
            return Ok(());
        }
        for record in &batch {
            match schemas::decode::<ModelAnnouncement>(&record.payload) {
                Ok(announcement) => {
                    if let Err(e) = store.apply(&announcement) {
                        tracing::warn!(error = %e, "skipping a model that does not load");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset = record.offset, "skipping an undecodable model record")
                }
            }
        }
    }
}
