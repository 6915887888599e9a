//! Records checked and converted into table rows, and the multi-row statement that writes them:
//! each column travels as one array parameter and is read back with `unnest`, so a batch of any
//! size is one statement with a fixed, cacheable text.

use std::net::IpAddr;

use schemas::{
    AgentHeartbeat, Decision, DecisionScope, ModelAnnouncement, ScoredSession, SessionEvent,
    SessionEventKind, Threat,
};
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// Largest value of a `NUMERIC(5,2)` column.
const NUMERIC_5_2_MAX: f64 = 999.99;
const BYTES_PER_MEGABYTE: f64 = 1_048_576.0;

/// The columns of one multi-row statement.
pub(crate) struct Unnest<'a> {
    names: Vec<&'static str>,
    types: Vec<&'static str>,
    selects: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

impl<'a> Unnest<'a> {
    pub(crate) fn new() -> Self {
        Unnest {
            names: Vec::new(),
            types: Vec::new(),
            selects: Vec::new(),
            params: Vec::new(),
        }
    }

    /// A column whose values have the Postgres type `sql_type`.
    pub(crate) fn column<T: ToSql + Sync + Send + 'a>(
        &mut self,
        name: &'static str,
        sql_type: &'static str,
        values: Vec<T>,
    ) {
        self.column_cast(name, sql_type, None, values);
    }

    /// A column passed as `sql_type` and cast to `cast` (array literals, network forms).
    pub(crate) fn column_cast<T: ToSql + Sync + Send + 'a>(
        &mut self,
        name: &'static str,
        sql_type: &'static str,
        cast: Option<&'static str>,
        values: Vec<T>,
    ) {
        self.names.push(name);
        self.types.push(sql_type);
        self.selects.push(match cast {
            Some(cast) => format!("u.{name}::{cast}"),
            None => format!("u.{name}"),
        });
        self.params.push(Box::new(values));
    }

    pub(crate) fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// `INSERT INTO table AS t (columns) SELECT … FROM unnest($1::type[], …) AS u(columns)`.
    pub(crate) fn insert_into(&self, table: &str) -> String {
        let arrays: Vec<String> = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}[]", i + 1))
            .collect();
        format!(
            "INSERT INTO {table} AS t ({names}) SELECT {selects} FROM unnest({arrays}) AS u({names})",
            names = self.names.join(", "),
            selects = self.selects.join(", "),
            arrays = arrays.join(", "),
        )
    }

    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A record ready for its table.
pub(crate) enum Row<'a> {
    Session(SessionRow<'a>),
    Scored(ScoredRow<'a>),
    Threat(ThreatRow<'a>),
    Decision(DecisionRow<'a>),
    Heartbeat(HeartbeatRow<'a>),
    Model(ModelRow<'a>),
}

/// A raw session event as a `vnc_sessions` row.
pub(crate) struct SessionRow<'a> {
    pub event: &'a SessionEvent,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
    pub screenshots_count: i32,
    pub clipboard_operations: i32,
    pub file_operations: i32,
}

impl<'a> SessionRow<'a> {
    pub(crate) fn new(event: &'a SessionEvent) -> Result<Self, String> {
        let s = &event.summary;
        if s.session_id.is_empty() {
            return Err("session event without a session id".into());
        }
        Ok(SessionRow {
            event,
            client_ip: parse_ip("client_ip", &s.client_ip)?,
            server_ip: parse_ip("server_ip", &s.server_ip)?,
            screenshots_count: to_integer("framebuffer_updates", s.framebuffer_updates)?,
            clipboard_operations: to_integer(
                "cut text count",
                s.client_cut_text_count
                    .saturating_add(s.server_cut_text_count),
            )?,
            file_operations: to_integer("file_transfer_messages", s.file_transfer_messages)?,
        })
    }

    pub(crate) fn id(&self) -> &'a str {
        &self.event.summary.session_id
    }

    /// Order of the session's events: an ended event outranks every other, then the sequence.
    pub(crate) fn rank(&self) -> (bool, i64) {
        (self.event.kind == SessionEventKind::Ended, self.event.seq)
    }

    fn status(&self) -> &'static str {
        if self.event.kind == SessionEventKind::Ended || self.event.summary.end_time.is_some() {
            "terminated"
        } else {
            "active"
        }
    }
}

/// Session columns every session statement writes, from the raw event.
pub(crate) fn session_columns<'a>(unnest: &mut Unnest<'a>, rows: &[&SessionRow<'a>]) {
    let summary = |f: fn(&schemas::SessionSummary) -> i64| -> Vec<i64> {
        rows.iter().map(|r| f(&r.event.summary)).collect()
    };
    let text = |f: fn(&'a schemas::SessionSummary) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        rows.iter().map(|r| f(&r.event.summary)).collect()
    };
    unnest.column("id", "text", rows.iter().map(|r| r.id()).collect());
    unnest.column(
        "agent_id",
        "text",
        rows.iter()
            .map(|r| r.event.summary.agent_id.as_str())
            .collect(),
    );
    unnest.column(
        "client_ip",
        "inet",
        rows.iter().map(|r| r.client_ip).collect(),
    );
    unnest.column(
        "client_port",
        "int4",
        rows.iter().map(|r| r.event.summary.client_port).collect(),
    );
    unnest.column(
        "server_ip",
        "inet",
        rows.iter().map(|r| r.server_ip).collect(),
    );
    unnest.column(
        "server_port",
        "int4",
        rows.iter().map(|r| r.event.summary.server_port).collect(),
    );
    unnest.column(
        "start_time",
        "timestamptz",
        rows.iter().map(|r| r.event.summary.start_time).collect(),
    );
    unnest.column(
        "end_time",
        "timestamptz",
        rows.iter().map(|r| r.event.summary.end_time).collect(),
    );
    unnest.column("status", "text", rows.iter().map(|r| r.status()).collect());
    unnest.column(
        "data_transferred",
        "float8",
        rows.iter()
            .map(|r| {
                let s = &r.event.summary;
                (s.bytes_c2s.saturating_add(s.bytes_s2c)) as f64 / BYTES_PER_MEGABYTE
            })
            .collect::<Vec<f64>>(),
    );
    unnest.column("packets_sent", "int8", summary(|s| s.packets_s2c));
    unnest.column("packets_received", "int8", summary(|s| s.packets_c2s));
    unnest.column(
        "screenshots_count",
        "int4",
        rows.iter().map(|r| r.screenshots_count).collect(),
    );
    unnest.column(
        "clipboard_operations",
        "int4",
        rows.iter().map(|r| r.clipboard_operations).collect(),
    );
    unnest.column(
        "file_operations",
        "int4",
        rows.iter().map(|r| r.file_operations).collect(),
    );
    unnest.column(
        "auth_method",
        "text",
        rows.iter()
            .map(|r| r.event.summary.security_type.map(security_type_name))
            .collect(),
    );
    unnest.column("user_agent", "text", text(|s| s.client_version.as_deref()));
    unnest.column(
        "client_version",
        "text",
        text(|s| s.client_version.as_deref()),
    );
    unnest.column(
        "server_version",
        "text",
        text(|s| s.server_version.as_deref()),
    );
    unnest.column_cast(
        "security_types_offered",
        "text",
        Some("int4[]"),
        rows.iter()
            .map(|r| integer_array_literal(&r.event.summary.security_types_offered))
            .collect(),
    );
    unnest.column(
        "security_type",
        "int4",
        rows.iter().map(|r| r.event.summary.security_type).collect(),
    );
    unnest.column(
        "auth_result",
        "text",
        rows.iter()
            .map(|r| r.event.summary.auth_result.as_str())
            .collect(),
    );
    unnest.column(
        "failure_reason",
        "text",
        text(|s| s.failure_reason.as_deref()),
    );
    unnest.column(
        "vnc_auth_challenge",
        "bool",
        rows.iter()
            .map(|r| r.event.summary.vnc_auth_challenge)
            .collect(),
    );
    unnest.column(
        "shared_flag",
        "bool",
        rows.iter().map(|r| r.event.summary.shared_flag).collect(),
    );
    unnest.column(
        "width",
        "int4",
        rows.iter().map(|r| r.event.summary.width).collect(),
    );
    unnest.column(
        "height",
        "int4",
        rows.iter().map(|r| r.event.summary.height).collect(),
    );
    unnest.column("pixel_format", "text", text(|s| s.pixel_format.as_deref()));
    unnest.column("desktop_name", "text", text(|s| s.desktop_name.as_deref()));
    unnest.column(
        "encrypted",
        "bool",
        rows.iter().map(|r| r.event.summary.encrypted).collect(),
    );
    unnest.column(
        "partial",
        "bool",
        rows.iter().map(|r| r.event.summary.partial).collect(),
    );
    unnest.column(
        "desynced",
        "bool",
        rows.iter().map(|r| r.event.summary.desynced).collect(),
    );
    unnest.column("gap_bytes", "int8", summary(|s| s.gap_bytes));
    unnest.column("bytes_c2s", "int8", summary(|s| s.bytes_c2s));
    unnest.column("bytes_s2c", "int8", summary(|s| s.bytes_s2c));
    unnest.column("packets_c2s", "int8", summary(|s| s.packets_c2s));
    unnest.column("packets_s2c", "int8", summary(|s| s.packets_s2c));
    unnest.column("key_events", "int8", summary(|s| s.key_events));
    unnest.column("pointer_events", "int8", summary(|s| s.pointer_events));
    unnest.column(
        "client_cut_text_count",
        "int8",
        summary(|s| s.client_cut_text_count),
    );
    unnest.column(
        "client_cut_text_bytes",
        "int8",
        summary(|s| s.client_cut_text_bytes),
    );
    unnest.column(
        "server_cut_text_count",
        "int8",
        summary(|s| s.server_cut_text_count),
    );
    unnest.column(
        "server_cut_text_bytes",
        "int8",
        summary(|s| s.server_cut_text_bytes),
    );
    unnest.column(
        "clipboard_sha256",
        "text",
        text(|s| s.clipboard_sha256.as_deref()),
    );
    unnest.column(
        "framebuffer_updates",
        "int8",
        summary(|s| s.framebuffer_updates),
    );
    unnest.column(
        "framebuffer_update_requests",
        "int8",
        summary(|s| s.framebuffer_update_requests),
    );
    unnest.column(
        "file_transfer_messages",
        "int8",
        summary(|s| s.file_transfer_messages),
    );
    unnest.column("bell_count", "int8", summary(|s| s.bell_count));
    unnest.column_cast(
        "encodings",
        "text",
        Some("int4[]"),
        rows.iter()
            .map(|r| integer_array_literal(&r.event.summary.encodings))
            .collect(),
    );
    unnest.column("parse_errors", "int8", summary(|s| s.parse_errors));
    unnest.column("end_reason", "text", text(|s| s.end_reason.as_deref()));
    unnest.column(
        "last_event_id",
        "text",
        rows.iter().map(|r| r.event.event_id.as_str()).collect(),
    );
    unnest.column(
        "last_event_seq",
        "int8",
        rows.iter().map(|r| r.rank().1).collect(),
    );
    unnest.column(
        "last_event_ended",
        "bool",
        rows.iter().map(|r| r.rank().0).collect(),
    );
}

/// A scored session: its raw event's columns plus the risk, geo and feature columns.
pub(crate) struct ScoredRow<'a> {
    pub session: SessionRow<'a>,
    pub scored: &'a ScoredSession,
    pub components: Value,
    pub reasons: Value,
    pub features: Value,
}

impl<'a> ScoredRow<'a> {
    pub(crate) fn new(scored: &'a ScoredSession) -> Result<Self, String> {
        check_numeric_5_2("risk_score", scored.risk_score)?;
        check_numeric_5_2("anomaly_score", scored.anomaly_score)?;
        Ok(ScoredRow {
            session: SessionRow::new(&scored.enriched.event)?,
            scored,
            components: to_json(&scored.components)?,
            reasons: to_json(&scored.reasons)?,
            features: to_json(&scored.enriched.features)?,
        })
    }

    /// Order of the scores of one session: the event scored, then when it was scored (a
    /// rescoring of the same event by a newer model replaces the older score).
    pub(crate) fn rank(&self) -> ((bool, i64), chrono::DateTime<chrono::Utc>) {
        (self.session.rank(), self.scored.scored_at)
    }
}

/// Columns only a scored session writes.
pub(crate) fn scored_columns<'a>(unnest: &mut Unnest<'a>, rows: &[&'a ScoredRow<'a>]) {
    let geo = |f: fn(&'a schemas::GeoInfo) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        rows.iter()
            .map(|r| f(&r.scored.enriched.client_geo))
            .collect()
    };
    unnest.column(
        "risk_score",
        "float8",
        rows.iter().map(|r| r.scored.risk_score).collect(),
    );
    unnest.column(
        "anomaly_score",
        "float8",
        rows.iter().map(|r| r.scored.anomaly_score).collect(),
    );
    unnest.column(
        "risk_components",
        "jsonb",
        rows.iter().map(|r| &r.components).collect(),
    );
    unnest.column(
        "risk_reasons",
        "jsonb",
        rows.iter().map(|r| &r.reasons).collect(),
    );
    unnest.column(
        "model_version",
        "text",
        rows.iter()
            .map(|r| r.scored.model_version.as_str())
            .collect(),
    );
    unnest.column(
        "scored_at",
        "timestamptz",
        rows.iter().map(|r| r.scored.scored_at).collect(),
    );
    unnest.column(
        "scored_event_seq",
        "int8",
        rows.iter().map(|r| r.session.rank().1).collect(),
    );
    unnest.column(
        "scored_event_ended",
        "bool",
        rows.iter().map(|r| r.session.rank().0).collect(),
    );
    unnest.column(
        "features",
        "jsonb",
        rows.iter().map(|r| &r.features).collect(),
    );
    unnest.column("client_country", "text", geo(|g| g.country.as_deref()));
    unnest.column("client_city", "text", geo(|g| g.city.as_deref()));
    unnest.column(
        "client_latitude",
        "float8",
        rows.iter()
            .map(|r| r.scored.enriched.client_geo.latitude)
            .collect(),
    );
    unnest.column(
        "client_longitude",
        "float8",
        rows.iter()
            .map(|r| r.scored.enriched.client_geo.longitude)
            .collect(),
    );
    unnest.column(
        "client_asn",
        "int8",
        rows.iter()
            .map(|r| r.scored.enriched.client_geo.asn)
            .collect(),
    );
    unnest.column("client_as_org", "text", geo(|g| g.as_org.as_deref()));
    unnest.column(
        "client_address_class",
        "text",
        geo(|g| Some(g.address_class.as_str())),
    );
    unnest.column(
        "server_country",
        "text",
        rows.iter()
            .map(|r| r.scored.enriched.server_geo.country.as_deref())
            .collect(),
    );
    unnest.column(
        "distance_km",
        "float8",
        rows.iter().map(|r| r.scored.enriched.distance_km).collect(),
    );
    unnest.column(
        "reputation",
        "text",
        rows.iter()
            .map(|r| r.scored.enriched.reputation.as_deref())
            .collect(),
    );
}

pub(crate) struct ThreatRow<'a> {
    pub threat: &'a Threat,
    pub source_ip: IpAddr,
    pub target_ip: Option<IpAddr>,
    pub metadata: Value,
}

impl<'a> ThreatRow<'a> {
    pub(crate) fn new(threat: &'a Threat) -> Result<Self, String> {
        if threat.threat_id.is_empty() {
            return Err("threat without a threat id".into());
        }
        check_numeric_5_2("risk_score", threat.risk_score)?;
        if let Some(confidence) = threat.ml_confidence {
            check_numeric_5_2("ml_confidence", confidence)?;
        }
        Ok(ThreatRow {
            threat,
            source_ip: parse_ip("source_ip", &threat.source_ip)?,
            target_ip: threat
                .target_ip
                .as_deref()
                .map(|ip| parse_ip("target_ip", ip))
                .transpose()?,
            metadata: to_json(&threat.evidence)?,
        })
    }

    pub(crate) fn columns(rows: &[&'a ThreatRow<'a>]) -> Unnest<'a> {
        let mut unnest = Unnest::new();
        unnest.column(
            "id",
            "text",
            rows.iter().map(|r| r.threat.threat_id.as_str()).collect(),
        );
        unnest.column(
            "session_id",
            "text",
            rows.iter().map(|r| r.threat.session_id.as_str()).collect(),
        );
        unnest.column(
            "threat_type",
            "text",
            rows.iter().map(|r| r.threat.threat_type.as_str()).collect(),
        );
        unnest.column(
            "severity",
            "text",
            rows.iter().map(|r| r.threat.severity.as_str()).collect(),
        );
        unnest.column(
            "description",
            "text",
            rows.iter().map(|r| r.threat.description.as_str()).collect(),
        );
        unnest.column(
            "source_ip",
            "inet",
            rows.iter().map(|r| r.source_ip).collect(),
        );
        unnest.column(
            "target_ip",
            "inet",
            rows.iter().map(|r| r.target_ip).collect(),
        );
        unnest.column(
            "target_port",
            "int4",
            rows.iter().map(|r| r.threat.target_port).collect(),
        );
        unnest.column(
            "ml_confidence",
            "float8",
            rows.iter().map(|r| r.threat.ml_confidence).collect(),
        );
        unnest.column(
            "timestamp",
            "timestamptz",
            rows.iter().map(|r| r.threat.detected_at).collect(),
        );
        unnest.column(
            "metadata",
            "jsonb",
            rows.iter().map(|r| &r.metadata).collect(),
        );
        unnest.column(
            "risk_score",
            "float8",
            rows.iter().map(|r| r.threat.risk_score).collect(),
        );
        unnest.column(
            "model_version",
            "text",
            rows.iter()
                .map(|r| r.threat.model_version.as_str())
                .collect(),
        );
        unnest
    }
}

pub(crate) struct DecisionRow<'a> {
    pub decision: &'a Decision,
    /// The address or network of an ip or cidr decision, as text Postgres reads as inet.
    pub network: Option<String>,
}

impl<'a> DecisionRow<'a> {
    pub(crate) fn new(decision: &'a Decision) -> Result<Self, String> {
        if decision.decision_id.is_empty() {
            return Err("decision without a decision id".into());
        }
        let network = match decision.scope {
            DecisionScope::Session => None,
            DecisionScope::Ip => Some(parse_ip("value", &decision.value)?.to_string()),
            DecisionScope::Cidr => Some(parse_network(&decision.value)?),
        };
        Ok(DecisionRow { decision, network })
    }

    pub(crate) fn columns(rows: &[&'a DecisionRow<'a>]) -> Unnest<'a> {
        let mut unnest = Unnest::new();
        let d = |f: fn(&'a Decision) -> &'a str| -> Vec<&'a str> {
            rows.iter().map(|r| f(r.decision)).collect()
        };
        unnest.column("decision_id", "text", d(|d| d.decision_id.as_str()));
        unnest.column(
            "action",
            "text",
            rows.iter()
                .map(|r| serde_name(&r.decision.action))
                .collect(),
        );
        unnest.column(
            "origin",
            "text",
            rows.iter()
                .map(|r| serde_name(&r.decision.origin))
                .collect(),
        );
        unnest.column(
            "scope",
            "text",
            rows.iter().map(|r| serde_name(&r.decision.scope)).collect(),
        );
        unnest.column("value", "text", d(|d| d.value.as_str()));
        unnest.column_cast(
            "value_cidr",
            "text",
            Some("inet::cidr"),
            rows.iter().map(|r| r.network.as_deref()).collect(),
        );
        unnest.column(
            "duration_secs",
            "int8",
            rows.iter().map(|r| r.decision.duration_secs).collect(),
        );
        unnest.column(
            "created_at",
            "timestamptz",
            rows.iter().map(|r| r.decision.created_at).collect(),
        );
        unnest.column(
            "until",
            "timestamptz",
            rows.iter().map(|r| r.decision.until).collect(),
        );
        unnest.column("reason", "text", d(|d| d.reason.as_str()));
        unnest.column(
            "threat_id",
            "text",
            rows.iter()
                .map(|r| r.decision.threat_id.as_deref())
                .collect(),
        );
        unnest.column(
            "target_decision_id",
            "text",
            rows.iter()
                .map(|r| r.decision.target_decision_id.as_deref())
                .collect(),
        );
        unnest.column(
            "created_by",
            "text",
            rows.iter()
                .map(|r| r.decision.created_by.as_deref())
                .collect(),
        );
        unnest.column(
            "dry_run",
            "bool",
            rows.iter().map(|r| r.decision.dry_run).collect(),
        );
        unnest
    }
}

pub(crate) struct HeartbeatRow<'a> {
    pub heartbeat: &'a AgentHeartbeat,
}

impl<'a> HeartbeatRow<'a> {
    pub(crate) fn new(heartbeat: &'a AgentHeartbeat) -> Result<Self, String> {
        if heartbeat.agent_id.is_empty() {
            return Err("heartbeat without an agent id".into());
        }
        Ok(HeartbeatRow { heartbeat })
    }

    pub(crate) fn columns(rows: &[&'a HeartbeatRow<'a>]) -> Unnest<'a> {
        let mut unnest = Unnest::new();
        let text = |f: fn(&'a AgentHeartbeat) -> &'a str| -> Vec<&'a str> {
            rows.iter().map(|r| f(r.heartbeat)).collect()
        };
        let count = |f: fn(&AgentHeartbeat) -> i64| -> Vec<i64> {
            rows.iter().map(|r| f(r.heartbeat)).collect()
        };
        unnest.column("agent_id", "text", text(|h| h.agent_id.as_str()));
        unnest.column("hostname", "text", text(|h| h.hostname.as_str()));
        unnest.column("version", "text", text(|h| h.version.as_str()));
        unnest.column(
            "started_at",
            "timestamptz",
            rows.iter().map(|r| r.heartbeat.started_at).collect(),
        );
        unnest.column(
            "last_heartbeat",
            "timestamptz",
            rows.iter().map(|r| r.heartbeat.time).collect(),
        );
        unnest.column("packets", "int8", count(|h| h.packets));
        unnest.column("bytes", "int8", count(|h| h.bytes));
        unnest.column("pcap_drops", "int8", count(|h| h.pcap_drops));
        unnest.column("flows_active", "int8", count(|h| h.flows_active));
        unnest.column("flows_evicted", "int8", count(|h| h.flows_evicted));
        unnest.column("sessions_active", "int8", count(|h| h.sessions_active));
        unnest.column("sessions_total", "int8", count(|h| h.sessions_total));
        unnest.column("parse_errors", "int8", count(|h| h.parse_errors));
        unnest.column(
            "enforcing",
            "bool",
            rows.iter().map(|r| r.heartbeat.enforcing).collect(),
        );
        unnest.column_cast(
            "capture_sources",
            "text",
            Some("text[]"),
            rows.iter()
                .map(|r| text_array_literal(&r.heartbeat.capture_sources))
                .collect(),
        );
        unnest
    }
}

pub(crate) struct ModelRow<'a> {
    pub model: &'a ModelAnnouncement,
    pub metrics: Value,
}

impl<'a> ModelRow<'a> {
    pub(crate) fn new(model: &'a ModelAnnouncement) -> Result<Self, String> {
        if model.model_name.is_empty() || model.version.is_empty() {
            return Err("model announcement without a name or version".into());
        }
        Ok(ModelRow {
            model,
            metrics: to_json(&model.metrics)?,
        })
    }

    pub(crate) fn columns(rows: &[&'a ModelRow<'a>]) -> Unnest<'a> {
        let mut unnest = Unnest::new();
        unnest.column(
            "name",
            "text",
            rows.iter().map(|r| r.model.model_name.as_str()).collect(),
        );
        unnest.column(
            "version",
            "text",
            rows.iter().map(|r| r.model.version.as_str()).collect(),
        );
        unnest.column(
            "created_at",
            "timestamptz",
            rows.iter().map(|r| r.model.created_at).collect(),
        );
        unnest.column_cast(
            "feature_names",
            "text",
            Some("text[]"),
            rows.iter()
                .map(|r| text_array_literal(&r.model.feature_names))
                .collect(),
        );
        unnest.column(
            "training_rows",
            "int8",
            rows.iter().map(|r| r.model.training_rows).collect(),
        );
        unnest.column(
            "training_window_start",
            "timestamptz",
            rows.iter().map(|r| r.model.training_window_start).collect(),
        );
        unnest.column(
            "training_window_end",
            "timestamptz",
            rows.iter().map(|r| r.model.training_window_end).collect(),
        );
        unnest.column(
            "metrics",
            "jsonb",
            rows.iter().map(|r| &r.metrics).collect(),
        );
        unnest.column(
            "model_json",
            "text",
            rows.iter().map(|r| r.model.model_json.as_str()).collect(),
        );
        unnest
    }
}

/// The seed's `auth_method`: the name of the RFB security type the server chose.
pub fn security_type_name(security_type: i32) -> String {
    match security_type {
        1 => "None".into(),
        2 => "VNC Authentication".into(),
        5 => "RA2".into(),
        6 => "RA2ne".into(),
        16 => "Tight".into(),
        18 => "TLS".into(),
        19 => "VeNCrypt".into(),
        22 => "XVP".into(),
        30 => "Apple Remote Desktop".into(),
        113 => "MS-Logon II".into(),
        other => format!("type {other}"),
    }
}

fn parse_ip(field: &str, text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{field} {text:?} is not an IP address"))
}

/// An address or `address/prefix`, in the form Postgres reads as inet.
fn parse_network(text: &str) -> Result<String, String> {
    let Some((address, prefix)) = text.split_once('/') else {
        return Ok(parse_ip("value", text)?.to_string());
    };
    let address = parse_ip("value", address)?;
    let limit = if address.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(prefix) if prefix <= limit => Ok(format!("{address}/{prefix}")),
        _ => Err(format!("value {text:?} has an invalid prefix length")),
    }
}

fn to_integer(field: &str, value: i64) -> Result<i32, String> {
    i32::try_from(value).map_err(|_| format!("{field} {value} does not fit an INTEGER column"))
}

fn check_numeric_5_2(field: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value.abs() <= NUMERIC_5_2_MAX {
        Ok(())
    } else {
        Err(format!("{field} {value} does not fit NUMERIC(5,2)"))
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot represent as JSON: {e}"))
}

/// The snake_case name serde gives an enum value (`DecisionAction::Block` → `block`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// `{1,2,3}`: a Postgres integer array literal.
fn integer_array_literal(values: &[i32]) -> String {
    let items: Vec<String> = values.iter().map(i32::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// `{"a","b"}`: a Postgres text array literal, each element quoted and escaped.
fn text_array_literal(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_and_escape() {
        assert_eq!(integer_array_literal(&[1, -2, 16]), "{1,-2,16}");
        assert_eq!(integer_array_literal(&[]), "{}");
        assert_eq!(
            text_array_literal(&["a b".into(), "q\"\\".into()]),
            r#"{"a b","q\"\\"}"#
        );
    }

    #[test]
    fn networks_are_checked() {
        assert_eq!(parse_network("10.1.2.3/8").unwrap(), "10.1.2.3/8");
        assert_eq!(parse_network("2001:db8::1").unwrap(), "2001:db8::1");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("nonsense/8").is_err());
    }

    #[test]
    fn numeric_5_2_rejects_what_postgres_would() {
        assert!(check_numeric_5_2("risk", 99.5).is_ok());
        assert!(check_numeric_5_2("risk", 1000.0).is_err());
        assert!(check_numeric_5_2("risk", f64::NAN).is_err());
    }
}
