//! The contract between vncguard's stages: every record that crosses a topic, its Avro schema
//! (the `.avsc` files in `schemas/avro/`), the single-object codec and the topic names.
//!
//! Records are encoded with Avro single-object encoding (`C3 01`, the writer schema's
//! CRC-64-AVRO fingerprint, the body), so any subscriber can find the writer schema without a
//! registry: the fingerprints of every version of every schema are listed by [`registry`].

pub mod codec;
pub mod features;
pub mod registry;
pub mod topics;

mod decision;
mod enriched;
mod fleet;
mod model;
mod scored;
mod session;

pub use codec::{decode, encode, CodecError, Event};
pub use decision::{Decision, DecisionAction, DecisionOrigin, DecisionScope};
pub use enriched::{EnrichedSession, GeoInfo};
pub use fleet::AgentHeartbeat;
pub use model::ModelAnnouncement;
pub use scored::{RiskComponents, RiskReason, ScoredSession, Severity, Threat};
pub use session::{AuthResult, SessionEvent, SessionEventKind, SessionSummary};

/// Timestamps cross topics as RFC 3339 UTC strings: readable in every subscriber's language
/// and in the JSON the agent prints, and ordered lexicographically.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
