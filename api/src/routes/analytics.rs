//! `/api/analytics/dashboard` and `/api/metrics?timeframe=`.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, ErrorBody};
use crate::input::{self, Query};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub active_sessions: i64,
    pub threats_24h: i64,
    /// Threats of the last 24 h by severity (low, medium, high, critical).
    pub threats_24h_by_severity: BTreeMap<String, i64>,
    /// Addresses and networks under an active block.
    pub blocked_ips: i64,
    pub system_status: String,
    /// Sessions of the last 24 h by risk band: low < 30 ≤ medium < 70 ≤ high.
    pub risk_distribution: BTreeMap<String, i64>,
    /// Sessions of the last 24 h in ten risk buckets of width 10 (0-10, ..., 90-100).
    pub risk_histogram: Vec<i64>,
    /// Threats per hour over the last 24 h, oldest first.
    pub threats_over_time: Vec<TimeBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeBucket {
    pub start: DateTime<Utc>,
    pub count: i64,
}

#[utoipa::path(get, path = "/api/analytics/dashboard", tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = Dashboard), (status = 401, body = ErrorBody)))]
pub async fn dashboard(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<Dashboard>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM vnc_sessions WHERE status = 'active'),
                    (SELECT count(*) FROM decisions WHERE action = 'block' AND revoked_at IS NULL AND until > now())",
            &[],
        )
        .await?;
    let mut by_severity: BTreeMap<String, i64> = super::threats::SEVERITIES
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for row in client
        .query("SELECT severity, count(*) FROM threat_logs WHERE timestamp > now() - interval '24 hours' GROUP BY severity", &[])
        .await?
    {
        by_severity.insert(row.get(0), row.get(1));
    }
    let mut histogram = vec![0_i64; 10];
    for row in client
        .query(
            "SELECT least(9, floor(coalesce(risk_score, 0) / 10))::int, count(*) FROM vnc_sessions
             WHERE start_time > now() - interval '24 hours' GROUP BY 1",
            &[],
        )
        .await?
    {
        histogram[row.get::<_, i32>(0).clamp(0, 9) as usize] = row.get(1);
    }
    let risk_distribution = BTreeMap::from([
        ("low".to_string(), histogram[..3].iter().sum()),
        ("medium".to_string(), histogram[3..7].iter().sum()),
        ("high".to_string(), histogram[7..].iter().sum()),
    ]);
    let threats_over_time = client
        .query(
            "SELECT h, count(t.id) FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()), interval '1 hour') h
             LEFT JOIN threat_logs t ON t.timestamp >= h AND t.timestamp < h + interval '1 hour'
             GROUP BY h ORDER BY h",
            &[],
        )
        .await?
        .iter()
        .map(|row| TimeBucket { start: row.get(0), count: row.get(1) })
        .collect();
    Ok(axum::Json(Dashboard {
        active_sessions: counts.get(0),
        threats_24h: by_severity.values().sum(),
        threats_24h_by_severity: by_severity,
        blocked_ips: counts.get(1),
        system_status: if state.bus_connected().await {
            "healthy"
        } else {
            "degraded"
        }
        .into(),
        risk_distribution,
        risk_histogram: histogram,
        threats_over_time,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// 1h, 24h, 7d or 30d (default 1h).
    pub timeframe: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SystemMetrics {
    pub timeframe: String,
    /// Load average over one minute as a percentage of the CPUs.
    pub cpu_usage: f64,
    /// Memory in use as a percentage of the total.
    pub memory_usage: f64,
    /// Active VNC sessions plus this instance's WebSocket clients.
    pub active_connections: i64,
    /// MiB moved by the sessions that started in the timeframe.
    pub network_io: f64,
    pub sessions: i64,
    pub threats: i64,
    pub decisions: i64,
}

#[utoipa::path(get, path = "/api/metrics", tag = "analytics", security(("bearer" = [])), params(MetricsParams),
    responses((status = 200, body = SystemMetrics), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<MetricsParams>,
) -> ApiResult<axum::Json<SystemMetrics>> {
    user.require(Role::Viewer)?;
    let timeframe = input::parse_opt_enum(
        "timeframe",
        params.timeframe.as_deref(),
        &["1h", "24h", "7d", "30d"],
    )?
    .unwrap_or("1h");
    let seconds = input::parse_duration_secs("timeframe", timeframe)? as f64;
    let client = state.pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM vnc_sessions WHERE status = 'active'),
                    (SELECT count(*) FROM vnc_sessions WHERE start_time > now() - make_interval(secs => $1)),
                    (SELECT coalesce(sum(data_transferred), 0)::float8 FROM vnc_sessions WHERE start_time > now() - make_interval(secs => $1)),
                    (SELECT count(*) FROM threat_logs WHERE timestamp > now() - make_interval(secs => $1)),
                    (SELECT count(*) FROM decisions WHERE created_at > now() - make_interval(secs => $1))",
            &[&seconds],
        )
        .await?;
    Ok(axum::Json(SystemMetrics {
        timeframe: timeframe.to_string(),
        cpu_usage: cpu_usage(),
        memory_usage: memory_usage(),
        active_connections: row.get::<_, i64>(0) + state.hub.clients() as i64,
        network_io: row.get(2),
        sessions: row.get(1),
        threats: row.get(3),
        decisions: row.get(4),
    }))
}

fn cpu_usage() -> f64 {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    (load / cpus * 100.0 * 10.0).round() / 10.0
}

fn memory_usage() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) if total > 0.0 => {
            ((total - available) / total * 1000.0).round() / 10.0
        }
        _ => 0.0,
    }
}
