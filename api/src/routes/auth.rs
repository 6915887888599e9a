//! `/api/auth/login`, `/api/auth/refresh` (rotates the refresh token within its family),
//! `/api/auth/logout` (revokes the access token and the refresh token at once) and
//! `/api/auth/logout-everywhere` (every token of the user, on every instance).
//!
//! A refresh token presented after it was rotated was copied: whoever holds it, the family is
//! revoked with every access token it issued, so a stolen token is worth at most one refresh
//! before both the thief and the user are logged out (the OAuth 2.0 security BCP's reuse
//! detection). A family also ends at its absolute lifetime however often it is refreshed.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self as tokens, AuthUser, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::Json;
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: `/api/auth/refresh` answers a new pair and refuses this one afterwards.
    pub refresh_token: String,
    pub username: String,
    pub role: Role,
}

/// A hash of no one's password, verified when the user does not exist so both cases take as long.
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        tokens::hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default()
    })
    .clone()
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Json(request): Json<LoginRequest>,
) -> ApiResult<axum::Json<TokenPair>> {
    if request.username.is_empty() || request.username.len() > 100 {
        return Err(ApiError::invalid(
            "username",
            "expected 1 to 100 characters",
        ));
    }
    if request.password.len() > 1024 {
        return Err(ApiError::invalid("password", "too long"));
    }
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, password_hash, role, disabled, token_generation FROM users WHERE username = $1",
            &[&request.username],
        )
        .await?;
    let hash = row
        .as_ref()
        .map(|r| r.get::<_, String>(1))
        .unwrap_or_else(dummy_hash);
    let password = request.password.clone();
    let matches = state
        .auth
        .hash_limited(move || tokens::verify_password(&password, &hash))
        .await?;
    let Some(row) = row.filter(|r| matches && !r.get::<_, bool>(3)) else {
        telemetry::counter(
            "api_logins_total",
            "Login attempts",
            &[("outcome", "refused")],
        )
        .inc();
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    telemetry::counter(
        "api_logins_total",
        "Login attempts",
        &[("outcome", "accepted")],
    )
    .inc();
    let role = Role::parse(row.get(2)).ok_or_else(|| ApiError::unauthorized("unknown role"))?;
    let holder = TokenHolder {
        uid: row.get(0),
        username: request.username.clone(),
        role,
        generation: row.get(4),
    };
    issue_pair(&state, &client, &holder, None)
        .await
        .map(axum::Json)
}

/// Whom a token pair is for.
struct TokenHolder {
    uid: i64,
    username: String,
    role: Role,
    generation: i64,
}

/// A refresh token family: its id and when its login happened.
type Family = (String, chrono::DateTime<chrono::Utc>);

/// A new access and refresh token; the refresh token joins `family`, or starts one (a login).
async fn issue_pair(
    state: &AppState,
    client: &deadpool_postgres::Client,
    holder: &TokenHolder,
    family: Option<Family>,
) -> ApiResult<TokenPair> {
    let (access_token, claims) =
        state
            .auth
            .issue_access(holder.uid, &holder.username, holder.role, holder.generation)?;
    let (refresh_token, hash) = tokens::new_secret_token();
    let ttl = state.auth.refresh_ttl.as_secs() as f64;
    let (family_id, family_started) = match family {
        Some((id, started)) => (id, Some(started)),
        None => (uuid::Uuid::new_v4().to_string(), None),
    };
    client
        .execute(
            "INSERT INTO api_refresh_tokens
                 (token_hash, user_id, expires_at, family_id, family_started_at, access_jti, access_expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3), $4, coalesce($5, now()), $6, to_timestamp($7))",
            &[&hash, &holder.uid, &ttl, &family_id, &family_started, &claims.jti, &(claims.exp as f64)],
        )
        .await?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.auth.access_ttl.as_secs(),
        refresh_token,
        username: holder.username.clone(),
        role: holder.role,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<axum::Json<TokenPair>> {
    let client = state.pool.get().await?;
    let hash = tokens::hash_secret_token(&request.refresh_token);
    let absolute = state.config.refresh_absolute_ttl.as_secs() as f64;
    // Using a token revokes it in the same statement, so it rotates exactly once.
    let rotated = client
        .query_opt(
            "UPDATE api_refresh_tokens r SET revoked_at = now(), revoked_reason = 'rotated' FROM users u
             WHERE r.token_hash = $1 AND r.revoked_at IS NULL AND r.expires_at > now()
               AND r.family_started_at > now() - make_interval(secs => $2)
               AND u.id = r.user_id AND NOT u.disabled
             RETURNING u.id, u.username, u.role, u.token_generation, r.family_id, r.family_started_at",
            &[&hash, &absolute],
        )
        .await?;
    let Some(row) = rotated else {
        revoke_family_if_reused(&state, &client, &hash).await?;
        return Err(ApiError::unauthorized(
            "invalid, used or expired refresh token",
        ));
    };
    let role = Role::parse(row.get(2)).ok_or_else(|| ApiError::unauthorized("unknown role"))?;
    let holder = TokenHolder {
        uid: row.get(0),
        username: row.get(1),
        role,
        generation: row.get(3),
    };
    issue_pair(&state, &client, &holder, Some((row.get(4), row.get(5))))
        .await
        .map(axum::Json)
}

/// A refresh token refused because it was already rotated: revokes its whole family and the
/// access tokens the family issued.
async fn revoke_family_if_reused(
    state: &AppState,
    client: &deadpool_postgres::Client,
    hash: &str,
) -> Result<(), ApiError> {
    let Some(used) = client
        .query_opt(
            "SELECT family_id, user_id FROM api_refresh_tokens WHERE token_hash = $1 AND revoked_reason = 'rotated'",
            &[&hash],
        )
        .await?
    else {
        return Ok(());
    };
    let family: String = used.get(0);
    let uid: i64 = used.get(1);
    let issued = client
        .query(
            "UPDATE api_refresh_tokens SET revoked_at = coalesce(revoked_at, now()),
                    revoked_reason = CASE WHEN revoked_at IS NULL THEN 'family_reused' ELSE revoked_reason END
             WHERE family_id = $1
             RETURNING access_jti, extract(epoch FROM access_expires_at)::bigint",
            &[&family],
        )
        .await?;
    let now = chrono::Utc::now().timestamp();
    for row in &issued {
        let (Some(jti), Some(exp)) = (
            row.get::<_, Option<String>>(0),
            row.get::<_, Option<i64>>(1),
        ) else {
            continue;
        };
        if exp > now {
            state.auth.revoke_jti(client, &jti, exp).await?;
        }
    }
    telemetry::counter(
        "vncguard_api_refresh_token_reuse_total",
        "Refresh tokens presented again after rotation; each revoked its family",
        &[],
    )
    .inc();
    tracing::warn!(user_id = uid, family = %family, tokens = issued.len(), "a rotated refresh token was used again: its family is revoked");
    Ok(())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The refresh token of this login, revoked with the access token.
    pub refresh_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    pub revoked: bool,
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])), request_body = LogoutRequest,
    responses((status = 200, body = LoggedOut), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<LoggedOut>> {
    let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable("body", e.to_string()))?
    };
    let client = state.pool.get().await?;
    state.auth.revoke(&client, &user.0).await?;
    if let Some(token) = request.refresh_token {
        client
            .execute(
                "UPDATE api_refresh_tokens SET revoked_at = now(), revoked_reason = 'logout' WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
                &[&tokens::hash_secret_token(&token), &user.0.uid],
            )
            .await?;
    }
    Ok(axum::Json(LoggedOut { revoked: true }))
}

/// Logs the caller out of every session: every access and refresh token they hold is refused,
/// on every instance within the revocation follow period, and their open WebSockets close.
#[utoipa::path(post, path = "/api/auth/logout-everywhere", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = LoggedOut), (status = 401, body = ErrorBody)))]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<LoggedOut>> {
    let client = state.pool.get().await?;
    state
        .auth
        .supersede_tokens(&client, user.0.uid, "logout_everywhere")
        .await?;
    Ok(axum::Json(LoggedOut { revoked: true }))
}
