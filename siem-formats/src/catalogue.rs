//! What each vncguard threat rule is in the vocabularies SIEMs sort alerts by: a Suricata-style
//! signature (id, message, classtype category, 1-3 priority) and, where the behaviour has one, the
//! MITRE ATT&CK technique.

use schemas::Severity;

/// Signature ids are in the range Emerging Threats' SID allocation reserves for local rules
/// (1000000-1999999), at 1590000 (for port 5900) + n, so they cannot collide with ET or Snort
/// rules a Suricata pipeline already carries. Ids are stable: a rule keeps its id forever.
const SID_BASE: u64 = 1_590_000;

/// A rule whose type is not in [`RULES`] (a newer scorer than this catalogue) gets an id in
/// 1591000-1591999 derived from its name, so it still sorts apart from the known ones.
const SID_UNLISTED_BASE: u64 = 1_591_000;

/// An ATT&CK technique (and, for a sub-technique, its parent) with its tactic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    pub id: &'static str,
    pub name: &'static str,
    /// For a sub-technique (`T1110.003`), the parent technique's id and name.
    pub parent: Option<(&'static str, &'static str)>,
    pub tactic_id: &'static str,
    pub tactic_name: &'static str,
}

impl Technique {
    /// The technique's page on attack.mitre.org.
    pub fn reference(&self) -> String {
        format!(
            "https://attack.mitre.org/techniques/{}/",
            self.id.replace('.', "/")
        )
    }
}

/// One threat rule as a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub id: u64,
    /// The alert's message, in the `VENDOR topic what` style of ET rules.
    pub message: String,
    /// A Suricata classification (classification.config) description.
    pub category: &'static str,
    pub technique: Option<Technique>,
}

const BRUTE_FORCE: Technique = Technique {
    id: "T1110",
    name: "Brute Force",
    parent: None,
    tactic_id: "TA0006",
    tactic_name: "Credential Access",
};
const PASSWORD_SPRAYING: Technique = Technique {
    id: "T1110.003",
    name: "Password Spraying",
    parent: Some(("T1110", "Brute Force")),
    tactic_id: "TA0006",
    tactic_name: "Credential Access",
};
const SERVICE_DISCOVERY: Technique = Technique {
    id: "T1046",
    name: "Network Service Discovery",
    parent: None,
    tactic_id: "TA0007",
    tactic_name: "Discovery",
};
const REMOTE_SERVICES_VNC: Technique = Technique {
    id: "T1021.005",
    name: "VNC",
    parent: Some(("T1021", "Remote Services")),
    tactic_id: "TA0008",
    tactic_name: "Lateral Movement",
};
const CLIPBOARD_DATA: Technique = Technique {
    id: "T1115",
    name: "Clipboard Data",
    parent: None,
    tactic_id: "TA0009",
    tactic_name: "Collection",
};

/// Every threat type the scorer raises (`scorer::rules` and `high_risk`): (type, offset from
/// [`SID_BASE`], message, category, technique). Unauthenticated, weak or bypassing access to a
/// VNC server is ATT&CK's "Remote Services: VNC"; risk and context signals have no technique.
#[rustfmt::skip]
const RULES: &[(&str, u64, &str, &str, Option<Technique>)] = &[
    ("brute_force", 1, "VNC brute force", "Attempted User Privilege Gain", Some(BRUTE_FORCE)),
    ("password_spraying", 2, "VNC password spraying", "Attempted User Privilege Gain", Some(PASSWORD_SPRAYING)),
    ("scanning", 3, "VNC service scan", "Detection of a Network Scan", Some(SERVICE_DISCOVERY)),
    ("no_authentication", 4, "VNC session without authentication", "Potential Corporate Privacy Violation", Some(REMOTE_SERVICES_VNC)),
    ("auth_bypass_attempt", 5, "VNC authentication bypass attempt", "Attempted Administrator Privilege Gain", Some(REMOTE_SERVICES_VNC)),
    ("weak_authentication", 6, "VNC weak authentication", "Potential Corporate Privacy Violation", Some(REMOTE_SERVICES_VNC)),
    ("clipboard_exfiltration", 7, "VNC clipboard exfiltration", "Potential Corporate Privacy Violation", Some(CLIPBOARD_DATA)),
    ("file_transfer", 8, "VNC file transfer", "Potential Corporate Privacy Violation", Some(REMOTE_SERVICES_VNC)),
    ("off_hours_access", 9, "VNC access outside business hours", "Potentially Bad Traffic", None),
    ("new_country", 10, "VNC client from a new country", "Potentially Bad Traffic", None),
    ("public_client", 11, "VNC client from a public address", "Potentially Bad Traffic", None),
    ("distant_client", 12, "VNC client far from the server", "Potentially Bad Traffic", None),
    ("known_bad_source", 13, "VNC client on a bad-reputation list", "Misc Attack", None),
    ("anomalous_session", 14, "VNC anomalous session", "Unknown Traffic", None),
    ("high_risk", 15, "VNC high-risk session", "Potentially Bad Traffic", None),
];

/// The signature of the threat type `threat_type`.
pub fn signature(threat_type: &str) -> Signature {
    match RULES.iter().find(|(name, ..)| *name == threat_type) {
        Some(&(_, offset, message, category, technique)) => Signature {
            id: SID_BASE + offset,
            message: format!("VNCGUARD {message}"),
            category,
            technique,
        },
        None => Signature {
            id: SID_UNLISTED_BASE + name_hash(threat_type) % 1000,
            message: format!("VNCGUARD VNC {}", threat_type.replace('_', " ")),
            category: "Potentially Bad Traffic",
            technique: None,
        },
    }
}

/// Suricata's alert priority: 1 is the most severe, 3 the least (classification.config's
/// priorities); vncguard's critical and high are both 1.
pub fn suricata_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical | Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
    }
}

/// FNV-1a: a stable hash of a name, the same on every machine and version.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_rule_has_its_own_id_and_unlisted_ones_stay_apart() {
        let mut ids: Vec<u64> = RULES.iter().map(|(name, ..)| signature(name).id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
        let unlisted = signature("some_future_rule");
        assert!((SID_UNLISTED_BASE..SID_UNLISTED_BASE + 1000).contains(&unlisted.id));
        assert_eq!(unlisted.id, signature("some_future_rule").id);
        assert_eq!(
            PASSWORD_SPRAYING.reference(),
            "https://attack.mitre.org/techniques/T1110/003/"
        );
    }
}
