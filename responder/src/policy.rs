//! The response policy: which threats block automatically and for how long, how bans grow for
//! repeat offenders, which sources no automatic decision may touch, and whether decisions are
//! only recorded (dry run).
//!
//! The policy file (`RESPONSE_POLICY`) is TOML; every key is optional and falls back to the
//! defaults of [`Policy::default`]:
//!
//! ```toml
//! dry_run = false
//! allow = ["10.0.0.0/8", "192.0.2.7"]
//! max_sources = 100000
//!
//! [[rules]]
//! threat_type = "brute_force"
//! min_severity = "high"      # low | medium | high | critical
//! ban = "1h"                 # s, m, h, d suffixes, or plain seconds
//!
//! [increment]                # fail2ban's bantime.increment
//! enabled = true
//! factor = 2.0               # the n-th ban of a source lasts ban × factor^(n-1) ...
//! max = "24h"                # ... but never longer than this (bantime.maxtime)
//! ```

use std::path::Path;

use ipnet::IpNet;
use schemas::Severity;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0:?} is not an address or CIDR")]
    Cidr(String),
    #[error("{0:?} is not a duration (e.g. 90, 30s, 15m, 4h, 1d)")]
    Duration(String),
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// One threat type that blocks its source automatically.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRule {
    pub threat_type: String,
    /// Threats of a lower severity do not block.
    pub min_severity: Severity,
    /// The first ban of a source lasts this many seconds.
    pub ban_secs: i64,
}

/// fail2ban's `bantime.increment`: the n-th ban of a source lasts `ban × factor^(n-1)`, at most
/// `max_secs`.
#[derive(Debug, Clone, PartialEq)]
pub struct BanIncrement {
    pub enabled: bool,
    pub factor: f64,
    pub max_secs: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub rules: Vec<BlockRule>,
    pub increment: BanIncrement,
    /// Sources no automatic decision may touch.
    pub allow: Vec<IpNet>,
    /// Record decisions (with `dry_run = true`) without agents enforcing them.
    pub dry_run: bool,
    /// Most sources whose ban history is remembered (least recently seen evicted first).
    pub max_sources: usize,
}

impl Default for Policy {
    fn default() -> Self {
        let rule = |threat_type: &str, min_severity, ban_secs| BlockRule {
            threat_type: threat_type.to_string(),
            min_severity,
            ban_secs,
        };
        Policy {
            rules: vec![
                rule("brute_force", Severity::High, 3_600),
                rule("password_spraying", Severity::High, 3_600),
                rule("scanning", Severity::Low, 1_800),
                rule("auth_bypass_attempt", Severity::Low, 4 * 3_600),
            ],
            increment: BanIncrement {
                enabled: true,
                factor: 2.0,
                max_secs: 7 * 24 * 3_600,
            },
            allow: Vec::new(),
            dry_run: false,
            max_sources: 100_000,
        }
    }
}

/// The policy file as written; absent keys keep the defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Option<Vec<RuleFile>>,
    increment: Option<IncrementFile>,
    allow: Option<Vec<String>>,
    dry_run: Option<bool>,
    max_sources: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    threat_type: String,
    min_severity: Option<Severity>,
    ban: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementFile {
    enabled: Option<bool>,
    factor: Option<f64>,
    max: Option<DurationText>,
}

/// A duration as `"4h"` or plain seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(i64),
    Text(String),
}

impl DurationText {
    fn seconds(&self) -> Result<i64, PolicyError> {
        match self {
            DurationText::Seconds(s) => Ok(*s),
            DurationText::Text(text) => parse_duration_secs(text),
        }
    }
}

/// `"90"`, `"30s"`, `"15m"`, `"4h"`, `"1d"` in seconds.
pub fn parse_duration_secs(text: &str) -> Result<i64, PolicyError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| PolicyError::Duration(text.to_string()))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(PolicyError::Duration(text.to_string())),
    };
    Ok(number * unit_secs)
}

/// An address (a /32 or /128) or a CIDR.
pub fn parse_cidr(text: &str) -> Result<IpNet, PolicyError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| PolicyError::Cidr(text.to_string()))
}

/// A comma-separated list of addresses and CIDRs (`RESPONSE_ALLOW`).
pub fn parse_cidr_list(text: &str) -> Result<Vec<IpNet>, PolicyError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(parse_cidr)
        .collect()
}

impl Policy {
    /// The defaults overlaid with the TOML policy `text`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut policy = Policy::default();
        if let Some(rules) = file.rules {
            policy.rules = rules
                .into_iter()
                .map(|rule| {
                    Ok(BlockRule {
                        threat_type: rule.threat_type,
                        min_severity: rule.min_severity.unwrap_or(Severity::Low),
                        ban_secs: rule.ban.seconds()?,
                    })
                })
                .collect::<Result<_, PolicyError>>()?;
        }
        if let Some(increment) = file.increment {
            policy.increment.enabled = increment.enabled.unwrap_or(policy.increment.enabled);
            policy.increment.factor = increment.factor.unwrap_or(policy.increment.factor);
            if let Some(max) = increment.max {
                policy.increment.max_secs = max.seconds()?;
            }
        }
        if let Some(allow) = file.allow {
            policy.allow = allow
                .iter()
                .map(|c| parse_cidr(c))
                .collect::<Result<_, _>>()?;
        }
        policy.dry_run = file.dry_run.unwrap_or(policy.dry_run);
        policy.max_sources = file.max_sources.unwrap_or(policy.max_sources);
        policy.validate()?;
        Ok(policy)
    }

    /// The defaults overlaid with the policy file at `path`.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if let Some(rule) = self.rules.iter().find(|r| r.ban_secs <= 0) {
            return Err(PolicyError::Invalid(format!(
                "the ban of {} must be positive",
                rule.threat_type
            )));
        }
        if !(self.increment.factor >= 1.0 && self.increment.factor.is_finite()) {
            return Err(PolicyError::Invalid(format!(
                "increment factor {} must be at least 1",
                self.increment.factor
            )));
        }
        if self.increment.max_secs <= 0 {
            return Err(PolicyError::Invalid(
                "the increment maximum must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The rule that blocks a threat of this type and severity.
    pub fn rule_for(&self, threat_type: &str, severity: Severity) -> Option<&BlockRule> {
        self.rules
            .iter()
            .find(|r| r.threat_type == threat_type && severity >= r.min_severity)
    }

    pub fn is_allowed(&self, source: std::net::IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&source))
    }

    /// How long the `offence`-th ban (1 = first) of a source lasts under `rule`.
    pub fn ban_secs(&self, rule: &BlockRule, offence: u32) -> i64 {
        if !self.increment.enabled || offence <= 1 {
            return rule.ban_secs;
        }
        let exponent = i32::try_from(offence - 1).unwrap_or(i32::MAX);
        let scaled = rule.ban_secs as f64 * self.increment.factor.powi(exponent);
        let cap = self.increment.max_secs.max(rule.ban_secs);
        if scaled >= cap as f64 {
            cap
        } else {
            scaled.round() as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_secs("90").unwrap(), 90);
        assert_eq!(parse_duration_secs("15m").unwrap(), 900);
        assert_eq!(parse_duration_secs("4h").unwrap(), 14_400);
        assert!(parse_duration_secs("4 weeks").is_err());
    }

    #[test]
    fn a_file_overlays_the_defaults() {
        let policy = Policy::from_toml(
            r#"
allow = ["10.1.0.0/16", "192.0.2.7"]
[[rules]]
threat_type = "brute_force"
min_severity = "medium"
ban = "8s"
[increment]
max = "1m"
"#,
            "test",
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 1);
        assert_eq!(policy.rules[0].ban_secs, 8);
        assert_eq!(policy.increment.factor, 2.0);
        assert_eq!(policy.increment.max_secs, 60);
        assert!(policy.is_allowed("192.0.2.7".parse().unwrap()));
        assert!(policy.is_allowed("10.1.200.3".parse().unwrap()));
        assert!(!policy.is_allowed("10.2.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = Policy::from_toml("allow = [\"not-an-ip\"]", "p.toml").unwrap_err();
        assert!(err.to_string().contains("not-an-ip"), "{err}");
        let err = Policy::from_toml("bogus = 1", "p.toml").unwrap_err();
        assert!(err.to_string().contains("p.toml"), "{err}");
    }

    #[test]
    fn defaults_block_the_issue_s_threat_types() {
        let policy = Policy::default();
        assert_eq!(
            policy
                .rule_for("brute_force", Severity::High)
                .map(|r| r.ban_secs),
            Some(3_600)
        );
        assert!(policy.rule_for("brute_force", Severity::Medium).is_none());
        assert_eq!(
            policy
                .rule_for("scanning", Severity::Low)
                .map(|r| r.ban_secs),
            Some(1_800)
        );
        assert_eq!(
            policy
                .rule_for("auth_bypass_attempt", Severity::Critical)
                .map(|r| r.ban_secs),
            Some(14_400)
        );
        assert!(policy.rule_for("high_risk", Severity::Critical).is_none());
    }
}
