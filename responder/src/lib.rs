//! vncguard's automated response: threats from `vnc.threats` become block decisions on
//! `vnc.decisions` (CrowdSec's decision model, [`schemas::Decision`]), which the capture agents
//! with `--enforce` apply with nftables.
//!
//! - [`policy`]: which threat types and severities block and for how long, escalation for repeat
//!   offenders (fail2ban's `bantime.increment`), the allow-list, dry run;
//! - [`offenders`]: the bounded per-source ban history;
//! - [`decide`]: threat → [`decide::Verdict`], with deterministic decision ids (hash of threat
//!   id and action) so a replayed threat decides nothing new, and one block in force per source
//!   (a further threat extends it);
//! - [`stage`]: the [`bus::Stage`], and the rebuild of the ban histories from the compacted
//!   decisions topic at start.

pub mod decide;
pub mod offenders;
pub mod policy;
pub mod stage;

pub use decide::{decision_id, Responder, Verdict};
pub use policy::{Policy, PolicyError};
pub use stage::{restore_history, ResponderStage};
