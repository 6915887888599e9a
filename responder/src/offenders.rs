//! What the responder remembers per source: how many bans it had (for escalation), its block
//! in force, and the threats already decided. Bounded: past `capacity` sources, the least
//! recently seen is forgotten (counted).

use std::collections::{BTreeMap, HashMap, VecDeque};

use schemas::Decision;
use telemetry::Counter;

/// Threat ids and ban ids remembered per source: enough to recognise a replay of recent
/// threats and to count each ban once when its decision is read back (an extended decision
/// comes back under the same id).
const RECENT_IDS: usize = 32;

#[derive(Debug, Default, Clone)]
pub struct Offender {
    /// Block decisions this source has had.
    pub bans: u32,
    /// The latest block of this source (in force while `until` is ahead).
    pub block: Option<Decision>,
    threat_ids: VecDeque<String>,
    ban_ids: VecDeque<String>,
    stamp: u64,
}

fn remember(ids: &mut VecDeque<String>, id: &str) {
    if !ids.iter().any(|known| known == id) {
        ids.push_back(id.to_string());
        if ids.len() > RECENT_IDS {
            ids.pop_front();
        }
    }
}

impl Offender {
    pub fn has_threat(&self, threat_id: &str) -> bool {
        self.threat_ids.iter().any(|id| id == threat_id)
    }

    pub fn remember_threat(&mut self, threat_id: &str) {
        remember(&mut self.threat_ids, threat_id);
    }

    /// Records block `decision` (new, extended or read back); a ban id seen before is not
    /// counted again.
    pub fn record_block(&mut self, decision: &Decision) {
        if !self.ban_ids.iter().any(|id| *id == decision.decision_id) {
            self.bans += 1;
            remember(&mut self.ban_ids, &decision.decision_id);
        }
        if let Some(threat_id) = &decision.threat_id {
            self.remember_threat(threat_id);
        }
        let newer = self.block.as_ref().is_none_or(|current| {
            current.decision_id == decision.decision_id || decision.until >= current.until
        });
        if newer {
            self.block = Some(decision.clone());
        }
    }

    /// The block in force at `now`.
    pub fn active_block(&self, now: schemas::Timestamp) -> Option<&Decision> {
        self.block.as_ref().filter(|block| block.until > now)
    }
}

pub struct OffenderTable {
    capacity: usize,
    sources: HashMap<String, Offender>,
    by_age: BTreeMap<u64, String>,
    clock: u64,
    evictions: &'static Counter,
}

impl OffenderTable {
    pub fn new(capacity: usize) -> Self {
        OffenderTable {
            capacity: capacity.max(1),
            sources: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            evictions: telemetry::counter(
                "vncguard_responder_offender_evictions_total",
                "Sources forgotten by the bounded table of ban histories (their next ban starts over).",
                &[],
            ),
        }
    }

    /// The entry of `source`, created if new, marked most recently seen.
    pub fn entry(&mut self, source: &str) -> &mut Offender {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(old) = self.sources.get(source).map(|o| o.stamp) {
            self.by_age.remove(&old);
        } else {
            while self.sources.len() >= self.capacity {
                let Some((_, oldest)) = self.by_age.pop_first() else {
                    break;
                };
                self.sources.remove(&oldest);
                self.evictions.inc();
            }
        }
        self.by_age.insert(stamp, source.to_string());
        let offender = self.sources.entry(source.to_string()).or_default();
        offender.stamp = stamp;
        offender
    }

    pub fn get(&self, source: &str) -> Option<&Offender> {
        self.sources.get(source)
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_seen_source_is_evicted_past_capacity() {
        let mut table = OffenderTable::new(2);
        table.entry("a").bans = 1;
        table.entry("b").bans = 2;
        table.entry("a");
        table.entry("c");
        assert_eq!(table.len(), 2);
        assert!(table.get("b").is_none());
        assert_eq!(table.get("a").map(|o| o.bans), Some(1));
    }
}
