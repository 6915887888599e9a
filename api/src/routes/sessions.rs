//! `/api/sessions` (filtered, sorted, paginated) and `/api/sessions/{id}` (detail with threats, risk
//! components and a timeline).

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::threats::ThreatItem;
use super::PageInfo;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::{self, PageParams, Query};
use crate::queries::{self, Conditions};
use crate::AppState;

pub const STATUSES: &[&str] = &["active", "terminated", "blocked", "quarantined"];

/// A session in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionItem {
    pub id: String,
    pub client_ip: String,
    pub server_ip: String,
    pub client_port: i32,
    pub server_port: i32,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    /// active, terminated, blocked or quarantined.
    pub status: String,
    /// MiB both ways.
    pub data_transferred: f64,
    /// 0..100.
    pub risk_score: f64,
    pub anomaly_score: f64,
    pub auth_method: Option<String>,
    /// ok, failed, too_many, none_required, abandoned or unknown.
    pub auth_result: String,
    pub agent_id: String,
    pub client_country: Option<String>,
}

impl SessionItem {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        SessionItem {
            id: row.get(0),
            client_ip: row.get(1),
            server_ip: row.get(2),
            client_port: row.get(3),
            server_port: row.get(4),
            start_time: row.get(5),
            end_time: row.get(6),
            status: row.get(7),
            data_transferred: row.get(8),
            risk_score: row.get(9),
            anomaly_score: row.get(10),
            auth_method: row.get(11),
            auth_result: row.get(12),
            agent_id: row.get(13),
            client_country: row.get(14),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionItem>,
    #[serde(flatten)]
    pub page: PageInfo,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilters {
    /// active, terminated, blocked or quarantined.
    pub status: Option<String>,
    /// Client address or CIDR network.
    pub client_ip: Option<String>,
    /// Server address or CIDR network.
    pub server_ip: Option<String>,
    /// Least risk score, 0..100.
    pub min_risk: Option<String>,
    /// Greatest risk score, 0..100.
    pub max_risk: Option<String>,
    /// Sessions started at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Sessions started before this RFC 3339 time.
    pub to: Option<String>,
}

impl SessionFilters {
    /// The validated filters as SQL conditions.
    pub fn conditions(&self) -> ApiResult<Conditions> {
        let mut conditions = Conditions::default();
        if let Some(status) = input::parse_opt_enum("status", self.status.as_deref(), STATUSES)? {
            conditions.push("status = $?", status.to_string());
        }
        if let Some(text) = &self.client_ip {
            conditions.push_address("client_ip", input::parse_address_filter("client_ip", text)?);
        }
        if let Some(text) = &self.server_ip {
            conditions.push_address("server_ip", input::parse_address_filter("server_ip", text)?);
        }
        let min = input::parse_opt_f64("min_risk", self.min_risk.as_deref(), 0.0, 100.0)?;
        let max = input::parse_opt_f64("max_risk", self.max_risk.as_deref(), 0.0, 100.0)?;
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                return Err(ApiError::invalid("min_risk", "min_risk is above max_risk"));
            }
        }
        if let Some(min) = min {
            conditions.push("risk_score >= $?::float8::numeric", min);
        }
        if let Some(max) = max {
            conditions.push("risk_score <= $?::float8::numeric", max);
        }
        conditions.push_time_range("start_time", self.from.as_deref(), self.to.as_deref())?;
        Ok(conditions)
    }
}

/// Each `sort` a session list accepts (`column` ascending, `-column` descending) and its
/// `ORDER BY`. Every one is read from an index of `vnc_sessions` (backwards for the reversed
/// ones), so a page comes as fast from a million sessions as from a hundred; ties go by start
/// time, which the planner adds as an incremental sort over the index.
pub const SESSION_ORDERS: &[(&str, &str)] = &[
    ("-start_time", "start_time DESC"),
    ("start_time", "start_time ASC"),
    ("-risk_score", "risk_score DESC, start_time DESC"),
    ("risk_score", "risk_score ASC, start_time ASC"),
    ("-status", "status DESC, start_time ASC"),
    ("status", "status ASC, start_time DESC"),
    ("-client_ip", "client_ip DESC, start_time ASC"),
    ("client_ip", "client_ip ASC, start_time DESC"),
];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionSort {
    /// `-start_time` (newest first, the default), `start_time`, `-risk_score`, `risk_score`,
    /// `-status`, `status`, `-client_ip` or `client_ip`.
    pub sort: Option<String>,
}

impl SessionSort {
    /// The `ORDER BY` of the requested sort, refusing any other.
    pub fn order(&self) -> ApiResult<&'static str> {
        let wanted = self.sort.as_deref().unwrap_or("-start_time");
        SESSION_ORDERS
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, order)| *order)
            .ok_or_else(|| {
                let names: Vec<&str> = SESSION_ORDERS.iter().map(|(name, _)| *name).collect();
                ApiError::invalid("sort", format!("expected one of {}", names.join(", ")))
            })
    }
}

#[utoipa::path(get, path = "/api/sessions", tag = "sessions", security(("bearer" = [])),
    params(SessionFilters, SessionSort, PageParams),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(filters): Query<SessionFilters>,
    Query(sort): Query<SessionSort>,
    Query(paging): Query<PageParams>,
) -> ApiResult<axum::Json<SessionList>> {
    user.require(Role::Viewer)?;
    let conditions = filters.conditions()?;
    let order = sort.order()?;
    let page = paging.page(100)?;
    let client = state.pool.get().await?;
    let (rows, counted) = queries::fetch_page(
        &client,
        queries::SESSION_ITEM_COLUMNS,
        "vnc_sessions",
        &conditions,
        order,
        page,
    )
    .await?;
    Ok(axum::Json(SessionList {
        sessions: rows.iter().map(SessionItem::from_row).collect(),
        page: PageInfo::new(counted, page),
    }))
}

/// Where the client is, as the enricher saw it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Geo {
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub address_class: Option<String>,
    pub server_country: Option<String>,
    pub distance_km: Option<f64>,
    pub reputation: Option<String>,
}

/// One moment of a session's life.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub time: DateTime<Utc>,
    /// started, scored, threat, decision or ended.
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionItem,
    pub packets_sent: i64,
    pub packets_received: i64,
    pub screenshots_count: i32,
    pub clipboard_operations: i32,
    pub file_operations: i32,
    pub user_agent: Option<String>,
    pub client_version: Option<String>,
    pub server_version: Option<String>,
    pub security_type: Option<i32>,
    pub failure_reason: Option<String>,
    pub desktop_name: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub encrypted: bool,
    pub partial: bool,
    pub bytes_c2s: i64,
    pub bytes_s2c: i64,
    pub key_events: i64,
    pub pointer_events: i64,
    pub client_cut_text_count: i64,
    pub server_cut_text_count: i64,
    pub end_reason: Option<String>,
    pub model_version: Option<String>,
    pub scored_at: Option<DateTime<Utc>>,
    /// The scorer's risk components (auth, geo, behaviour, anomaly, ...).
    #[schema(value_type = Option<Object>)]
    pub risk_components: Option<serde_json::Value>,
    /// Why the score is what it is.
    #[schema(value_type = Vec<Object>)]
    pub risk_reasons: serde_json::Value,
    /// The named feature vector.
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
    pub geo: Geo,
    pub threat_logs: Vec<ThreatItem>,
    pub timeline: Vec<TimelineEntry>,
}

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SessionDetail>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&queries::session_detail_sql(), &[&id])
        .await?
        .ok_or_else(|| ApiError::not_found("session"))?;
    let threats: Vec<ThreatItem> = client
        .query(&queries::threats_of_session_sql(), &[&id])
        .await?
        .iter()
        .map(ThreatItem::from_row)
        .collect();
    let decisions = client
        .query(
            "SELECT created_at, action, reason FROM decisions WHERE scope = 'session' AND value = $1 ORDER BY created_at",
            &[&id],
        )
        .await?;
    let session = SessionItem::from_row(&row);
    let at = |i: usize| row.get::<_, Option<DateTime<Utc>>>(i);
    let mut timeline = vec![TimelineEntry {
        time: session.start_time,
        event: "started".into(),
        detail: format!(
            "{}:{} → {}:{}",
            session.client_ip, session.client_port, session.server_ip, session.server_port
        ),
    }];
    if let Some(time) = at(15 + 23) {
        timeline.push(TimelineEntry {
            time,
            event: "scored".into(),
            detail: format!("risk {:.1}", session.risk_score),
        });
    }
    timeline.extend(threats.iter().map(|t| TimelineEntry {
        time: t.timestamp,
        event: "threat".into(),
        detail: format!("{} ({})", t.threat_type, t.severity),
    }));
    timeline.extend(decisions.iter().map(|d| TimelineEntry {
        time: d.get(0),
        event: "decision".into(),
        detail: format!("{}: {}", d.get::<_, String>(1), d.get::<_, String>(2)),
    }));
    if let Some(time) = session.end_time {
        timeline.push(TimelineEntry {
            time,
            event: "ended".into(),
            detail: session.status.clone(),
        });
    }
    timeline.sort_by_key(|entry| entry.time);
    let c = 15; // first detail column
    Ok(axum::Json(SessionDetail {
        packets_sent: row.get(c),
        packets_received: row.get(c + 1),
        screenshots_count: row.get(c + 2),
        clipboard_operations: row.get(c + 3),
        file_operations: row.get(c + 4),
        user_agent: row.get(c + 5),
        client_version: row.get(c + 6),
        server_version: row.get(c + 7),
        security_type: row.get(c + 8),
        failure_reason: row.get(c + 9),
        desktop_name: row.get(c + 10),
        width: row.get(c + 11),
        height: row.get(c + 12),
        encrypted: row.get(c + 13),
        partial: row.get(c + 14),
        bytes_c2s: row.get(c + 15),
        bytes_s2c: row.get(c + 16),
        key_events: row.get(c + 17),
        pointer_events: row.get(c + 18),
        client_cut_text_count: row.get(c + 19),
        server_cut_text_count: row.get(c + 20),
        end_reason: row.get(c + 21),
        model_version: row.get(c + 22),
        scored_at: row.get(c + 23),
        risk_components: row.get(c + 24),
        risk_reasons: row.get(c + 25),
        features: row.get(c + 26),
        geo: Geo {
            country: row.get(c + 27),
            city: row.get(c + 28),
            latitude: row.get(c + 29),
            longitude: row.get(c + 30),
            asn: row.get(c + 31),
            as_org: row.get(c + 32),
            address_class: row.get(c + 33),
            server_country: row.get(c + 34),
            distance_km: row.get(c + 35),
            reputation: row.get(c + 36),
        },
        session,
        threat_logs: threats,
        timeline,
    }))
}
