//! vncguard's API: the seed's REST endpoints over the sink's Postgres tables, live events over a
//! WebSocket fed by a tail consumer of the bus, JWT authentication with three roles, alert
//! triage, the OpenAPI document and the dashboard's static files.
//!
//! - [`routes`]: one file per resource; every handler validates its input ([`input`]) and
//!   answers errors in one JSON shape ([`error`]).
//! - [`auth`]: passwords, access/refresh tokens, revocation; [`rate_limit`]: per-address limits;
//!   [`audit`]: every state-changing request into `api_audit_log`.
//! - [`bouncers`]: CrowdSec bouncers' API keys; `routes::crowdsec` serves them the decisions.
//! - [`ws`]: the fan-out from the bus to WebSocket clients, each with a bounded queue.
//! - [`docs`]: the OpenAPI 3 document (utoipa) and its offline page.
//!
//! [`serve`] runs it all on a listener; the embedded mode mounts [`router`] and runs
//! [`spawn_background`] itself.

pub mod audit;
pub mod auth;
pub mod bouncers;
pub mod connection_slots;
pub mod docs;
pub mod error;
pub mod input;
pub mod queries;
pub mod rate_limit;
pub mod routes;
pub mod secrets;
pub mod ws;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::rate_limit::{RateLimiter, RateSpec};

/// A login ends after 30 days however often it is refreshed: long enough that an analyst on a
/// dashboard left open is not logged out mid-week, short enough that a refresh token copied
/// off a laptop stops working within a month even if it is refreshed before every expiry.
pub const REFRESH_ABSOLUTE_TTL_SECS: u64 = 30 * 86_400;

/// A dashboard opens one WebSocket per tab; 16 leaves room for many tabs and a few scripts
/// behind one address (or one /64), and keeps one address from holding thousands of sockets
/// and their queues (`ws_queue` events each).
pub const WS_CONNECTIONS_PER_ADDRESS: usize = 16;

/// Everything the API is configured with besides its database and bus.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// HS256 key of the access tokens.
    pub jwt_secret: Vec<u8>,
    pub access_ttl: Duration,
    /// Lifetime of each refresh token (renewed by each refresh).
    pub refresh_ttl: Duration,
    /// Lifetime of a login however often it is refreshed: the refresh token family's end.
    pub refresh_absolute_ttl: Duration,
    /// Open WebSockets allowed per client address (IPv6: per /64).
    pub ws_connections_per_address: usize,
    /// Origins allowed by CORS; empty allows none (same-origin only).
    pub allowed_origins: Vec<String>,
    /// Limit per client address on `/api/auth/*`.
    pub auth_rate: RateSpec,
    /// Limit per client address on the rest of `/api` and `/ws`.
    pub api_rate: RateSpec,
    /// Most client addresses each rate-limit table tracks.
    pub rate_table_capacity: usize,
    /// The agents' heartbeat interval: an agent silent for three is stale.
    pub agent_heartbeat_interval: Duration,
    /// Events queued per WebSocket client before it is dropped as too slow.
    pub ws_queue: usize,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client; from anyone else the header
    /// is ignored, so a client cannot pick the address it is rate-limited and audited as.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The key analysts' decisions are signed with (`DECISION_SIGNING_KEY_FILE`); without one
    /// the decision routes answer 503, since agents enforce signed decisions only.
    pub decision_signer: Option<trust::DecisionSigner>,
    /// What no analyst's decision may block (422), the same rules agents apply.
    pub guardrails: trust::Guardrails,
}

impl ApiConfig {
    /// The defaults, with `jwt_secret`.
    pub fn new(jwt_secret: impl Into<Vec<u8>>) -> Self {
        ApiConfig {
            jwt_secret: jwt_secret.into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            refresh_absolute_ttl: Duration::from_secs(REFRESH_ABSOLUTE_TTL_SECS),
            ws_connections_per_address: WS_CONNECTIONS_PER_ADDRESS,
            allowed_origins: Vec::new(),
            auth_rate: RateSpec {
                max: 100,
                window: Duration::from_secs(900),
            },
            api_rate: RateSpec {
                max: 3000,
                window: Duration::from_secs(60),
            },
            rate_table_capacity: 100_000,
            agent_heartbeat_interval: Duration::from_secs(30),
            ws_queue: 1024,
            body_limit: 64 * 1024,
            trusted_proxies: Vec::new(),
            decision_signer: None,
            guardrails: trust::Guardrails::default(),
        }
    }
}

/// The bus as the handlers need it: publish decisions, and probe the broker for `/api/health`.
pub trait BusPort: Send + Sync {
    fn publish(&self, outputs: Vec<bus::Output>) -> BoxFuture<'_, Result<(), bus::BusError>>;
    fn probe(&self) -> BoxFuture<'_, Result<(), bus::BusError>>;
}

struct BusHandle<B: bus::Bus> {
    bus: B,
    producer: B::Producer,
}

impl<B: bus::Bus> BusPort for BusHandle<B> {
    fn publish(&self, outputs: Vec<bus::Output>) -> BoxFuture<'_, Result<(), bus::BusError>> {
        use bus::Producer;
        Box::pin(self.producer.send(outputs))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), bus::BusError>> {
        // Creating a topic that exists is a round trip to the controller and changes nothing.
        Box::pin(self.bus.ensure_topics(&[schemas::topics::DECISIONS]))
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub auth: Arc<Auth>,
    pub bus: Arc<dyn BusPort>,
    pub hub: ws::Hub,
    pub config: Arc<ApiConfig>,
    pub auth_limiter: Arc<RateLimiter>,
    pub api_limiter: Arc<RateLimiter>,
    /// Open WebSockets per client address.
    pub ws_slots: Arc<connection_slots::ConnectionSlots>,
    pub started: Instant,
    /// The last broker probe: when, and whether it answered.
    bus_health: Arc<Mutex<Option<(Instant, bool)>>>,
    /// A probe is in flight: other requests answer the last result instead of probing too.
    bus_probing: Arc<AtomicBool>,
}

/// How long a broker probe result is reused, so health checks do not load the broker.
const BUS_PROBE_TTL: Duration = Duration::from_secs(5);

impl AppState {
    pub fn new<B: bus::Bus>(
        config: ApiConfig,
        pool: deadpool_postgres::Pool,
        bus: &B,
    ) -> Result<Self, bus::BusError> {
        let producer = bus.producer()?;
        Ok(AppState {
            pool,
            auth: Arc::new(Auth::new(
                &config.jwt_secret,
                config.access_ttl,
                config.refresh_ttl,
            )),
            bus: Arc::new(BusHandle {
                bus: bus.clone(),
                producer,
            }),
            hub: ws::Hub::new(config.ws_queue),
            auth_limiter: Arc::new(RateLimiter::new(
                "auth",
                config.auth_rate,
                config.rate_table_capacity,
            )),
            api_limiter: Arc::new(RateLimiter::new(
                "api",
                config.api_rate,
                config.rate_table_capacity,
            )),
            ws_slots: connection_slots::ConnectionSlots::new(config.ws_connections_per_address),
            config: Arc::new(config),
            started: Instant::now(),
            bus_health: Arc::new(Mutex::new(None)),
            bus_probing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether the broker answered a probe in the last few seconds. One request at a time
    /// probes; the others meanwhile answer the previous result.
    pub async fn bus_connected(&self) -> bool {
        let cached = *self.bus_health.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached.filter(|(at, _)| at.elapsed() < BUS_PROBE_TTL);
        if let Some((_, ok)) = fresh {
            return ok;
        }
        if self.bus_probing.swap(true, Ordering::AcqRel) {
            return cached.is_some_and(|(_, ok)| ok);
        }
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(3), self.bus.probe()).await,
            Ok(Ok(()))
        );
        *self.bus_health.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ok));
        self.bus_probing.store(false, Ordering::Release);
        ok
    }
}

/// Every route with its layers: security headers, CORS, body limit, rate limits, audit.
pub fn router(state: AppState) -> Router {
    let api = routes::router()
        .merge(docs::router())
        .route("/ws", axum::routing::get(ws::upgrade))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit_layer,
        ))
        .with_state(state.clone());
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            state
                .config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    Router::new()
        .merge(api)
        .merge(telemetry::metrics_router())
        .fallback(routes::web::serve)
        .layer(RequestBodyLimitLayer::new(state.config.body_limit))
        .layer(cors)
        .layer(security_header(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"))
        .layer(security_header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(TraceLayer::new_for_http())
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// The client address the rate limit counted a request under, for handlers that limit more
/// (the WebSocket's connections per address).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The client address of a request: the TCP peer, or, when the peer is one of
/// `trusted_proxies`, the address its `X-Forwarded-For` gives (see [`forwarded_client`]).
pub fn client_addr(request: &axum::extract::Request, trusted_proxies: &[ipnet::IpNet]) -> IpAddr {
    client_addr_of(request.extensions(), request.headers(), trusted_proxies)
}

/// [`client_addr`] from a request's extensions and headers (an extractor has only its parts).
pub fn client_addr_of(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted_proxies: &[ipnet::IpNet],
) -> IpAddr {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok());
    forwarded_client(peer, forwarded, trusted_proxies)
}

/// The client behind a chain of proxies. Each proxy appends the address it received the request
/// from, so the list is read from the right: past the peer and every trusted proxy, the first
/// address is the client. Left of that, anything may be forged. A peer that is not trusted is the
/// client whatever the header says; an unreadable entry stops the walk at the last trusted hop.
pub fn forwarded_client<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted_proxies: &[ipnet::IpNet],
) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

async fn rate_limit_layer(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    let limiter = if path.starts_with("/api/auth/") {
        &state.auth_limiter
    } else if path == "/api/health" || path.starts_with("/api/docs") {
        return next.run(request).await;
    } else {
        &state.api_limiter
    };
    let client = client_addr(&request, &state.config.trusted_proxies);
    let crowdsec = path.starts_with("/v1/");
    match limiter.check(client) {
        Ok(()) => {
            let mut request = request;
            request.extensions_mut().insert(ClientAddr(client));
            next.run(request).await
        }
        Err(retry_after) if crowdsec => {
            routes::crowdsec::crowdsec_error(error::ApiError::too_many(retry_after))
        }
        Err(retry_after) => error::ApiError::too_many(retry_after).into_response(),
    }
}

/// Starts what runs beside the handlers: the WebSocket fan-out from the bus, the revocation
/// list follower and the fleet watcher. Abort the handles to stop them.
pub fn spawn_background<B: bus::Bus>(state: &AppState, bus: B) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(ws::fan_out(bus, state.hub.clone())),
        tokio::spawn(auth::follow_revocations(
            state.clone(),
            Duration::from_secs(2),
        )),
        tokio::spawn(routes::agents::watch_fleet(state.clone())),
    ]
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve<B: bus::Bus>(
    state: AppState,
    bus: B,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = spawn_background(&state, bus);
    let result = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for task in background {
        task.abort();
    }
    result
}
