//! `/api/bouncers` (admin only): the CrowdSec bouncers allowed to read the decision stream. A
//! new bouncer's key is in the creation's answer and nowhere else (only its hash is stored);
//! deleting a bouncer revokes its key at once. Each call is in the audit log, like every
//! state-changing request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{new_secret_token, AuthUser, Role};
use crate::bouncers::{check_name, MAX_BOUNCERS};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::Json;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct BouncerItem {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The last successful poll of the decision stream.
    pub last_pull: Option<DateTime<Utc>>,
    /// Polls answered.
    pub pulls: i64,
    /// The address it last polled from.
    pub last_ip: Option<String>,
    /// Its `User-Agent` (name and version, e.g. `crowdsec-firewall-bouncer/v0.0.25`).
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BouncerList {
    pub bouncers: Vec<BouncerItem>,
}

const BOUNCER_COLUMNS: &str =
    "id, name, created_at, created_by, last_pull, pulls, host(last_ip), user_agent";

fn bouncer_of(row: &tokio_postgres::Row) -> BouncerItem {
    BouncerItem {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
        created_by: row.get(3),
        last_pull: row.get(4),
        pulls: row.get(5),
        last_ip: row.get(6),
        user_agent: row.get(7),
    }
}

#[utoipa::path(get, path = "/api/bouncers", tag = "bouncers", security(("bearer" = [])),
    responses((status = 200, body = BouncerList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<BouncerList>> {
    user.require(Role::Admin)?;
    let client = state.pool.get().await?;
    let bouncers = client
        .query(
            &format!("SELECT {BOUNCER_COLUMNS} FROM bouncers ORDER BY id LIMIT {MAX_BOUNCERS}"),
            &[],
        )
        .await?
        .iter()
        .map(bouncer_of)
        .collect();
    Ok(axum::Json(BouncerList { bouncers }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBouncer {
    /// 1 to 64 of a-z, A-Z, 0-9, `.`, `_`, `-`, `@`; unique.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BouncerCreated {
    #[serde(flatten)]
    pub bouncer: BouncerItem,
    /// The key for the bouncer's `api_key`. Shown this once: only its hash is kept.
    pub api_key: String,
}

#[utoipa::path(post, path = "/api/bouncers", tag = "bouncers", security(("bearer" = [])), request_body = NewBouncer,
    responses((status = 201, body = BouncerCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<NewBouncer>,
) -> ApiResult<(StatusCode, axum::Json<BouncerCreated>)> {
    user.require(Role::Admin)?;
    check_name(&request.name)?;
    let (api_key, key_hash) = new_secret_token();
    let client = state.pool.get().await?;
    // One statement, so concurrent creations cannot pass the cap together by more than a few.
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO bouncers (name, key_hash, created_by)
                 SELECT $1, $2, $3 WHERE (SELECT count(*) FROM bouncers) < {MAX_BOUNCERS}
                 ON CONFLICT (name) DO NOTHING RETURNING {BOUNCER_COLUMNS}"
            ),
            &[&request.name, &key_hash, &user.username()],
        )
        .await?;
    let Some(row) = row else {
        let taken = client
            .query_opt("SELECT 1 FROM bouncers WHERE name = $1", &[&request.name])
            .await?
            .is_some();
        return Err(if taken {
            ApiError::conflict("name", "a bouncer has this name")
        } else {
            ApiError::conflict(
                "name",
                format!("there are {MAX_BOUNCERS} bouncers already; delete one first"),
            )
        });
    };
    let bouncer = bouncer_of(&row);
    tracing::info!(bouncer = %bouncer.name, id = bouncer.id, by = %user.username(), "bouncer key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(BouncerCreated { bouncer, api_key }),
    ))
}

#[utoipa::path(delete, path = "/api/bouncers/{id}", tag = "bouncers", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Bouncer id")),
    responses((status = 200, body = BouncerItem), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<BouncerItem>> {
    user.require(Role::Admin)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("bouncer"))?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!("DELETE FROM bouncers WHERE id = $1 RETURNING {BOUNCER_COLUMNS}"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("bouncer"))?;
    let bouncer = bouncer_of(&row);
    tracing::info!(bouncer = %bouncer.name, id, by = %user.username(), "bouncer key revoked");
    Ok(axum::Json(bouncer))
}
