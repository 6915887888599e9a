//! `/api/agents`: the capture-agent fleet from its heartbeats, and the watcher that raises a
//! `system_alert` when an agent goes stale (silent for three heartbeat intervals).

use std::collections::BTreeSet;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::error::{ApiResult, ErrorBody};
use crate::ws::{LiveEvent, SYSTEM_ALERT};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub agent_id: String,
    pub hostname: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub first_seen: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// No heartbeat for three intervals.
    pub stale: bool,
    pub packets: i64,
    pub bytes: i64,
    pub pcap_drops: i64,
    pub flows_active: i64,
    pub flows_evicted: i64,
    pub sessions_active: i64,
    pub sessions_total: i64,
    pub parse_errors: i64,
    pub enforcing: bool,
    pub capture_sources: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    pub agents: Vec<Agent>,
    pub stale: i64,
}

const FLEET: &str = "SELECT agent_id, hostname, version, started_at, first_seen, last_heartbeat,
        last_heartbeat < now() - make_interval(secs => $1), packets, bytes, pcap_drops, flows_active, flows_evicted,
        sessions_active, sessions_total, parse_errors, enforcing, capture_sources
     FROM agents ORDER BY agent_id LIMIT 10000";

fn stale_after(state: &AppState) -> f64 {
    3.0 * state.config.agent_heartbeat_interval.as_secs_f64()
}

#[utoipa::path(get, path = "/api/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Fleet), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<axum::Json<Fleet>> {
    user.require(Role::Viewer)?;
    let client = state.pool.get().await?;
    let agents: Vec<Agent> = client
        .query(FLEET, &[&stale_after(&state)])
        .await?
        .iter()
        .map(|r| Agent {
            agent_id: r.get(0),
            hostname: r.get(1),
            version: r.get(2),
            started_at: r.get(3),
            first_seen: r.get(4),
            last_heartbeat: r.get(5),
            stale: r.get(6),
            packets: r.get(7),
            bytes: r.get(8),
            pcap_drops: r.get(9),
            flows_active: r.get(10),
            flows_evicted: r.get(11),
            sessions_active: r.get(12),
            sessions_total: r.get(13),
            parse_errors: r.get(14),
            enforcing: r.get(15),
            capture_sources: r.get(16),
        })
        .collect();
    let stale = agents.iter().filter(|a| a.stale).count() as i64;
    Ok(axum::Json(Fleet { agents, stale }))
}

/// Checks the fleet every heartbeat interval and announces each agent that turns stale (once,
/// until it is heard from again).
pub async fn watch_fleet(state: AppState) {
    let mut stale: BTreeSet<String> = BTreeSet::new();
    let stale_agents = telemetry::gauge(
        "vncguard_fleet_agents_stale",
        "Capture agents silent for three heartbeat intervals (up to 10,000 counted).",
        &[],
    );
    let mut tick = tokio::time::interval(state.config.agent_heartbeat_interval);
    loop {
        tick.tick().await;
        let Ok(client) = state.pool.get().await else {
            continue;
        };
        let Ok(rows) = client
            .query(
                "SELECT agent_id, last_heartbeat FROM agents WHERE last_heartbeat < now() - make_interval(secs => $1) LIMIT 10000",
                &[&stale_after(&state)],
            )
            .await
        else {
            continue;
        };
        let now: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        stale_agents.set(now.len() as i64);
        for row in &rows {
            let agent: String = row.get(0);
            if !stale.contains(&agent) {
                let last: DateTime<Utc> = row.get(1);
                state
                    .hub
                    .publish(LiveEvent::new(
                        SYSTEM_ALERT,
                        Some(2),
                        json!({"alert": "agent_stale", "agent_id": agent, "last_heartbeat": last}),
                    ))
                    .await;
            }
        }
        stale = now;
    }
}
