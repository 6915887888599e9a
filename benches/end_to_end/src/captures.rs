//! The shared captures as replayable packets whose client addresses are rewritten per copy: a
//! copy gets one fresh address for each client address of the original, so copies are distinct
//! sessions from distinct sources while every byte the agent parses stays as recorded.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use capture_agent::capture::file::CaptureFile;
use capture_agent::capture::{decode, LinkType, Packet};
use capture_agent::{Agent, AgentConfig, EndReason, EventSink, RunError};
use schemas::{AuthResult, SessionEvent, SessionEventKind};

/// One recorded frame, owned, with the places of its client addresses.
pub struct Frame {
    /// Capture time, nanoseconds since the epoch.
    ts: i64,
    link: LinkType,
    data: Vec<u8>,
    orig_len: u32,
    /// Byte offset of each client address in `data`, with the index of the original client
    /// address it holds.
    client_fields: Vec<(usize, usize)>,
}

impl Frame {
    fn packet(&self, ts: i64) -> Packet<'_> {
        Packet {
            ts,
            link: self.link,
            data: &self.data,
            orig_len: self.orig_len,
        }
    }
}

/// A capture file ready to be replayed any number of times under fresh client addresses.
pub struct Capture {
    pub name: String,
    frames: Vec<Frame>,
    /// The client addresses of the original, in order of appearance.
    clients: Vec<IpAddr>,
    /// Sessions the agent finds in one copy.
    pub sessions: usize,
}

/// Hands `frame` to `agent` at capture time `ts` and its events to `sink`.
pub fn hand_over(
    agent: &mut Agent,
    frame: &Frame,
    ts: i64,
    sink: &mut dyn EventSink,
) -> Result<(), RunError> {
    agent.handle_packet(&frame.packet(ts));
    if agent.has_events() {
        capture_agent::publish(agent, sink)?;
    }
    Ok(())
}

/// The wall clock in the agent's capture time unit.
pub fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Offsets of the source and destination address in `frame`: IPv4 and IPv6 headers hold them
/// side by side, and no link header before them holds the same pair (`check_rewrite` would
/// catch one that did).
fn address_offsets(frame: &[u8], src: IpAddr, dst: IpAddr) -> Option<(usize, usize)> {
    let mut pair = octets(src);
    pair.extend(octets(dst));
    let at = frame.windows(pair.len()).position(|w| w == pair)?;
    Some((at, at + pair.len() / 2))
}

impl Capture {
    /// Reads `path` and finds, with the agent itself, its sessions and which side of every
    /// connection is the client (the side that is not a session's server or a VNC port).
    pub fn load(path: &Path, config: &AgentConfig) -> Result<Capture> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut file = CaptureFile::open(path).with_context(|| format!("opening {name}"))?;
        let mut frames = Vec::new();
        loop {
            match file.next_packet() {
                Ok(Some(packet)) => frames.push(Frame {
                    ts: packet.ts,
                    link: packet.link,
                    data: packet.data.to_vec(),
                    orig_len: packet.orig_len,
                    client_fields: Vec::new(),
                }),
                Ok(None) => break,
                // The agent stops at the same place; the frames before it are the capture.
                Err(e) => {
                    println!(
                        "  {name}: read stopped early ({e}); replaying the {} frames before",
                        frames.len()
                    );
                    break;
                }
            }
        }
        let mut capture = Capture {
            name,
            frames,
            clients: Vec::new(),
            sessions: 0,
        };
        let mut original = Vec::new();
        capture.replay(config, 0, &mut original)?;
        let servers: HashSet<SocketAddr> = original
            .iter()
            .filter_map(|e| {
                let s = &e.summary;
                Some(SocketAddr::new(
                    s.server_ip.parse().ok()?,
                    u16::try_from(s.server_port).ok()?,
                ))
            })
            .collect();
        capture.sessions = distinct_sessions(&original);
        capture.find_client_fields(config, &servers);
        capture.check_rewrite(config)?;
        Ok(capture)
    }

    fn find_client_fields(&mut self, config: &AgentConfig, servers: &HashSet<SocketAddr>) {
        let is_client = |ip: IpAddr, port: u16| {
            !servers.contains(&SocketAddr::new(ip, port)) && !config.ports.contains(port)
        };
        for frame in &mut self.frames {
            let Ok(segment) = decode::tcp_segment(frame.link, &frame.data) else {
                continue;
            };
            let Some((src_at, dst_at)) = address_offsets(&frame.data, segment.src, segment.dst)
            else {
                continue;
            };
            for (ip, port, at) in [
                (segment.src, segment.src_port, src_at),
                (segment.dst, segment.dst_port, dst_at),
            ] {
                if is_client(ip, port) {
                    let index = match self.clients.iter().position(|c| *c == ip) {
                        Some(index) => index,
                        None => {
                            self.clients.push(ip);
                            self.clients.len() - 1
                        }
                    };
                    frame.client_fields.push((at, index));
                }
            }
        }
    }

    /// A copy under other addresses must give the same sessions, all from the new addresses.
    fn check_rewrite(&mut self, config: &AgentConfig) -> Result<()> {
        // The benchmarking blocks (RFC 2544, RFC 5180); any addresses not in a capture do.
        let mut probe = Sources::new(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 1),
        );
        let fresh = probe.fresh_for(&self.clients);
        self.rewrite(&fresh);
        let mut copy = Vec::new();
        self.replay(config, 0, &mut copy)?;
        let sessions = distinct_sessions(&copy);
        ensure!(
            sessions == self.sessions,
            "{}: a copy under new client addresses has {sessions} sessions, the original {}",
            self.name,
            self.sessions
        );
        if let Some(event) = copy.iter().find(|e| {
            !e.summary
                .client_ip
                .parse()
                .is_ok_and(|ip| fresh.contains(&ip))
        }) {
            bail!(
                "{}: a rewritten copy still has a session from {} (the client side of a connection was not recognised)",
                self.name,
                event.summary.client_ip
            );
        }
        Ok(())
    }

    /// The client addresses of the original, in order of appearance.
    pub fn clients(&self) -> &[IpAddr] {
        &self.clients
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Capture time of the first frame.
    pub fn first_ts(&self) -> i64 {
        self.frames.first().map_or(0, |f| f.ts)
    }

    /// Writes `sources` (one for each of [`Capture::clients`], of the same family) into every
    /// frame in place of the client addresses.
    pub fn rewrite(&mut self, sources: &[IpAddr]) {
        let sources: Vec<Vec<u8>> = sources.iter().map(|ip| octets(*ip)).collect();
        for frame in &mut self.frames {
            for &(at, client) in &frame.client_fields {
                let bytes = &sources[client];
                frame.data[at..at + bytes.len()].copy_from_slice(bytes);
            }
        }
    }

    /// Runs one copy through a fresh agent, its capture times moved by `shift`, and ends the
    /// sessions still open at the end as the end of a capture file does; the events go to
    /// `sink`.
    pub fn replay(
        &self,
        config: &AgentConfig,
        shift: i64,
        sink: &mut dyn EventSink,
    ) -> Result<(), RunError> {
        let mut agent = Agent::new(config.clone());
        for frame in &self.frames {
            hand_over(&mut agent, frame, frame.ts + shift, sink)?;
        }
        agent.finish(EndReason::CaptureEnd);
        capture_agent::publish(&mut agent, sink)
    }

    /// Index of the frame whose hand-over makes the agent report the `max_retry`-th failed
    /// login of the capture (or the server's refusal for too many failures, which the scorer
    /// counts as brute force too): the packet that completes the brute force.
    pub fn brute_force_completion(&self, config: &AgentConfig, max_retry: u32) -> Result<usize> {
        let mut agent = Agent::new(config.clone());
        let mut failed = HashSet::new();
        let mut events = Vec::new();
        for (index, frame) in self.frames.iter().enumerate() {
            hand_over(&mut agent, frame, frame.ts, &mut events)?;
            for event in events.drain(..) {
                let outcome =
                    matches!(event.kind, SessionEventKind::Auth | SessionEventKind::Ended);
                match event.summary.auth_result {
                    AuthResult::Failed if outcome => {
                        failed.insert(event.summary.session_id);
                    }
                    AuthResult::TooMany if outcome => return Ok(index),
                    _ => {}
                }
            }
            if failed.len() >= max_retry as usize {
                return Ok(index);
            }
        }
        bail!(
            "{} has {} failed logins; a brute force needs {max_retry} (BRUTE_FORCE_MAX_RETRY)",
            self.name,
            failed.len()
        )
    }
}

fn distinct_sessions(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .map(|e| e.summary.session_id.as_str())
        .collect::<HashSet<_>>()
        .len()
}

/// Fresh client addresses, counted up from a first IPv4 and a first IPv6 address.
pub struct Sources {
    next_v4: u32,
    next_v6: u128,
}

impl Sources {
    pub fn new(first_v4: Ipv4Addr, first_v6: Ipv6Addr) -> Sources {
        Sources {
            next_v4: first_v4.to_bits(),
            next_v6: first_v6.to_bits(),
        }
    }

    /// One fresh address for each of `originals`, of the same family.
    pub fn fresh_for(&mut self, originals: &[IpAddr]) -> Vec<IpAddr> {
        originals
            .iter()
            .map(|original| match original {
                IpAddr::V4(_) => {
                    self.next_v4 += 1;
                    IpAddr::V4(Ipv4Addr::from_bits(self.next_v4 - 1))
                }
                IpAddr::V6(_) => {
                    self.next_v6 += 1;
                    IpAddr::V6(Ipv6Addr::from_bits(self.next_v6 - 1))
                }
            })
            .collect()
    }
}
