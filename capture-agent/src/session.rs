//! Session accounting: drives the RFB state machine with a connection's reassembled bytes, fills
//! its [`SessionSummary`] and decides when to emit [`SessionEvent`]s.
//!
//! Events of one session, in order: `started` (the server's RFB banner, or the first bytes of a
//! connection picked up mid-stream on a VNC port), `auth` (the handshake's outcome), `stats`
//! (every stats interval of capture time while open) and `ended` (with the final summary).
//! Every event carries the running summary.
//!
//! Counting rules (also in the crate docs):
//! - `packets_c2s` / `packets_s2c` count every TCP segment of the connection in that direction,
//!   including the handshake, pure ACKs and retransmissions (as `tcpdump | wc -l` would).
//! - `bytes_c2s` / `bytes_s2c` count TCP payload bytes delivered in stream order, each byte once
//!   (retransmitted copies excluded); `gap_bytes` counts the bytes missing from the capture.
//! - `start_time` is the first packet of the connection (its SYN when seen), `end_time` its
//!   last packet; `end_time` stays null until the session ends.
//! - `handshake_verified`: the connection's TCP handshake proved its client receives the
//!   server's packets ([`crate::flow::handshake`]); every event carries the state at its time.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::DateTime;
use schemas::{AuthResult, SessionEvent, SessionEventKind, SessionSummary, Timestamp};
use sha2::{Digest, Sha256};

use crate::rfb::parser::{encodings, escape_text};
use crate::rfb::state::{ClientKind, Dir, ParseBudget, RfbEvent, RfbSink, RfbState, ServerKind};

/// Why a session ended (`end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Fin,
    Rst,
    IdleTimeout,
    Evicted,
    CaptureEnd,
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Evicted => "evicted",
            EndReason::CaptureEnd => "capture_end",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Traffic counters of a connection, kept by the flow layer, and what its TCP handshake proved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub gap_bytes: u64,
    /// See [`crate::flow::handshake`].
    pub handshake_verified: bool,
}

/// Capture time in nanoseconds since the Unix epoch.
pub type Nanos = i64;

pub fn to_timestamp(ns: Nanos) -> Timestamp {
    DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
}

/// Deterministic session id: the first 16 bytes of SHA-256 over agent id, client and server
/// address and the first packet's time in microseconds, as hex.
pub fn session_id(agent_id: &str, client: SocketAddr, server: SocketAddr, first: Nanos) -> String {
    let mut h = Sha256::new();
    h.update(agent_id.as_bytes());
    h.update(b"|");
    h.update(client.to_string().as_bytes());
    h.update(b"|");
    h.update(server.to_string().as_bytes());
    h.update(b"|");
    h.update(first.div_euclid(1000).to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The part of a session the RFB state machine reports into.
#[derive(Debug)]
struct Accounting {
    summary: SessionSummary,
    clipboard: Option<Sha256>,
    /// The server's banner was seen (or the session was picked up mid-stream).
    started: bool,
    not_rfb: bool,
    /// An `auth` event is due.
    auth_due: bool,
    started_due: bool,
    /// A direction lost framing during the handshake (the outcome cannot be known).
    handshake_lost: bool,
}

impl RfbSink for Accounting {
    fn on_event(&mut self, dir: Dir, event: RfbEvent<'_>) {
        let s = &mut self.summary;
        match event {
            RfbEvent::ServerVersion(v) => {
                s.server_version = Some(v.to_string());
                if !self.started {
                    self.started = true;
                    self.started_due = true;
                }
            }
            RfbEvent::ClientVersion(v) => s.client_version = Some(v.to_string()),
            RfbEvent::NotRfb => self.not_rfb = true,
            RfbEvent::SecurityTypesOffered(list) => {
                s.security_types_offered = list.iter().map(|&t| i32::from(t)).collect();
            }
            RfbEvent::SecurityType(t) => s.security_type = Some(t as i32),
            RfbEvent::VncAuthChallenge => s.vnc_auth_challenge = true,
            RfbEvent::Auth { result, reason } => {
                s.auth_result = result;
                s.failure_reason = reason.map(escape_text);
                self.auth_due = true;
            }
            RfbEvent::Encrypted => s.encrypted = true,
            RfbEvent::ClientInit { shared } => s.shared_flag = Some(shared),
            RfbEvent::ServerInit(init) => {
                s.width = Some(i32::from(init.width));
                s.height = Some(i32::from(init.height));
                s.pixel_format = Some(init.pixel_format.describe());
                s.desktop_name = Some(escape_text(init.name));
            }
            RfbEvent::ClientMessage(kind) => match kind {
                ClientKind::KeyEvent => s.key_events += 1,
                ClientKind::PointerEvent => s.pointer_events += 1,
                ClientKind::FramebufferUpdateRequest => s.framebuffer_update_requests += 1,
                ClientKind::FileTransfer => s.file_transfer_messages += 1,
                ClientKind::SetPixelFormat
                | ClientKind::SetEncodings
                | ClientKind::CutText
                | ClientKind::Other => {}
            },
            RfbEvent::Encodings(raw) => {
                s.encodings.clear();
                s.encodings.extend(encodings(raw));
            }
            RfbEvent::ServerMessage(kind) => match kind {
                ServerKind::FramebufferUpdate => s.framebuffer_updates += 1,
                ServerKind::Bell => s.bell_count += 1,
                ServerKind::FileTransfer => s.file_transfer_messages += 1,
                ServerKind::CutText | ServerKind::Other => {}
            },
            RfbEvent::CutText { len, .. } => {
                match dir {
                    Dir::ClientToServer => {
                        s.client_cut_text_count += 1;
                        s.client_cut_text_bytes += i64::from(len);
                    }
                    Dir::ServerToClient => {
                        s.server_cut_text_count += 1;
                        s.server_cut_text_bytes += i64::from(len);
                    }
                }
                self.clipboard.get_or_insert_with(Sha256::new);
            }
            RfbEvent::CutTextData(bytes) => {
                self.clipboard.get_or_insert_with(Sha256::new).update(bytes);
            }
            RfbEvent::Desync { parse_error, .. } => {
                s.desynced = true;
                if parse_error {
                    s.parse_errors += 1;
                }
                if s.auth_result == AuthResult::Unknown && !s.encrypted {
                    self.handshake_lost = true;
                }
            }
            RfbEvent::Resync => {}
        }
    }
}

/// One TCP connection that is (or may turn out to be) an RFB session.
#[derive(Debug)]
pub struct Session {
    acc: Accounting,
    rfb: RfbState,
    seq: i64,
    next_stats: Nanos,
    stats_interval: Nanos,
}

/// What identifies a session and how often it reports.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub agent_id: &'a str,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// First packet of the connection.
    pub first_packet: Nanos,
    pub stats_interval: Nanos,
    /// Shared by the parse buffers of every session.
    pub parse_budget: &'a Arc<ParseBudget>,
}

impl Session {
    /// A connection whose RFB conversation is seen from the start (the server's banner decides
    /// whether it is a session).
    pub fn new(origin: &Origin<'_>) -> Session {
        let id = session_id(
            origin.agent_id,
            origin.client,
            origin.server,
            origin.first_packet,
        );
        let summary = SessionSummary::new(
            id,
            origin.agent_id.to_string(),
            origin.client,
            origin.server,
            to_timestamp(origin.first_packet),
        );
        Session {
            acc: Accounting {
                summary,
                clipboard: None,
                started: false,
                not_rfb: false,
                auth_due: false,
                started_due: false,
                handshake_lost: false,
            },
            rfb: RfbState::with_budget(origin.parse_budget.clone()),
            seq: 0,
            next_stats: origin.first_packet.saturating_add(origin.stats_interval),
            stats_interval: origin.stats_interval.max(1),
        }
    }

    /// A connection picked up mid-stream on a VNC port: a session from its first bytes,
    /// `partial`, with only the client direction able to find its framing again.
    pub fn new_midstream(origin: &Origin<'_>) -> Session {
        let mut s = Session::new(origin);
        s.rfb = RfbState::new_midstream_with_budget(origin.parse_budget.clone());
        s.acc.summary.partial = true;
        s.acc.summary.desynced = true;
        s.acc.handshake_lost = true;
        s.acc.started = true;
        s.acc.started_due = true;
        s
    }

    pub fn summary(&self) -> &SessionSummary {
        &self.acc.summary
    }

    /// The server's first bytes were not an RFB banner: not a session.
    pub fn is_not_rfb(&self) -> bool {
        self.acc.not_rfb
    }

    pub fn is_started(&self) -> bool {
        self.acc.started
    }

    pub fn feed(&mut self, dir: Dir, data: &[u8]) {
        if !self.acc.not_rfb {
            self.rfb.feed(dir, data, &mut self.acc);
        }
    }

    pub fn gap(&mut self, dir: Dir, len: u64) {
        if !self.acc.not_rfb {
            self.rfb.gap(dir, len, &mut self.acc);
        }
    }

    fn snapshot(&mut self, traffic: &Traffic) {
        let s = &mut self.acc.summary;
        s.packets_c2s = traffic.packets[0] as i64;
        s.packets_s2c = traffic.packets[1] as i64;
        s.bytes_c2s = traffic.bytes[0] as i64;
        s.bytes_s2c = traffic.bytes[1] as i64;
        s.gap_bytes = traffic.gap_bytes as i64;
        s.handshake_verified = traffic.handshake_verified;
        s.clipboard_sha256 = self
            .acc
            .clipboard
            .as_ref()
            .map(|h| hex::encode(h.clone().finalize()));
    }

    fn emit(
        &mut self,
        kind: SessionEventKind,
        now: Nanos,
        traffic: &Traffic,
        out: &mut Vec<SessionEvent>,
    ) {
        self.snapshot(traffic);
        out.push(SessionEvent::new(
            kind,
            self.seq,
            to_timestamp(now),
            self.acc.summary.clone(),
        ));
        self.seq += 1;
    }

    /// Emits the `started` and `auth` events that the last bytes made due.
    pub fn poll(&mut self, now: Nanos, traffic: &Traffic, out: &mut Vec<SessionEvent>) {
        if !self.acc.started || self.acc.not_rfb {
            return;
        }
        if self.acc.started_due {
            self.acc.started_due = false;
            self.emit(SessionEventKind::Started, now, traffic, out);
        }
        if self.acc.auth_due {
            self.acc.auth_due = false;
            self.emit(SessionEventKind::Auth, now, traffic, out);
        }
    }

    /// A `stats` event is due at `now`.
    pub fn stats_due(&self, now: Nanos) -> bool {
        self.acc.started && !self.acc.not_rfb && now >= self.next_stats
    }

    /// Emits a `stats` event when the interval has passed.
    pub fn tick(&mut self, now: Nanos, traffic: &Traffic, out: &mut Vec<SessionEvent>) {
        if !self.acc.started || self.acc.not_rfb || now < self.next_stats {
            return;
        }
        while self.next_stats <= now {
            self.next_stats = self.next_stats.saturating_add(self.stats_interval);
        }
        self.emit(SessionEventKind::Stats, now, traffic, out);
    }

    /// Ends the session: pending outcomes are reported, a handshake left unfinished is
    /// `abandoned`, and the `ended` event carries the final summary.
    pub fn end(
        &mut self,
        reason: EndReason,
        last_packet: Nanos,
        traffic: &Traffic,
        out: &mut Vec<SessionEvent>,
    ) {
        if !self.acc.started || self.acc.not_rfb {
            return;
        }
        self.rfb.finish(&mut self.acc);
        self.poll(last_packet, traffic, out);
        let s = &mut self.acc.summary;
        if s.auth_result == AuthResult::Unknown && !s.encrypted && !self.acc.handshake_lost {
            s.auth_result = AuthResult::Abandoned;
        }
        s.end_time = Some(to_timestamp(last_packet));
        s.end_reason = Some(reason.as_str().to_string());
        self.emit(SessionEventKind::Ended, last_packet, traffic, out);
    }
}
