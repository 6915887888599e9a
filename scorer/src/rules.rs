//! Threat rules and risk signals: what a session's protocol facts (its [`SessionSummary`]) and
//! features (`schemas::features::FEATURES`) say about it, each as a [`Finding`] with a score,
//! a reason sentence and its evidence.
//!
//! Features computed over a window (`src_failed_auth_window`, ...) come from the enricher,
//! whose window length is the `findtime` of the fail2ban model; the scorer holds the counts
//! (`maxretry`) they are compared with. A feature the enricher could not compute is absent:
//! rules that need it do not fire, and rules that count read an absent count as 0.

use std::collections::BTreeMap;

use schemas::{AuthResult, EnrichedSession, SessionSummary, Severity};

use crate::risk::{Component, Finding};

/// RFB security type None (no authentication).
const SECURITY_NONE: i32 = 1;

/// Thresholds of the rules.
#[derive(Debug, Clone, clap::Args)]
pub struct RuleConfig {
    /// Failed logins from one source within the enricher's window that make brute force
    /// (fail2ban's maxretry).
    #[arg(long, env = "BRUTE_FORCE_MAX_RETRY", default_value_t = 5)]
    pub brute_force_max_retry: u32,
    /// Distinct servers with failed logins from one source that make password spraying.
    #[arg(long, env = "SPRAYING_MIN_SERVERS", default_value_t = 3)]
    pub spraying_min_servers: u32,
    /// Banner-only or abandoned handshakes, or distinct ports or servers probed, from one
    /// source within the window that make a scan.
    #[arg(long, env = "SCAN_MIN_PROBES", default_value_t = 3)]
    pub scan_min_probes: u32,
    /// Server-to-client cut-text bytes from which a session is clipboard exfiltration. Tuned on
    /// the lab captures: the exfiltration sessions copy out 75 and 92 bytes, an ordinary
    /// session's copy is a word (8 bytes).
    #[arg(long, env = "CLIPBOARD_MAX_BYTES", default_value_t = 64)]
    pub clipboard_max_bytes: u64,
    /// Server-to-client cut-text messages from which a session is clipboard exfiltration.
    #[arg(long, env = "CLIPBOARD_MAX_MESSAGES", default_value_t = 10)]
    pub clipboard_max_messages: u64,
    /// First hour (0-23, server time zone) of business hours.
    #[arg(long, env = "BUSINESS_HOURS_START", default_value_t = 7)]
    pub business_hours_start: u32,
    /// Hour (1-24, server time zone) at which business hours end.
    #[arg(long, env = "BUSINESS_HOURS_END", default_value_t = 19)]
    pub business_hours_end: u32,
    /// Business days, 0 = Monday, comma-separated.
    #[arg(
        long,
        env = "BUSINESS_DAYS",
        value_delimiter = ',',
        default_value = "0,1,2,3,4"
    )]
    pub business_days: Vec<u32>,
    /// Forest score (0-1) from which a session is reported as anomalous.
    #[arg(long, env = "ANOMALY_THRESHOLD", default_value_t = 0.65)]
    pub anomaly_threshold: f64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            brute_force_max_retry: 5,
            spraying_min_servers: 3,
            scan_min_probes: 3,
            clipboard_max_bytes: 64,
            clipboard_max_messages: 10,
            business_hours_start: 7,
            business_hours_end: 19,
            business_days: vec![0, 1, 2, 3, 4],
            anomaly_threshold: 0.65,
        }
    }
}

/// The features of a session, read by name; absence is explicit.
struct Features<'a>(&'a BTreeMap<String, f64>);

impl Features<'_> {
    fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied().filter(|v| v.is_finite())
    }

    /// A count or flag; absent reads as 0.
    fn count(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }

    fn flag(&self, name: &str) -> bool {
        self.count(name) >= 1.0
    }
}

fn evidence<const N: usize>(entries: [(&str, String); N]) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn finding(
    rule: &'static str,
    component: Component,
    score: f64,
    severity: Option<Severity>,
    reason: String,
    evidence: BTreeMap<String, String>,
) -> Finding {
    Finding {
        rule,
        component,
        score: score.clamp(0.0, 100.0),
        severity,
        reason,
        evidence,
        verified: false,
    }
}

/// Every rule and signal that fires for `session`, given its forest score if there is a model.
pub fn evaluate(
    session: &EnrichedSession,
    forest_score: Option<f64>,
    config: &RuleConfig,
) -> Vec<Finding> {
    let summary = &session.event.summary;
    let features = Features(&session.features);
    let mut findings = Vec::new();
    findings.extend(brute_force(summary, &features, config));
    findings.extend(password_spraying(summary, &features, config));
    findings.extend(scanning(summary, &features, config));
    // The rules above count a window and judge their own evidence; the findings below are about
    // this session alone, as verified as its handshake.
    let window_findings = findings.len();
    findings.extend(no_authentication(summary, &features));
    findings.extend(auth_bypass_attempt(summary));
    findings.extend(weak_authentication(summary, &features));
    findings.extend(clipboard_exfiltration(summary, config));
    findings.extend(file_transfer(summary));
    findings.extend(off_hours_access(&features, config));
    findings.extend(new_country(session, &features));
    findings.extend(geographic_signals(session, &features));
    findings.extend(known_bad_source(session, &features));
    if let Some(score) = forest_score.filter(|s| *s >= config.anomaly_threshold) {
        findings.push(finding(
            "anomalous_session",
            Component::Anomaly,
            crate::risk::anomaly_from_forest_score(score),
            Some(Severity::Medium),
            format!(
                "the isolation forest scores this session {score:.3}, above the threshold {:.2}",
                config.anomaly_threshold
            ),
            evidence([
                ("forest_score", format!("{score:.4}")),
                ("threshold", config.anomaly_threshold.to_string()),
            ]),
        ));
    }
    for finding in &mut findings[window_findings..] {
        finding.verified = summary.handshake_verified;
    }
    findings
}

/// fail2ban's model: `maxretry` failures from one source within the window; a server that
/// refuses for too many failures confirms it. A success after the failures is the worst case.
fn brute_force(
    summary: &SessionSummary,
    features: &Features,
    config: &RuleConfig,
) -> Option<Finding> {
    let failures = features.count("src_failed_auth_window");
    let max_retry = f64::from(config.brute_force_max_retry.max(1));
    let refused = summary.auth_result == AuthResult::TooMany;
    if failures < max_retry && !refused {
        return None;
    }
    let succeeded = summary.auth_result == AuthResult::Ok;
    let verified_failures = features.count("src_verified_failed_auth_window");
    let verified = verified_failures >= max_retry || (refused && summary.handshake_verified);
    let (severity, score) = if succeeded {
        (Severity::Critical, 100.0)
    } else {
        (
            Severity::High,
            70.0 + 30.0 * (1.0 - max_retry / failures.max(max_retry)),
        )
    };
    let mut reason = format!(
        "{failures} failed logins from {} within the window (max retry {})",
        summary.client_ip, config.brute_force_max_retry
    );
    if refused {
        reason.push_str("; the server refused it for too many failures");
    }
    if succeeded {
        reason.push_str("; this login then succeeded");
    }
    Some(Finding {
        verified,
        ..finding(
            "brute_force",
            Component::Threat,
            score,
            Some(severity),
            reason,
            evidence([
                ("source_ip", summary.client_ip.clone()),
                ("failed_logins_in_window", failures.to_string()),
                (
                    "verified_failed_logins_in_window",
                    verified_failures.to_string(),
                ),
                ("max_retry", config.brute_force_max_retry.to_string()),
                ("auth_result", summary.auth_result.as_str().to_string()),
            ]),
        )
    })
}

/// Failures against many servers from one source: one password tried everywhere.
fn password_spraying(
    summary: &SessionSummary,
    features: &Features,
    config: &RuleConfig,
) -> Option<Finding> {
    let servers = features.count("src_distinct_servers_window");
    let failures = features.count("src_failed_auth_window");
    let min_servers = f64::from(config.spraying_min_servers.max(2));
    if servers < min_servers || failures < min_servers {
        return None;
    }
    let verified_servers = features.count("src_verified_distinct_servers_window");
    let verified_failures = features.count("src_verified_failed_auth_window");
    Some(Finding {
        verified: verified_servers >= min_servers && verified_failures >= min_servers,
        ..finding(
            "password_spraying",
            Component::Threat,
            80.0,
            Some(Severity::High),
            format!(
                "{} failed logins on {servers} servers within the window",
                summary.client_ip
            ),
            evidence([
                ("source_ip", summary.client_ip.clone()),
                ("distinct_servers_in_window", servers.to_string()),
                ("failed_logins_in_window", failures.to_string()),
                (
                    "verified_distinct_servers_in_window",
                    verified_servers.to_string(),
                ),
                (
                    "verified_failed_logins_in_window",
                    verified_failures.to_string(),
                ),
            ]),
        )
    })
}

/// Connections that read the banner and left, or many ports and servers probed, from one
/// source, when this session itself never authenticated.
///
/// A probe counts towards a verified scan only when its session's handshake was verified: it
/// reached a listening port (the session spoke RFB) and its client proved it receives the
/// server's packets. Forged segments (the 15 packets "from" an admin's workstation to
/// five ports) and SYN scans (a SYN answered by a RST at a closed port, or reset by the scanner
/// at an open one) never complete a handshake, so they alert but cannot block: a real SYN scan
/// is detected and shown, and only a scan that connects (nmap -sT or -sV, a banner grabber)
/// can ban its source automatically.
fn scanning(summary: &SessionSummary, features: &Features, config: &RuleConfig) -> Option<Finding> {
    if matches!(
        summary.auth_result,
        AuthResult::Ok | AuthResult::NoneRequired
    ) {
        return None;
    }
    let banner_only = features.count("src_banner_only_window");
    let ports = features.count("src_distinct_ports_window");
    let servers = features.count("src_distinct_servers_window");
    let min_probes = f64::from(config.scan_min_probes.max(1));
    if banner_only < min_probes && ports < min_probes && servers < min_probes {
        return None;
    }
    let verified_banner_only = features.count("src_verified_banner_only_window");
    let verified_ports = features.count("src_verified_distinct_ports_window");
    let verified_servers = features.count("src_verified_distinct_servers_window");
    Some(Finding {
        verified: verified_banner_only >= min_probes
            || verified_ports >= min_probes
            || verified_servers >= min_probes,
        ..finding(
            "scanning",
            Component::Threat,
            60.0,
            Some(Severity::Medium),
            format!(
                "{} probed {ports} ports on {servers} servers and left {banner_only} handshakes unfinished within the window",
                summary.client_ip
            ),
            evidence([
                ("source_ip", summary.client_ip.clone()),
                ("banner_only_in_window", banner_only.to_string()),
                ("distinct_ports_in_window", ports.to_string()),
                ("distinct_servers_in_window", servers.to_string()),
                ("verified_banner_only_in_window", verified_banner_only.to_string()),
                ("verified_distinct_ports_in_window", verified_ports.to_string()),
                ("verified_distinct_servers_in_window", verified_servers.to_string()),
            ]),
        )
    })
}

fn no_authentication(summary: &SessionSummary, features: &Features) -> Option<Finding> {
    let none = summary.security_type == Some(SECURITY_NONE)
        || summary.auth_result == AuthResult::NoneRequired
        || features.flag("auth_none_required")
        || features.flag("security_none");
    none.then(|| {
        finding(
            "no_authentication",
            Component::Threat,
            80.0,
            Some(Severity::High),
            format!(
                "server {}:{} let {} in without authentication",
                summary.server_ip, summary.server_port, summary.client_ip
            ),
            evidence([
                (
                    "server",
                    format!("{}:{}", summary.server_ip, summary.server_port),
                ),
                ("security_type", format!("{:?}", summary.security_type)),
                ("auth_result", summary.auth_result.as_str().to_string()),
            ]),
        )
    })
}

/// `3.7` (as the capture agent reports it) or a raw `RFB 003.007` banner → (3, 7).
fn rfb_version(banner: Option<&str>) -> Option<(u32, u32)> {
    let banner = banner?.trim();
    let version = banner.strip_prefix("RFB ").unwrap_or(banner);
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// From RFB 3.7 the server offers a list and the client must pick from it; a pick outside the
/// list is an attempt to skip authentication (the classic RealVNC 4.1.1 bypass).
fn auth_bypass_attempt(summary: &SessionSummary) -> Option<Finding> {
    let chosen = summary.security_type?;
    if summary.security_types_offered.is_empty() || summary.security_types_offered.contains(&chosen)
    {
        return None;
    }
    let negotiated = rfb_version(summary.client_version.as_deref())
        .min(rfb_version(summary.server_version.as_deref()))?;
    if negotiated < (3, 7) {
        return None;
    }
    Some(finding(
        "auth_bypass_attempt",
        Component::Threat,
        95.0,
        Some(Severity::Critical),
        format!(
            "{} chose security type {chosen}, which the server did not offer ({:?})",
            summary.client_ip, summary.security_types_offered
        ),
        evidence([
            ("source_ip", summary.client_ip.clone()),
            ("security_type", chosen.to_string()),
            (
                "security_types_offered",
                format!("{:?}", summary.security_types_offered),
            ),
        ]),
    ))
}

/// RFB 3.3 or the VNC DES challenge without an encrypting security type: the password is
/// at most 8 characters and the challenge-response can be cracked offline.
fn weak_authentication(summary: &SessionSummary, features: &Features) -> Option<Finding> {
    if summary.encrypted || features.flag("security_encrypted") {
        return None;
    }
    let rfb_33 = features.flag("rfb_33")
        || rfb_version(summary.server_version.as_deref()).is_some_and(|v| v < (3, 7));
    let des = summary.vnc_auth_challenge || features.flag("security_vnc_des");
    if !rfb_33 && !des {
        return None;
    }
    let what = match (rfb_33, des) {
        (true, true) => "RFB 3.3 with the VNC DES challenge",
        (true, false) => "RFB 3.3",
        _ => "the VNC DES challenge",
    };
    Some(finding(
        "weak_authentication",
        Component::Threat,
        20.0,
        Some(Severity::Low),
        format!("the session authenticated with {what} over an unencrypted connection"),
        evidence([
            ("rfb_33", rfb_33.to_string()),
            ("vnc_des_challenge", des.to_string()),
            ("encrypted", "false".to_string()),
        ]),
    ))
}

/// Copying out of the server: server-to-client cut text above a volume or message count.
fn clipboard_exfiltration(summary: &SessionSummary, config: &RuleConfig) -> Option<Finding> {
    let bytes = u64::try_from(summary.server_cut_text_bytes).unwrap_or(0);
    let messages = u64::try_from(summary.server_cut_text_count).unwrap_or(0);
    if bytes < config.clipboard_max_bytes && messages < config.clipboard_max_messages {
        return None;
    }
    let over = (bytes as f64 / config.clipboard_max_bytes.max(1) as f64).max(1.0);
    Some(finding(
        "clipboard_exfiltration",
        Component::Behavioral,
        (60.0 + 10.0 * over.log2()).min(100.0),
        Some(Severity::High),
        format!(
            "{bytes} bytes in {messages} clipboard messages copied out of server {} (thresholds {} bytes, {} messages)",
            summary.server_ip, config.clipboard_max_bytes, config.clipboard_max_messages
        ),
        evidence([
            ("server_cut_text_bytes", bytes.to_string()),
            ("server_cut_text_count", messages.to_string()),
            ("threshold_bytes", config.clipboard_max_bytes.to_string()),
            ("threshold_messages", config.clipboard_max_messages.to_string()),
        ]),
    ))
}

fn file_transfer(summary: &SessionSummary) -> Option<Finding> {
    (summary.file_transfer_messages > 0).then(|| {
        finding(
            "file_transfer",
            Component::Behavioral,
            50.0,
            Some(Severity::Medium),
            format!(
                "{} file-transfer messages between {} and {}",
                summary.file_transfer_messages, summary.client_ip, summary.server_ip
            ),
            evidence([(
                "file_transfer_messages",
                summary.file_transfer_messages.to_string(),
            )]),
        )
    })
}

/// Outside business hours in the server's time zone; unknown time (no feature) is no finding.
fn off_hours_access(features: &Features, config: &RuleConfig) -> Option<Finding> {
    let hour = features.get("hour_of_day")? as u32;
    let weekday = features.get("weekday")? as u32;
    let in_hours = (config.business_hours_start..config.business_hours_end).contains(&hour);
    let business_day = config.business_days.contains(&weekday);
    if in_hours && business_day {
        return None;
    }
    Some(finding(
        "off_hours_access",
        Component::Temporal,
        if business_day { 60.0 } else { 70.0 },
        Some(Severity::Low),
        format!(
            "session started at hour {hour} on weekday {weekday} (0 = Monday), outside business hours {}-{}",
            config.business_hours_start, config.business_hours_end
        ),
        evidence([
            ("hour_of_day", hour.to_string()),
            ("weekday", weekday.to_string()),
        ]),
    ))
}

fn new_country(session: &EnrichedSession, features: &Features) -> Option<Finding> {
    if !features.flag("server_new_country") {
        return None;
    }
    let country = session.client_geo.country.as_deref().unwrap_or("unknown");
    let summary = &session.event.summary;
    Some(finding(
        "new_country",
        Component::Geographic,
        70.0,
        Some(Severity::Medium),
        format!(
            "server {} had no client from {country} before {}",
            summary.server_ip, summary.client_ip
        ),
        evidence([
            ("country", country.to_string()),
            ("server_ip", summary.server_ip.clone()),
        ]),
    ))
}

/// Signals that raise the geographic component without being threats on their own.
fn geographic_signals(session: &EnrichedSession, features: &Features) -> Vec<Finding> {
    let mut findings = Vec::new();
    if features.flag("client_public") {
        findings.push(finding(
            "public_client",
            Component::Geographic,
            20.0,
            None,
            format!(
                "client {} connects from a public address",
                session.event.summary.client_ip
            ),
            BTreeMap::new(),
        ));
    }
    if let Some(km) = features.get("geo_distance_km").filter(|km| *km >= 500.0) {
        findings.push(finding(
            "distant_client",
            Component::Geographic,
            (km / 100.0).min(60.0),
            None,
            format!("client is {km:.0} km from the server"),
            evidence([("distance_km", format!("{km:.0}"))]),
        ));
    }
    findings
}

fn known_bad_source(session: &EnrichedSession, features: &Features) -> Option<Finding> {
    if !features.flag("src_known_bad") {
        return None;
    }
    let list = session.reputation.as_deref().unwrap_or("a reputation list");
    Some(finding(
        "known_bad_source",
        Component::Threat,
        90.0,
        None,
        format!(
            "{} is named as known bad by {list}",
            session.event.summary.client_ip
        ),
        evidence([("reputation", list.to_string())]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_banners() {
        assert_eq!(rfb_version(Some("RFB 003.008\n")), Some((3, 8)));
        assert_eq!(rfb_version(Some("RFB 003.003")), Some((3, 3)));
        assert_eq!(rfb_version(Some("3.7")), Some((3, 7)));
        assert_eq!(rfb_version(Some("garbage")), None);
        assert_eq!(rfb_version(None), None);
    }
}
