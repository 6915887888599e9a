//! The audit log: every state-changing request (any method but GET, HEAD, OPTIONS) becomes a row
//! of `api_audit_log` with the caller, the outcome, the client address and a summary of the body
//! in which passwords and tokens are masked.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::{client_addr, AppState};

/// Longest body summary kept, in characters.
const SUMMARY_CHARS: usize = 500;

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let client_ip = client_addr(&request, &state.config.trusted_proxies);
    let caller = crate::auth::bearer_token(request.headers())
        .and_then(|token| state.auth.verify(token).ok())
        .map(|claims| claims.sub);
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are limited to {} bytes", state.config.body_limit),
            )
            .into_response()
        }
    };
    let body = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    // A login names its user in the body.
    let username = caller.or_else(|| {
        body.as_ref()
            .and_then(|b| b.get("username"))
            .and_then(|u| u.as_str())
            .map(|u| u.chars().take(100).collect())
    });
    let summary = body.map(|mut value| {
        mask_secrets(&mut value);
        value
            .to_string()
            .chars()
            .take(SUMMARY_CHARS)
            .collect::<String>()
    });
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = i32::from(response.status().as_u16());
    let written = match state.pool.get().await {
        Ok(client) => client
            .execute(
                "INSERT INTO api_audit_log (username, method, path, status, client_ip, body_summary)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&username, &method, &path, &status, &client_ip, &summary],
            )
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = written {
        tracing::warn!(%error, %method, %path, "audit log write failed");
        telemetry::counter(
            "api_audit_write_failures_total",
            "Audit rows that could not be written",
            &[],
        )
        .inc();
    }
    response
}

/// Replaces the value of every key that names a secret with `"***"`.
fn mask_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if ["password", "token", "secret"]
                    .iter()
                    .any(|s| key.contains(s))
                {
                    *field = serde_json::Value::String("***".into());
                } else {
                    mask_secrets(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_masked_at_any_depth() {
        let mut body = serde_json::json!({"username": "ana", "password": "hunter22", "nested": [{"refresh_token": "abc"}]});
        super::mask_secrets(&mut body);
        assert_eq!(
            body,
            serde_json::json!({"username": "ana", "password": "***", "nested": [{"refresh_token": "***"}]})
        );
    }
}
