//! `/api/auth/login`, `/api/auth/refresh` (rotates the refresh token) and `/api/auth/logout`
//! (revokes the access token and the refresh token at once).

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
            "SELECT id, password_hash, role, disabled FROM users WHERE username = $1",
            &[&request.username],
        )
        .await?;
    let hash = row
        .as_ref()
        .map(|r| r.get::<_, String>(1))
        .unwrap_or_else(dummy_hash);
    let password = request.password.clone();
    let matches = tokio::task::spawn_blocking(move || tokens::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
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
    issue_pair(&state, &client, row.get(0), &request.username, role)
        .await
        .map(axum::Json)
}

async fn issue_pair(
    state: &AppState,
    client: &deadpool_postgres::Client,
    uid: i64,
    username: &str,
    role: Role,
) -> ApiResult<TokenPair> {
    let (access_token, _) = state.auth.issue_access(uid, username, role)?;
    let (refresh_token, hash) = tokens::new_secret_token();
    let ttl = state.auth.refresh_ttl.as_secs() as f64;
    client
        .execute(
            "INSERT INTO api_refresh_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
            &[&hash, &uid, &ttl],
        )
        .await?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.auth.access_ttl.as_secs(),
        refresh_token,
        username: username.to_string(),
        role,
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
    // Using a token revokes it in the same statement, so it rotates exactly once.
    let row = client
        .query_opt(
            "UPDATE api_refresh_tokens r SET revoked_at = now() FROM users u
             WHERE r.token_hash = $1 AND r.revoked_at IS NULL AND r.expires_at > now()
               AND u.id = r.user_id AND NOT u.disabled
             RETURNING u.id, u.username, u.role",
            &[&tokens::hash_secret_token(&request.refresh_token)],
        )
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid, used or expired refresh token"))?;
    let role = Role::parse(row.get(2)).ok_or_else(|| ApiError::unauthorized("unknown role"))?;
    issue_pair(&state, &client, row.get(0), row.get::<_, &str>(1), role)
        .await
        .map(axum::Json)
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
                "UPDATE api_refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
                &[&tokens::hash_secret_token(&token), &user.0.uid],
            )
            .await?;
    }
    Ok(axum::Json(LoggedOut { revoked: true }))
}
