//! `/api/health` (no authentication) and `/api/status`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, or `degraded` when the database or the broker does not answer (then 503).
    pub status: String,
    /// `connected` or `disconnected`.
    pub database: String,
    /// `connected` or `disconnected`.
    pub kafka: String,
    pub timestamp: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let database = database_answers(&state).await;
    let kafka = state.bus_connected().await;
    let word = |ok: bool| if ok { "connected" } else { "disconnected" }.to_string();
    let healthy = database && kafka;
    let body = Health {
        status: if healthy { "healthy" } else { "degraded" }.into(),
        database: word(database),
        kafka: word(kafka),
        timestamp: Utc::now(),
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn database_answers(state: &AppState) -> bool {
    let probe = async {
        let client = state.pool.get().await.ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(3), probe).await,
        Ok(Some(_))
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// Seconds since this instance started.
    pub uptime: u64,
    pub active_sessions: i64,
    pub threats_24h: i64,
    /// WebSocket clients connected to this instance.
    pub websocket_clients: usize,
    pub version: String,
}

#[utoipa::path(get, path = "/api/status", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<Status>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM vnc_sessions WHERE status = 'active'),
                    (SELECT count(*) FROM threat_logs WHERE timestamp > now() - interval '24 hours')",
            &[],
        )
        .await?;
    Ok(axum::Json(Status {
        uptime: state.started.elapsed().as_secs(),
        active_sessions: row.get(0),
        threats_24h: row.get(1),
        websocket_clients: state.hub.clients(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}
