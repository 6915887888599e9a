//! From a threat to a decision: the policy's rule, verified evidence (a threat whose sessions
//! did not complete a verified TCP handshake never blocks), the allow-list, the source's ban history
//! (escalation), one block in force per source (extended, never duplicated) and deterministic
//! decision ids (a replayed threat decides nothing new).

use std::net::IpAddr;

use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope, Threat, Timestamp};
use sha2::{Digest, Sha256};
use telemetry::Counter;

use crate::offenders::OffenderTable;
use crate::policy::Policy;

/// The deterministic id of the decision `action` taken on threat `threat_id`.
pub fn decision_id(threat_id: &str, action: DecisionAction) -> String {
    let action = match action {
        DecisionAction::Block => "block",
        DecisionAction::Unblock => "unblock",
        DecisionAction::Quarantine => "quarantine",
    };
    let digest = Sha256::digest(format!("{threat_id}\u{0}{action}").as_bytes());
    hex::encode(&digest[..16])
}

/// Marks the part of a reason that names the latest extension.
const EXTENDED: &str = "; last extended by ";

/// What the responder made of a threat.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A new block of the source.
    Block(Decision),
    /// The source's block in force now lasts longer (same decision id, later `until`).
    Extend(Decision),
    /// No rule blocks this threat type at this severity.
    NoRule,
    /// A rule would block, but the threat rests on sessions whose TCP handshake was not
    /// verified (forgeable off-path): shown to analysts, never enough for an automatic block.
    Unverified,
    /// The source is on the allow-list.
    AllowListed,
    /// The threat was decided before (a replay or an update of the same threat).
    AlreadyDecided,
    /// A block in force already lasts at least as long as this threat's would.
    AlreadyBlocked,
    /// The threat's source is not an IP address.
    InvalidSource,
}

impl Verdict {
    /// The decision to publish, if any.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Verdict::Block(d) | Verdict::Extend(d) => Some(d),
            _ => None,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Verdict::Block(_) => "block",
            Verdict::Extend(_) => "extend",
            Verdict::NoRule => "no_rule",
            Verdict::Unverified => "unverified",
            Verdict::AllowListed => "allow_listed",
            Verdict::AlreadyDecided => "already_decided",
            Verdict::AlreadyBlocked => "already_blocked",
            Verdict::InvalidSource => "invalid_source",
        }
    }
}

pub struct Responder {
    policy: Policy,
    offenders: OffenderTable,
}

fn verdict_counter(verdict: &Verdict) -> &'static Counter {
    telemetry::counter(
        "vncguard_responder_verdicts_total",
        "Threats by what the responder made of them (allow_listed: an automatic block refused by the allow-list; unverified: refused because the threat's sessions did not complete a verified TCP handshake).",
        &[("verdict", verdict.label())],
    )
}

impl Responder {
    pub fn new(policy: Policy) -> Self {
        Responder {
            offenders: OffenderTable::new(policy.max_sources),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Ban count of `source` so far.
    pub fn bans(&self, source: &str) -> u32 {
        self.offenders.get(source).map_or(0, |o| o.bans)
    }

    /// Learns from a decision read from the decisions topic (at start, to rebuild the ban
    /// histories; live, for the analysts' blocks and unblocks). Reading one's own decision back
    /// changes nothing.
    pub fn observe(&mut self, decision: &Decision) {
        match (decision.action, decision.scope) {
            (DecisionAction::Block, DecisionScope::Ip) => {
                if let Ok(source) = decision.value.parse::<IpAddr>() {
                    self.offenders
                        .entry(&source.to_string())
                        .record_block(decision);
                }
            }
            (DecisionAction::Unblock, _) => {
                let Some(target) = &decision.target_decision_id else {
                    return;
                };
                let Ok(source) = decision.value.parse::<IpAddr>() else {
                    return;
                };
                let offender = self.offenders.entry(&source.to_string());
                if offender
                    .block
                    .as_ref()
                    .is_some_and(|b| b.decision_id == *target)
                {
                    offender.block = None;
                }
            }
            _ => {}
        }
    }

    /// The verdict on `threat` at `now`.
    pub fn decide(&mut self, threat: &Threat, now: Timestamp) -> Verdict {
        let verdict = self.verdict(threat, now);
        verdict_counter(&verdict).inc();
        match &verdict {
            Verdict::AllowListed => tracing::warn!(
                source = %threat.source_ip,
                threat_id = %threat.threat_id,
                threat_type = %threat.threat_type,
                "allow-listed source: no automatic decision"
            ),
            Verdict::Unverified => tracing::warn!(
                source = %threat.source_ip,
                threat_id = %threat.threat_id,
                threat_type = %threat.threat_type,
                "threat without handshake-verified evidence: no automatic decision"
            ),
            Verdict::Block(d) | Verdict::Extend(d) => tracing::info!(
                decision_id = %d.decision_id,
                source = %d.value,
                until = %d.until,
                duration_secs = d.duration_secs,
                dry_run = d.dry_run,
                verdict = verdict.label(),
                "block decided"
            ),
            _ => {}
        }
        verdict
    }

    fn verdict(&mut self, threat: &Threat, now: Timestamp) -> Verdict {
        let Some(rule) = self
            .policy
            .rule_for(&threat.threat_type, threat.severity)
            .cloned()
        else {
            return Verdict::NoRule;
        };
        if !threat.verified {
            return Verdict::Unverified;
        }
        let Ok(source) = threat.source_ip.parse::<IpAddr>() else {
            return Verdict::InvalidSource;
        };
        if self.policy.is_allowed(source) {
            return Verdict::AllowListed;
        }
        let source = source.to_string();
        let offender = self.offenders.entry(&source);
        if offender.has_threat(&threat.threat_id) {
            return Verdict::AlreadyDecided;
        }
        offender.remember_threat(&threat.threat_id);
        if let Some(active) = offender.active_block(now).cloned() {
            let ban = self.policy.ban_secs(&rule, offender.bans.max(1));
            let until = now + chrono::Duration::seconds(ban);
            // Extend only by a step worth a new record (a tenth of the ban, at least a second):
            // a burst of threats of one attack would otherwise republish the block for every
            // few milliseconds it gains.
            let step = chrono::Duration::seconds((ban / 10).max(1));
            if until < active.until + step {
                return Verdict::AlreadyBlocked;
            }
            let first_reason = active
                .reason
                .split_once(EXTENDED)
                .map_or(active.reason.as_str(), |(first, _)| first);
            let extended = Decision {
                duration_secs: (until - active.created_at).num_seconds(),
                until,
                reason: format!(
                    "{first_reason}{EXTENDED}{} ({}) at {now}",
                    threat.threat_type, threat.threat_id
                ),
                ..active
            };
            offender.record_block(&extended);
            return Verdict::Extend(extended);
        }
        let offence = offender.bans + 1;
        let ban = self.policy.ban_secs(&rule, offence);
        let decision = Decision {
            decision_id: decision_id(&threat.threat_id, DecisionAction::Block),
            action: DecisionAction::Block,
            origin: DecisionOrigin::Automatic,
            scope: DecisionScope::Ip,
            value: source.clone(),
            duration_secs: ban,
            created_at: now,
            until: now + chrono::Duration::seconds(ban),
            reason: format!(
                "{} ({}) from {source}, ban {offence} of this source: {}",
                threat.threat_type,
                threat.severity.as_str(),
                threat.description
            ),
            threat_id: Some(threat.threat_id.clone()),
            target_decision_id: None,
            created_by: Some(format!("policy:{}", rule.threat_type)),
            dry_run: self.policy.dry_run,
            key_id: None,
            signature: None,
        };
        offender.record_block(&decision);
        Verdict::Block(decision)
    }
}
