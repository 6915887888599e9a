//! `/api/firewall/*` and `/api/sessions/{id}/quarantine`: analyst decisions. Each is signed
//! with the API's decision key, published as a `schemas::Decision` on `vnc.decisions` (what the
//! enforcing agents act on) and then written to `decisions` (the sink writes the same row again
//! from the topic, idempotently).
//!
//! A block or quarantine the guardrails refuse ([`trust::guardrails`]: loopback, management and
//! allow-listed networks, prefixes wider than /24 or /48, the cap of blocks in force) gets 422
//! with the reason, and is counted (`vncguard_api_decisions_refused_total{reason}`); reaching the
//! cap also raises a `system_alert`. Agents apply the same rules again themselves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::PageInfo;
use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::{self, Json, PageParams, Query};
use crate::ws::{LiveEvent, SYSTEM_ALERT};
use crate::AppState;

fn refused_counter(reason: &'static str) -> &'static telemetry::Counter {
    telemetry::counter(
        "vncguard_api_decisions_refused_total",
        "Analysts' decisions refused by the guardrails (422), by reason.",
        &[("reason", reason)],
    )
}

/// 422 for a decision the guardrails refuse, counted and logged.
fn refused(user: &AuthUser, field: &str, refusal: trust::Refusal) -> ApiError {
    refused_counter(refusal.reason()).inc();
    tracing::warn!(user = user.username(), reason = refusal.reason(), error = %refusal, "decision refused by the guardrails");
    ApiError::unprocessable(field, refusal.to_string())
}

const ACTIVE_BLOCKS: &str = "SELECT count(*) FROM decisions
     WHERE action = 'block' AND revoked_at IS NULL AND until > now() AND NOT dry_run";

/// Refuses a new block when the cap of blocks in force is reached, and says so to the
/// dashboards (`system_alert`).
async fn check_capacity(state: &AppState, user: &AuthUser) -> ApiResult<()> {
    let client = state.pool.get().await?;
    let active: i64 = client.query_one(ACTIVE_BLOCKS, &[]).await?.get(0);
    let guardrails = &state.config.guardrails;
    match guardrails.check_capacity(usize::try_from(active).unwrap_or(usize::MAX)) {
        Ok(()) => Ok(()),
        Err(refusal) => {
            state
                .hub
                .publish(LiveEvent::new(
                    SYSTEM_ALERT,
                    Some(2),
                    serde_json::json!({
                        "alert": "block_cap_reached",
                        "active_blocks": active,
                        "max_active_blocks": guardrails.max_active_blocks,
                        "refused_by": user.username(),
                    }),
                ))
                .await;
            Err(refused(user, "ip_address", refusal))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallRule {
    /// The decision id.
    pub id: String,
    /// The address, network (CIDR) or session the rule applies to.
    pub source_ip: String,
    /// ip, cidr or session.
    pub scope: String,
    /// DROP for a block, QUARANTINE for a quarantined session.
    pub action: String,
    /// automatic or analyst.
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Seconds until the rule expires.
    pub seconds_left: i64,
    pub reason: String,
    pub threat_id: Option<String>,
    pub created_by: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallRules {
    pub rules: Vec<FirewallRule>,
    #[serde(flatten)]
    pub page: PageInfo,
}

#[utoipa::path(get, path = "/api/firewall/rules", tag = "firewall", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = FirewallRules), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn rules(
    State(state): State<AppState>,
    user: AuthUser,
    Query(paging): Query<PageParams>,
) -> ApiResult<axum::Json<FirewallRules>> {
    user.require(Role::Viewer)?;
    let page = paging.page(100)?;
    let client = state.pool.get().await?;
    let rows = client
        .query(crate::queries::ACTIVE_RULES, &[&page.limit, &page.offset])
        .await?;
    let counted: i64 = client
        .query_one(crate::queries::ACTIVE_RULES_COUNT, &[])
        .await?
        .get(0);
    let rules = rows
        .iter()
        .map(|row| FirewallRule {
            id: row.get(0),
            action: if row.get::<_, &str>(1) == "block" {
                "DROP"
            } else {
                "QUARANTINE"
            }
            .into(),
            origin: row.get(2),
            scope: row.get(3),
            source_ip: row.get(4),
            created_at: row.get(5),
            expires_at: row.get(6),
            seconds_left: row.get(7),
            reason: row.get(8),
            threat_id: row.get(9),
            created_by: row.get(10),
            dry_run: row.get(11),
        })
        .collect();
    Ok(axum::Json(FirewallRules {
        rules,
        page: PageInfo::new(counted, page),
    }))
}

/// Signs `decision`, publishes it and records it; the signed decision.
async fn apply(state: &AppState, decision: Decision) -> ApiResult<Decision> {
    let signer = state.config.decision_signer.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "decision signing",
            "no DECISION_SIGNING_KEY_FILE is configured; agents enforce signed decisions only",
        )
    })?;
    let decision = &signer.signed(decision);
    let output = bus::Output::encode(
        &schemas::topics::DECISIONS,
        decision.decision_id.clone(),
        decision,
    )
    .map_err(|e| ApiError::unavailable("decision encoder", e))?;
    state
        .bus
        .publish(vec![output])
        .await
        .map_err(|e| ApiError::unavailable("bus", e))?;
    let value_cidr = match decision.scope {
        DecisionScope::Session => None,
        _ => decision.value.parse::<ipnet::IpNet>().ok().or_else(|| {
            decision
                .value
                .parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        }),
    };
    let action = serde_json::to_value(decision.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let scope = serde_json::to_value(decision.scope)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let client = state.pool.get().await?;
    client
        .execute(
            "INSERT INTO decisions (decision_id, action, origin, scope, value, value_cidr, duration_secs, created_at,
                                    until, reason, threat_id, target_decision_id, created_by, dry_run)
             VALUES ($1, $2, 'analyst', $3, $4, $5::text::cidr, $6, $7, $8, $9, $10, $11, $12, false)
             ON CONFLICT (decision_id) DO NOTHING",
            &[
                &decision.decision_id,
                &action,
                &scope,
                &decision.value,
                &value_cidr.map(|net| net.to_string()),
                &decision.duration_secs,
                &decision.created_at,
                &decision.until,
                &decision.reason,
                &decision.threat_id,
                &decision.target_decision_id,
                &decision.created_by,
            ],
        )
        .await?;
    if let Some(target) = &decision.target_decision_id {
        client
            .execute(
                "UPDATE decisions SET revoked_at = $2, revoked_by = $3 WHERE decision_id = $1 AND revoked_at IS NULL",
                &[target, &decision.created_at, &decision.created_by],
            )
            .await?;
    }
    Ok(decision.clone())
}

fn new_decision(
    user: &AuthUser,
    action: DecisionAction,
    scope: DecisionScope,
    value: String,
    duration_secs: i64,
    reason: String,
) -> Decision {
    let now = Utc::now();
    Decision {
        decision_id: format!("analyst-{}", uuid::Uuid::new_v4()),
        action,
        origin: DecisionOrigin::Analyst,
        scope,
        value,
        duration_secs,
        created_at: now,
        until: now + chrono::Duration::seconds(duration_secs),
        reason,
        threat_id: None,
        target_decision_id: None,
        created_by: Some(user.username().to_string()),
        dry_run: false,
        key_id: None,
        signature: None,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// An address (`203.0.113.10`) or a network (`203.0.113.0/24`).
    pub ip_address: String,
    /// Seconds (`3600`) or with a unit: `30m`, `24h`, `7d`; at most 366 days.
    #[schema(value_type = String, example = "24h")]
    pub duration: serde_json::Value,
    pub reason: String,
    /// The threat that motivated the block.
    pub threat_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionCreated {
    pub decision_id: String,
    pub action: String,
    pub scope: String,
    pub value: String,
    pub expires_at: DateTime<Utc>,
}

impl From<&Decision> for DecisionCreated {
    fn from(d: &Decision) -> Self {
        DecisionCreated {
            decision_id: d.decision_id.clone(),
            action: serde_json::to_value(d.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            scope: serde_json::to_value(d.scope)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            value: d.value.clone(),
            expires_at: d.until,
        }
    }
}

fn duration_of(value: &serde_json::Value) -> ApiResult<i64> {
    match value {
        serde_json::Value::String(text) => input::parse_duration_secs("duration", text),
        serde_json::Value::Number(n) => input::parse_duration_secs("duration", &n.to_string()),
        _ => Err(ApiError::invalid(
            "duration",
            "expected seconds or a text such as 24h",
        )),
    }
}

#[utoipa::path(post, path = "/api/firewall/block", tag = "firewall", security(("bearer" = [])), request_body = BlockRequest,
    responses((status = 201, body = DecisionCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn block(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<BlockRequest>,
) -> ApiResult<(StatusCode, axum::Json<DecisionCreated>)> {
    user.require(Role::Analyst)?;
    input::parse_address_filter("ip_address", &request.ip_address)?;
    // What agents will block: IPv4-mapped addresses as IPv4, IPv6 folded to its /64.
    let network = state
        .config
        .guardrails
        .check_block(&request.ip_address)
        .map_err(|refusal| refused(&user, "ip_address", refusal))?;
    let scope = if trust::guardrails::is_host(&network) {
        DecisionScope::Ip
    } else {
        DecisionScope::Cidr
    };
    let value = trust::guardrails::value_of(&network);
    let duration = duration_of(&request.duration)?;
    let reason = input::required_text("reason", &request.reason, 500)?;
    if let Some(threat_id) = &request.threat_id {
        let client = state.pool.get().await?;
        if client
            .query_opt("SELECT 1 FROM threat_logs WHERE id = $1", &[threat_id])
            .await?
            .is_none()
        {
            return Err(ApiError {
                field: Some("threat_id".into()),
                ..ApiError::not_found("threat")
            });
        }
    }
    check_capacity(&state, &user).await?;
    let mut decision = new_decision(&user, DecisionAction::Block, scope, value, duration, reason);
    decision.threat_id = request.threat_id;
    let decision = apply(&state, decision).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(DecisionCreated::from(&decision)),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockRequest {
    /// The block to lift; or give `ip_address` to lift every block of that exact value.
    pub decision_id: Option<String>,
    pub ip_address: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unblocked {
    /// The unblock decisions published, one per lifted rule.
    pub decisions: Vec<DecisionCreated>,
}

async fn lift(
    state: &AppState,
    user: &AuthUser,
    targets: Vec<(String, String, String)>,
    reason: String,
) -> ApiResult<Unblocked> {
    let mut decisions = Vec::new();
    for (target, scope, value) in targets {
        let scope = if scope == "cidr" {
            DecisionScope::Cidr
        } else if scope == "session" {
            DecisionScope::Session
        } else {
            DecisionScope::Ip
        };
        let mut decision = new_decision(
            user,
            DecisionAction::Unblock,
            scope,
            value,
            1,
            reason.clone(),
        );
        decision.until = decision.created_at;
        decision.duration_secs = 0;
        decision.target_decision_id = Some(target);
        let decision = apply(state, decision).await?;
        decisions.push(DecisionCreated::from(&decision));
    }
    Ok(Unblocked { decisions })
}

const ACTIVE_TARGET: &str = "SELECT decision_id, scope, value FROM decisions
     WHERE revoked_at IS NULL AND until > now() AND action IN ('block', 'quarantine')";

/// Lifts every rule in force whose `column` (decision_id or value) is `value`; 404 when none.
async fn lift_matching(
    state: &AppState,
    user: &AuthUser,
    column: &str,
    value: &str,
    reason: String,
) -> ApiResult<Unblocked> {
    let client = state.pool.get().await?;
    let rows = client
        .query(&format!("{ACTIVE_TARGET} AND {column} = $1"), &[&value])
        .await?;
    if rows.is_empty() {
        return Err(ApiError::not_found("active rule"));
    }
    let targets = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    lift(state, user, targets, reason).await
}

#[utoipa::path(post, path = "/api/firewall/unblock", tag = "firewall", security(("bearer" = [])), request_body = UnblockRequest,
    responses((status = 200, body = Unblocked), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn unblock(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<UnblockRequest>,
) -> ApiResult<axum::Json<Unblocked>> {
    user.require(Role::Analyst)?;
    let reason = match &request.reason {
        Some(text) => input::required_text("reason", text, 500)?,
        None => "lifted by an analyst".into(),
    };
    let (column, value) = match (&request.decision_id, &request.ip_address) {
        (Some(id), None) => ("decision_id", id.clone()),
        (None, Some(text)) => {
            input::parse_address_filter("ip_address", text)?;
            // The value as the block recorded it (normalised, IPv6 folded).
            let network = state.config.guardrails.target(text).ok_or_else(|| {
                ApiError::invalid("ip_address", "expected an IP address or a CIDR network")
            })?;
            ("value", trust::guardrails::value_of(&network))
        }
        _ => {
            return Err(ApiError::unprocessable(
                "decision_id",
                "give decision_id or ip_address",
            ))
        }
    };
    lift_matching(&state, &user, column, &value, reason)
        .await
        .map(axum::Json)
}

#[utoipa::path(delete, path = "/api/firewall/rules/{id}", tag = "firewall", security(("bearer" = [])),
    params(("id" = String, Path, description = "Decision id of the rule")),
    responses((status = 200, body = Unblocked), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Unblocked>> {
    user.require(Role::Analyst)?;
    lift_matching(
        &state,
        &user,
        "decision_id",
        &id,
        "rule deleted by an analyst".into(),
    )
    .await
    .map(axum::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// Seconds or `30m`, `24h`, `7d` (default 24h).
    #[schema(value_type = Option<String>, example = "24h")]
    pub duration: Option<serde_json::Value>,
    pub reason: String,
}

#[utoipa::path(post, path = "/api/sessions/{id}/quarantine", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")), request_body = QuarantineRequest,
    responses((status = 201, body = DecisionCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn quarantine(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(request): Json<QuarantineRequest>,
) -> ApiResult<(StatusCode, axum::Json<DecisionCreated>)> {
    user.require(Role::Analyst)?;
    let duration = match &request.duration {
        Some(value) => duration_of(value)?,
        None => 86_400,
    };
    let reason = input::required_text("reason", &request.reason, 500)?;
    let client = state.pool.get().await?;
    let Some(session) = client
        .query_opt(
            "SELECT host(client_ip) FROM vnc_sessions WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Err(ApiError::not_found("session"));
    };
    if let Ok(client_ip) = session.get::<_, String>(0).parse() {
        state
            .config
            .guardrails
            .check_address(client_ip)
            .map_err(|refusal| refused(&user, "id", refusal))?;
    }
    let decision = new_decision(
        &user,
        DecisionAction::Quarantine,
        DecisionScope::Session,
        id.clone(),
        duration,
        reason,
    );
    let decision = apply(&state, decision).await?;
    client
        .execute(
            "UPDATE vnc_sessions SET status = 'quarantined', updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(DecisionCreated::from(&decision)),
    ))
}
