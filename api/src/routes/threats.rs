//! `/api/threats`: the list (filtered, paginated), manual entries, and triage — status, close
//! reason, assignee and notes — with every change in `threat_triage_history` (closing as
//! `false_positive` is what the scorer's retraining filter reads).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::PageInfo;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::{self, Json, PageParams, Query};
use crate::queries::{self, Conditions};
use crate::AppState;

pub const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];
pub const STATUSES: &[&str] = &["open", "acknowledged", "closed"];
pub const CLOSE_REASONS: &[&str] = &["false_positive", "true_positive", "duplicate", "other"];

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreatItem {
    pub id: String,
    pub session_id: Option<String>,
    pub threat_type: String,
    /// low, medium, high or critical.
    pub severity: String,
    pub description: String,
    pub source_ip: String,
    pub target_ip: Option<String>,
    pub target_port: Option<i32>,
    pub action_taken: Option<String>,
    pub ml_confidence: Option<f64>,
    pub risk_score: Option<f64>,
    pub model_version: Option<String>,
    pub timestamp: DateTime<Utc>,
    /// The detecting rule's evidence.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// open, acknowledged or closed.
    pub status: String,
    /// false_positive, true_positive, duplicate or other, when closed.
    pub close_reason: Option<String>,
    pub assignee: Option<String>,
    /// `[{"at", "author", "text"}]`, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub notes: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ThreatItem {
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        ThreatItem {
            id: row.get(0),
            session_id: row.get(1),
            threat_type: row.get(2),
            severity: row.get(3),
            description: row.get(4),
            source_ip: row.get(5),
            target_ip: row.get(6),
            target_port: row.get(7),
            action_taken: row.get(8),
            ml_confidence: row.get(9),
            risk_score: row.get(10),
            model_version: row.get(11),
            timestamp: row.get(12),
            metadata: row.get(13),
            status: row.get(14),
            close_reason: row.get(15),
            assignee: row.get(16),
            notes: row.get(17),
            created_at: row.get(18),
            updated_at: row.get(19),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreatList {
    pub threats: Vec<ThreatItem>,
    #[serde(flatten)]
    pub page: PageInfo,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreatFilters {
    /// low, medium, high or critical.
    pub severity: Option<String>,
    /// Threat type, e.g. brute_force.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub threat_type: Option<String>,
    /// open, acknowledged or closed.
    pub status: Option<String>,
    /// Source address or CIDR network.
    pub source_ip: Option<String>,
    /// Detected at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Detected before this RFC 3339 time.
    pub to: Option<String>,
}

fn threat_type(field: &str, text: &str) -> ApiResult<String> {
    let ok = !text.is_empty()
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(text.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            "expected 1 to 100 of a-z, 0-9 and _",
        ))
    }
}

impl ThreatFilters {
    /// The validated filters as SQL conditions.
    pub fn conditions(&self) -> ApiResult<Conditions> {
        let mut conditions = Conditions::default();
        if let Some(severity) =
            input::parse_opt_enum("severity", self.severity.as_deref(), SEVERITIES)?
        {
            conditions.push("severity = $?", severity.to_string());
        }
        if let Some(text) = &self.threat_type {
            conditions.push("threat_type = $?", threat_type("type", text)?);
        }
        if let Some(status) = input::parse_opt_enum("status", self.status.as_deref(), STATUSES)? {
            conditions.push("status = $?", status.to_string());
        }
        if let Some(text) = &self.source_ip {
            conditions.push_address("source_ip", input::parse_address_filter("source_ip", text)?);
        }
        conditions.push_time_range("timestamp", self.from.as_deref(), self.to.as_deref())?;
        Ok(conditions)
    }
}

#[utoipa::path(get, path = "/api/threats", tag = "threats", security(("bearer" = [])),
    params(ThreatFilters, PageParams),
    responses((status = 200, body = ThreatList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(filters): Query<ThreatFilters>,
    Query(paging): Query<PageParams>,
) -> ApiResult<axum::Json<ThreatList>> {
    user.require(Role::Viewer)?;
    let conditions = filters.conditions()?;
    let page = paging.page(50)?;
    let client = state.pool.get().await?;
    let (rows, counted) = queries::fetch_page(
        &client,
        queries::THREAT_COLUMNS,
        "threat_logs",
        &conditions,
        "timestamp DESC",
        page,
    )
    .await?;
    Ok(axum::Json(ThreatList {
        threats: rows.iter().map(ThreatItem::from_row).collect(),
        page: PageInfo::new(counted, page),
    }))
}

async fn fetch(
    client: &impl deadpool_postgres::GenericClient,
    id: &str,
    lock: bool,
) -> ApiResult<ThreatItem> {
    let sql = format!(
        "SELECT {} FROM threat_logs WHERE id = $1{}",
        queries::THREAT_COLUMNS,
        if lock { " FOR UPDATE" } else { "" }
    );
    client
        .query_opt(&sql, &[&id])
        .await?
        .map(|row| ThreatItem::from_row(&row))
        .ok_or_else(|| ApiError::not_found("threat"))
}

#[utoipa::path(get, path = "/api/threats/{id}", tag = "threats", security(("bearer" = [])),
    params(("id" = String, Path, description = "Threat id")),
    responses((status = 200, body = ThreatItem), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ThreatItem>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    fetch(&client, &id, false).await.map(axum::Json)
}

/// A manual threat entry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewThreat {
    /// The session it concerns; its client address is the source when `source_ip` is absent.
    pub session_id: Option<String>,
    /// a-z, 0-9 and _, e.g. suspicious_activity.
    pub threat_type: String,
    /// low, medium, high or critical.
    pub severity: String,
    pub description: String,
    pub source_ip: Option<String>,
    pub target_ip: Option<String>,
}

#[utoipa::path(post, path = "/api/threats", tag = "threats", security(("bearer" = [])), request_body = NewThreat,
    responses((status = 201, body = ThreatItem), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<NewThreat>,
) -> ApiResult<(StatusCode, axum::Json<ThreatItem>)> {
    user.require(Role::Analyst)?;
    let threat_type = threat_type("threat_type", &request.threat_type)?;
    let severity = input::parse_opt_enum("severity", Some(&request.severity), SEVERITIES)?
        .unwrap_or_default()
        .to_string();
    let description = input::required_text("description", &request.description, 2000)?;
    let parse_ip = |field: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| {
                t.trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| ApiError::invalid(field, "expected an IP address"))
            })
            .transpose()
    };
    let mut source_ip = parse_ip("source_ip", &request.source_ip)?;
    let target_ip = parse_ip("target_ip", &request.target_ip)?;
    let client = state.pool.get().await?;
    if let Some(session_id) = &request.session_id {
        let row = client
            .query_opt(
                "SELECT client_ip FROM vnc_sessions WHERE id = $1",
                &[session_id],
            )
            .await?
            .ok_or_else(|| ApiError {
                field: Some("session_id".into()),
                ..ApiError::not_found("session")
            })?;
        source_ip = source_ip.or(Some(row.get(0)));
    }
    let source_ip = source_ip
        .ok_or_else(|| ApiError::unprocessable("source_ip", "give source_ip or a session_id"))?;
    let id = format!("manual-{}", uuid::Uuid::new_v4());
    let metadata = json!({"manual": "true", "created_by": user.username()});
    client
        .execute(
            "INSERT INTO threat_logs (id, session_id, threat_type, severity, description, source_ip, target_ip, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&id, &request.session_id, &threat_type, &severity, &description, &source_ip, &target_ip, &metadata],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(fetch(&client, &id, false).await?),
    ))
}

/// A triage change; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageChange {
    /// open, acknowledged or closed.
    pub status: Option<String>,
    /// Required to close: false_positive, true_positive, duplicate or other.
    pub close_reason: Option<String>,
    /// Username to assign; an empty string unassigns.
    pub assignee: Option<String>,
}

#[utoipa::path(patch, path = "/api/threats/{id}", tag = "threats", security(("bearer" = [])),
    params(("id" = String, Path, description = "Threat id")), request_body = TriageChange,
    responses((status = 200, body = ThreatItem), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn triage(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(change): Json<TriageChange>,
) -> ApiResult<axum::Json<ThreatItem>> {
    user.require(Role::Analyst)?;
    let status = input::parse_opt_enum("status", change.status.as_deref(), STATUSES)?;
    let close_reason = input::parse_opt_enum(
        "close_reason",
        change.close_reason.as_deref(),
        CLOSE_REASONS,
    )?;
    let mut client = state.pool.get().await?;
    if let Some(assignee) = change.assignee.as_deref().filter(|a| !a.is_empty()) {
        let known = client
            .query_opt("SELECT 1 FROM users WHERE username = $1", &[&assignee])
            .await?;
        if known.is_none() {
            return Err(ApiError::unprocessable("assignee", "no such user"));
        }
    }
    let tx = client.transaction().await?;
    let before = fetch(&tx, &id, true).await?;
    let new_status = status.unwrap_or(&before.status);
    let new_reason = match (new_status, close_reason) {
        ("closed", Some(reason)) => Some(reason.to_string()),
        ("closed", None) if before.status == "closed" => before.close_reason.clone(),
        ("closed", None) => {
            return Err(ApiError::unprocessable(
                "close_reason",
                "closing needs a close_reason",
            ))
        }
        (_, Some(_)) => {
            return Err(ApiError::unprocessable(
                "close_reason",
                "only a closed threat has a close_reason",
            ))
        }
        (_, None) => None,
    };
    let new_assignee = match change.assignee.as_deref() {
        Some("") => None,
        Some(name) => Some(name.to_string()),
        None => before.assignee.clone(),
    };
    let mut diff = serde_json::Map::new();
    if new_status != before.status {
        diff.insert(
            "status".into(),
            json!({"from": before.status, "to": new_status}),
        );
    }
    if new_reason != before.close_reason {
        diff.insert(
            "close_reason".into(),
            json!({"from": before.close_reason, "to": new_reason}),
        );
    }
    if new_assignee != before.assignee {
        diff.insert(
            "assignee".into(),
            json!({"from": before.assignee, "to": new_assignee}),
        );
    }
    if !diff.is_empty() {
        tx.execute(
            "UPDATE threat_logs SET status = $2, close_reason = $3, assignee = $4, updated_at = now() WHERE id = $1",
            &[&id, &new_status, &new_reason, &new_assignee],
        )
        .await?;
        tx.execute(
            "INSERT INTO threat_triage_history (threat_id, username, change) VALUES ($1, $2, $3)",
            &[&id, &user.username(), &serde_json::Value::Object(diff)],
        )
        .await?;
    }
    let after = fetch(&tx, &id, false).await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub text: String,
}

#[utoipa::path(post, path = "/api/threats/{id}/notes", tag = "threats", security(("bearer" = [])),
    params(("id" = String, Path, description = "Threat id")), request_body = NewNote,
    responses((status = 201, body = ThreatItem), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_note(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(note): Json<NewNote>,
) -> ApiResult<(StatusCode, axum::Json<ThreatItem>)> {
    user.require(Role::Analyst)?;
    let text = input::required_text("text", &note.text, 2000)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let entry = json!({"at": Utc::now(), "author": user.username(), "text": text});
    let updated = tx
        .execute(
            "UPDATE threat_logs SET notes = notes || jsonb_build_array($2::jsonb), updated_at = now() WHERE id = $1",
            &[&id, &entry],
        )
        .await?;
    if updated == 0 {
        return Err(ApiError::not_found("threat"));
    }
    tx.execute(
        "INSERT INTO threat_triage_history (threat_id, username, change) VALUES ($1, $2, $3)",
        &[&id, &user.username(), &json!({"note": text})],
    )
    .await?;
    let after = fetch(&tx, &id, false).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(after)))
}
