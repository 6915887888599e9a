//! CrowdSec bouncers: the firewalls, reverse proxies and CDNs that poll `/v1/decisions/stream`
//! (see `routes::crowdsec`) and enforce vncguard's blocks. Each has an API key that admins make
//! and revoke (`routes::bouncers`); a key lets its holder read the decisions and nothing else.
//!
//! Only the SHA-256 of a key is stored, and a request's key is found by the hash of what it
//! sends: the lookup compares hashes, so its timing says nothing about the key. Every request
//! reads the table, so a revoked key fails at its very next request on every API instance.
//! Refused keys are counted and spend the client address's `AUTH_RATE_LIMIT` budget, like failed
//! logins: a client that guesses keys is refused with 429 before its guesses are looked at.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};

use crate::auth::hash_secret_token;
use crate::error::ApiError;
use crate::AppState;

/// The header a bouncer sends its key in (CrowdSec's `APIKeyTransport`).
pub const KEY_HEADER: &str = "x-api-key";

/// Most bouncers an installation holds: one per enforcing firewall or proxy, so a few dozen in a
/// large fleet. The cap bounds the table and the per-bouncer state (two columns each) that every
/// poll reads and writes; a thousand is far beyond any fleet one API serves.
pub const MAX_BOUNCERS: i64 = 1000;

/// Longest key accepted before hashing: ours are 64 characters, CrowdSec's 32.
const MAX_KEY_CHARS: usize = 256;

/// Longest `User-Agent` kept for the list (bouncers send `name/version`).
const MAX_USER_AGENT_CHARS: usize = 200;

/// An authenticated bouncer and where its previous poll left off.
#[derive(Debug, Clone)]
pub struct Bouncer {
    pub id: i64,
    pub name: String,
    /// The previous successful poll's database time and snapshot (`pg_snapshot` text); None
    /// before its first.
    pub last_pull: Option<(DateTime<Utc>, String)>,
    /// The client address (see `TRUSTED_PROXIES`) and `User-Agent` of this request.
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
}

/// Counts a request refused for `reason`, and logs it with the client (never the key).
fn count_refusal(client: IpAddr, reason: &'static str) {
    telemetry::counter(
        "vncguard_api_bouncer_keys_refused_total",
        "Requests to /v1/decisions/stream refused: key missing, unknown (or revoked), or the client rate limited",
        &[("reason", reason)],
    )
    .inc();
    tracing::info!(%client, reason, "bouncer request refused");
}

/// Counts a refused key for `reason`, spends the client's failure budget and answers 403 (or 429
/// once the budget is spent).
fn refuse(state: &AppState, client: IpAddr, reason: &'static str) -> ApiError {
    count_refusal(client, reason);
    match state.auth_limiter.check(client) {
        Ok(()) => ApiError::forbidden("access forbidden: missing or invalid X-Api-Key"),
        Err(retry_after) => ApiError::too_many(retry_after),
    }
}

/// The key of a request, when it sends a plausible one.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let key = headers.get(KEY_HEADER)?.to_str().ok()?.trim();
    (!key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(key)
}

/// The `User-Agent` of a request, shortened and without control characters.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

impl FromRequestParts<AppState> for Bouncer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = crate::client_addr_of(
            &parts.extensions,
            &parts.headers,
            &state.config.trusted_proxies,
        );
        if let Some(retry_after) = state.auth_limiter.blocked_for(client) {
            count_refusal(client, "rate_limited");
            return Err(ApiError::too_many(retry_after));
        }
        let Some(key) = presented_key(&parts.headers) else {
            return Err(refuse(state, client, "missing"));
        };
        let hash = hash_secret_token(key);
        let db = state.pool.get().await?;
        let row = db
            .query_opt(
                "SELECT id, name, last_pull, last_snapshot::text FROM bouncers WHERE key_hash = $1",
                &[&hash],
            )
            .await?;
        let Some(row) = row else {
            return Err(refuse(state, client, "unknown"));
        };
        let last_pull = match (row.get(2), row.get(3)) {
            (Some(at), Some(snapshot)) => Some((at, snapshot)),
            _ => None,
        };
        Ok(Bouncer {
            id: row.get(0),
            name: row.get(1),
            last_pull,
            client_ip: client,
            user_agent: user_agent(&parts.headers),
        })
    }
}

/// Refuses a bouncer name that is not 1 to 64 of a-z, A-Z, 0-9, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "expected 1 to 64 of a-z, A-Z, 0-9, '.', '_', '-' and '@'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_plausible_keys_are_looked_up() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        for bad in ["", "   ", "two words", &"k".repeat(MAX_KEY_CHARS + 1)] {
            headers.insert(KEY_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(presented_key(&headers), None, "{bad:?}");
        }
        headers.insert(KEY_HEADER, HeaderValue::from_static(" 0123abcd "));
        assert_eq!(presented_key(&headers), Some("0123abcd"));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("fw-edge-1").is_ok());
        assert!(check_name("cs-firewall-bouncer@host.example").is_ok());
        for bad in ["", "with space", "semi;colon", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_agents_lose_control_characters_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&format!(
                "crowdsec-firewall-bouncer/v0.0.25\t{}",
                "x".repeat(300)
            ))
            .unwrap(),
        );
        let agent = user_agent(&headers).unwrap();
        assert!(agent.starts_with("crowdsec-firewall-bouncer/v0.0.25x"));
        assert_eq!(agent.chars().count(), MAX_USER_AGENT_CHARS);
    }
}
