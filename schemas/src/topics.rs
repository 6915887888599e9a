//! Every topic, its key and its retention. Binaries create missing topics at start from this
//! list with the partition count they are configured with.

/// How a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Delete records older than this many hours.
    Hours(u32),
    /// Keep the newest record per key forever (log compaction).
    Compacted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    /// What the record key is, so every record of one entity lands on one partition.
    pub key: &'static str,
    pub retention: Retention,
}

impl Topic {
    /// Broker configuration for creating the topic.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        match self.retention {
            Retention::Hours(hours) => vec![
                ("cleanup.policy", "delete".to_string()),
                ("retention.ms", (u64::from(hours) * 3_600_000).to_string()),
            ],
            Retention::Compacted => vec![("cleanup.policy", "compact".to_string())],
        }
    }
}

/// Raw session events from capture agents (`SessionEvent`).
pub const SESSIONS_RAW: Topic = Topic {
    name: "vnc.sessions.raw",
    key: "client IP",
    retention: Retention::Hours(7 * 24),
};
/// Session events with geo, context and features (`EnrichedSession`).
pub const SESSIONS_ENRICHED: Topic = Topic {
    name: "vnc.sessions.enriched",
    key: "client IP",
    retention: Retention::Hours(30 * 24),
};
/// Scored sessions (`ScoredSession`).
pub const SESSIONS_SCORED: Topic = Topic {
    name: "vnc.sessions.scored",
    key: "client IP",
    retention: Retention::Hours(7 * 24),
};
/// Threats (`Threat`).
pub const THREATS: Topic = Topic {
    name: "vnc.threats",
    key: "source IP",
    retention: Retention::Hours(30 * 24),
};
/// Response decisions (`Decision`); compacted so an agent restoring its bans reads the latest
/// state of every decision.
pub const DECISIONS: Topic = Topic {
    name: "vnc.decisions",
    key: "decision id",
    retention: Retention::Compacted,
};
/// Agent heartbeats (`AgentHeartbeat`).
pub const AGENT_HEARTBEATS: Topic = Topic {
    name: "vnc.agents.heartbeat",
    key: "agent id",
    retention: Retention::Hours(24),
};
/// Trained models (`ModelAnnouncement`); compacted so a starting scorer finds the newest model.
pub const MODELS: Topic = Topic {
    name: "vnc.models",
    key: "model name",
    retention: Retention::Compacted,
};
/// Records no stage could decode, with headers naming the reason and origin.
pub const DEAD_LETTERS: Topic = Topic {
    name: "vnc.dlq",
    key: "original key",
    retention: Retention::Hours(14 * 24),
};

pub const ALL: &[Topic] = &[
    SESSIONS_RAW,
    SESSIONS_ENRICHED,
    SESSIONS_SCORED,
    THREATS,
    DECISIONS,
    AGENT_HEARTBEATS,
    MODELS,
    DEAD_LETTERS,
];

/// Looks a topic up by name.
pub fn by_name(name: &str) -> Option<Topic> {
    ALL.iter().copied().find(|t| t.name == name)
}
