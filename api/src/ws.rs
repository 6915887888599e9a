//! Live events over WebSocket. One tail consumer per API instance reads the bus (its own group,
//! from the end, so every instance sees every event) and turns records into the seed's envelope
//! `{type, timestamp, payload, id}`; a `tokio::sync::broadcast` channel fans them out. Each
//! client reads the channel through its own bounded window: a client that falls `ws_queue`
//! events behind, or whose socket does not take a message within [`SEND_TIMEOUT`], is dropped
//! and counted, and nobody else waits for it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bus::{Bus, Consumer};
use futures::{SinkExt, StreamExt};
use schemas::topics;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::Claims;
use crate::error::ApiError;
use crate::AppState;

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
/// How often the server pings an idle client.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a client that authenticates by its first message has to send it.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The fan-out point: the sender side and the count of connected clients.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    clients: Arc<AtomicUsize>,
}

impl Hub {
    pub fn new(queue: usize) -> Self {
        let (sender, _) = broadcast::channel(queue.max(1));
        Hub {
            sender,
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn publish(&self, event: LiveEvent) {
        telemetry::counter(
            "api_ws_events_total",
            "Live events fanned out",
            &[("type", event.kind)],
        )
        .inc();
        // No receiver is not an error: nobody is watching.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
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
                            Some(event) => hub.publish(event),
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
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let filter = match Filter::parse(params.types.as_deref(), params.min_severity.as_deref()) {
        Ok(filter) => filter,
        Err(e) => return e.into_response(),
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
    let upgrade = if protocol_token.is_some() {
        upgrade.protocols(["bearer"])
    } else {
        upgrade
    };
    upgrade.on_upgrade(move |socket| serve_client(state, socket, claims, filter))
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
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 4401,
                        reason: "unauthorized".into(),
                    })))
                    .await;
                return;
            }
        },
    };
    // Subscribe before anything else so no event between now and the loop is missed.
    let mut events = state.hub.sender.subscribe();
    state.hub.clients.fetch_add(1, Ordering::Relaxed);
    let connected = telemetry::gauge("api_ws_clients", "Connected WebSocket clients", &[]);
    connected.add(1);
    tracing::debug!(user = %claims.sub, "websocket client connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let outcome = loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    if !filter.admits(&event) {
                        continue;
                    }
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(event.text.clone()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break "closed",
                        Err(_) => break "slow",
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break "slow",
                Err(broadcast::error::RecvError::Closed) => break "shutdown",
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
        }
    };
    // The client is served no more: counted out before the close frame, which may wait.
    state.hub.clients.fetch_sub(1, Ordering::Relaxed);
    connected.add(-1);
    if outcome == "slow" {
        tracing::info!(user = %claims.sub, "dropping a websocket client that fell behind");
        telemetry::counter(
            "api_ws_clients_dropped_total",
            "WebSocket clients dropped for falling behind",
            &[],
        )
        .inc();
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            sink.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 4008,
                reason: "too slow".into(),
            }))),
        )
        .await;
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

    #[test]
    fn envelopes_have_the_seed_fields() {
        let event = LiveEvent::new(SYSTEM_ALERT, None, json!({"a": 1}));
        let value: serde_json::Value = serde_json::from_str(&event.text).unwrap();
        for field in ["type", "timestamp", "payload", "id"] {
            assert!(value.get(field).is_some(), "{field}");
        }
    }
}
