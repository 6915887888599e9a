//! `/api/models`: the trained anomaly models (without their bodies) and the scorer's learning
//! status.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub name: String,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub feature_names: Vec<String>,
    pub training_rows: i64,
    pub training_window_start: Option<DateTime<Utc>>,
    pub training_window_end: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Models {
    /// Newest first.
    pub models: Vec<Model>,
    /// Why the newest session has no anomaly score, as its scorer said, e.g. `learning (12 of 20
    /// sessions)`; null once a model scores sessions.
    pub learning_status: Option<String>,
}

#[utoipa::path(get, path = "/api/models", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = Models), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<axum::Json<Models>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    let models = client
        .query(
            "SELECT name, version, created_at, feature_names, training_rows, training_window_start, training_window_end, metrics
             FROM models ORDER BY created_at DESC LIMIT 1000",
            &[],
        )
        .await?
        .iter()
        .map(|r| Model {
            name: r.get(0),
            version: r.get(1),
            created_at: r.get(2),
            feature_names: r.get(3),
            training_rows: r.get(4),
            training_window_start: r.get(5),
            training_window_end: r.get(6),
            metrics: r.get(7),
        })
        .collect();
    // The scorer says it in every scored record; the newest session (by the start-time index)
    // carries its latest word.
    let learning_status = client
        .query_opt(
            "SELECT risk_components->>'anomaly_status' FROM vnc_sessions ORDER BY start_time DESC LIMIT 1",
            &[],
        )
        .await?
        .and_then(|row| row.get(0));
    Ok(axum::Json(Models {
        models,
        learning_status,
    }))
}
