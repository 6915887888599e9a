//! The risk score of a session, 0-100, and how it was reached.
//!
//! **Components.** The product seed's five components, each 0-100, weighted into a composite
//! (anomaly 30%, threat probability 25%, behavioural 20%, geographic 15%, temporal 10% unless
//! configured otherwise). Every component is built from findings ([`Finding`]): the anomaly
//! component from the forest score, the others from the threat rules and signals of
//! [`crate::rules`]. Findings of one component combine as independent evidence (noisy-or:
//! `100 * (1 - Π(1 - score/100))`), so two findings of 60 make 84, never more than 100, and one
//! finding alone keeps its score.
//!
//! **Score.** A weighted average dilutes a critical finding (the threat component is worth 25
//! points at most), so the composite alone tells an analyst nothing about severity. The score
//! is the composite placed in the band of the session's worst finding:
//!
//! | worst finding | band      |
//! |---------------|-----------|
//! | critical      | 90 - 100  |
//! | high          | 70 - 90   |
//! | medium        | 40 - 70   |
//! | low or none   | 0 - 40    |
//!
//! `risk = floor + (ceiling - floor) * composite / 100`. A session with a critical finding
//! therefore scores at least 90, a high one at least 70, a medium one at least 40, and within a
//! band the composite still orders sessions (more evidence, more components, ranks higher). A
//! session with no finding of medium or worse keeps `0.4 * composite`: with an ordinary forest
//! score (below `ANOMALY_THRESHOLD`, which is itself a medium finding) and the low signals every
//! VNC-authenticated session raises, that stays far below 20. The bands are the seed's
//! severity tiers (`THREAT_THRESHOLD` 70 = high); the trade is that a pile of low signals can
//! never outrank one medium finding, which is what an analyst's triage order expects.
//!
//! Every finding becomes a [`RiskReason`] of the scored session, and [`RiskComponents`] carries
//! the composite and the floor, so the dashboard can show how the score was reached.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemas::{EnrichedSession, RiskComponents, RiskReason, Severity};

use crate::rules::{self, RuleConfig};

/// The five components of the risk score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Anomaly,
    Threat,
    Behavioral,
    Geographic,
    Temporal,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Anomaly,
        Component::Threat,
        Component::Behavioral,
        Component::Geographic,
        Component::Temporal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Anomaly => "anomaly",
            Component::Threat => "threat",
            Component::Behavioral => "behavioral",
            Component::Geographic => "geographic",
            Component::Temporal => "temporal",
        }
    }
}

/// Weights of the components, in the order anomaly, threat, behavioural, geographic, temporal.
/// They are used divided by their sum, so the score stays within 0-100 whatever they add to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskWeights(pub [f64; 5]);

impl Default for RiskWeights {
    fn default() -> Self {
        RiskWeights([0.3, 0.25, 0.2, 0.15, 0.1])
    }
}

impl fmt::Display for RiskWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for RiskWeights {
    type Err = String;

    /// `0.3,0.25,0.2,0.15,0.1`: five finite, non-negative numbers, not all zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let values = text
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<f64>()
                    .map_err(|e| format!("weight {part:?}: {e}"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        let weights: [f64; 5] = values
            .try_into()
            .map_err(|values: Vec<f64>| format!("5 weights expected, got {}", values.len()))?;
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("weights must be finite and non-negative".into());
        }
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err("at least one weight must be positive".into());
        }
        Ok(RiskWeights(weights))
    }
}

impl RiskWeights {
    fn of(&self, component: Component) -> f64 {
        self.0[component as usize]
    }
}

/// One piece of evidence: a rule that fired or a signal that raised a component.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Rule or signal name; for threat rules also the threat type (`brute_force`, ...).
    pub rule: &'static str,
    pub component: Component,
    /// Contribution to the component, 0-100.
    pub score: f64,
    /// `Some` for threat rules: the finding is reported as a threat of this severity.
    pub severity: Option<Severity>,
    /// A sentence an analyst can read.
    pub reason: String,
    /// The facts behind it (counts, thresholds, addresses).
    pub evidence: BTreeMap<String, String>,
    /// Handshake-verified sessions alone are enough for it (a session's finding: its own
    /// handshake was verified; a window rule's: the verified sessions reach its threshold), so
    /// no off-path sender of forged packets can have raised it.
    pub verified: bool,
}

/// The scoring configuration: component weights and rule thresholds.
#[derive(Debug, Clone, clap::Args)]
pub struct RiskConfig {
    /// Component weights: anomaly, threat, behavioural, geographic, temporal.
    #[arg(long, env = "RISK_WEIGHTS", default_value_t = RiskWeights::default())]
    pub risk_weights: RiskWeights,
    /// Risk score (0-100) from which a session that no rule of high severity or worse reports
    /// is reported as a `high_risk` threat.
    #[arg(long, env = "THREAT_THRESHOLD", default_value_t = 70.0)]
    pub threat_threshold: f64,
    #[command(flatten)]
    pub rules: RuleConfig,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            risk_weights: RiskWeights::default(),
            threat_threshold: 70.0,
            rules: RuleConfig::default(),
        }
    }
}

/// The score bands: a session whose worst finding has this severity scores within
/// `[floor, ceiling]` (see the module documentation).
pub const CRITICAL_FLOOR: f64 = 90.0;
pub const HIGH_FLOOR: f64 = 70.0;
pub const MEDIUM_FLOOR: f64 = 40.0;

/// The band of a session whose worst finding has `severity` (`None`: no finding, or only low
/// ones).
pub fn severity_band(severity: Option<Severity>) -> (f64, f64) {
    match severity {
        Some(Severity::Critical) => (CRITICAL_FLOOR, 100.0),
        Some(Severity::High) => (HIGH_FLOOR, CRITICAL_FLOOR),
        Some(Severity::Medium) => (MEDIUM_FLOOR, HIGH_FLOOR),
        Some(Severity::Low) | None => (0.0, MEDIUM_FLOOR),
    }
}

/// The risk score of a session whose composite is `composite` (0-100) and whose worst finding
/// has `severity`.
pub fn banded_score(composite: f64, severity: Option<Severity>) -> f64 {
    let (floor, ceiling) = severity_band(severity);
    floor + (ceiling - floor) * composite.clamp(0.0, 100.0) / 100.0
}

/// What the anomaly component has to go on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnomalyInput {
    /// The model's forest score of the session.
    Scored(f64),
    /// No model yet: the scorer is learning, `seen` of the `needed` normal sessions so far.
    Learning { seen: usize, needed: usize },
    /// No model and no learning (turned off): only `scorer train` can bring one.
    NoModel,
}

impl AnomalyInput {
    pub fn forest_score(self) -> Option<f64> {
        match self {
            AnomalyInput::Scored(score) => Some(score),
            _ => None,
        }
    }
}

/// A session's risk: the score, its components and every finding behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub risk_score: f64,
    /// The forest score mapped to 0-100 (0 without a model).
    pub anomaly_score: f64,
    pub components: RiskComponents,
    pub findings: Vec<Finding>,
}

impl Assessment {
    /// The findings as the reasons a scored session carries.
    pub fn reasons(&self) -> Vec<RiskReason> {
        self.findings
            .iter()
            .map(|finding| RiskReason {
                rule: finding.rule.to_string(),
                component: finding.component.as_str().to_string(),
                score: finding.score,
                reason: finding.reason.clone(),
            })
            .collect()
    }
}

/// Maps a forest score (`(0, 1]`, about 0.5 for ordinary rows) to the anomaly component:
/// 0 at or below 0.5, rising linearly to 100 at 1.
pub fn anomaly_from_forest_score(forest_score: f64) -> f64 {
    ((forest_score - 0.5) * 200.0).clamp(0.0, 100.0)
}

/// Scores one session. Without a forest score the anomaly component is 0 and says why
/// (learning, k of N sessions; or no model).
pub fn assess(session: &EnrichedSession, anomaly: AnomalyInput, config: &RiskConfig) -> Assessment {
    let mut findings = Vec::new();
    let forest_score = anomaly.forest_score();
    let mut anomaly_status = None;
    let anomaly_score = match anomaly {
        AnomalyInput::Scored(score) => {
            let anomaly = anomaly_from_forest_score(score);
            findings.push(Finding {
                rule: "isolation_forest",
                component: Component::Anomaly,
                score: anomaly,
                severity: None,
                reason: format!("isolation forest score {score:.3} (0.5 is ordinary)"),
                evidence: BTreeMap::from([("forest_score".into(), format!("{score:.4}"))]),
                verified: session.event.summary.handshake_verified,
            });
            anomaly
        }
        AnomalyInput::Learning { seen, needed } => {
            let status = format!("learning ({seen} of {needed} sessions)");
            findings.push(Finding {
                rule: "learning",
                component: Component::Anomaly,
                score: 0.0,
                severity: None,
                reason: format!(
                    "{status}: the first model is fitted once {needed} normal authenticated sessions have been seen"
                ),
                evidence: BTreeMap::from([
                    ("normal_sessions_seen".into(), seen.to_string()),
                    ("normal_sessions_needed".into(), needed.to_string()),
                ]),
                verified: session.event.summary.handshake_verified,
            });
            anomaly_status = Some(status);
            0.0
        }
        AnomalyInput::NoModel => {
            findings.push(Finding {
                rule: "no_model",
                component: Component::Anomaly,
                score: 0.0,
                severity: None,
                reason: "no model has been trained yet, so the anomaly component is 0".into(),
                evidence: BTreeMap::new(),
                verified: session.event.summary.handshake_verified,
            });
            anomaly_status = Some("no model".to_string());
            0.0
        }
    };
    findings.extend(rules::evaluate(session, forest_score, &config.rules));

    let component_score = |component: Component| {
        if component == Component::Anomaly {
            return anomaly_score;
        }
        let remaining = findings
            .iter()
            .filter(|f| f.component == component)
            .fold(1.0, |remaining, f| {
                remaining * (1.0 - (f.score / 100.0).clamp(0.0, 1.0))
            });
        100.0 * (1.0 - remaining)
    };
    let weights = &config.risk_weights;
    let weight_sum: f64 = weights.0.iter().sum();
    let composite = (Component::ALL
        .iter()
        .map(|&c| weights.of(c) * component_score(c))
        .sum::<f64>()
        / weight_sum)
        .clamp(0.0, 100.0);
    // The worst finding of medium or worse, the highest-scoring among equals.
    let worst = findings
        .iter()
        .filter(|f| f.severity.is_some_and(|s| s >= Severity::Medium))
        .max_by(|a, b| {
            (a.severity, a.score)
                .partial_cmp(&(b.severity, b.score))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    let floor_severity = worst.and_then(|f| f.severity);
    let components = RiskComponents {
        anomaly: anomaly_score,
        threat: component_score(Component::Threat),
        behavioral: component_score(Component::Behavioral),
        geographic: component_score(Component::Geographic),
        temporal: component_score(Component::Temporal),
        weights: weights.0.to_vec(),
        composite,
        floor: floor_severity.map(|s| s.as_str().to_string()),
        floor_rule: worst.map(|f| f.rule.to_string()),
        anomaly_status,
    };
    Assessment {
        risk_score: banded_score(composite, floor_severity),
        anomaly_score,
        components,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_reject_bad_lists() {
        let weights: RiskWeights = "0.3,0.25,0.2,0.15,0.1".parse().unwrap();
        assert_eq!(weights, RiskWeights::default());
        assert_eq!(weights.to_string().parse::<RiskWeights>().unwrap(), weights);
        assert!("0.3,0.25".parse::<RiskWeights>().is_err());
        assert!("0,0,0,0,0".parse::<RiskWeights>().is_err());
        assert!("1,-1,0,0,0".parse::<RiskWeights>().is_err());
        assert!("a,b,c,d,e".parse::<RiskWeights>().is_err());
    }

    #[test]
    fn each_band_holds_its_severity_and_keeps_the_composite_order() {
        for composite in (0..=100).map(f64::from) {
            assert!(banded_score(composite, Some(Severity::Critical)) >= 90.0);
            assert!(banded_score(composite, Some(Severity::High)) >= 70.0);
            assert!(banded_score(composite, Some(Severity::High)) <= 90.0);
            assert!(banded_score(composite, Some(Severity::Medium)) >= 40.0);
            assert!(banded_score(composite, Some(Severity::Medium)) <= 70.0);
            assert!(banded_score(composite, Some(Severity::Low)) <= 40.0);
            assert!(banded_score(composite, None) <= 40.0);
            let next = composite + 1.0;
            for severity in [
                None,
                Some(Severity::Medium),
                Some(Severity::High),
                Some(Severity::Critical),
            ] {
                assert!(banded_score(next, severity) >= banded_score(composite, severity));
            }
        }
        // Out-of-range composites (weights that do not sum to 1 are normalised, but be sure).
        assert_eq!(banded_score(250.0, Some(Severity::Critical)), 100.0);
        assert_eq!(banded_score(-5.0, None), 0.0);
    }

    #[test]
    fn forest_scores_map_onto_0_to_100() {
        assert_eq!(anomaly_from_forest_score(0.4), 0.0);
        assert_eq!(anomaly_from_forest_score(0.5), 0.0);
        assert!((anomaly_from_forest_score(0.75) - 50.0).abs() < 1e-9);
        assert_eq!(anomaly_from_forest_score(1.0), 100.0);
    }
}
