//! Acceptance: expired, tampered, wrong-algorithm and revoked tokens are refused; refresh tokens
//! rotate and are single use, and reusing one revokes its whole family; a login ends at its
//! absolute lifetime; logout revokes at once, logout everywhere and a role change refuse every
//! token the user held; the auth rate limit answers 429, per client address (IPv6: per /64),
//! which a trusted proxy's X-Forwarded-For gives and nobody else's does.

mod support;

use api::auth::Role;
use bus::memory::MemoryBus;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn claims(exp_offset: i64, role: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": "admin", "uid": 3, "role": role, "jti": uuid_like(), "iat": now - 10, "exp": now + exp_offset})
}

fn uuid_like() -> String {
    format!("jti-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap())
}

fn sign(alg: Algorithm, key: &[u8], claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let good = sign(Algorithm::HS256, support::SECRET, &claims(600, "admin"));
    let (status, _) = api
        .call_with_token(Some(&good), "GET", "/api/users", None)
        .await;
    assert_eq!(status, 200, "a token we signed ourselves is accepted");

    let expired = sign(Algorithm::HS256, support::SECRET, &claims(-120, "admin"));
    let other_key = sign(
        Algorithm::HS256,
        b"another-secret-of-sufficient-length!!",
        &claims(600, "admin"),
    );
    let hs512 = sign(Algorithm::HS512, support::SECRET, &claims(600, "admin"));
    let hs512_other = sign(Algorithm::HS512, b"another-secret", &claims(600, "admin"));
    // alg none: a header and claims with an empty signature.
    let b64 = |v: &serde_json::Value| {
        use std::fmt::Write;
        let bytes = v.to_string().into_bytes();
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let _ = out.write_char(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(600, "admin"))
    );
    // Tampered: the claims of a viewer token rewritten to admin, signature kept.
    let viewer = api.tokens[&Role::Viewer].clone();
    let parts: Vec<&str> = viewer.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims(600, "admin")), parts[2]);
    let flipped = format!(
        "{}.{}.{}x",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 1]
    );
    for (name, token) in [
        ("expired", expired),
        ("other key", other_key),
        ("HS512", hs512),
        ("HS512 other key", hs512_other),
        ("alg none", none),
        ("tampered claims", tampered),
        ("tampered signature", flipped),
        ("garbage", "not.a.token".to_string()),
    ] {
        let (status, body) = api
            .call_with_token(Some(&token), "GET", "/api/status", None)
            .await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let ws =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", api.addr)).await;
        assert!(ws.is_err(), "{name} opens no WebSocket");
    }
}

#[tokio::test]
async fn logout_revokes_at_once_and_refresh_tokens_rotate() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (_, pair) = api.login("analyst", support::PASSWORD).await;
    let access = pair["access_token"].as_str().unwrap().to_string();
    let refresh = pair["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(pair["expires_in"], 900);

    // Rotation: the refresh token works once.
    let (status, rotated) = api
        .call(
            None,
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_access = rotated["access_token"].as_str().unwrap().to_string();
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_string();
    let (status, _) = api
        .call_with_token(Some(&new_access), "GET", "/api/status", None)
        .await;
    assert_eq!(status, 200);

    // Logout revokes the access token and the refresh token immediately.
    let (status, _) = api
        .call_with_token(
            Some(&new_access),
            "POST",
            "/api/auth/logout",
            Some(json!({"refresh_token": new_refresh})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .call_with_token(Some(&new_access), "GET", "/api/status", None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let (status, _) = api
        .call(
            None,
            "POST",
            "/api/auth/refresh",
            Some(json!({"refresh_token": new_refresh})),
        )
        .await;
    assert_eq!(status, 401);
    // The first access token of the login is a different jti and still valid until it expires.
    let (status, _) = api
        .call_with_token(Some(&access), "GET", "/api/status", None)
        .await;
    assert_eq!(status, 200);

    // Another instance on the same database learns the revocation from Postgres.
    let client = api.pool.get().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM api_revoked_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    let other = api::auth::Auth::new(
        support::SECRET,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    );
    assert!(other.verify(&new_access).is_ok());
    other.load_revoked(&client, None).await.unwrap();
    assert!(other.verify(&new_access).is_err());

    // Wrong passwords and unknown users get the same answer.
    assert_eq!(api.login("analyst", "wrong password!").await.0, 401);
    assert_eq!(api.login("nobody", "wrong password!").await.0, 401);
    // Disabled users cannot log in.
    let (status, _) = api
        .call(
            Some(Role::Admin),
            "PATCH",
            "/api/users/2",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.login("analyst", support::PASSWORD).await.0, 401);
}

async fn refresh(api: &support::TestApi, token: &str) -> (u16, serde_json::Value) {
    api.call(
        None,
        "POST",
        "/api/auth/refresh",
        Some(json!({"refresh_token": token})),
    )
    .await
}

async fn status_with(api: &support::TestApi, access: &serde_json::Value) -> u16 {
    api.call_with_token(access.as_str(), "GET", "/api/status", None)
        .await
        .0
}

#[tokio::test]
async fn reusing_a_refresh_token_revokes_its_family() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (_, first) = api.login("analyst", support::PASSWORD).await;
    let (_, other_login) = api.login("analyst", support::PASSWORD).await;
    let (status, second) = refresh(&api, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let (status, third) = refresh(&api, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(status_with(&api, &third["access_token"]).await, 200);

    // The first token again: a copy is in use. Whoever presented it, the family is over.
    let (status, body) = refresh(&api, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 401, "{body}");
    for (name, pair) in [("first", &first), ("second", &second), ("third", &third)] {
        assert_eq!(
            status_with(&api, &pair["access_token"]).await,
            401,
            "the {name} access token of the family is revoked"
        );
    }
    let (status, _) = refresh(&api, third["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        status, 401,
        "the newest refresh token of the family is revoked"
    );
    // Another login of the same user is another family.
    assert_eq!(status_with(&api, &other_login["access_token"]).await, 200);
    let (status, _) = refresh(&api, other_login["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(telemetry::render().contains("vncguard_api_refresh_token_reuse_total"));
}

#[tokio::test]
async fn a_login_ends_at_its_absolute_lifetime_however_often_refreshed() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (_, pair) = api.login("viewer", support::PASSWORD).await;
    let (status, pair) = refresh(&api, pair["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    // The login happened 31 days ago; its refresh tokens were renewed meanwhile.
    api.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE api_refresh_tokens SET family_started_at = now() - interval '31 days'",
            &[],
        )
        .await
        .unwrap();
    let (status, body) = refresh(&api, pair["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn logout_everywhere_and_a_role_change_refuse_every_token_of_the_user() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (_, laptop) = api.login("analyst", support::PASSWORD).await;
    let (_, phone) = api.login("analyst", support::PASSWORD).await;
    let (status, _) = api
        .call_with_token(
            laptop["access_token"].as_str(),
            "POST",
            "/api/auth/logout-everywhere",
            None,
        )
        .await;
    assert_eq!(status, 200);
    for pair in [&laptop, &phone] {
        assert_eq!(status_with(&api, &pair["access_token"]).await, 401);
        assert_eq!(
            refresh(&api, pair["refresh_token"].as_str().unwrap())
                .await
                .0,
            401
        );
    }
    // Other users are untouched; a new login works.
    assert_eq!(
        api.call(Some(Role::Viewer), "GET", "/api/status", None)
            .await
            .0,
        200
    );
    let (status, fresh) = api.login("analyst", support::PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(status_with(&api, &fresh["access_token"]).await, 200);

    // An admin demotes the analyst (user 2): the analyst's tokens stop working at once.
    api.set_role(2, Role::Viewer).await;
    let (status, body) = api
        .call_with_token(fresh["access_token"].as_str(), "GET", "/api/status", None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("superseded"));
    let (_, demoted) = api.login("analyst", support::PASSWORD).await;
    assert_eq!(demoted["role"], "viewer");

    // Another instance on the same database learns the new generation from Postgres.
    let other = api::auth::Auth::new(
        support::SECRET,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    );
    let client = api.pool.get().await.unwrap();
    let generations = client
        .query(
            "SELECT id, token_generation FROM users WHERE token_generation > 0",
            &[],
        )
        .await
        .unwrap();
    other.remember_generations(generations.iter().map(|r| (r.get(0), r.get(1))));
    assert!(other
        .verify(fresh["access_token"].as_str().unwrap())
        .is_err());
    assert!(other
        .verify(demoted["access_token"].as_str().unwrap())
        .is_ok());
}

#[tokio::test]
async fn the_auth_rate_limit_answers_429() {
    let mut config = support::config();
    config.auth_rate = "5/900".parse().unwrap();
    // Three logins at start-up use three of the five.
    let api = support::start(MemoryBus::new(100), config).await;
    assert_eq!(api.login("viewer", support::PASSWORD).await.0, 200);
    assert_eq!(api.login("viewer", "wrong password!").await.0, 401);
    let response = api
        .http
        .post(api.url("/api/auth/login"))
        .json(&json!({"username": "viewer", "password": support::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other endpoints have their own limit.
    assert_eq!(
        api.call(Some(Role::Viewer), "GET", "/api/status", None)
            .await
            .0,
        200
    );
}

/// A login attempt from `forwarded` as a proxy would pass it on; its status.
async fn login_forwarded_for(api: &support::TestApi, forwarded: &str, password: &str) -> u16 {
    api.http
        .post(api.url("/api/auth/login"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({"username": "viewer", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit_and_audit_address() {
    let mut config = support::config();
    config.auth_rate = "5/900".parse().unwrap();
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    // Three logins at start-up use three of the proxy's own five.
    let api = support::start(MemoryBus::new(100), config).await;
    // The client's address is the rightmost one the proxy did not add itself: the forged
    // left-hand entry changes nothing.
    for _ in 0..5 {
        assert_eq!(
            login_forwarded_for(&api, "203.0.113.9, 198.51.100.20", "wrong password!").await,
            401
        );
    }
    assert_eq!(
        login_forwarded_for(&api, "192.0.2.1, 198.51.100.20", support::PASSWORD).await,
        429,
        "198.51.100.20 used its five attempts"
    );
    assert_eq!(
        login_forwarded_for(&api, "198.51.100.21", support::PASSWORD).await,
        200,
        "another client behind the same proxy has its own limit"
    );
    let client = api.pool.get().await.unwrap();
    let audited: Vec<String> = client
        .query(
            "SELECT DISTINCT host(client_ip) FROM api_audit_log WHERE path = '/api/auth/login'
             AND client_ip <> '127.0.0.1' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(audited, ["198.51.100.20", "198.51.100.21"]);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let mut config = support::config();
    config.auth_rate = "5/900".parse().unwrap();
    let api = support::start(MemoryBus::new(100), config).await;
    // Start-up used three of the five; a new forged address per attempt does not reset it.
    assert_eq!(
        login_forwarded_for(&api, "198.51.100.30", "wrong password!").await,
        401
    );
    assert_eq!(
        login_forwarded_for(&api, "198.51.100.31", "wrong password!").await,
        401
    );
    assert_eq!(
        login_forwarded_for(&api, "198.51.100.32", support::PASSWORD).await,
        429
    );
}
