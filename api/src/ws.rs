//! Live events over WebSocket. One tail consumer per API instance reads the bus (its own group,
//! from the end, so every instance sees every event) and turns records into the seed's envelope
//! `{type, timestamp, payload, id}`; the [`Hub`] hands each event to every client's own bounded
//! queue.
//!
//! Back-pressure, not a race: when a client's queue is full the hub waits for it to make room
//! instead of dropping it, so a client that keeps up never loses an event because the host was
//! too busy to schedule its task (a burst of a whole bus batch arrives in microseconds; the
//! client task may run milliseconds later). What a client may cost the others is bounded: it may
//! hold the feed back for at most [`HOLD_BACK_BUDGET`] within [`HOLD_BACK_WINDOW`], and a
//! client over that budget, or whose socket does not take a message within [`SEND_TIMEOUT`], is
//! dropped and counted.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bus::{Bus, Consumer};
use futures::{SinkExt, StreamExt};
use schemas::topics;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::auth::Claims;
use crate::connection_slots::NoSlot;
use crate::error::ApiError;
use crate::{AppState, ClientAddr};

pub const SESSION_STARTED: &str = "vnc_session_started";
pub const THREAT_DETECTED: &str = "threat_detected";
pub const FIREWALL_ACTION: &str = "firewall_action";
pub const SYSTEM_ALERT: &str = "system_alert";
pub const EVENT_TYPES: &[&str] = &[
    SESSION_STARTED,
    THREAT_DETECTED,
    FIREWALL_ACTION,
    SYSTEM_ALERT,
];

/// Longest a client's socket may take to accept one message before the client is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long in all one client may make the feed wait for room in its queue within
/// [`HOLD_BACK_WINDOW`]. A client that reads as fast as events come costs nothing here, however
/// loaded the host (a wait for a task to be scheduled is milliseconds); one that never reads
/// costs this once and is dropped; one that reads slower than the feed runs is dropped once it
/// has held every other client back this long, instead of pacing the feed forever.
const HOLD_BACK_BUDGET: Duration = Duration::from_secs(2);
const HOLD_BACK_WINDOW: Duration = Duration::from_secs(60);
/// How often the server pings an idle client.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a client that authenticates by its first message has to send it.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest first message before authentication: `{"type":"auth","token":...}` with a token of
/// well under 1 KiB. Anything bigger from an unauthenticated peer is refused unread.
const PRE_AUTH_MAX_BYTES: usize = 4 * 1024;
/// Largest message or frame a client may send at all: clients send pings and subscriptions of
/// a few hundred bytes; the library default (64 MiB) would let any peer make the API buffer that.
const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;
/// How often a connected client's token is checked again: past its expiry, revoked, or its user
/// logged out everywhere, disabled or demoted, the socket closes within this period (plus the
/// revocation follow period, 2 s, for a change made on another API instance).
pub const TOKEN_CHECK_EVERY: Duration = Duration::from_secs(5);

/// One event, serialised once for every client.
#[derive(Debug)]
pub struct LiveEvent {
    pub kind: &'static str,
    /// 0 low .. 3 critical, for events that have a severity.
    pub severity: Option<u8>,
    pub text: Utf8Bytes,
}

impl LiveEvent {
    /// The seed's envelope around `payload`.
    pub fn new(kind: &'static str, severity: Option<u8>, payload: serde_json::Value) -> Self {
        let envelope = json!({
            "type": kind,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "payload": payload,
            "id": uuid::Uuid::new_v4().to_string(),
        });
        LiveEvent {
            kind,
            severity,
            text: envelope.to_string().into(),
        }
    }
}

/// The fan-out point: one bounded queue per connected client.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    queue: usize,
    next_id: AtomicU64,
    clients: Mutex<Vec<ClientQueue>>,
}

/// The hub's side of one client.
struct ClientQueue {
    id: u64,
    sender: mpsc::Sender<Arc<LiveEvent>>,
    /// Set when the hub gives up on the client: it fell behind.
    dropped: Arc<AtomicBool>,
    /// How long the feed waited for this client since `window_start`.
    held_back: Duration,
    window_start: Instant,
}

impl ClientQueue {
    /// What is left of this client's hold-back budget now.
    fn budget(&mut self, now: Instant) -> Duration {
        if now.duration_since(self.window_start) >= HOLD_BACK_WINDOW {
            self.window_start = now;
            self.held_back = Duration::ZERO;
        }
        HOLD_BACK_BUDGET.saturating_sub(self.held_back)
    }
}

/// A client's side: its queue, removed from the hub when dropped.
pub struct Subscription {
    id: u64,
    events: mpsc::Receiver<Arc<LiveEvent>>,
    dropped: Arc<AtomicBool>,
    hub: Hub,
}

impl Subscription {
    /// The next event for this client; None once the hub dropped it for falling behind.
    async fn next(&mut self) -> Option<Arc<LiveEvent>> {
        if self.dropped.load(Ordering::Relaxed) {
            return None;
        }
        let event = self.events.recv().await?;
        (!self.dropped.load(Ordering::Relaxed)).then_some(event)
    }

    fn fell_behind(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().retain(|client| client.id != self.id);
    }
}

impl Hub {
    pub fn new(queue: usize) -> Self {
        Hub {
            shared: Arc::new(HubShared {
                queue: queue.max(1),
                next_id: AtomicU64::new(0),
                clients: Mutex::new(Vec::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ClientQueue>> {
        self.shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A new client's queue; it receives every event published from now on.
    pub fn subscribe(&self) -> Subscription {
        let (sender, events) = mpsc::channel(self.shared.queue);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicBool::new(false));
        self.lock().push(ClientQueue {
            id,
            sender,
            dropped: dropped.clone(),
            held_back: Duration::ZERO,
            window_start: Instant::now(),
        });
        Subscription {
            id,
            events,
            dropped,
            hub: self.clone(),
        }
    }

    /// Hands `event` to every client, waiting for those whose queue is full within their
    /// hold-back budget and dropping those over it.
    pub async fn publish(&self, event: LiveEvent) {
        telemetry::counter(
            "api_ws_events_total",
            "Live events fanned out",
            &[("type", event.kind)],
        )
        .inc();
        let event = Arc::new(event);
        let now = Instant::now();
        let mut full = Vec::new();
        self.lock().retain_mut(|client| {
            match client.sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    full.push((client.id, client.sender.clone(), client.budget(now)));
                    true
                }
                // The client went away; its subscription is being dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if full.is_empty() {
            return;
        }
        let waits = full.into_iter().map(|(id, sender, budget)| {
            let event = event.clone();
            async move {
                let started = Instant::now();
                let delivered = matches!(
                    tokio::time::timeout(budget, sender.send(event)).await,
                    Ok(Ok(()))
                );
                (id, delivered, started.elapsed())
            }
        });
        let outcomes = futures::future::join_all(waits).await;
        let mut clients = self.lock();
        for (id, delivered, waited) in outcomes {
            let Some(position) = clients.iter().position(|c| c.id == id) else {
                continue;
            };
            if delivered {
                clients[position].held_back += waited;
            } else {
                // Counted out here, at once; the client's task closes the socket.
                let client = clients.remove(position);
                client.dropped.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Connected clients the hub still serves.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }
}

pub fn severity_rank(severity: &str) -> Option<u8> {
    match severity {
        "low" => Some(0),
        "medium" => Some(1),
        "high" => Some(2),
        "critical" => Some(3),
        _ => None,
    }
}

/// The live event a bus record stands for, if any.
pub fn event_of(record: &bus::Record) -> Option<LiveEvent> {
    let topic = record.topic.as_str();
    if topic == topics::SESSIONS_RAW.name {
        let event: schemas::SessionEvent = schemas::decode(&record.payload).ok()?;
        (event.kind == schemas::SessionEventKind::Started).then(|| {
            let s = &event.summary;
            LiveEvent::new(
                SESSION_STARTED,
                None,
                json!({
                    "session_id": s.session_id, "agent_id": s.agent_id,
                    "client_ip": s.client_ip, "client_port": s.client_port,
                    "server_ip": s.server_ip, "server_port": s.server_port,
                    "start_time": s.start_time, "client_version": s.client_version,
                    "server_version": s.server_version,
                }),
            )
        })
    } else if topic == topics::THREATS.name {
        let threat: schemas::Threat = schemas::decode(&record.payload).ok()?;
        let severity = severity_rank(threat.severity.as_str());
        Some(LiveEvent::new(
            THREAT_DETECTED,
            severity,
            serde_json::to_value(&threat).ok()?,
        ))
    } else if topic == topics::DECISIONS.name {
        let decision: schemas::Decision = schemas::decode(&record.payload).ok()?;
        Some(LiveEvent::new(
            FIREWALL_ACTION,
            None,
            serde_json::to_value(&decision).ok()?,
        ))
    } else if topic == topics::DEAD_LETTERS.name {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        Some(LiveEvent::new(
            SYSTEM_ALERT,
            Some(1),
            json!({
                "alert": "pipeline_dead_letter",
                "reason": header("dlq.reason"),
                "source_topic": header("dlq.source_topic"),
            }),
        ))
    } else {
        None
    }
}

/// Reads the bus from its end and publishes every live event until the task is aborted;
/// reconnects after bus errors.
pub async fn fan_out<B: Bus>(bus: B, hub: Hub) {
    let names = [
        topics::SESSIONS_RAW.name,
        topics::THREATS.name,
        topics::DECISIONS.name,
        topics::DEAD_LETTERS.name,
    ];
    loop {
        let mut consumer = match bus.tail_consumer(&names) {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the live-event consumer; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        loop {
            match consumer.next_batch(500, Duration::from_millis(200)).await {
                Ok(records) => {
                    for record in &records {
                        match event_of(record) {
                            Some(event) => hub.publish(event).await,
                            None if record.topic != topics::SESSIONS_RAW.name => {
                                telemetry::counter(
                                    "api_ws_undecodable_total",
                                    "Bus records the live feed could not decode",
                                    &[],
                                )
                                .inc();
                            }
                            None => {}
                        }
                    }
                    // Read and handed on: the in-process bus may let these records go.
                    consumer.store(&records);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live-event consumer failed; restarting it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// `/ws` query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct WsParams {
    /// Access token (alternative to the `Sec-WebSocket-Protocol: bearer, <token>` header or a
    /// first message `{"type":"auth","token":"..."}`).
    pub token: Option<String>,
    /// Comma-separated event types to receive (default: all).
    pub types: Option<String>,
    /// Least severity of events that carry one (low, medium, high, critical).
    pub min_severity: Option<String>,
}

/// What a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    types: BTreeSet<&'static str>,
    min_severity: u8,
}

impl Filter {
    fn parse(types: Option<&str>, min_severity: Option<&str>) -> Result<Filter, ApiError> {
        let types = match types {
            None => EVENT_TYPES.iter().copied().collect(),
            Some(list) => list
                .split(',')
                .map(|t| {
                    EVENT_TYPES
                        .iter()
                        .copied()
                        .find(|known| *known == t.trim())
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "types",
                                format!("expected event types among {}", EVENT_TYPES.join(", ")),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let min_severity = match min_severity {
            None => 0,
            Some(s) => severity_rank(s).ok_or_else(|| {
                ApiError::invalid("min_severity", "expected low, medium, high or critical")
            })?,
        };
        Ok(Filter {
            types,
            min_severity,
        })
    }

    fn admits(&self, event: &LiveEvent) -> bool {
        self.types.contains(event.kind) && event.severity.is_none_or(|s| s >= self.min_severity)
    }
}

/// Upgrades `/ws`. The token comes from `?token=`, from the subprotocol header (`bearer,
/// <token>`; the server answers `bearer`), or from the first message.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let filter = match Filter::parse(params.types.as_deref(), params.min_severity.as_deref()) {
        Ok(filter) => filter,
        Err(e) => return e.into_response(),
    };
    let client = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(c)| c.0);
    let slot = match state.ws_slots.take(client) {
        Ok(slot) => slot,
        Err(NoSlot::AddressFull) => {
            return ApiError::too_many_connections(
                "this address has as many WebSockets open as it may",
            )
            .into_response()
        }
        Err(NoSlot::ApiFull) => {
            return ApiError::too_many_connections("the API has as many WebSockets open as it may")
                .into_response()
        }
    };
    let protocol_token = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.split(',').map(str::trim);
            (parts.next() == Some("bearer"))
                .then(|| parts.next().map(str::to_string))
                .flatten()
        });
    let claims = match params.token.or(protocol_token.clone()) {
        Some(token) => match state.auth.verify(&token) {
            Ok(claims) => Some(claims),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let upgrade = upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES);
    let upgrade = if protocol_token.is_some() {
        upgrade.protocols(["bearer"])
    } else {
        upgrade
    };
    upgrade.on_upgrade(move |socket| async move {
        serve_client(state, socket, claims, filter).await;
        drop(slot);
    })
}

async fn close(sink: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(
        Duration::from_millis(100),
        sink.send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        }))),
    )
    .await;
}

async fn serve_client(
    state: AppState,
    mut socket: WebSocket,
    claims: Option<Claims>,
    mut filter: Filter,
) {
    let claims = match claims {
        Some(claims) => claims,
        None => match first_message_auth(&state, &mut socket).await {
            Some(claims) => claims,
            None => {
                close(&mut socket, 4401, "unauthorized").await;
                return;
            }
        },
    };
    // Subscribe before anything else so no event between now and the loop is missed.
    let mut events = state.hub.subscribe();
    let connected = telemetry::gauge("api_ws_clients", "Connected WebSocket clients", &[]);
    connected.add(1);
    tracing::debug!(user = %claims.sub, "websocket client connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut token_check = tokio::time::interval(TOKEN_CHECK_EVERY);
    token_check.tick().await;
    let outcome = loop {
        tokio::select! {
            received = events.next() => match received {
                Some(event) => {
                    if !filter.admits(&event) {
                        continue;
                    }
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(event.text.clone()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break "closed",
                        Err(_) => break "slow",
                    }
                }
                None if events.fell_behind() => break "slow",
                None => break "shutdown",
            },
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = handle_client_message(&text, &mut filter) {
                        if sink.send(Message::Text(reply.into())).await.is_err() {
                            break "closed";
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "closed",
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break "closed";
                }
            }
            _ = token_check.tick() => {
                if let Err(refusal) = state.auth.still_valid(&claims) {
                    break refusal.as_str();
                }
            }
        }
    };
    // The client is served no more: counted out before the close frame, which may wait.
    drop(events);
    connected.add(-1);
    match outcome {
        "slow" => {
            tracing::info!(user = %claims.sub, "dropping a websocket client that fell behind");
            telemetry::counter(
                "api_ws_clients_dropped_total",
                "WebSocket clients dropped for falling behind",
                &[],
            )
            .inc();
            close(&mut sink, 4008, "too slow").await;
        }
        "expired" | "revoked" | "superseded" => {
            tracing::info!(user = %claims.sub, reason = outcome, "closing a websocket whose token is no longer good");
            telemetry::counter(
                "vncguard_api_ws_closed_for_token_total",
                "WebSockets closed because their token expired, was revoked or was superseded",
                &[("reason", outcome)],
            )
            .inc();
            close(
                &mut sink,
                4401,
                match outcome {
                    "expired" => "token expired",
                    "revoked" => "token revoked",
                    _ => "token superseded",
                },
            )
            .await;
        }
        _ => {}
    }
}

async fn first_message_auth(state: &AppState, socket: &mut WebSocket) -> Option<Claims> {
    let message = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, socket.recv())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = message else {
        return None;
    };
    if text.len() > PRE_AUTH_MAX_BYTES {
        telemetry::counter(
            "vncguard_api_ws_refused_total",
            "WebSocket connections refused for want of a slot",
            &[("reason", "pre_auth_too_big")],
        )
        .inc();
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    if value.get("type")?.as_str()? != "auth" {
        return None;
    }
    state.auth.verify(value.get("token")?.as_str()?).ok()
}

/// Answers `{"type":"ping"}` with a pong and applies `{"type":"subscribe","types":[..],
/// "min_severity":".."}`; returns the reply to send.
fn handle_client_message(text: &str, filter: &mut Filter) -> Option<String> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => {
            return Some(json!({"type": "error", "message": "expected a JSON message"}).to_string())
        }
    };
    match value.get("type").and_then(|t| t.as_str()) {
        Some("ping") => Some(json!({"type": "pong", "timestamp": chrono::Utc::now()}).to_string()),
        Some("subscribe") => {
            let types = value.get("types").and_then(|t| t.as_array()).map(|list| {
                list.iter()
                    .filter_map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let min = value.get("min_severity").and_then(|s| s.as_str());
            match Filter::parse(types.as_deref(), min) {
                Ok(new) => {
                    *filter = new;
                    Some(json!({"type": "subscribed", "types": filter.types, "min_severity": filter.min_severity}).to_string())
                }
                Err(e) => Some(
                    json!({"type": "error", "message": e.message, "field": e.field}).to_string(),
                ),
            }
        }
        _ => Some(json!({"type": "error", "message": "unknown message type"}).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_types_and_severities() {
        let filter = Filter::parse(Some("threat_detected,system_alert"), Some("high")).unwrap();
        assert!(filter.admits(&LiveEvent::new(THREAT_DETECTED, Some(3), json!({}))));
        assert!(!filter.admits(&LiveEvent::new(THREAT_DETECTED, Some(1), json!({}))));
        assert!(!filter.admits(&LiveEvent::new(FIREWALL_ACTION, None, json!({}))));
        assert_eq!(
            Filter::parse(Some("nope"), None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("types")
        );
    }

    #[test]
    fn clients_can_ping_and_resubscribe() {
        let mut filter = Filter::parse(None, None).unwrap();
        assert!(handle_client_message(r#"{"type":"ping"}"#, &mut filter)
            .unwrap()
            .contains("pong"));
        handle_client_message(
            r#"{"type":"subscribe","types":["firewall_action"]}"#,
            &mut filter,
        );
        assert_eq!(filter.types.len(), 1);
        assert!(handle_client_message("nonsense", &mut filter)
            .unwrap()
            .contains("error"));
    }

    fn event(n: usize) -> LiveEvent {
        LiveEvent::new(FIREWALL_ACTION, None, json!({"n": n}))
    }

    /// A burst many times the queue, published without a pause, while the reading task shares
    /// one thread with the publisher: the reader gets every event and is never dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_reads_gets_every_event_of_a_burst() {
        let hub = Hub::new(4);
        let mut subscription = hub.subscribe();
        let reader = tokio::spawn(async move {
            let mut received = 0;
            while received < 1000 {
                let Some(event) = subscription.next().await else {
                    break;
                };
                let value: serde_json::Value = serde_json::from_str(&event.text).unwrap();
                assert_eq!(value["payload"]["n"], received);
                received += 1;
            }
            (received, subscription.fell_behind())
        });
        for n in 0..1000 {
            hub.publish(event(n)).await;
        }
        assert_eq!(reader.await.unwrap(), (1000, false));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_never_reads_is_dropped_after_its_budget() {
        let hub = Hub::new(4);
        let idle = hub.subscribe();
        let started = Instant::now();
        for n in 0..10 {
            hub.publish(event(n)).await;
        }
        let waited = started.elapsed();
        assert!(idle.fell_behind());
        assert_eq!(hub.clients(), 0, "counted out when dropped");
        assert!(
            waited >= HOLD_BACK_BUDGET && waited < HOLD_BACK_BUDGET * 3,
            "the feed waited {waited:?} for it"
        );
    }

    #[test]
    fn envelopes_have_the_seed_fields() {
        let event = LiveEvent::new(SYSTEM_ALERT, None, json!({"a": 1}));
        let value: serde_json::Value = serde_json::from_str(&event.text).unwrap();
        for field in ["type", "timestamp", "payload", "id"] {
            assert!(value.get(field).is_some(), "{field}");
        }
    }
}
