//! Where an analysis writes what it finds: JSON lines in one of the record formats
//! ([`siem_formats::RecordFormat`]: vncguard's own, Suricata EVE, ECS), or a table for a
//! terminal.

use std::io::{self, Write};

use schemas::{ScoredSession, SessionSummary, Threat};
use siem_formats::RecordFormat;

use super::AnalysisReport;

/// Receives an analysis's results: each session once it ended (its final scored record), each
/// threat in its latest state, then the report.
pub trait Findings {
    fn session(&mut self, scored: &ScoredSession) -> io::Result<()>;
    /// `session` is the threat's session when the analysis still holds it.
    fn threat(&mut self, threat: &Threat, session: Option<&SessionSummary>) -> io::Result<()>;
    fn finish(&mut self, report: &AnalysisReport) -> io::Result<()>;
}

/// One JSON document per line, written as found.
pub struct Lines<W: Write> {
    out: W,
    format: RecordFormat,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W, format: RecordFormat) -> Self {
        Lines { out, format }
    }

    fn line(&mut self, document: &serde_json::Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, document)?;
        self.out.write_all(b"\n")
    }
}

impl<W: Write> Findings for Lines<W> {
    fn session(&mut self, scored: &ScoredSession) -> io::Result<()> {
        let document = self.format.session(scored);
        self.line(&document)
    }

    fn threat(&mut self, threat: &Threat, session: Option<&SessionSummary>) -> io::Result<()> {
        let document = self.format.threat(threat, session);
        self.line(&document)
    }

    fn finish(&mut self, _report: &AnalysisReport) -> io::Result<()> {
        self.out.flush()
    }
}

/// Rows a table shows per section: a terminal is for reading, and a capture with more sessions
/// is for `--format json` and `jq`. The sections say how many rows they left out.
pub const TABLE_MAX_ROWS: usize = 10_000;

/// A readable table of the sessions and threats, written at the end.
pub struct Table<W: Write> {
    out: W,
    sessions: Vec<SessionRow>,
    threats: Vec<ThreatRow>,
    sessions_left_out: u64,
    threats_left_out: u64,
}

struct SessionRow {
    start: String,
    client: String,
    server: String,
    versions: String,
    security: String,
    auth: String,
    risk: f64,
    end_reason: String,
}

struct ThreatRow {
    severity: String,
    threat_type: String,
    source: String,
    target: String,
    risk: f64,
    description: String,
}

impl<W: Write> Table<W> {
    pub fn new(out: W) -> Self {
        Table {
            out,
            sessions: Vec::new(),
            threats: Vec::new(),
            sessions_left_out: 0,
            threats_left_out: 0,
        }
    }
}

impl<W: Write> Findings for Table<W> {
    fn session(&mut self, scored: &ScoredSession) -> io::Result<()> {
        if self.sessions.len() >= TABLE_MAX_ROWS {
            self.sessions_left_out += 1;
            return Ok(());
        }
        let s = &scored.enriched.event.summary;
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        self.sessions.push(SessionRow {
            start: s.start_time.format("%Y-%m-%d %H:%M:%S").to_string(),
            client: format!("{}:{}", s.client_ip, s.client_port),
            server: format!("{}:{}", s.server_ip, s.server_port),
            versions: format!(
                "{}/{}",
                or_dash(&s.client_version),
                or_dash(&s.server_version)
            ),
            security: s
                .security_type
                .map_or_else(|| "-".into(), |t| t.to_string()),
            auth: s.auth_result.as_str().to_string(),
            risk: scored.risk_score,
            end_reason: or_dash(&s.end_reason),
        });
        Ok(())
    }

    fn threat(&mut self, threat: &Threat, _session: Option<&SessionSummary>) -> io::Result<()> {
        if self.threats.len() >= TABLE_MAX_ROWS {
            self.threats_left_out += 1;
            return Ok(());
        }
        let target = match (&threat.target_ip, threat.target_port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip.clone(),
            _ => "-".into(),
        };
        self.threats.push(ThreatRow {
            severity: threat.severity.as_str().to_string(),
            threat_type: threat.threat_type.clone(),
            source: threat.source_ip.clone(),
            target,
            risk: threat.risk_score,
            description: threat.description.clone(),
        });
        Ok(())
    }

    fn finish(&mut self, report: &AnalysisReport) -> io::Result<()> {
        self.sessions.sort_by(|a, b| a.start.cmp(&b.start));
        let out = &mut self.out;
        writeln!(out, "SESSIONS ({})", report.sessions)?;
        writeln!(
            out,
            "{:<19}  {:<21}  {:<21}  {:<11}  {:>3}  {:<13}  {:>5}  end",
            "start (UTC)", "client", "server", "client/srv", "sec", "auth", "risk"
        )?;
        for row in &self.sessions {
            writeln!(
                out,
                "{:<19}  {:<21}  {:<21}  {:<11}  {:>3}  {:<13}  {:>5.1}  {}",
                row.start,
                row.client,
                row.server,
                row.versions,
                row.security,
                row.auth,
                row.risk,
                row.end_reason
            )?;
        }
        if self.sessions_left_out > 0 {
            writeln!(
                out,
                "… and {} more sessions (--format json lists them all)",
                self.sessions_left_out
            )?;
        }
        writeln!(out, "\nTHREATS ({})", report.threats)?;
        writeln!(
            out,
            "{:<8}  {:<22}  {:<15}  {:<21}  {:>5}  description",
            "severity", "type", "source", "target", "risk"
        )?;
        for row in &self.threats {
            writeln!(
                out,
                "{:<8}  {:<22}  {:<15}  {:<21}  {:>5.1}  {}",
                row.severity, row.threat_type, row.source, row.target, row.risk, row.description
            )?;
        }
        if self.threats_left_out > 0 {
            writeln!(
                out,
                "… and {} more threats (--format json lists them all)",
                self.threats_left_out
            )?;
        }
        writeln!(
            out,
            "\n{} file(s), {} packets, {} sessions, {} threats",
            report.files, report.packets, report.sessions, report.threats
        )?;
        out.flush()
    }
}
