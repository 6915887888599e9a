//! The RFB state machine of one connection: one explicit phase per direction, driven by the
//! reassembled bytes of that direction, with the facts both directions share (negotiated
//! dialect, chosen security type, pixel format) in [`Negotiation`].
//!
//! Bytes are parsed where they lie: only an incomplete message tail (or bytes that must wait for
//! the other direction during the handshake) is copied into the direction's small buffer, and
//! large bodies (pixel data, cut text) are skipped or hashed as they stream past. A direction
//! that meets bytes it cannot frame (an unknown encoding, invalid data, a capture gap inside a
//! header) becomes desynchronised: it keeps counting and tries to find a message boundary again
//! at the start of each later segment.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use schemas::AuthResult;

use super::parser::{self, *};

/// Memory held by the parse buffers of every session (their capacity), shared by all of them.
/// [`MAX_PENDING`] bounds one direction; this bounds their sum, which without it grows with the
/// flow table (100,000 flows × 2 × 192 KiB is 37 GiB). A direction whose buffer would take the
/// sum past the limit loses framing (as a message too large for its buffer does) and frees its
/// buffer; the check runs after each segment, so the sum may pass the limit by one segment's
/// growth of one buffer.
#[derive(Debug)]
pub struct ParseBudget {
    used: AtomicUsize,
    limit: usize,
    refused: AtomicU64,
}

impl ParseBudget {
    pub fn new(limit: usize) -> Arc<ParseBudget> {
        Arc::new(ParseBudget {
            used: AtomicUsize::new(0),
            limit,
            refused: AtomicU64::new(0),
        })
    }

    /// Bytes of buffer capacity held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Directions that lost framing because the budget was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn try_charge(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(bytes) > self.limit {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Direction of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    ClientToServer = 0,
    ServerToClient = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Dir {
        match self {
            Dir::ClientToServer => Dir::ServerToClient,
            Dir::ServerToClient => Dir::ClientToServer,
        }
    }
}

/// Client message kinds the accounting counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    SetPixelFormat,
    SetEncodings,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    CutText,
    FileTransfer,
    Other,
}

/// Server message kinds the accounting counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    FramebufferUpdate,
    Bell,
    CutText,
    FileTransfer,
    Other,
}

/// What the state machine observed, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RfbEvent<'a> {
    /// The server's ProtocolVersion: the connection speaks RFB.
    ServerVersion(ProtocolVersion),
    ClientVersion(ProtocolVersion),
    /// The server's first bytes are not an RFB banner.
    NotRfb,
    /// Security types the server offered (3.7+) or chose (3.3, one byte list).
    SecurityTypesOffered(&'a [u8]),
    /// The security type in use (client's choice in 3.7+, server's in 3.3).
    SecurityType(u32),
    VncAuthChallenge,
    /// The handshake's outcome (ok, failed, too many, none required) and the server's reason.
    Auth {
        result: AuthResult,
        reason: Option<&'a [u8]>,
    },
    /// The chosen security type encrypts the session: only counting follows.
    Encrypted,
    ClientInit {
        shared: bool,
    },
    ServerInit(ServerInit<'a>),
    ClientMessage(ClientKind),
    Encodings(&'a [u8]),
    ServerMessage(ServerKind),
    /// A cut text message of `len` bytes starts (its direction tells client or server).
    CutText {
        len: u32,
        extended: bool,
    },
    /// Bytes of the current cut text, streamed.
    CutTextData(&'a [u8]),
    /// The direction lost framing. `parse_error` when the bytes were invalid (not merely
    /// unsupported or missing).
    Desync {
        reason: &'static str,
        parse_error: bool,
    },
    /// The direction found a message boundary again.
    Resync,
}

/// Receives what the state machine observes.
pub trait RfbSink {
    fn on_event(&mut self, dir: Dir, event: RfbEvent<'_>);
}

/// Security types that wrap the rest of the session in encryption (or a protocol we cannot see
/// into): RealVNC RA2 family, TLS (Vino), SecureTunnel, IntegratedSSH.
fn is_encrypting_type(t: u32) -> bool {
    matches!(t, 5 | 6 | 7 | 8 | 13 | 18 | 23 | 24 | 129..=134)
}

/// VeNCrypt subtypes that start TLS.
fn is_tls_subtype(t: u32) -> bool {
    (257..=264).contains(&t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RectPart {
    Length,
    Rre { compact: bool },
    Hextile { tile: u32, zlib: bool },
    Trle { tile: u32, palette: u8 },
    Tight,
    CursorWithAlpha,
    ExtendedDesktopSize,
    DesktopName,
    VmwareCursor,
    H264,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    // --- handshake ---
    /// Client or server ProtocolVersion.
    Version,
    /// Waiting for the other direction to say what comes next.
    Await,
    SecurityTypes,
    SecurityType33,
    /// Client's one-byte choice (3.7+).
    Choice,
    VncChallenge,
    VncResponse,
    ArdParams,
    ArdResponse {
        key_len: u16,
    },
    TightTunnels,
    TightTunnelChoice,
    TightAuthCaps,
    TightAuthChoice,
    VeNCryptVersion,
    VeNCryptStatus,
    VeNCryptSubtypes {
        wide: bool,
    },
    VeNCryptSubtype {
        wide: bool,
    },
    VeNCryptAck,
    PlainCredentials,
    XvpCredentials,
    SecurityResult,
    FailureReason {
        code: u32,
    },
    ClientInit,
    ServerInit,
    TightInteractionCaps,
    // --- after the handshake ---
    Messages,
    /// Rectangles left in the current FramebufferUpdate.
    Rects {
        remaining: u16,
    },
    Rect {
        rect: RectHeader,
        remaining: u16,
        pf: PixelFormat,
        part: RectPart,
    },
    // --- count only ---
    /// Encrypted session.
    Opaque,
    /// Handshake ended (refused, failed): nothing more to parse.
    Closed,
    Desynced,
}

/// Facts both directions need.
#[derive(Debug, Clone, Default)]
pub struct Negotiation {
    pub server_version: Option<ProtocolVersion>,
    pub client_version: Option<ProtocolVersion>,
    pub dialect: Option<Dialect>,
    pub security_type: Option<u32>,
    /// Pixel format of server to client pixel data (ServerInit, then SetPixelFormat).
    pub pixel_format: Option<PixelFormat>,
    pub fb_width: u16,
    pub fb_height: u16,
    tight_security: bool,
    challenge_seen: bool,
    vencrypt_wide: bool,
}

/// Why the next step could not run.
enum Step {
    /// Consumed this many bytes (0 only together with a phase change).
    Consumed(usize),
    /// At least this many bytes from the current position are needed.
    Need(usize),
    /// The other direction must progress first.
    Blocked,
}

/// Bytes of one direction kept between segments: only incomplete headers and handshake bytes
/// waiting for the other direction. Past this, the direction gives up framing.
const MAX_PENDING: usize = 192 * 1024;
/// Handshake bytes that arrive before the other direction made them expected (capture
/// reordering): real handshake messages are far smaller.
const MAX_BLOCKED: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkipKind {
    Discard,
    CutText,
}

#[derive(Debug)]
struct Half {
    phase: Phase,
    buf: Vec<u8>,
    /// Capacity of `buf` charged to the [`ParseBudget`].
    charged: usize,
    skip: u64,
    skip_kind: SkipKind,
    /// The direction reached the message phase once (resynchronisation is allowed).
    framed: bool,
}

impl Half {
    fn new(phase: Phase) -> Half {
        Half {
            phase,
            buf: Vec::new(),
            charged: 0,
            skip: 0,
            skip_kind: SkipKind::Discard,
            framed: false,
        }
    }
}

/// RFB state of one connection.
#[derive(Debug)]
pub struct RfbState {
    halves: [Half; 2],
    pub neg: Negotiation,
    budget: Arc<ParseBudget>,
}

impl Default for RfbState {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RfbState {
    fn drop(&mut self) {
        for h in &self.halves {
            self.budget.release(h.charged);
        }
    }
}

impl RfbState {
    /// A connection seen from its start, with a budget of its own (no limit beyond
    /// [`MAX_PENDING`] per direction).
    pub fn new() -> RfbState {
        RfbState::with_budget(ParseBudget::new(usize::MAX))
    }

    /// A connection seen from its start whose buffers count against `budget`.
    pub fn with_budget(budget: Arc<ParseBudget>) -> RfbState {
        RfbState {
            halves: [Half::new(Phase::Version), Half::new(Phase::Version)],
            neg: Negotiation::default(),
            budget,
        }
    }

    /// A connection picked up mid-stream: both directions start without framing; the client
    /// direction may find a message boundary again.
    pub fn new_midstream() -> RfbState {
        RfbState::new_midstream_with_budget(ParseBudget::new(usize::MAX))
    }

    /// [`RfbState::new_midstream`] with buffers that count against `budget`.
    pub fn new_midstream_with_budget(budget: Arc<ParseBudget>) -> RfbState {
        let mut s = RfbState::with_budget(budget);
        for h in &mut s.halves {
            h.phase = Phase::Desynced;
        }
        s.halves[Dir::ClientToServer.index()].framed = true;
        s
    }

    /// The direction has lost framing and counts bytes only.
    pub fn is_desynced(&self, dir: Dir) -> bool {
        self.halves[dir.index()].phase == Phase::Desynced
    }

    /// Both directions reached the message phase (or beyond).
    pub fn in_session(&self) -> bool {
        self.halves.iter().all(|h| h.framed)
    }

    /// Feeds reassembled bytes of one direction (one call per segment or contiguous run).
    pub fn feed<S: RfbSink>(&mut self, dir: Dir, data: &[u8], sink: &mut S) {
        if self.halves[dir.index()].phase == Phase::Desynced {
            if !self.try_resync(dir, data) {
                return;
            }
            sink.on_event(dir, RfbEvent::Resync);
        }
        self.run(dir, data, sink);
        // Handshake bytes of the other direction may have been waiting for these.
        for _ in 0..4 {
            let other = dir.other();
            let progressed = self.retry(other, sink) | self.retry(dir, sink);
            if !progressed {
                break;
            }
        }
        self.account(dir, sink);
        self.account(dir.other(), sink);
    }

    /// Charges (or returns) the change in a direction's buffer capacity to the budget; a
    /// direction the budget cannot afford loses framing and frees its buffer.
    fn account<S: RfbSink>(&mut self, dir: Dir, sink: &mut S) {
        let h = &mut self.halves[dir.index()];
        let capacity = h.buf.capacity();
        if capacity < h.charged {
            self.budget.release(h.charged - capacity);
            h.charged = capacity;
        } else if capacity > h.charged {
            if self.budget.try_charge(capacity - h.charged) {
                h.charged = capacity;
            } else {
                self.desync(dir, "parse buffer budget exhausted", false, sink);
            }
        }
    }

    /// Bytes of this direction are missing from the capture.
    pub fn gap<S: RfbSink>(&mut self, dir: Dir, len: u64, sink: &mut S) {
        let h = &mut self.halves[dir.index()];
        match h.phase {
            Phase::Opaque | Phase::Closed | Phase::Desynced => {}
            _ if h.buf.is_empty() && h.skip >= len => h.skip -= len,
            _ => self.desync(dir, "capture gap", false, sink),
        }
    }

    /// The connection ended: report what was pending.
    pub fn finish<S: RfbSink>(&mut self, sink: &mut S) {
        if let Phase::FailureReason { code } = self.halves[Dir::ServerToClient.index()].phase {
            sink.on_event(
                Dir::ServerToClient,
                RfbEvent::Auth {
                    result: failure_result(code, None),
                    reason: None,
                },
            );
            self.halves[Dir::ServerToClient.index()].phase = Phase::Closed;
        }
    }

    fn retry<S: RfbSink>(&mut self, dir: Dir, sink: &mut S) -> bool {
        let h = &self.halves[dir.index()];
        if h.buf.is_empty() || h.phase == Phase::Await {
            return false;
        }
        let before = h.buf.len();
        let phase = h.phase;
        self.run(dir, &[], sink);
        let h = &self.halves[dir.index()];
        h.buf.len() != before || h.phase != phase
    }

    fn run<S: RfbSink>(&mut self, dir: Dir, mut data: &[u8], sink: &mut S) {
        let i = dir.index();
        // 1. Bytes kept from earlier segments come first.
        if !self.halves[i].buf.is_empty() {
            let mut buf = std::mem::take(&mut self.halves[i].buf);
            let mut pos = 0;
            let mut idle = 0;
            loop {
                if pos == buf.len() {
                    break;
                }
                match self.step(dir, &buf[pos..], sink) {
                    Step::Consumed(n) => {
                        pos += n;
                        idle = if n == 0 { idle + 1 } else { 0 };
                        if idle > 8 {
                            self.desync(dir, "state machine made no progress", true, sink);
                            return;
                        }
                    }
                    Step::Need(total) => {
                        if data.is_empty() {
                            break;
                        }
                        buf.drain(..pos);
                        pos = 0;
                        let want = total.saturating_sub(buf.len()).max(1).min(data.len());
                        buf.extend_from_slice(&data[..want]);
                        data = &data[want..];
                        if buf.len() > MAX_PENDING {
                            self.desync(dir, "message larger than the parse buffer", true, sink);
                            return;
                        }
                    }
                    Step::Blocked => {
                        buf.drain(..pos);
                        buf.extend_from_slice(data);
                        data = &[];
                        pos = 0;
                        if buf.len() > MAX_BLOCKED {
                            self.desync(dir, "handshake bytes waiting too long", true, sink);
                            return;
                        }
                        break;
                    }
                }
                if self.halves[i].phase == Phase::Desynced {
                    return;
                }
            }
            buf.drain(..pos);
            if !buf.is_empty() {
                debug_assert!(data.is_empty());
                self.halves[i].buf = buf;
                return;
            }
            self.halves[i].buf = buf; // empty, keeps its capacity
        }
        // 2. Then the new bytes, parsed in place.
        let mut idle = 0;
        while !data.is_empty() {
            match self.step(dir, data, sink) {
                Step::Consumed(n) => {
                    data = &data[n..];
                    idle = if n == 0 { idle + 1 } else { 0 };
                    if idle > 8 {
                        self.desync(dir, "state machine made no progress", true, sink);
                        return;
                    }
                }
                step @ (Step::Need(_) | Step::Blocked) => {
                    let limit = if matches!(step, Step::Blocked) {
                        MAX_BLOCKED
                    } else {
                        MAX_PENDING
                    };
                    let h = &mut self.halves[i];
                    if h.buf.len() + data.len() > limit {
                        self.desync(dir, "message larger than the parse buffer", true, sink);
                        return;
                    }
                    h.buf.extend_from_slice(data);
                    return;
                }
            }
        }
    }

    fn desync<S: RfbSink>(
        &mut self,
        dir: Dir,
        reason: &'static str,
        parse_error: bool,
        sink: &mut S,
    ) {
        let h = &mut self.halves[dir.index()];
        h.phase = Phase::Desynced;
        // A desynchronised direction buffers nothing again: free the memory.
        h.buf = Vec::new();
        self.budget.release(h.charged);
        h.charged = 0;
        h.skip = 0;
        sink.on_event(
            dir,
            RfbEvent::Desync {
                reason,
                parse_error,
            },
        );
    }

    fn set(&mut self, dir: Dir, phase: Phase) {
        let h = &mut self.halves[dir.index()];
        if h.phase != Phase::Desynced {
            h.phase = phase;
            if phase == Phase::Messages {
                h.framed = true;
            }
        }
    }

    /// Sets the other direction's phase if it is waiting for us.
    fn release(&mut self, dir: Dir, phase: Phase) {
        if self.halves[dir.index()].phase == Phase::Await {
            self.set(dir, phase);
        }
    }

    fn skip(&mut self, dir: Dir, len: u64, kind: SkipKind, then: Phase) {
        let h = &mut self.halves[dir.index()];
        h.skip = len;
        h.skip_kind = kind;
        if h.phase != Phase::Desynced {
            h.phase = then;
            if then == Phase::Messages {
                h.framed = true;
            }
        }
    }

    fn step<S: RfbSink>(&mut self, dir: Dir, input: &[u8], sink: &mut S) -> Step {
        let h = &mut self.halves[dir.index()];
        if h.skip > 0 {
            let n = (h.skip.min(input.len() as u64)) as usize;
            h.skip -= n as u64;
            if h.skip_kind == SkipKind::CutText {
                sink.on_event(dir, RfbEvent::CutTextData(&input[..n]));
            }
            return Step::Consumed(n);
        }
        let result = match dir {
            Dir::ClientToServer => self.step_client(input, sink),
            Dir::ServerToClient => self.step_server(input, sink),
        };
        match result {
            Ok(step) => step,
            Err(ParseError::Incomplete(n)) => Step::Need(n),
            Err(ParseError::Invalid(why)) => {
                if dir == Dir::ServerToClient && self.neg.server_version.is_none() {
                    self.halves[dir.index()].phase = Phase::Closed;
                    sink.on_event(dir, RfbEvent::NotRfb);
                    return Step::Consumed(input.len());
                }
                self.desync(dir, why, true, sink);
                Step::Consumed(input.len())
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Handshake rules shared by both directions
    // -----------------------------------------------------------------------------------------

    fn negotiate(&mut self) {
        if let (Some(s), Some(c)) = (self.neg.server_version, self.neg.client_version) {
            self.neg.dialect = Some(s.dialect().min(c.dialect()));
        } else if let Some(s) = self.neg.server_version {
            if s.dialect() == Dialect::V3_3 {
                self.neg.dialect = Some(Dialect::V3_3);
            }
        }
        if let Some(d) = self.neg.dialect {
            let next = if d == Dialect::V3_3 {
                Phase::SecurityType33
            } else {
                Phase::SecurityTypes
            };
            self.release(Dir::ServerToClient, next);
        }
    }

    fn dialect(&self) -> Dialect {
        self.neg.dialect.unwrap_or(Dialect::V3_8)
    }

    /// The security type is known: set both directions on its path.
    fn select_security<S: RfbSink>(&mut self, t: u32, sink: &mut S) {
        use Dir::{ClientToServer as C, ServerToClient as S};
        self.neg.security_type = Some(t);
        sink.on_event(C, RfbEvent::SecurityType(t));
        match t {
            1 => self.no_authentication(sink),
            2 => {
                self.set(S, Phase::VncChallenge);
                self.set(C, Phase::Await);
            }
            16 => {
                self.neg.tight_security = true;
                self.set(S, Phase::TightTunnels);
                self.set(C, Phase::Await);
            }
            19 => {
                self.set(S, Phase::VeNCryptVersion);
                self.set(C, Phase::Await);
            }
            22 => {
                self.set(S, Phase::VncChallenge);
                self.set(C, Phase::XvpCredentials);
            }
            30 => {
                self.set(S, Phase::ArdParams);
                self.set(C, Phase::Await);
            }
            t if is_encrypting_type(t) => self.encrypted(sink),
            0 => {
                sink.on_event(
                    C,
                    RfbEvent::Desync {
                        reason: "security type 0 chosen",
                        parse_error: true,
                    },
                );
                self.set(S, Phase::Desynced);
                self.set(C, Phase::Desynced);
            }
            _ => {
                // A security type whose structure we do not know: framing is lost.
                for d in [C, S] {
                    if self.halves[d.index()].phase != Phase::Desynced {
                        self.desync(d, "unsupported security type", false, sink);
                    }
                }
            }
        }
    }

    /// Security None (or Tight/VeNCrypt without authentication).
    fn no_authentication<S: RfbSink>(&mut self, sink: &mut S) {
        if self.dialect() == Dialect::V3_8 {
            self.set(Dir::ServerToClient, Phase::SecurityResult);
            self.set(Dir::ClientToServer, Phase::Await);
        } else {
            sink.on_event(
                Dir::ServerToClient,
                RfbEvent::Auth {
                    result: AuthResult::NoneRequired,
                    reason: None,
                },
            );
            self.set(Dir::ServerToClient, Phase::ServerInit);
            self.set(Dir::ClientToServer, Phase::ClientInit);
        }
    }

    fn vnc_authentication(&mut self) {
        self.set(Dir::ServerToClient, Phase::VncChallenge);
        self.set(Dir::ClientToServer, Phase::Await);
    }

    fn encrypted<S: RfbSink>(&mut self, sink: &mut S) {
        sink.on_event(Dir::ClientToServer, RfbEvent::Encrypted);
        self.set(Dir::ServerToClient, Phase::Opaque);
        self.set(Dir::ClientToServer, Phase::Opaque);
    }

    fn refused<S: RfbSink>(&mut self, reason: &[u8], sink: &mut S) {
        sink.on_event(
            Dir::ServerToClient,
            RfbEvent::Auth {
                result: refusal_result(reason),
                reason: Some(reason),
            },
        );
        self.set(Dir::ServerToClient, Phase::Closed);
        // Xvnc refuses before the client's version arrives; that version is still read.
        if self.neg.client_version.is_some() {
            self.set(Dir::ClientToServer, Phase::Closed);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Server to client
    // -----------------------------------------------------------------------------------------

    fn step_server<S: RfbSink>(&mut self, input: &[u8], sink: &mut S) -> Result<Step, ParseError> {
        use Dir::{ClientToServer as C, ServerToClient as S};
        let phase = self.halves[S.index()].phase;
        match phase {
            Phase::Version => {
                let (v, n) = parse_protocol_version(input)?;
                self.neg.server_version = Some(v);
                sink.on_event(S, RfbEvent::ServerVersion(v));
                self.set(S, Phase::Await);
                self.negotiate();
                Ok(Step::Consumed(n))
            }
            Phase::Await => Ok(Step::Blocked),
            Phase::SecurityTypes => {
                let (types, n) = parse_security_types(input)?;
                match types {
                    SecurityTypes::Offered(list) => {
                        sink.on_event(S, RfbEvent::SecurityTypesOffered(list));
                        self.set(S, Phase::Await);
                        self.release(C, Phase::Choice);
                    }
                    SecurityTypes::Refused { reason } => {
                        sink.on_event(S, RfbEvent::SecurityTypesOffered(&[]));
                        self.refused(reason, sink);
                    }
                }
                Ok(Step::Consumed(n))
            }
            Phase::SecurityType33 => {
                let (chosen, n) = parse_security_type_v33(input)?;
                match chosen {
                    ServerSecurity33::Chosen(t) => {
                        sink.on_event(S, RfbEvent::SecurityTypesOffered(&[t.min(255) as u8]));
                        self.select_security(t, sink);
                    }
                    ServerSecurity33::Refused { reason } => {
                        sink.on_event(S, RfbEvent::SecurityTypesOffered(&[0]));
                        sink.on_event(S, RfbEvent::SecurityType(0));
                        self.refused(reason, sink);
                    }
                }
                Ok(Step::Consumed(n))
            }
            Phase::VncChallenge => {
                let ((), n) = parse_opaque(input, 16)?;
                sink.on_event(S, RfbEvent::VncAuthChallenge);
                self.neg.challenge_seen = true;
                self.set(S, Phase::SecurityResult);
                self.release(C, Phase::VncResponse);
                Ok(Step::Consumed(n))
            }
            Phase::ArdParams => {
                let (key_len, n) = parse_ard_params(input)?;
                self.set(S, Phase::SecurityResult);
                self.release(C, Phase::ArdResponse { key_len });
                Ok(Step::Consumed(n))
            }
            Phase::TightTunnels => {
                let (tunnels, n) = parser::parse_tight_capabilities(input)?;
                if tunnels.is_empty() {
                    self.set(S, Phase::TightAuthCaps);
                } else {
                    self.set(S, Phase::Await);
                    self.release(C, Phase::TightTunnelChoice);
                }
                Ok(Step::Consumed(n))
            }
            Phase::TightAuthCaps => {
                let (auths, n) = parser::parse_tight_capabilities(input)?;
                if auths.is_empty() {
                    self.no_authentication(sink);
                } else {
                    self.set(S, Phase::Await);
                    self.release(C, Phase::TightAuthChoice);
                }
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptVersion => {
                let ((major, minor), n) = parse_vencrypt_version(input)?;
                self.neg.vencrypt_wide = (major, minor) >= (0, 2);
                self.set(S, Phase::Await);
                self.release(C, Phase::VeNCryptVersion);
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptStatus => {
                let (status, n) = parse_u8(input)?;
                if status != 0 {
                    self.set(S, Phase::Closed);
                    self.set(C, Phase::Closed);
                } else {
                    let wide = self.neg.vencrypt_wide;
                    self.set(S, Phase::VeNCryptSubtypes { wide });
                }
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptSubtypes { wide } => {
                let (_, n) = parse_vencrypt_subtypes(input, wide)?;
                self.set(S, Phase::Await);
                self.release(C, Phase::VeNCryptSubtype { wide });
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptAck => {
                let (_, n) = parse_u8(input)?;
                self.set(S, Phase::Opaque);
                Ok(Step::Consumed(n))
            }
            Phase::SecurityResult => {
                let (code, n) = parse_u32(input)?;
                if code == 0 {
                    sink.on_event(
                        S,
                        RfbEvent::Auth {
                            result: AuthResult::Ok,
                            reason: None,
                        },
                    );
                    self.set(S, Phase::ServerInit);
                    self.set(C, Phase::ClientInit);
                    // The client may already wait with its ClientInit.
                } else if self.dialect() == Dialect::V3_8 {
                    self.set(S, Phase::FailureReason { code });
                } else {
                    sink.on_event(
                        S,
                        RfbEvent::Auth {
                            result: failure_result(code, None),
                            reason: None,
                        },
                    );
                    self.set(S, Phase::Closed);
                    self.set(C, Phase::Closed);
                }
                Ok(Step::Consumed(n))
            }
            Phase::FailureReason { code } => {
                let (reason, n) = parse_reason(input)?;
                sink.on_event(
                    S,
                    RfbEvent::Auth {
                        result: failure_result(code, Some(reason)),
                        reason: Some(reason),
                    },
                );
                self.set(S, Phase::Closed);
                self.set(C, Phase::Closed);
                Ok(Step::Consumed(n))
            }
            Phase::ServerInit => {
                let (init, n) = parse_server_init(input)?;
                self.neg.pixel_format = Some(init.pixel_format);
                self.neg.fb_width = init.width;
                self.neg.fb_height = init.height;
                sink.on_event(S, RfbEvent::ServerInit(init));
                if self.neg.tight_security {
                    self.set(S, Phase::TightInteractionCaps);
                } else {
                    self.set(S, Phase::Messages);
                }
                Ok(Step::Consumed(n))
            }
            Phase::TightInteractionCaps => {
                let ((), n) = parse_tight_interaction_caps(input)?;
                self.set(S, Phase::Messages);
                Ok(Step::Consumed(n))
            }
            Phase::Messages => self.server_message(input, sink),
            Phase::Rects { remaining } => self.rect_header(input, remaining, sink),
            Phase::Rect {
                rect,
                remaining,
                pf,
                part,
            } => self.rect_part(input, rect, remaining, pf, part, sink),
            Phase::Opaque | Phase::Closed | Phase::Desynced => Ok(Step::Consumed(input.len())),
            // Client-only phases never occur on the server side.
            _ => Err(ParseError::Invalid("server in a client phase")),
        }
    }

    fn server_message<S: RfbSink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<Step, ParseError> {
        let dir = Dir::ServerToClient;
        let (msg, n) = parse_server_message(input)?;
        let body = msg.body_len();
        let (kind, skip_kind) = match msg {
            ServerMessage::FramebufferUpdate { rects } => {
                sink.on_event(dir, RfbEvent::ServerMessage(ServerKind::FramebufferUpdate));
                if rects > 0 {
                    self.set(dir, Phase::Rects { remaining: rects });
                }
                return Ok(Step::Consumed(n));
            }
            ServerMessage::Bell => (ServerKind::Bell, SkipKind::Discard),
            ServerMessage::CutText {
                body_len: len,
                extended,
            } => {
                sink.on_event(dir, RfbEvent::ServerMessage(ServerKind::CutText));
                sink.on_event(dir, RfbEvent::CutText { len, extended });
                self.skip(dir, body, SkipKind::CutText, Phase::Messages);
                return Ok(Step::Consumed(n));
            }
            ServerMessage::FileTransfer { .. } => (ServerKind::FileTransfer, SkipKind::Discard),
            ServerMessage::ResizeFrameBuffer { width, height } => {
                self.neg.fb_width = width;
                self.neg.fb_height = height;
                (ServerKind::Other, SkipKind::Discard)
            }
            _ => (ServerKind::Other, SkipKind::Discard),
        };
        sink.on_event(dir, RfbEvent::ServerMessage(kind));
        self.skip(dir, body, skip_kind, Phase::Messages);
        Ok(Step::Consumed(n))
    }

    fn rect_done(&mut self, remaining: u16) {
        let next = if remaining <= 1 {
            Phase::Messages
        } else {
            Phase::Rects {
                remaining: remaining - 1,
            }
        };
        self.halves[Dir::ServerToClient.index()].phase = next;
    }

    fn rect_header<S: RfbSink>(
        &mut self,
        input: &[u8],
        remaining: u16,
        sink: &mut S,
    ) -> Result<Step, ParseError> {
        let (rect, n) = parse_rect_header(input)?;
        let pf = self.neg.pixel_format;
        self.plan_rect(rect, remaining, pf, sink)?;
        Ok(Step::Consumed(n))
    }

    /// Sets the server direction up to read the body of `rect`.
    fn plan_rect<S: RfbSink>(
        &mut self,
        rect: RectHeader,
        remaining: u16,
        pf: Option<PixelFormat>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        let dir = Dir::ServerToClient;
        let bpp = pf.and_then(|p| p.bytes_per_pixel());
        let body = rect_body(&rect, bpp);
        let next = |part| {
            pf.map(|pf| Phase::Rect {
                rect,
                remaining,
                pf,
                part,
            })
        };
        let phase = match body {
            RectBody::Fixed(len) => {
                if rect.encoding == encoding::DESKTOP_SIZE {
                    self.neg.fb_width = rect.width;
                    self.neg.fb_height = rect.height;
                }
                self.rect_done(remaining);
                let then = self.halves[dir.index()].phase;
                self.skip(dir, len, SkipKind::Discard, then);
                return Ok(());
            }
            RectBody::LastRect => {
                self.set(dir, Phase::Messages);
                return Ok(());
            }
            RectBody::LengthPrefixed => next(RectPart::Length),
            RectBody::Rre { compact } => next(RectPart::Rre { compact }),
            RectBody::Hextile { zlib } => next(RectPart::Hextile { tile: 0, zlib }),
            RectBody::Trle => next(RectPart::Trle {
                tile: 0,
                palette: 0,
            }),
            RectBody::Tight => next(RectPart::Tight),
            RectBody::CursorWithAlpha => next(RectPart::CursorWithAlpha),
            RectBody::ExtendedDesktopSize => next(RectPart::ExtendedDesktopSize),
            RectBody::DesktopName => next(RectPart::DesktopName),
            RectBody::VmwareCursor => next(RectPart::VmwareCursor),
            RectBody::H264 => next(RectPart::H264),
            RectBody::Unknown => None,
        };
        match phase {
            Some(p) => {
                self.set(dir, p);
                Ok(())
            }
            None => {
                self.desync(dir, "rectangle encoding that cannot be sized", false, sink);
                Ok(())
            }
        }
    }

    fn rect_part<S: RfbSink>(
        &mut self,
        input: &[u8],
        rect: RectHeader,
        remaining: u16,
        pf: PixelFormat,
        part: RectPart,
        sink: &mut S,
    ) -> Result<Step, ParseError> {
        let dir = Dir::ServerToClient;
        let unsized_pixels = ParseError::Invalid("pixel format without whole bytes per pixel");
        let (skip, n) = match part {
            RectPart::Length => parse_length_prefix(input)?,
            RectPart::H264 => parse_h264_header(input)?,
            RectPart::Rre { compact } => {
                let bpp = pf.bytes_per_pixel().ok_or(unsized_pixels)?;
                parse_rre_header(input, bpp, compact)?
            }
            RectPart::Tight => {
                let tp = pf.tight_pixel_bytes().ok_or(unsized_pixels)?;
                parse_tight_header(input, &rect, tp)?
            }
            RectPart::ExtendedDesktopSize => {
                let (_, n) = parse_extended_desktop_size(input)?;
                self.neg.fb_width = rect.width;
                self.neg.fb_height = rect.height;
                (0, n)
            }
            RectPart::DesktopName => {
                let (_, n) = parse_reason(input)?;
                (0, n)
            }
            RectPart::VmwareCursor => parse_vmware_cursor(input, &rect, pf.bytes_per_pixel())?,
            RectPart::CursorWithAlpha => {
                let (inner, n) = parse_u32(input)?;
                let inner = inner as i32;
                if inner == encoding::CURSOR_WITH_ALPHA {
                    return Err(ParseError::Invalid("nested CursorWithAlpha"));
                }
                let inner_rect = RectHeader {
                    encoding: inner,
                    ..rect
                };
                self.plan_rect(inner_rect, remaining, Some(PixelFormat::RGBA32), sink)?;
                return Ok(Step::Consumed(n));
            }
            RectPart::Hextile { tile, zlib } => {
                let bpp = pf.bytes_per_pixel().ok_or(unsized_pixels)?;
                let tiles = rect.tiles(16);
                if tile >= tiles {
                    self.rect_done(remaining);
                    return Ok(Step::Consumed(0));
                }
                let (w, h) = rect.tile_size(tile, 16);
                let (skip, n) = parse_hextile_tile(input, w, h, bpp, zlib)?;
                let then = if tile + 1 >= tiles {
                    self.rect_done(remaining);
                    self.halves[dir.index()].phase
                } else {
                    Phase::Rect {
                        rect,
                        remaining,
                        pf,
                        part: RectPart::Hextile {
                            tile: tile + 1,
                            zlib,
                        },
                    }
                };
                self.skip(dir, skip, SkipKind::Discard, then);
                return Ok(Step::Consumed(n));
            }
            RectPart::Trle { tile, palette } => {
                let cp = pf.compressed_pixel_bytes().ok_or(unsized_pixels)?;
                let tiles = rect.tiles(16);
                if tile >= tiles {
                    self.rect_done(remaining);
                    return Ok(Step::Consumed(0));
                }
                let (w, h) = rect.tile_size(tile, 16);
                let (palette, n) = parse_trle_tile(input, w, h, cp, palette)?;
                if tile + 1 >= tiles {
                    self.rect_done(remaining);
                } else {
                    self.set(
                        dir,
                        Phase::Rect {
                            rect,
                            remaining,
                            pf,
                            part: RectPart::Trle {
                                tile: tile + 1,
                                palette,
                            },
                        },
                    );
                }
                return Ok(Step::Consumed(n));
            }
        };
        self.rect_done(remaining);
        let then = self.halves[dir.index()].phase;
        self.skip(dir, skip, SkipKind::Discard, then);
        Ok(Step::Consumed(n))
    }

    // -----------------------------------------------------------------------------------------
    // Client to server
    // -----------------------------------------------------------------------------------------

    fn step_client<S: RfbSink>(&mut self, input: &[u8], sink: &mut S) -> Result<Step, ParseError> {
        use Dir::{ClientToServer as C, ServerToClient as S};
        let phase = self.halves[C.index()].phase;
        match phase {
            Phase::Version => {
                if !could_be_banner(input) {
                    return Err(ParseError::Invalid("client did not send an RFB version"));
                }
                if self.neg.server_version.is_none() {
                    // A client speaks after the server's banner; wait for it.
                    return Ok(Step::Blocked);
                }
                let (v, n) = parse_protocol_version(input)?;
                self.neg.client_version = Some(v);
                sink.on_event(C, RfbEvent::ClientVersion(v));
                let next = if self.halves[S.index()].phase == Phase::Closed {
                    Phase::Closed
                } else {
                    Phase::Await
                };
                self.set(C, next);
                self.negotiate();
                Ok(Step::Consumed(n))
            }
            Phase::Await => Ok(Step::Blocked),
            Phase::Choice => {
                let (t, n) = parse_u8(input)?;
                self.select_security(u32::from(t), sink);
                Ok(Step::Consumed(n))
            }
            Phase::VncResponse => {
                let ((), n) = parse_opaque(input, 16)?;
                self.set(C, Phase::Await);
                Ok(Step::Consumed(n))
            }
            Phase::ArdResponse { key_len } => {
                let ((), n) = parse_opaque(input, 128 + key_len as usize)?;
                self.set(C, Phase::Await);
                Ok(Step::Consumed(n))
            }
            Phase::TightTunnelChoice => {
                let (_, n) = parse_u32(input)?;
                self.set(C, Phase::Await);
                self.release(S, Phase::TightAuthCaps);
                Ok(Step::Consumed(n))
            }
            Phase::TightAuthChoice => {
                let (code, n) = parse_u32(input)?;
                match code {
                    1 => self.no_authentication(sink),
                    2 => self.vnc_authentication(),
                    _ => {
                        self.desync(S, "unsupported Tight authentication", false, sink);
                        self.desync(C, "unsupported Tight authentication", false, sink);
                    }
                }
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptVersion => {
                let (_, n) = parse_vencrypt_version(input)?;
                self.set(C, Phase::Await);
                self.release(S, Phase::VeNCryptStatus);
                Ok(Step::Consumed(n))
            }
            Phase::VeNCryptSubtype { wide } => {
                let (sub, n) = if wide {
                    parse_u32(input)?
                } else {
                    let (b, n) = parse_u8(input)?;
                    (u32::from(b), n)
                };
                match sub {
                    1 => self.no_authentication(sink),
                    2 => self.vnc_authentication(),
                    256 => {
                        self.set(C, Phase::PlainCredentials);
                        self.set(S, Phase::SecurityResult);
                    }
                    t if is_tls_subtype(t) => {
                        sink.on_event(C, RfbEvent::Encrypted);
                        self.set(C, Phase::Opaque);
                        self.set(S, Phase::VeNCryptAck);
                    }
                    _ => {
                        self.desync(S, "unsupported VeNCrypt subtype", false, sink);
                        self.desync(C, "unsupported VeNCrypt subtype", false, sink);
                    }
                }
                Ok(Step::Consumed(n))
            }
            Phase::PlainCredentials => {
                let ((), n) = parse_plain_credentials(input)?;
                self.set(C, Phase::Await);
                Ok(Step::Consumed(n))
            }
            Phase::XvpCredentials => {
                let ((), n) = parse_xvp_credentials(input)?;
                let next = if self.neg.challenge_seen {
                    Phase::VncResponse
                } else {
                    Phase::Await
                };
                self.set(C, next);
                Ok(Step::Consumed(n))
            }
            Phase::ClientInit => {
                let (flag, n) = parse_u8(input)?;
                sink.on_event(C, RfbEvent::ClientInit { shared: flag != 0 });
                self.set(C, Phase::Messages);
                Ok(Step::Consumed(n))
            }
            Phase::Messages => self.client_message(input, sink),
            Phase::Opaque | Phase::Closed | Phase::Desynced => Ok(Step::Consumed(input.len())),
            _ => Err(ParseError::Invalid("client in a server phase")),
        }
    }

    fn client_message<S: RfbSink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<Step, ParseError> {
        let dir = Dir::ClientToServer;
        let (msg, n) = parse_client_message(input)?;
        let body = msg.body_len();
        let kind = match msg {
            ClientMessage::SetPixelFormat(pf) => {
                self.neg.pixel_format = Some(pf);
                ClientKind::SetPixelFormat
            }
            ClientMessage::SetEncodings(raw) => {
                sink.on_event(dir, RfbEvent::Encodings(raw));
                ClientKind::SetEncodings
            }
            ClientMessage::FramebufferUpdateRequest { .. } => ClientKind::FramebufferUpdateRequest,
            ClientMessage::KeyEvent | ClientMessage::QemuExtendedKeyEvent => ClientKind::KeyEvent,
            ClientMessage::PointerEvent => ClientKind::PointerEvent,
            ClientMessage::CutText { body_len, extended } => {
                sink.on_event(dir, RfbEvent::ClientMessage(ClientKind::CutText));
                sink.on_event(
                    dir,
                    RfbEvent::CutText {
                        len: body_len,
                        extended,
                    },
                );
                self.skip(dir, body, SkipKind::CutText, Phase::Messages);
                return Ok(Step::Consumed(n));
            }
            ClientMessage::FileTransfer { .. } => ClientKind::FileTransfer,
            _ => ClientKind::Other,
        };
        sink.on_event(dir, RfbEvent::ClientMessage(kind));
        self.skip(dir, body, SkipKind::Discard, Phase::Messages);
        Ok(Step::Consumed(n))
    }

    // -----------------------------------------------------------------------------------------
    // Resynchronisation
    // -----------------------------------------------------------------------------------------

    /// At the start of a segment of a desynchronised direction: do these bytes begin with a
    /// message boundary we can trust? If so, the direction is framed again.
    fn try_resync(&mut self, dir: Dir, data: &[u8]) -> bool {
        let h = &self.halves[dir.index()];
        if !h.framed || data.is_empty() {
            return false;
        }
        let ok = match dir {
            Dir::ClientToServer => client_segment_is_framed(data, &self.neg),
            Dir::ServerToClient => server_segment_is_framed(data, &self.neg),
        };
        if ok {
            let h = &mut self.halves[dir.index()];
            h.phase = Phase::Messages;
            h.buf.clear();
            h.skip = 0;
        }
        ok
    }
}

/// A client segment that consists exactly of one or more valid client messages.
fn client_segment_is_framed(data: &[u8], neg: &Negotiation) -> bool {
    let mut at = 0usize;
    let mut messages = 0;
    while at < data.len() {
        let Ok((msg, n)) = parse_client_message(&data[at..]) else {
            return false;
        };
        match msg {
            ClientMessage::KeyEvent if data[at + 2..at + 4] != [0, 0] => return false,
            ClientMessage::FramebufferUpdateRequest {
                x,
                y,
                width,
                height,
                ..
            } if neg.fb_width > 0
                && (u32::from(x) + u32::from(width) > u32::from(neg.fb_width)
                    || u32::from(y) + u32::from(height) > u32::from(neg.fb_height)) =>
            {
                return false
            }
            ClientMessage::SetEncodings([]) => return false,
            _ => {}
        }
        at += n + msg.body_len() as usize;
        messages += 1;
    }
    messages > 0 && at == data.len()
}

/// A server segment that starts with a FramebufferUpdate whose first rectangle fits the
/// framebuffer and has an encoding we can size, or consists exactly of small server messages.
fn server_segment_is_framed(data: &[u8], neg: &Negotiation) -> bool {
    let Some(pf) = neg.pixel_format else {
        return false;
    };
    if neg.fb_width == 0 {
        return false;
    }
    match parse_server_message(data) {
        Ok((ServerMessage::FramebufferUpdate { rects }, 4)) => {
            if rects == 0 || data[1] != 0 {
                return false;
            }
            let Ok((rect, _)) = parse_rect_header(&data[4..]) else {
                return false;
            };
            let body = rect_body(&rect, pf.bytes_per_pixel());
            if body == RectBody::Unknown {
                return false;
            }
            if rect.encoding >= 0 && rect.encoding < 256 {
                rect.width > 0
                    && rect.height > 0
                    && u32::from(rect.x) + u32::from(rect.width) <= u32::from(neg.fb_width)
                    && u32::from(rect.y) + u32::from(rect.height) <= u32::from(neg.fb_height)
            } else {
                true
            }
        }
        Ok(_) => {
            let mut at = 0usize;
            while at < data.len() {
                match parse_server_message(&data[at..]) {
                    Ok((ServerMessage::FramebufferUpdate { .. }, _)) | Err(_) => return false,
                    Ok((msg, n)) => at += n + msg.body_len() as usize,
                }
            }
            at == data.len()
        }
        Err(_) => false,
    }
}

/// A failed SecurityResult: 2 is "too many attempts" in old servers; a reason that says so
/// counts the same.
fn failure_result(code: u32, reason: Option<&[u8]>) -> AuthResult {
    if code == 2 || reason.is_some_and(mentions_too_many) {
        AuthResult::TooMany
    } else {
        AuthResult::Failed
    }
}

/// A refusal before authentication (zero security types, or 3.3 type 0): the Xvnc blacklist
/// ("Too many security failures") is `too_many`; any other reason is a failure.
fn refusal_result(reason: &[u8]) -> AuthResult {
    if mentions_too_many(reason) {
        AuthResult::TooMany
    } else {
        AuthResult::Failed
    }
}

fn mentions_too_many(reason: &[u8]) -> bool {
    reason
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"too many"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl RfbSink for Log {
        fn on_event(&mut self, dir: Dir, event: RfbEvent<'_>) {
            let d = match dir {
                Dir::ClientToServer => "c",
                Dir::ServerToClient => "s",
            };
            let text = match event {
                RfbEvent::CutTextData(b) => format!("{d} cutdata {}", b.len()),
                RfbEvent::ServerInit(i) => format!("{d} init {}x{}", i.width, i.height),
                RfbEvent::Auth { result, reason } => format!(
                    "{d} auth {} {}",
                    result.as_str(),
                    reason.map(escape_text).unwrap_or_default()
                ),
                other => format!("{d} {other:?}"),
            };
            self.0.push(text);
        }
    }

    #[test]
    fn parse_buffers_share_one_budget_and_return_it() {
        let budget = ParseBudget::new(12);
        let (mut first, mut second) = (
            RfbState::with_budget(budget.clone()),
            RfbState::with_budget(budget.clone()),
        );
        let (mut log_first, mut log_second) = (Log::default(), Log::default());
        // An incomplete banner waits in the buffer: its capacity (6 bytes or more) is charged.
        first.feed(Dir::ServerToClient, b"RFB 00", &mut log_first);
        let held = budget.used();
        assert!((6..=12).contains(&held), "{held}");
        assert!(!first.is_desynced(Dir::ServerToClient));
        // Another session's would pass the limit: it loses framing and holds nothing.
        second.feed(Dir::ServerToClient, b"RFB 00", &mut log_second);
        assert!(second.is_desynced(Dir::ServerToClient));
        assert_eq!(budget.refused(), 1);
        assert!(log_second
            .0
            .iter()
            .any(|e| e.contains("parse buffer budget exhausted")));
        assert_eq!(budget.used(), held);
        // The first session ends: its buffer returns to the budget.
        drop(first);
        assert_eq!(budget.used(), 0);
    }

    fn run(chunks: &[(Dir, &[u8])]) -> Vec<String> {
        let mut st = RfbState::new();
        let mut log = Log::default();
        for (dir, bytes) in chunks {
            st.feed(*dir, bytes, &mut log);
        }
        st.finish(&mut log);
        log.0
    }

    const C: Dir = Dir::ClientToServer;
    const S: Dir = Dir::ServerToClient;

    #[test]
    fn xvnc_blacklist_refusal_before_client_version() {
        let mut server = b"RFB 003.003\n".to_vec();
        server.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 26]);
        server.extend_from_slice(b"Too many security failures");
        let log = run(&[(S, &server), (C, b"RFB 003.008\n")]);
        assert!(log.contains(&"s auth too_many Too many security failures".to_string()));
        assert!(log.iter().any(|l| l.contains("ClientVersion")));
    }

    #[test]
    fn rfb38_none_has_a_security_result() {
        let mut server_init = vec![4, 0, 3, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0];
        server_init.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, b'l', b'n']);
        let log = run(&[
            (S, b"RFB 003.008\n"),
            (C, b"RFB 003.008\n"),
            (S, &[1, 1]),
            (C, &[1]),
            (S, &[0, 0, 0, 0]),
            (C, &[1]),
            (S, &server_init),
            (C, &[4, 1, 0, 0, 0, 0, 0, 0x61, 4, 0, 0, 0, 0, 0, 0, 0x61]),
        ]);
        assert!(log.contains(&"s auth ok ".to_string()), "{log:?}");
        assert!(log.contains(&"s init 1024x768".to_string()), "{log:?}");
        assert_eq!(
            log.iter()
                .filter(|l| l.contains("ClientMessage(KeyEvent)"))
                .count(),
            2
        );
    }

    #[test]
    fn rfb37_none_needs_no_security_result() {
        let log = run(&[
            (S, b"RFB 003.007\n"),
            (C, b"RFB 003.007\n"),
            (S, &[2, 1, 2]),
            (C, &[1, 1]),
        ]);
        assert!(
            log.contains(&"s auth none_required ".to_string()),
            "{log:?}"
        );
        assert!(log.contains(&"c ClientInit { shared: true }".to_string()));
    }

    #[test]
    fn byte_by_byte_failure_with_reason() {
        // zeek vnc-scanner: every byte in its own segment.
        let mut chunks: Vec<(Dir, Vec<u8>)> = Vec::new();
        let mut push = |d: Dir, bytes: &[u8]| {
            for b in bytes {
                chunks.push((d, vec![*b]));
            }
        };
        push(S, b"RFB 003.008\n");
        push(C, b"RFB 003.008\n");
        push(S, &[2, 2, 16]);
        push(C, &[2]);
        push(S, &[7; 16]);
        push(C, &[9; 16]);
        let reason = b"Authentication failed from    192.168.0.1";
        let mut result = vec![0, 0, 0, 1, 0, 0, 0, reason.len() as u8];
        result.extend_from_slice(reason);
        push(S, &result);
        let refs: Vec<(Dir, &[u8])> = chunks.iter().map(|(d, b)| (*d, b.as_slice())).collect();
        let log = run(&refs);
        assert!(
            log.contains(&"s auth failed Authentication failed from    192.168.0.1".to_string()),
            "{log:?}"
        );
    }

    #[test]
    fn apple_failure_without_reason_is_reported_at_the_end() {
        let mut params = vec![0, 2, 0, 128];
        params.extend(std::iter::repeat_n(0xff, 256));
        let log = run(&[
            (S, b"RFB 003.889\n"),
            (C, b"RFB 003.889\n"),
            (S, &[2, 30, 35]),
            (C, &[30]),
            (S, &params),
            (C, &[0x22; 256]),
            (S, &[0, 0, 0, 1]),
        ]);
        assert_eq!(log.last().unwrap(), "s auth failed ");
    }

    /// An RFB 3.8 handshake with security type None up to ServerInit: a framebuffer of
    /// `size` (big-endian width and height), 32 bpp true colour, an empty desktop name.
    fn establish_none_38(st: &mut RfbState, log: &mut Log, size: [u8; 4], shared: u8) {
        let mut init = size.to_vec();
        init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]);
        init.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        for (d, b) in [
            (S, &b"RFB 003.008\n"[..]),
            (C, b"RFB 003.008\n"),
            (S, &[1, 1]),
            (C, &[1]),
            (S, &[0, 0, 0, 0]),
            (C, &[shared]),
            (S, &init),
        ] {
            st.feed(d, b, log);
        }
    }

    #[test]
    fn gap_inside_pixel_data_keeps_framing() {
        let mut st = RfbState::new();
        let mut log = Log::default();
        establish_none_38(&mut st, &mut log, [0, 16, 0, 16], 0);
        // FramebufferUpdate, one raw 16x16 rect (1024 bytes), first 100 bytes.
        st.feed(
            S,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 16, 0, 16, 0, 0, 0, 0],
            &mut log,
        );
        st.feed(S, &[0; 100], &mut log);
        st.gap(S, 900, &mut log);
        st.feed(S, &[0; 24], &mut log);
        st.feed(S, &[2], &mut log); // Bell
        assert!(!st.is_desynced(S));
        assert!(log.0.contains(&"s ServerMessage(Bell)".to_string()));
        // A gap inside a header loses framing; the next FramebufferUpdate restores it.
        st.feed(S, &[0, 0], &mut log);
        st.gap(S, 2, &mut log);
        assert!(st.is_desynced(S));
        st.feed(
            S,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 16, 0, 16, 0, 0, 0, 0],
            &mut log,
        );
        assert!(!st.is_desynced(S));
        assert!(log.0.contains(&"s Resync".to_string()));
    }

    proptest::proptest! {
        /// Arbitrary bytes after a real handshake, in arbitrary pieces: no panic, and what a
        /// direction keeps stays within its bounds.
        #[test]
        fn arbitrary_messages_never_panic(
            server in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            client in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            cuts in proptest::collection::vec(1usize..64, 1..32),
        ) {
            let mut st = RfbState::new();
            let mut log = Log::default();
            establish_none_38(&mut st, &mut log, [4, 0, 3, 0], 1);
            let (mut s_at, mut c_at) = (0, 0);
            for (i, cut) in cuts.iter().cycle().take(400).enumerate() {
                if i % 2 == 0 && s_at < server.len() {
                    let end = (s_at + cut * 7).min(server.len());
                    st.feed(S, &server[s_at..end], &mut log);
                    s_at = end;
                } else if c_at < client.len() {
                    let end = (c_at + cut).min(client.len());
                    st.feed(C, &client[c_at..end], &mut log);
                    c_at = end;
                }
                if i % 11 == 0 {
                    st.gap(S, *cut as u64, &mut log);
                }
            }
            st.finish(&mut log);
            for h in &st.halves {
                proptest::prop_assert!(h.buf.len() <= MAX_PENDING);
            }
        }
    }
}
