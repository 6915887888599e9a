//! The API's client side, as tests and benches use it: a login, and a WebSocket client of `/ws`
//! that keeps every event with the moment it was read off the socket.

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

/// A WebSocket client of the API's live events. Call [`LiveFeed::connect`] inside a Tokio
/// runtime: the socket is read on a task of it until the feed is dropped.
pub struct LiveFeed {
    incoming: mpsc::Receiver<(Instant, Value)>,
    /// Every event read so far, with when it arrived.
    events: Vec<(Instant, Value)>,
    reader: JoinHandle<()>,
}

impl LiveFeed {
    /// Connects to `/ws` of `api` with `token`, receiving the event `types` (comma-separated)
    /// or, without them, every type.
    pub async fn connect(api: &str, token: &str, types: Option<&str>) -> Result<LiveFeed> {
        let mut url = format!("ws://{api}/ws?token={token}");
        if let Some(types) = types {
            url.push_str(&format!("&types={types}"));
        }
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
        Ok(LiveFeed {
            incoming,
            events: Vec::new(),
            reader,
        })
    }

    /// The first event so far, or arriving within `limit`, that `wanted` accepts, with when it
    /// arrived. None when the socket closed or nothing came in time.
    pub fn find(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        let deadline = Instant::now() + limit;
        let mut searched = 0;
        loop {
            if let Some(found) = self.events[searched..].iter().find(|(_, e)| wanted(e)) {
                return Some(found.clone());
            }
            searched = self.events.len();
            let left = deadline.saturating_duration_since(Instant::now());
            self.events.push(self.incoming.recv_timeout(left).ok()?);
        }
    }

    /// The `type` of every event read so far, in order.
    pub fn types(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|(_, e)| e["type"].as_str())
            .collect()
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
