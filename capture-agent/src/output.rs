//! Where events go. A sink receives every [`SessionEvent`] (and, live, heartbeats); the stdout
//! sink prints JSON lines, and a Kafka publisher is one more implementation of [`EventSink`].

use std::io::Write;

use schemas::{AgentHeartbeat, SessionEvent, SessionEventKind};
use serde::Serialize;

pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives what the agent produces, in order.
pub trait EventSink {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError>;

    fn heartbeat(&mut self, _heartbeat: &AgentHeartbeat) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called at the end of a run and periodically; buffered output goes out.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Collects events in memory (tests, embedding).
impl EventSink for Vec<SessionEvent> {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError> {
        self.push(event.clone());
        Ok(())
    }
}

/// Any closure over events is a sink.
pub struct FnSink<F: FnMut(&SessionEvent)>(pub F);

impl<F: FnMut(&SessionEvent)> EventSink for FnSink<F> {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError> {
        (self.0)(event);
        Ok(())
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

/// One JSON object per line: every event as `{"type":"session_event", ...}`, and at each
/// session's end its summary as a flat `{"type":"session_summary", ...}`. Heartbeats are
/// `{"type":"agent_heartbeat", ...}`.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn line<T: Serialize>(&mut self, kind: &'static str, value: &T) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, &Tagged { kind, inner: value })?;
        self.out.write_all(b"\n")?;
        Ok(())
    }
}

impl<W: Write> EventSink for JsonLines<W> {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError> {
        self.line("session_event", event)?;
        if event.kind == SessionEventKind::Ended {
            self.line("session_summary", &event.summary)?;
        }
        Ok(())
    }

    fn heartbeat(&mut self, heartbeat: &AgentHeartbeat) -> Result<(), SinkError> {
        self.line("agent_heartbeat", heartbeat)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}
