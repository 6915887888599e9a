//! Agent configuration: the VNC port set and the limits that bound memory and timing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::capture::checksum::ChecksumValidation;
use crate::capture::fragments::FragmentLimits;

/// A set of TCP ports, parsed from lists and ranges such as `5900-5905,6900`.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: Box<[u64; 1024]>,
}

impl PortSet {
    pub fn empty() -> PortSet {
        PortSet {
            bits: Box::new([0; 1024]),
        }
    }

    pub fn insert(&mut self, port: u16) {
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    /// The set as inclusive ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let mut port: u32 = 0;
        std::iter::from_fn(move || {
            while port <= 65535 && !self.contains(port as u16) {
                port += 1;
            }
            if port > 65535 {
                return None;
            }
            let lo = port as u16;
            while port <= 65535 && self.contains(port as u16) {
                port += 1;
            }
            Some((lo, (port - 1) as u16))
        })
    }
}

impl Default for PortSet {
    /// The default VNC ports, 5900-5905.
    fn default() -> Self {
        let mut set = PortSet::empty();
        for p in 5900..=5905 {
            set.insert(p);
        }
        set
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet({self})")
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet::empty();
        for part in s.split([',', ' ']).map(str::trim).filter(|p| !p.is_empty()) {
            let port = |t: &str| {
                t.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("{t:?} is not a port number (0-65535)"))
            };
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("port range {part:?} is reversed"));
                    }
                    for p in lo..=hi {
                        set.insert(p);
                    }
                }
                None => set.insert(port(part)?),
            }
        }
        if set.ranges().next().is_none() {
            return Err("no ports given".to_string());
        }
        Ok(set)
    }
}

/// Everything the agent's analysis needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_id: String,
    /// Ports where VNC servers listen.
    pub ports: PortSet,
    /// Also recognise RFB by its banner on any other port.
    pub any_port: bool,
    /// A `stats` event per open session this often (capture time).
    pub stats_interval: Duration,
    /// A connection without packets for this long ends with `idle_timeout`.
    pub idle_timeout: Duration,
    /// A closed (FIN/RST) connection is kept this long for its last packets.
    pub close_linger: Duration,
    /// Most connections tracked at once; the least recently active are evicted past it.
    pub max_flows: usize,
    /// Most out-of-order bytes buffered for one direction of one connection.
    pub max_buffered_per_flow: usize,
    /// Most memory held by out-of-order segments over all connections (their copies and
    /// bookkeeping, see `flow::reassembly`).
    pub max_buffered_total: usize,
    /// Most memory held by RFB parse buffers over all sessions (`rfb::state::ParseBudget`).
    pub max_parse_buffered_total: usize,
    /// Whether TCP checksums are checked (`auto`: unless the capture shows offload).
    pub checksum_validation: ChecksumValidation,
    /// Memory and time IP fragment reassembly may use.
    pub fragments: FragmentLimits,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            agent_id: "capture-agent".to_string(),
            ports: PortSet::default(),
            any_port: false,
            stats_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            close_linger: Duration::from_secs(1),
            max_flows: 100_000,
            max_buffered_per_flow: 1024 * 1024,
            max_buffered_total: 256 * 1024 * 1024,
            // A session's parse buffer holds only an incomplete message header or handshake
            // bytes waiting for the other side, a few hundred bytes in the lab captures; 64 MiB
            // still holds 170 directions at the 192 KiB cap of one, far more sessions than a
            // VNC host serves, and bounds what a flood of sessions that each leave a long
            // incomplete message can hold. Past it, directions lose framing (counted).
            max_parse_buffered_total: 64 * 1024 * 1024,
            checksum_validation: ChecksumValidation::Auto,
            fragments: FragmentLimits::default(),
        }
    }
}

/// Parses durations such as `30`, `30s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 1h)"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        other => Err(format!(
            "unknown duration unit {other:?} (use ms, s, m or h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_and_ranges() {
        let set: PortSet = "5900-5905, 6900,5910".parse().unwrap();
        assert!(set.contains(5900) && set.contains(5905) && set.contains(6900));
        assert!(!set.contains(5906));
        assert_eq!(set.to_string(), "5900-5905,5910,6900");
        assert!("5905-5900".parse::<PortSet>().is_err());
        assert!("vnc".parse::<PortSet>().is_err());
        assert!("".parse::<PortSet>().is_err());
        assert_eq!(PortSet::default().to_string(), "5900-5905");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("x").is_err());
    }
}
