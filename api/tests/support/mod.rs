//! An API on a throwaway database, its users of every role, and seeded rows.
#![allow(dead_code)] // each test binary uses its own part of the support module

use std::collections::HashMap;
use std::net::SocketAddr;

use api::auth::Role;
use api::{ApiConfig, AppState};
use testkit::TestDatabase;

pub const PASSWORD: &str = "correct-horse-battery";
pub const SECRET: &[u8] = b"test-secret-that-is-long-enough-for-hs256";

pub struct TestApi {
    pub base: String,
    pub addr: SocketAddr,
    pub pool: deadpool_postgres::Pool,
    pub http: reqwest::Client,
    /// Access token per role (users `viewer`, `analyst`, `admin`).
    pub tokens: HashMap<Role, String>,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDatabase,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The test API's decision signing key (its verifier checks what the API published).
pub static SIGNER: std::sync::LazyLock<trust::DecisionSigner> =
    std::sync::LazyLock::new(|| trust::DecisionSigner::generate(Some("api-test")).unwrap());

pub fn config() -> ApiConfig {
    let mut config = ApiConfig::new(SECRET);
    config.decision_signer = Some(SIGNER.clone());
    config.api_rate = "off".parse().unwrap();
    config.auth_rate = "1000/60".parse().unwrap();
    config
}

/// Starts the API on `bus` with `config`, a migrated database and one user per role.
pub async fn start<B: bus::Bus>(bus: B, config: ApiConfig) -> TestApi {
    start_on(bus, config, std::net::Ipv4Addr::LOCALHOST.into()).await
}

/// [`start`], listening on a free port of `address` (a lab bridge's, for clients in namespaces).
pub async fn start_on<B: bus::Bus>(
    bus: B,
    config: ApiConfig,
    address: std::net::IpAddr,
) -> TestApi {
    let db = TestDatabase::create().await.unwrap();
    let pool = sink::connect_pool(db.url(), 8, std::time::Duration::from_secs(5)).unwrap();
    {
        let mut client = pool.get().await.unwrap();
        sink::migrate::migrate(&mut client).await.unwrap();
        for role in [Role::Viewer, Role::Analyst, Role::Admin] {
            api::routes::users::insert_user(&client, role.as_str(), PASSWORD, role)
                .await
                .unwrap()
                .unwrap();
        }
    }
    let state = AppState::new(config, pool.clone(), &bus).unwrap();
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(state.clone(), bus, listener, async {
        let _ = stop.await;
    }));
    let mut api = TestApi {
        base: format!("http://{addr}"),
        addr,
        pool,
        http: reqwest::Client::new(),
        tokens: HashMap::new(),
        state,
        shutdown: Some(shutdown),
        _db: db,
    };
    for role in [Role::Viewer, Role::Analyst, Role::Admin] {
        let pair = api.login(role.as_str(), PASSWORD).await;
        assert_eq!(pair.0, 200, "login {role:?}: {}", pair.1);
        api.tokens
            .insert(role, pair.1["access_token"].as_str().unwrap().to_string());
    }
    api
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn login(&self, username: &str, password: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Sends `method path` with `body` as `role` (anonymous when None); status and JSON body.
    pub async fn call(
        &self,
        role: Option<Role>,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let token = role.map(|r| self.tokens[&r].clone());
        self.call_with_token(token.as_deref(), method, path, body)
            .await
    }

    pub async fn call_with_token(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// An admin gives user `id` the role `role`.
    pub async fn set_role(&self, id: i64, role: Role) {
        let (status, body) = self
            .call(
                Some(Role::Admin),
                "PATCH",
                &format!("/api/users/{id}"),
                Some(serde_json::json!({"role": role})),
            )
            .await;
        assert_eq!(status, 200, "PATCH /api/users/{id}: {body}");
    }

    /// An analyst's block of `address` for `duration` through the API; its decision id.
    pub async fn block(&self, address: &str, duration: &str) -> String {
        let (status, body) = self
            .call(
                Some(Role::Analyst),
                "POST",
                "/api/firewall/block",
                Some(serde_json::json!({"ip_address": address, "duration": duration, "reason": "test"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["decision_id"].as_str().unwrap().to_string()
    }

    /// An analyst's unblock with `request` (`decision_id` or `ip_address`) through the API.
    pub async fn unblock(&self, request: serde_json::Value) {
        let (status, body) = self
            .call(
                Some(Role::Analyst),
                "POST",
                "/api/firewall/unblock",
                Some(request),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// A new bouncer named `name`, made by the admin; its API key.
    pub async fn create_bouncer(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                Some(Role::Admin),
                "POST",
                "/api/bouncers",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["api_key"].as_str().unwrap().to_string()
    }

    /// The admin's revocation of bouncer `id`: status and body.
    pub async fn revoke_bouncer(&self, id: i64) -> (u16, serde_json::Value) {
        self.call(
            Some(Role::Admin),
            "DELETE",
            &format!("/api/bouncers/{id}"),
            None,
        )
        .await
    }

    /// `GET /v1/decisions/stream?query` with `key` as `X-Api-Key` (none when None).
    pub async fn stream(&self, key: Option<&str>, query: &str) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/decisions/stream?{query}")))
            .header("user-agent", "vncguard-test/1");
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, role: Role, path: &str) -> serde_json::Value {
        let (status, body) = self.call(Some(role), "GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// 300 sessions (s-1 .. s-300; 10.0.x.y clients; one per minute back from now; statuses
    /// cycling active/terminated/blocked; risk = n % 100), 120 threats on the first 120 sessions
    /// (severities cycling), two agents (one stale), one model.
    pub async fn seed(&self) {
        let client = self.pool.get().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time, status, risk_score, agent_id, data_transferred, client_country)
                 SELECT 's-' || g, ('10.0.' || (g / 256) || '.' || g % 256)::inet, '192.0.2.1', 40000 + g, 5900,
                        now() - g * interval '1 minute', (ARRAY['active', 'terminated', 'blocked'])[1 + g % 3],
                        g % 100, 'agent-1', g / 10.0, 'NL'
                 FROM generate_series(1, 300) g;
                 INSERT INTO threat_logs (id, session_id, threat_type, severity, description, source_ip, timestamp, metadata)
                 SELECT 't-' || g, 's-' || g, (ARRAY['brute_force', 'scan'])[1 + g % 2],
                        (ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4], 'threat ' || g,
                        ('10.0.' || (g / 256) || '.' || g % 256)::inet, now() - g * interval '1 minute', '{\"rule\": \"test\"}'
                 FROM generate_series(1, 120) g;
                 INSERT INTO agents (agent_id, hostname, version, started_at, last_heartbeat, capture_sources)
                 VALUES ('agent-1', 'host-1', '0.1.0', now() - interval '1 hour', now(), '{eth0}'),
                        ('agent-2', 'host-2', '0.1.0', now() - interval '2 hours', now() - interval '10 minutes', '{}');
                 INSERT INTO models (name, version, created_at, feature_names, training_rows, metrics, model_json)
                 VALUES ('isolation_forest', 'v1', now(), '{a,b}', 1000, '{\"auc\": 0.9}', '{}');",
            )
            .await
            .unwrap();
    }
}
