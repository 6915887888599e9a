//! Acceptance: a WebSocket lives no longer than the right to it. An expired, revoked or
//! superseded (user demoted) token's socket is closed within the token check period; an address
//! holds at most its share of sockets; an unauthenticated peer's first message is size-capped.

mod support;

use std::time::Duration;

use api::auth::Role;
use api::ws::TOKEN_CHECK_EVERY;
use bus::memory::MemoryBus;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(api: &support::TestApi, token: &str) -> Socket {
    tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", api.addr))
        .await
        .expect("the WebSocket opens")
        .0
}

/// Reads until the server closes; the close frame's code and reason, and how long it took.
async fn closed_within(socket: &mut Socket, limit: Duration) -> (u16, String, Duration) {
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("the socket was still open after {limit:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    started.elapsed(),
                )
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                panic!("closed without a close frame")
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The check period, and slack for a busy two-core machine.
fn check_limit() -> Duration {
    TOKEN_CHECK_EVERY * 2 + Duration::from_secs(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tokens_socket_is_closed() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "viewer", "uid": 1, "role": "viewer", "jti": "ws-expiring",
        "iat": now, "exp": now + 2});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(support::SECRET),
    )
    .unwrap();
    let mut socket = open(&api, &token).await;
    let (code, reason, _) =
        closed_within(&mut socket, check_limit() + Duration::from_secs(2)).await;
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tokens_socket_is_closed() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (_, pair) = api.login("analyst", support::PASSWORD).await;
    let token = pair["access_token"].as_str().unwrap();
    let mut socket = open(&api, token).await;
    let (status, _) = api
        .call_with_token(Some(token), "POST", "/api/auth/logout", None)
        .await;
    assert_eq!(status, 200);
    let (code, reason, took) = closed_within(&mut socket, check_limit()).await;
    assert_eq!((code, reason.as_str()), (4401, "token revoked"));
    assert!(took <= check_limit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_users_socket_is_closed_and_others_stay() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let mut analyst = open(&api, &api.tokens[&Role::Analyst]).await;
    let mut viewer = open(&api, &api.tokens[&Role::Viewer]).await;
    // The analyst is user 2.
    api.set_role(2, Role::Viewer).await;
    let (code, reason, _) = closed_within(&mut analyst, check_limit()).await;
    assert_eq!((code, reason.as_str()), (4401, "token superseded"));
    // The viewer's socket answers a ping after the analyst's closed: it was left alone.
    assert_answers_ping(&mut viewer).await;
}

async fn assert_answers_ping(socket: &mut Socket) {
    socket
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the socket answers")
        .unwrap()
        .unwrap();
    assert!(reply.to_text().unwrap().contains("pong"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_holds_at_most_its_share_of_sockets() {
    let mut config = support::config();
    config.ws_connections_per_address = 2;
    let api = support::start(MemoryBus::new(100), config).await;
    let token = api.tokens[&Role::Viewer].clone();
    let first = open(&api, &token).await;
    let _second = open(&api, &token).await;
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", api.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("a third socket from one address: {other:?}"),
    }
    // Closing one frees its slot.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let attempt =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", api.addr)).await;
        if attempt.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_first_message_is_refused_before_authentication() {
    let api = support::start(MemoryBus::new(100), support::config()).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", api.addr))
        .await
        .unwrap();
    let huge = json!({"type": "auth", "token": "x".repeat(8 * 1024)}).to_string();
    socket.send(Message::Text(huge.into())).await.unwrap();
    let (code, reason, _) = closed_within(&mut socket, Duration::from_secs(15)).await;
    assert_eq!((code, reason.as_str()), (4401, "unauthorized"));
    // A well-formed first message still authenticates.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", api.addr))
        .await
        .unwrap();
    let auth = json!({"type": "auth", "token": api.tokens[&Role::Viewer]}).to_string();
    socket.send(Message::Text(auth.into())).await.unwrap();
    assert_answers_ping(&mut socket).await;
}
