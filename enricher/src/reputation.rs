//! Reputation: optional CIDR list files naming known-bad sources and allow-listed ones. Each
//! file holds one address or CIDR a line (`#` starts a comment) and is read again when its
//! modification time changes. An allow-listed address is tagged `allow_listed` even if a bad
//! list names it too: the operator's explicit exception wins.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ranges::{parse_cidr, AddressRanges};

pub const KNOWN_BAD: &str = "known_bad";
pub const ALLOW_LISTED: &str = "allow_listed";

/// One list file and the ranges read from it at its last modification time.
#[derive(Debug)]
struct WatchedList {
    path: PathBuf,
    modified: Option<SystemTime>,
    ranges: AddressRanges<()>,
}

impl WatchedList {
    fn new(path: PathBuf) -> Self {
        let mut list = WatchedList {
            path,
            modified: None,
            ranges: AddressRanges::default(),
        };
        list.refresh();
        list
    }

    /// Reads the file again if its modification time changed. A file that cannot be read keeps
    /// the ranges read last, with a warning and a count.
    fn refresh(&mut self) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let modified = match modified {
            Ok(m) => m,
            Err(e) => {
                self.failed(&e.to_string());
                return;
            }
        };
        if self.modified == Some(modified) {
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (ranges, rejected) = parse_list(&text);
                if rejected > 0 {
                    tracing::warn!(path = %self.path.display(), rejected, "reputation lines that are not addresses or CIDRs were skipped");
                }
                tracing::info!(path = %self.path.display(), ranges = ranges.len(), "reputation list loaded");
                self.ranges = ranges;
                self.modified = Some(modified);
            }
            Err(e) => self.failed(&e.to_string()),
        }
    }

    fn failed(&self, error: &str) {
        telemetry::counter(
            "vncguard_enricher_reputation_read_errors_total",
            "Reputation list reads that failed; the previous contents stay in force.",
            &[],
        )
        .inc();
        tracing::warn!(path = %self.path.display(), error, "reputation list unreadable");
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.ranges.find(address).is_some()
    }
}

/// The ranges of a list file's text and the number of lines that were not addresses.
fn parse_list(text: &str) -> (AddressRanges<()>, usize) {
    let mut ranges = AddressRanges::default();
    let mut rejected = 0;
    for line in text.lines() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match parse_cidr(entry) {
            Some((start, end)) => {
                ranges.push(start, end, ());
            }
            None => rejected += 1,
        }
    }
    ranges.merge_overlaps();
    (ranges, rejected)
}

/// The bad and allow lists, either optional.
#[derive(Debug, Default)]
pub struct Reputation {
    bad: Option<WatchedList>,
    allow: Option<WatchedList>,
}

impl Reputation {
    pub fn new(bad: Option<&Path>, allow: Option<&Path>) -> Self {
        Reputation {
            bad: bad.map(|p| WatchedList::new(p.to_path_buf())),
            allow: allow.map(|p| WatchedList::new(p.to_path_buf())),
        }
    }

    /// Re-reads the files whose modification time changed.
    pub fn refresh(&mut self) {
        self.bad
            .iter_mut()
            .chain(self.allow.iter_mut())
            .for_each(WatchedList::refresh);
    }

    /// `allow_listed`, `known_bad` or nothing for `address`.
    pub fn tag(&self, address: &str) -> Option<&'static str> {
        let address: IpAddr = address.parse().ok()?;
        if self.allow.as_ref().is_some_and(|l| l.contains(address)) {
            Some(ALLOW_LISTED)
        } else if self.bad.as_ref().is_some_and(|l| l.contains(address)) {
            Some(KNOWN_BAD)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_tag_addresses_and_reload_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("enricher-reputation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.txt");
        let allow = dir.join("allow.txt");
        std::fs::write(
            &bad,
            "# scanners\n203.0.113.0/24\n198.51.100.7 # one host\nnot an address\n",
        )
        .unwrap();
        std::fs::write(&allow, "203.0.113.9\n").unwrap();
        let mut reputation = Reputation::new(Some(&bad), Some(&allow));
        assert_eq!(reputation.tag("203.0.113.50"), Some(KNOWN_BAD));
        assert_eq!(reputation.tag("203.0.113.9"), Some(ALLOW_LISTED));
        assert_eq!(reputation.tag("198.51.100.7"), Some(KNOWN_BAD));
        assert_eq!(reputation.tag("198.51.100.8"), None);

        // A new modification time makes the next refresh read the file again.
        std::fs::write(&bad, "2001:db8::/32\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&bad)
            .unwrap()
            .set_modified(later)
            .unwrap();
        reputation.refresh();
        assert_eq!(reputation.tag("203.0.113.50"), None);
        assert_eq!(reputation.tag("2001:db8::5"), Some(KNOWN_BAD));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
