//! The REST endpoints, one file per resource.

pub mod agents;
pub mod analytics;
pub mod auth;
pub mod bouncers;
pub mod crowdsec;
pub mod firewall;
pub mod health;
pub mod models;
pub mod sessions;
pub mod threats;
pub mod users;
pub mod web;

use axum::routing::{delete, get, post};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/status", get(health::status))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/logout-everywhere", post(auth::logout_everywhere))
        .route("/api/sessions", get(sessions::list))
        .route("/api/sessions/{id}", get(sessions::detail))
        .route("/api/sessions/{id}/quarantine", post(firewall::quarantine))
        .route("/api/threats", get(threats::list).post(threats::create))
        .route(
            "/api/threats/{id}",
            get(threats::detail).patch(threats::triage),
        )
        .route("/api/threats/{id}/notes", post(threats::add_note))
        .route("/api/analytics/dashboard", get(analytics::dashboard))
        .route("/api/metrics", get(analytics::metrics))
        .route("/api/firewall/rules", get(firewall::rules))
        .route("/api/firewall/rules/{id}", delete(firewall::delete_rule))
        .route("/api/firewall/block", post(firewall::block))
        .route("/api/firewall/unblock", post(firewall::unblock))
        .route("/api/agents", get(agents::list))
        .route("/api/models", get(models::list))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}", axum::routing::patch(users::update))
        .route("/api/bouncers", get(bouncers::list).post(bouncers::create))
        .route("/api/bouncers/{id}", delete(bouncers::revoke))
        .route("/v1/decisions/stream", get(crowdsec::stream))
}

/// A page of a list: how many rows match and where this page is.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageInfo {
    /// Matching rows, counted up to 10,000 (see `total_capped`).
    pub total: i64,
    /// More than 10,000 rows match; `total` is then 10,000.
    pub total_capped: bool,
    pub page: i64,
    pub limit: i64,
    pub offset: i64,
}

impl PageInfo {
    pub fn new(counted: i64, page: crate::input::Page) -> Self {
        PageInfo {
            total: counted.min(crate::queries::COUNT_CAP),
            total_capped: counted > crate::queries::COUNT_CAP,
            page: page.number(),
            limit: page.limit,
            offset: page.offset,
        }
    }
}
