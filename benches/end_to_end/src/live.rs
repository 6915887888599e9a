//! The API's client side: a login, and a WebSocket client of `/ws` that notes when each event
//! arrived.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// An access token for `username` from `POST /api/auth/login` of the API at `api` (host:port).
pub async fn login(api: &str, username: &str, password: &str) -> Result<String> {
    let response = reqwest::Client::new()
        .post(format!("http://{api}/api/auth/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("logging in to the API at {api}"))?;
    let body: Value = response
        .error_for_status()
        .context("login refused")?
        .json()
        .await
        .context("login answer")?;
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("the login answer has no access_token")
}

/// A WebSocket client of the API's live events; each event is kept with the moment its message
/// was read off the socket.
pub struct LiveFeed {
    incoming: mpsc::Receiver<(Instant, Value)>,
    reader: JoinHandle<()>,
}

impl LiveFeed {
    /// Connects to `/ws` of `api` with `token`, receiving the event `types` (comma-separated).
    pub async fn connect(api: &str, token: &str, types: &str) -> Result<LiveFeed> {
        let url = format!("ws://{api}/ws?token={token}&types={types}");
        let (mut socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .context("the WebSocket did not connect within 10 s")?
        .context("connecting the WebSocket")?;
        let (sender, incoming) = mpsc::channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let arrived = Instant::now();
                if let Message::Text(text) = message {
                    if let Ok(event) = serde_json::from_str::<Value>(&text) {
                        if sender.send((arrived, event)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(LiveFeed { incoming, reader })
    }

    /// When the first event that `wanted` accepts arrived, waiting up to `limit`; the events
    /// before it are passed over. None when the socket closed or nothing came in time.
    pub fn arrival(&self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (arrived, event) = self.incoming.recv_timeout(left).ok()?;
            if wanted(&event) {
                return Some(arrived);
            }
        }
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
