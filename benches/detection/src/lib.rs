//! The detection bench's data: the labelled recordings of `benches/detection/recordings`
//! (recorded by `record.sh`), the truth per session they carry, and the ROC AUC the bench
//! reports.
//!
//! A label names a session by its capture file and client address: `record.sh` gives every
//! client a namespace and an address of its own, and records each scenario (one normal session,
//! one attack tool's run, one insider session) into a file of its own, so the pair is unique.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capture_agent::config::AgentConfig;
use schemas::{AuthResult, SessionEvent};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("analysing {path}: {source}")]
    Capture {
        path: PathBuf,
        source: capture_agent::RunError,
    },
    #[error("{capture}: session {session_id} from {client_ip} has no label")]
    Unlabelled {
        capture: String,
        session_id: String,
        client_ip: String,
    },
    #[error("label {capture} {client_ip} matches no session of the recordings")]
    Unused { capture: String, client_ip: String },
}

/// What a session truly was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Ordinary work by the installation's users.
    Benign,
    /// A tool or person attacking the servers (the rules' job).
    Attack,
    /// A correct login by someone who then does what the users do not (the forest's job).
    Insider,
}

impl Class {
    fn parse(text: &str) -> Option<Class> {
        match text {
            "benign" => Some(Class::Benign),
            "attack" => Some(Class::Attack),
            "insider" => Some(Class::Insider),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Benign => "benign",
            Class::Attack => "attack",
            Class::Insider => "insider",
        }
    }
}

/// One row of `labels.tsv`: every session of `client_ip` in `capture`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub capture: String,
    pub client_ip: String,
    pub class: Class,
    /// The attack type (`brute_force`, `scan`, ...), the insider anomaly (`bulk_clipboard`,
    /// `off_hours`, ...) or `normal`.
    pub kind: String,
    pub note: String,
}

/// Reads a labels file: tab-separated capture, client address, class, kind, note; `#` lines
/// are comments.
pub fn read_labels(path: &Path) -> Result<Vec<Label>, LabelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut labels = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parse_error = |message: String| LabelError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [capture, client_ip, class, kind, note] = fields[..] else {
            return Err(parse_error(format!(
                "{} fields where a label has 5 (capture, client, class, kind, note)",
                fields.len()
            )));
        };
        let class =
            Class::parse(class).ok_or_else(|| parse_error(format!("unknown class {class:?}")))?;
        if client_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(parse_error(format!("{client_ip:?} is not an address")));
        }
        labels.push(Label {
            capture: capture.to_string(),
            client_ip: client_ip.to_string(),
            class,
            kind: kind.to_string(),
            note: note.to_string(),
        });
    }
    Ok(labels)
}

/// A recorded session as the capture agent reads it, with its truth.
#[derive(Debug, Clone)]
pub struct LabelledSession {
    pub session_id: String,
    pub capture: String,
    pub client_ip: String,
    pub auth_result: AuthResult,
    /// The capture agent lost its place in the session's RFB stream.
    pub desynced: bool,
    pub label: Label,
}

/// One recording: its file, when its first packet was captured (ns) and its sessions.
#[derive(Debug, Clone)]
pub struct Recording {
    pub path: PathBuf,
    pub first_packet_ns: i64,
    /// Packets the capture agent could not parse.
    pub parse_errors: u64,
    pub sessions: Vec<LabelledSession>,
}

/// Every capture of `labels` under `dir` through the capture agent (configured as `agent`),
/// in the order they were recorded (first packet), each session given its label. Fails on a
/// session no label names and on a label that names no session.
pub fn labelled_recordings(
    dir: &Path,
    labels: &[Label],
    agent: &AgentConfig,
) -> Result<Vec<Recording>, LabelError> {
    let by_key: BTreeMap<(&str, &str), &Label> = labels
        .iter()
        .map(|label| ((label.capture.as_str(), label.client_ip.as_str()), label))
        .collect();
    // Every capture in the folder, labelled or not: a recording no label names is an error.
    let read_error = |source| LabelError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut captures = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let name = entry.map_err(read_error)?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".pcap") {
            captures.push(name.into_owned());
        }
    }
    captures.sort();
    let mut used = BTreeMap::new();
    let mut recordings = Vec::new();
    for capture in &captures {
        let capture = capture.as_str();
        let path = dir.join(capture);
        let capture_error = |source| LabelError::Capture {
            path: path.clone(),
            source,
        };
        let mut events: Vec<SessionEvent> = Vec::new();
        let stats =
            capture_agent::analyze_file(&path, agent, &mut events).map_err(capture_error)?;
        let first_packet_ns = capture_agent::first_packet_time(&path)
            .map_err(|e| capture_error(e.into()))?
            .unwrap_or_default();
        // The last event of each session has its final auth result.
        let mut latest: BTreeMap<String, SessionEvent> = BTreeMap::new();
        for event in events {
            latest.insert(event.summary.session_id.clone(), event);
        }
        let mut sessions = Vec::new();
        for (session_id, event) in latest {
            let client_ip = event.summary.client_ip;
            let Some(&label) = by_key.get(&(capture, client_ip.as_str())) else {
                return Err(LabelError::Unlabelled {
                    capture: capture.to_string(),
                    session_id,
                    client_ip,
                });
            };
            *used.entry((capture, label.client_ip.as_str())).or_insert(0) += 1;
            sessions.push(LabelledSession {
                session_id,
                capture: capture.to_string(),
                client_ip,
                auth_result: event.summary.auth_result,
                desynced: event.summary.desynced,
                label: label.clone(),
            });
        }
        recordings.push(Recording {
            path,
            first_packet_ns,
            parse_errors: stats.parse_errors,
            sessions,
        });
    }
    if let Some(label) = labels
        .iter()
        .find(|label| !used.contains_key(&(label.capture.as_str(), label.client_ip.as_str())))
    {
        return Err(LabelError::Unused {
            capture: label.capture.clone(),
            client_ip: label.client_ip.clone(),
        });
    }
    recordings.sort_by(|a, b| (a.first_packet_ns, &a.path).cmp(&(b.first_packet_ns, &b.path)));
    Ok(recordings)
}

/// The area under the ROC curve of `scores` for telling `positives` from the rest: the
/// probability that a random positive scores above a random negative, ties counting half
/// (the Mann-Whitney statistic). `None` without a positive or a negative.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let mut ranked: Vec<(f64, bool)> = scores
        .iter()
        .copied()
        .zip(positives.iter().copied())
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_positive = ranked.iter().filter(|(_, positive)| *positive).count();
    let n_negative = ranked.len() - n_positive;
    if n_positive == 0 || n_negative == 0 {
        return None;
    }
    // Sum of the positives' ranks, tied scores sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < ranked.len() {
        let mut end = start;
        while end < ranked.len() && ranked[end].0 == ranked[start].0 {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = ranked[start..end].iter().filter(|(_, p)| *p).count();
        rank_sum += mean_rank * tied_positives as f64;
        start = end;
    }
    let n_positive = n_positive as f64;
    Some((rank_sum - n_positive * (n_positive + 1.0) / 2.0) / (n_positive * n_negative as f64))
}

#[cfg(test)]
mod tests {
    use super::roc_auc;

    #[test]
    fn auc_counts_ordered_pairs_and_half_ties() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // One positive above two negatives, below one: 2 of 3 pairs.
        assert_eq!(
            roc_auc(&[0.1, 0.3, 0.5, 0.9], &[false, false, true, false]),
            Some(2.0 / 3.0)
        );
        assert_eq!(roc_auc(&[0.1, 0.3], &[false, false]), None);
    }
}
