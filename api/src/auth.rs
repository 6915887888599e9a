//! Authentication: argon2id password hashes (at most a few computed at once), short-lived HS256
//! access tokens (JWT) with a `jti` and their user's token generation, refresh tokens rotated
//! within a family stored as SHA-256 hashes, and the revocation list of access tokens that logged
//! out (Postgres, mirrored in memory so every request is checked without a query). Raising a
//! user's token generation (logout everywhere, disabling, a role or password change) refuses every
//! token the user held, on every instance within the follow period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

/// A user's role; each includes the rights of the ones before it (see `api/PERMISSIONS.md`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but users and the audit log.
    Viewer,
    /// Also triages threats, blocks, unblocks and quarantines.
    Analyst,
    /// Also manages users and settings.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Username.
    pub sub: String,
    /// User id.
    pub uid: i64,
    pub role: Role,
    /// Token id, the key of the revocation list.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token generation at issue; a token older than the user's current one is
    /// refused. Tokens issued before generations existed read 0.
    #[serde(default)]
    pub generation: i64,
}

/// Why a token that once verified is no longer good: the WebSocket closes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Expired,
    Revoked,
    /// The user's generation moved on: logged out everywhere, disabled, demoted or given a new
    /// password.
    Superseded,
}

impl TokenRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::Expired => "expired",
            TokenRefusal::Revoked => "revoked",
            TokenRefusal::Superseded => "superseded",
        }
    }
}

fn count_refusal(reason: &'static str) {
    telemetry::counter(
        "api_tokens_refused_total",
        "Access tokens refused",
        &[("reason", reason)],
    )
    .inc();
}

/// Most revoked token ids held in memory; past it the ones expiring first go (they are refused
/// by their expiry anyway once it passes, and the database keeps the full list).
const REVOKED_CACHE_CAP: usize = 100_000;

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// jti → expiry (seconds since the epoch).
    revoked: Mutex<HashMap<String, i64>>,
    /// User id → current token generation, for users whose generation is above 0. One entry
    /// per such user: users are created by admins only, so the users table bounds it.
    generations: Mutex<HashMap<i64, i64>>,
    /// Argon2 computations allowed at once: each takes ~19 MiB and tens of milliseconds of a
    /// core, so a login flood must queue, not fan out over every core and the memory.
    hashing: tokio::sync::Semaphore,
}

/// Concurrent argon2 computations: the machine's cores, at most 4 (beyond that, logins only
/// wait for each other while the API's other work starves).
fn hashing_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

/// How long a login waits for an argon2 slot before it is answered 503: a few seconds of queue
/// at tens of milliseconds per hash is hundreds of logins, more than any real burst.
const HASHING_WAIT: Duration = Duration::from_secs(5);

impl Auth {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
            revoked: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(hashing_permits()),
        }
    }

    /// Runs an argon2 computation on a blocking thread once a hashing slot is free; 503 when
    /// none frees up within [`HASHING_WAIT`].
    pub async fn hash_limited<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| {
                telemetry::counter(
                    "vncguard_api_password_hashing_refused_total",
                    "Logins and password changes refused because every argon2 slot stayed busy",
                    &[],
                )
                .inc();
                ApiError::unavailable("password hasher", "every hashing slot is busy")
            })?
            .map_err(|e| ApiError::unavailable("password hasher", e))?;
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::unavailable("password hasher", e));
        drop(permit);
        result
    }

    /// The user's current token generation as this instance knows it.
    fn generation(&self, uid: i64) -> i64 {
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .copied()
            .unwrap_or(0)
    }

    /// Records generations read from Postgres or just raised here; never lowers one.
    pub fn remember_generations(&self, entries: impl IntoIterator<Item = (i64, i64)>) {
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        for (uid, generation) in entries {
            let known = generations.entry(uid).or_insert(generation);
            *known = (*known).max(generation);
        }
    }

    /// Raises the user's token generation, refusing every token they hold, and revokes their
    /// refresh tokens (`reason` is kept on them).
    pub async fn supersede_tokens(
        &self,
        client: &deadpool_postgres::Client,
        uid: i64,
        reason: &str,
    ) -> Result<(), ApiError> {
        if let Some(row) = client
            .query_opt(
                "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1 RETURNING token_generation",
                &[&uid],
            )
            .await?
        {
            self.remember_generations([(uid, row.get(0))]);
        }
        client
            .execute(
                "UPDATE api_refresh_tokens SET revoked_at = now(), revoked_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&uid, &reason],
            )
            .await?;
        Ok(())
    }

    /// Whether a token that verified is still good now: unexpired, unrevoked, not superseded.
    pub fn still_valid(&self, claims: &Claims) -> Result<(), TokenRefusal> {
        if claims.exp <= Utc::now().timestamp() {
            return Err(TokenRefusal::Expired);
        }
        if self.is_revoked(&claims.jti) {
            return Err(TokenRefusal::Revoked);
        }
        if claims.generation < self.generation(claims.uid) {
            return Err(TokenRefusal::Superseded);
        }
        Ok(())
    }

    /// A new access token for the user, with its claims.
    pub fn issue_access(
        &self,
        uid: i64,
        username: &str,
        role: Role,
        generation: i64,
    ) -> Result<(String, Claims), ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: username.to_string(),
            uid,
            role,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::unavailable("token signer", e))?;
        Ok((token, claims))
    }

    /// The claims of a valid, unexpired, unrevoked, current HS256 token signed with our secret.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                count_refusal("invalid");
                ApiError::unauthorized(format!("invalid token: {e}"))
            })?
            .claims;
        match self.still_valid(&claims) {
            // jsonwebtoken already allowed the leeway on expiry.
            Ok(()) | Err(TokenRefusal::Expired) => Ok(claims),
            Err(refusal) => {
                count_refusal(refusal.as_str());
                Err(ApiError::unauthorized(format!(
                    "token {}",
                    refusal.as_str()
                )))
            }
        }
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }

    /// Adds token ids to the in-memory list, pruning expired entries (then the soonest to
    /// expire) when it is full.
    pub fn remember_revoked(&self, entries: impl IntoIterator<Item = (String, i64)>) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        for (jti, exp) in entries {
            if revoked.len() >= REVOKED_CACHE_CAP {
                let now = Utc::now().timestamp();
                revoked.retain(|_, exp| *exp > now);
                if revoked.len() >= REVOKED_CACHE_CAP {
                    if let Some(oldest) = revoked
                        .iter()
                        .min_by_key(|(_, exp)| **exp)
                        .map(|(j, _)| j.clone())
                    {
                        revoked.remove(&oldest);
                        telemetry::counter(
                            "api_revoked_cache_evictions_total",
                            "Revoked token ids evicted from memory",
                            &[],
                        )
                        .inc();
                    }
                }
            }
            revoked.insert(jti, exp);
        }
    }

    /// Revokes an access token now, in memory and in Postgres.
    pub async fn revoke(
        &self,
        client: &deadpool_postgres::Client,
        claims: &Claims,
    ) -> Result<(), ApiError> {
        self.revoke_jti(client, &claims.jti, claims.exp).await
    }

    /// Revokes the access token `jti`, which expires at `exp` (seconds since the epoch).
    pub async fn revoke_jti(
        &self,
        client: &deadpool_postgres::Client,
        jti: &str,
        exp: i64,
    ) -> Result<(), ApiError> {
        self.remember_revoked([(jti.to_string(), exp)]);
        client
            .execute(
                "INSERT INTO api_revoked_tokens (jti, expires_at) VALUES ($1, to_timestamp($2)) ON CONFLICT DO NOTHING",
                &[&jti, &(exp as f64)],
            )
            .await?;
        Ok(())
    }

    /// Loads the token ids other instances revoked since `since` (all unexpired ones when None);
    /// returns the newest revocation time seen.
    pub async fn load_revoked(
        &self,
        client: &deadpool_postgres::Client,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT jti, extract(epoch FROM expires_at)::bigint, revoked_at FROM api_revoked_tokens
                 WHERE ($1::timestamptz IS NULL OR revoked_at >= $1) AND expires_at > now()",
                &[&since],
            )
            .await?;
        let newest = rows.iter().map(|r| r.get::<_, DateTime<Utc>>(2)).max();
        self.remember_revoked(rows.iter().map(|r| (r.get(0), r.get(1))));
        Ok(newest)
    }
}

/// Follows the revocation list and the users' token generations in Postgres, so a logout (or a
/// logout everywhere, a demotion) on another instance applies here within `every`; also deletes
/// revocation rows past their expiry.
pub async fn follow_revocations(state: AppState, every: Duration) {
    let mut since: Option<DateTime<Utc>> = None;
    loop {
        match state.pool.get().await {
            Ok(client) => {
                // Re-read a little before the newest seen: revocations commit out of order.
                let from = since.map(|t| t - chrono::Duration::seconds(10));
                match state.auth.load_revoked(&client, from).await {
                    Ok(newest) => since = newest.or(since),
                    Err(e) => tracing::warn!(error = %e, "cannot read the revocation list"),
                }
                let _ = client.execute("DELETE FROM api_revoked_tokens WHERE expires_at < now() - interval '1 minute'", &[]).await;
                match client
                    .query(
                        "SELECT id, token_generation FROM users WHERE token_generation > 0",
                        &[],
                    )
                    .await
                {
                    Ok(rows) => state
                        .auth
                        .remember_generations(rows.iter().map(|r| (r.get(0), r.get(1)))),
                    Err(e) => tracing::warn!(error = %e, "cannot read token generations"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the revocation list"),
        }
        tokio::time::sleep(every).await;
    }
}

/// An argon2id hash (PHC string) of `password`.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| ApiError::unavailable("password hasher", e))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::unavailable("password hasher", e))
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Refuses passwords too short to resist guessing or too long to hash cheaply.
pub fn check_password_policy(field: &str, password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if !(10..=256).contains(&length) {
        return Err(ApiError::invalid(
            field,
            "a password has 10 to 256 characters",
        ));
    }
    Ok(())
}

/// A new opaque secret (a refresh token, a bouncer's API key): 32 random bytes in hex, and the
/// hash it is stored under. 256 random bits need no salt or slow hash: nobody can guess them,
/// and a stolen table of SHA-256 hashes gives no token back.
pub fn new_secret_token() -> (String, String) {
    let bytes: [u8; 32] = rand::rng().random();
    let token = hex::encode(bytes);
    let hash = hash_secret_token(&token);
    (token, hash)
}

/// The hex SHA-256 a secret of [`new_secret_token`] is stored and looked up under.
pub fn hash_secret_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request: `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl AuthUser {
    /// Refuses the request (403) unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role",
                role.as_str()
            )))
        }
    }

    pub fn username(&self) -> &str {
        &self.0.sub
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        state.auth.verify(token).map(AuthUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_verify_until_revoked() {
        let auth = Auth::new(b"secret", Duration::from_secs(60), Duration::from_secs(600));
        let (token, claims) = auth.issue_access(1, "ana", Role::Analyst, 0).unwrap();
        assert_eq!(auth.verify(&token).unwrap().role, Role::Analyst);
        auth.remember_revoked([(claims.jti.clone(), claims.exp)]);
        assert_eq!(auth.verify(&token).unwrap_err().code, "unauthorized");
        assert_eq!(auth.still_valid(&claims), Err(TokenRefusal::Revoked));
        let other = Auth::new(b"other", Duration::from_secs(60), Duration::from_secs(600));
        let (foreign, _) = other.issue_access(1, "ana", Role::Admin, 0).unwrap();
        assert!(auth.verify(&foreign).is_err());
    }

    #[test]
    fn a_raised_generation_supersedes_older_tokens_only() {
        let auth = Auth::new(b"secret", Duration::from_secs(60), Duration::from_secs(600));
        let (old, old_claims) = auth.issue_access(7, "ana", Role::Admin, 0).unwrap();
        let (_, other_user) = auth.issue_access(8, "bob", Role::Admin, 0).unwrap();
        auth.remember_generations([(7, 1)]);
        assert_eq!(auth.still_valid(&old_claims), Err(TokenRefusal::Superseded));
        assert!(auth.verify(&old).is_err());
        assert_eq!(auth.still_valid(&other_user), Ok(()));
        let (new, _) = auth.issue_access(7, "ana", Role::Viewer, 1).unwrap();
        assert_eq!(auth.verify(&new).unwrap().role, Role::Viewer);
        // A stale read from another instance never lowers it.
        auth.remember_generations([(7, 0)]);
        assert_eq!(auth.still_valid(&old_claims), Err(TokenRefusal::Superseded));
    }

    #[test]
    fn an_expired_token_is_no_longer_valid() {
        let auth = Auth::new(b"secret", Duration::from_secs(60), Duration::from_secs(600));
        let (_, mut claims) = auth.issue_access(1, "ana", Role::Analyst, 0).unwrap();
        claims.exp = Utc::now().timestamp() - 1;
        assert_eq!(auth.still_valid(&claims), Err(TokenRefusal::Expired));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Analyst && Role::Analyst > Role::Viewer);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
