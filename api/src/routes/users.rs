//! `/api/users` (admin only): list, create, change role / password / disabled. Disabling a user,
//! changing their role or their password supersedes every token they hold (their open
//! WebSockets close within the token check period).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self as tokens, AuthUser, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::input::Json;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Users {
    pub users: Vec<User>,
}

const USER_COLUMNS: &str = "id, username, role, created_at, disabled";

fn user_of(row: &tokio_postgres::Row) -> User {
    User {
        id: row.get(0),
        username: row.get(1),
        role: Role::parse(row.get(2)).unwrap_or(Role::Viewer),
        created_at: row.get(3),
        disabled: row.get(4),
    }
}

#[utoipa::path(get, path = "/api/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Users), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<axum::Json<Users>> {
    user.require(Role::Admin)?;
    let client = state.pool.get().await?;
    let users = client
        .query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT 10000"),
            &[],
        )
        .await?
        .iter()
        .map(user_of)
        .collect();
    Ok(axum::Json(Users { users }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 3 to 64 of a-z, A-Z, 0-9, `.`, `_`, `-`.
    pub username: String,
    /// 10 to 256 characters.
    pub password: String,
    pub role: Role,
}

fn check_username(name: &str) -> ApiResult<()> {
    let ok = (3..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username",
            "expected 3 to 64 of a-z, A-Z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// Creates a user with a hashed password; `Ok(None)` when the name is taken.
pub async fn insert_user(
    client: &deadpool_postgres::Client,
    username: &str,
    password: &str,
    role: Role,
) -> ApiResult<Option<User>> {
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || tokens::hash_password(&password))
        .await
        .map_err(|e| ApiError::unavailable("password hasher", e))??;
    Ok(client
        .query_opt(
            &format!("INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"),
            &[&username, &hash, &role.as_str()],
        )
        .await?
        .as_ref()
        .map(user_of))
}

#[utoipa::path(post, path = "/api/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<NewUser>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    user.require(Role::Admin)?;
    check_username(&request.username)?;
    tokens::check_password_policy("password", &request.password)?;
    let client = state.pool.get().await?;
    let created = insert_user(&client, &request.username, &request.password, request.role)
        .await?
        .ok_or_else(|| ApiError::conflict("username", "this username is taken"))?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id")), request_body = UserChange,
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(change): Json<UserChange>,
) -> ApiResult<axum::Json<User>> {
    user.require(Role::Admin)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("user"))?;
    if id == user.0.uid
        && (change.disabled == Some(true) || change.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::unprocessable(
            "role",
            "an admin cannot demote or disable themself",
        ));
    }
    let hash = match &change.password {
        Some(password) => {
            tokens::check_password_policy("password", password)?;
            let password = password.clone();
            Some(
                state
                    .auth
                    .hash_limited(move || tokens::hash_password(&password))
                    .await??,
            )
        }
        None => None,
    };
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE users SET role = coalesce($2, role), password_hash = coalesce($3, password_hash),
                        disabled = coalesce($4, disabled)
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            ),
            &[&id, &change.role.map(Role::as_str), &hash, &change.disabled],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if hash.is_some() || change.disabled == Some(true) || change.role.is_some() {
        state
            .auth
            .supersede_tokens(&client, id, "user_changed")
            .await?;
    }
    Ok(axum::Json(user_of(&row)))
}
