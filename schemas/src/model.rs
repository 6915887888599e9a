use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{codec::Event, Timestamp};

/// A trained anomaly model (`vncguard.ModelAnnouncement.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    pub model_name: String,
    pub version: String,
    pub created_at: Timestamp,
    pub feature_names: Vec<String>,
    pub training_rows: i64,
    pub training_window_start: Option<Timestamp>,
    pub training_window_end: Option<Timestamp>,
    pub metrics: BTreeMap<String, f64>,
    pub model_json: String,
}

impl Event for ModelAnnouncement {
    const SCHEMA_NAME: &'static str = "vncguard.ModelAnnouncement";
}
