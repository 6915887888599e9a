//! The agent's analysis loop: frame → TCP segment → connection (orientation, reassembly) →
//! session (RFB state, accounting) → events, with periodic sweeps on capture time for stats,
//! closed and idle connections, and a bounded flow table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use schemas::{AgentHeartbeat, SessionEvent, SessionEventKind, Timestamp};

use crate::capture::checksum::{ChecksumCounters, ChecksumPolicy};
use crate::capture::decode::{self, Skipped};
use crate::capture::fragments::{FragmentCounters, Outcome, Reassembler};
use crate::capture::Packet;
use crate::config::{AgentConfig, PortSet};
use crate::flow::handshake::Handshake;
use crate::flow::reassembly::{BufferBudget, Chunk};
use crate::flow::rst::{judge_rst, RstVerdict};
use crate::flow::{Connection, Content, FlowKey, FlowMap, TcpSegment};
use crate::rfb::parser::could_be_banner;
use crate::rfb::state::{Dir, ParseBudget};
use crate::session::{EndReason, Nanos, Origin, Session, Traffic};

/// Counters over everything the agent saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames handed to the agent.
    pub packets: u64,
    /// Their length on the wire.
    pub bytes: u64,
    pub tcp_segments: u64,
    /// Frames of a link type the agent does not decode.
    pub unsupported_link: u64,
    /// Frames too short or malformed below TCP.
    pub malformed: u64,
    /// Frames that are not TCP.
    pub not_tcp: u64,
    pub flows_created: u64,
    pub flows_evicted: u64,
    /// Of `flows_evicted`: connections with no payload and no completed handshake (SYNs).
    pub flows_evicted_half_open: u64,
    /// Of `flows_evicted`: connections with payload but no verified handshake.
    pub flows_evicted_unverified: u64,
    /// Of `flows_evicted`: handshake-verified connections (only when nothing else was left).
    pub flows_evicted_verified: u64,
    pub flows_active: u64,
    pub sessions_total: u64,
    pub sessions_active: u64,
    /// Parse errors of ended sessions.
    pub parse_errors: u64,
    /// Bytes missing from the capture in ended connections.
    pub gap_bytes: u64,
    /// Memory held by out-of-order segments right now.
    pub buffered_bytes: u64,
    /// Holes given up early: one direction reached `max_buffered_per_flow`.
    pub reassembly_flow_cap_hits: u64,
    /// Holes given up early: all directions together reached `max_buffered_total`.
    pub reassembly_global_cap_hits: u64,
    /// Capacity of every session's RFB parse buffers right now.
    pub parse_buffered_bytes: u64,
    /// Directions that lost framing because `max_parse_buffered_total` was reached.
    pub parse_budget_refusals: u64,
    /// IP fragment reassembly.
    pub fragments: FragmentCounters,
    /// Bytes held for incomplete IP datagrams right now (real allocation).
    pub fragment_bytes: u64,
    /// TCP checksum validation.
    pub checksums: ChecksumCounters,
    /// RSTs in the receive window but not at the exact sequence number: ignored (RFC 5961
    /// challenge ACK case).
    pub rst_in_window: u64,
    /// RSTs outside the receive window: ignored.
    pub rst_out_of_window: u64,
    /// SYNs on an open connection (RFC 5961 §4 challenge-ACK case): held, and ignored unless
    /// the server's SYN-ACK shows a new connection.
    pub syn_in_session: u64,
}

impl CaptureStats {
    /// The heartbeat of agent `agent_id` that has counted these.
    pub fn heartbeat(
        &self,
        agent_id: &str,
        hostname: &str,
        started_at: Timestamp,
        time: Timestamp,
        pcap_drops: u64,
        capture_sources: Vec<String>,
    ) -> AgentHeartbeat {
        AgentHeartbeat {
            agent_id: agent_id.to_string(),
            hostname: hostname.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            time,
            started_at,
            packets: self.packets as i64,
            bytes: self.bytes as i64,
            pcap_drops: pcap_drops as i64,
            flows_active: self.flows_active as i64,
            flows_evicted: self.flows_evicted as i64,
            sessions_active: self.sessions_active as i64,
            sessions_total: self.sessions_total as i64,
            parse_errors: self.parse_errors as i64,
            enforcing: false,
            capture_sources,
        }
    }
}

fn ns(d: Duration) -> Nanos {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

const SWEEP_INTERVAL: Nanos = 1_000_000_000;

/// What deciding a connection's content needs to know.
struct Ctx<'a> {
    origin: Origin<'a>,
    ports: &'a PortSet,
    syn_seen: bool,
}

impl<'a> Ctx<'a> {
    fn of(
        config: &'a AgentConfig,
        stats_interval: Nanos,
        parse_budget: &'a Arc<ParseBudget>,
        conn: &Connection,
    ) -> Ctx<'a> {
        Ctx {
            origin: Origin {
                agent_id: &config.agent_id,
                client: conn.client,
                server: conn.server,
                first_packet: conn.first_packet,
                stats_interval,
                parse_budget,
            },
            ports: &config.ports,
            syn_seen: conn.syn_seen,
        }
    }
}

/// Hands one reassembled chunk of direction `dir` to the connection's content, deciding the
/// content on its first bytes.
fn deliver(content: &mut Content, dir: Dir, chunk: Chunk<'_>, ctx: &Ctx<'_>) {
    match chunk {
        Chunk::Gap(n) => {
            if let Content::Session(s) = content {
                s.gap(dir, n);
            }
        }
        Chunk::Data(data) => {
            if let Content::Undecided = content {
                *content = decide(dir, data, ctx);
            }
            if let Content::Session(s) = content {
                s.feed(dir, data);
                if s.is_not_rfb() {
                    *content = Content::Ignored;
                }
            }
        }
    }
}

/// First payload of a connection: is it (possibly) an RFB session?
fn decide(dir: Dir, data: &[u8], ctx: &Ctx<'_>) -> Content {
    let new = || Content::Session(Box::new(Session::new(&ctx.origin)));
    let midstream = || Content::Session(Box::new(Session::new_midstream(&ctx.origin)));
    let vnc_port = ctx.ports.contains(ctx.origin.server.port());
    match dir {
        // The server speaks first in RFB: its banner decides.
        Dir::ServerToClient if could_be_banner(data) => new(),
        Dir::ServerToClient if !ctx.syn_seen && vnc_port => midstream(),
        Dir::ServerToClient => Content::Ignored,
        // A client seen from its SYN: its version waits for the server's banner. A client
        // that speaks first with anything else is not an RFB client.
        Dir::ClientToServer if ctx.syn_seen && (vnc_port || could_be_banner(data)) => new(),
        Dir::ClientToServer if ctx.syn_seen => Content::Ignored,
        Dir::ClientToServer if vnc_port => midstream(),
        Dir::ClientToServer => Content::Undecided,
    }
}

/// The capture agent's analysis state.
pub struct Agent {
    config: AgentConfig,
    /// Boxed, so the table holds a key and a pointer per flow: when hashbrown grows the table
    /// (it doubles once evictions' tombstones use up its free slots, even at a constant flow
    /// count), the old and new tables together cost 2 × 3 × 48 bytes per flow instead of
    /// 3 × 392.
    flows: FlowMap<Box<Connection>>,
    events: Vec<SessionEvent>,
    budget: BufferBudget,
    parse_budget: Arc<ParseBudget>,
    fragments: Reassembler,
    checksums: ChecksumPolicy,
    stats: CaptureStats,
    now: Nanos,
    next_sweep: Option<Nanos>,
    stats_interval: Nanos,
    idle_timeout: Nanos,
    linger: Nanos,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            budget: BufferBudget {
                limit: config.max_buffered_total,
                ..BufferBudget::default()
            },
            parse_budget: ParseBudget::new(config.max_parse_buffered_total),
            stats_interval: ns(config.stats_interval).max(1),
            idle_timeout: ns(config.idle_timeout).max(1),
            linger: ns(config.close_linger),
            flows: FlowMap::default(),
            events: Vec::new(),
            fragments: Reassembler::new(config.fragments),
            checksums: ChecksumPolicy::new(config.checksum_validation),
            stats: CaptureStats::default(),
            now: i64::MIN,
            next_sweep: None,
            config,
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Events produced so far, in order; the caller publishes them.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, SessionEvent> {
        self.events.drain(..)
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn stats(&self) -> CaptureStats {
        let mut s = self.stats;
        s.flows_active = self.flows.len() as u64;
        s.sessions_active = self
            .flows
            .values()
            .filter(|c| matches!(&c.content, Content::Session(s) if s.is_started()))
            .count() as u64;
        s.buffered_bytes = self.budget.used as u64;
        s.reassembly_flow_cap_hits = self.budget.flow_cap_hits;
        s.reassembly_global_cap_hits = self.budget.global_cap_hits;
        s.parse_buffered_bytes = self.parse_budget.used() as u64;
        s.parse_budget_refusals = self.parse_budget.refused();
        s.fragments = self.fragments.counters();
        s.fragment_bytes = self.fragments.used() as u64;
        s.checksums = self.checksums.counters();
        s
    }

    /// A heartbeat with the capture counters.
    pub fn heartbeat(
        &self,
        hostname: &str,
        started_at: Timestamp,
        time: Timestamp,
        pcap_drops: u64,
        capture_sources: Vec<String>,
    ) -> AgentHeartbeat {
        self.stats().heartbeat(
            &self.config.agent_id,
            hostname,
            started_at,
            time,
            pcap_drops,
            capture_sources,
        )
    }

    /// One captured frame.
    pub fn handle_packet(&mut self, packet: &Packet<'_>) {
        self.stats.packets += 1;
        self.stats.bytes += u64::from(packet.orig_len.max(packet.data.len() as u32));
        let ip = match decode::ip_payload(packet.link, packet.data) {
            Ok(ip) => ip,
            Err(skipped) => return self.skip(packet.ts, skipped),
        };
        let Some(fragment) = ip.fragment else {
            let tcp = decode::tcp_bytes(ip.protocol, ip.bytes);
            return self.handle_tcp(packet.ts, ip.src, ip.dst, tcp, ip.missing);
        };
        if !decode::may_carry_tcp(ip.protocol) {
            return self.skip(packet.ts, Skipped::NotTcp);
        }
        let now = self.now.max(packet.ts);
        let outcome = self.fragments.add(
            now,
            ip.src,
            ip.dst,
            ip.protocol,
            fragment,
            ip.bytes,
            ip.missing,
        );
        match outcome {
            Outcome::Complete(datagram) => {
                let tcp = decode::tcp_bytes(datagram.protocol, &datagram.bytes);
                self.handle_tcp(packet.ts, ip.src, ip.dst, tcp, 0);
            }
            Outcome::Held | Outcome::Dropped => self.advance(packet.ts),
        }
    }

    /// A frame that gave no TCP segment.
    fn skip(&mut self, ts: Nanos, why: Skipped) {
        match why {
            Skipped::LinkType => self.stats.unsupported_link += 1,
            Skipped::Malformed => self.stats.malformed += 1,
            Skipped::NotTcp => self.stats.not_tcp += 1,
        }
        self.advance(ts);
    }

    /// The TCP bytes of a whole datagram (`missing` of them cut off by the capture): decoded,
    /// checksum-checked, and on to the flow table.
    fn handle_tcp(
        &mut self,
        ts: Nanos,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        tcp: Result<&[u8], Skipped>,
        missing: usize,
    ) {
        let decoded = tcp.and_then(|bytes| Ok((bytes, decode::tcp_of(src, dst, bytes, missing)?)));
        let (bytes, seg) = match decoded {
            Ok(decoded) => decoded,
            Err(skipped) => return self.skip(ts, skipped),
        };
        if self.checksums.admit(src, dst, bytes, missing == 0) {
            self.handle_segment(ts, &seg);
        } else {
            self.advance(ts);
        }
    }

    /// Moves capture time forward, running the periodic sweep when due. Live capture calls this
    /// with the wall clock when no packets arrive.
    pub fn advance(&mut self, now: Nanos) {
        if now > self.now {
            self.now = now;
        }
        match self.next_sweep {
            None => self.next_sweep = Some(self.now.saturating_add(SWEEP_INTERVAL)),
            Some(due) if self.now >= due => {
                self.sweep();
                self.next_sweep = Some(self.now.saturating_add(SWEEP_INTERVAL));
            }
            Some(_) => {}
        }
    }

    /// One TCP segment.
    pub fn handle_segment(&mut self, ts: Nanos, seg: &TcpSegment<'_>) {
        self.stats.tcp_segments += 1;
        self.advance(ts);
        let key = FlowKey::new(seg.src, seg.src_port, seg.dst, seg.dst_port);

        // A new SYN on a tuple whose connection is over starts a new connection. On an open
        // one (data delivered, no FIN or RST) it is RFC 5961 §4's challenge-ACK case: the
        // server keeps its connection, and so does the agent, so a forged SYN cannot end a
        // session either. Only the server's SYN-ACK to that SYN (it had no connection left on
        // the tuple: the capture missed the old one's end) makes it a new connection.
        if seg.syn {
            if let Some(conn) = self.flows.get_mut(&key) {
                let open =
                    !conn.is_closing() && conn.streams.iter().any(|s| s.counters.delivered > 0);
                let answered = seg.ack_flag
                    && conn
                        .pending_syn
                        .is_some_and(|(_, syn)| seg.ack == syn.seq.wrapping_add(1));
                if !seg.ack_flag && open {
                    conn.pending_syn = Some((ts, seg.header_only()));
                    self.stats.syn_in_session += 1;
                    return;
                }
                if (!seg.ack_flag && conn.is_closing()) || answered {
                    let pending = conn.pending_syn.take();
                    if let Some(old) = self.flows.remove(&key) {
                        let reason = if old.is_closing() {
                            old.close_reason()
                        } else {
                            EndReason::IdleTimeout
                        };
                        self.end_connection(old, reason);
                    }
                    if let (true, Some((at, syn))) = (answered, pending) {
                        self.handle_segment(at, &syn);
                    }
                }
            }
        }

        if !self.flows.contains_key(&key) {
            if seg.rst || (!seg.syn && seg.payload.is_empty()) {
                return;
            }
            if !self.config.any_port
                && !self.config.ports.contains(seg.src_port)
                && !self.config.ports.contains(seg.dst_port)
            {
                return;
            }
            if self.flows.len() >= self.config.max_flows {
                self.evict();
            }
            let ports = &self.config.ports;
            let src = SocketAddr::new(seg.src, seg.src_port);
            let dst = SocketAddr::new(seg.dst, seg.dst_port);
            let (client, server) = orientation(seg, src, dst, ports);
            self.flows
                .insert(key, Box::new(Connection::new(client, server, ts)));
            self.stats.flows_created += 1;
        }
        let Some(conn) = self.flows.get_mut(&key) else {
            return;
        };
        let mut dir = conn.direction(seg.src, seg.src_port);

        // Mid-stream pickup without a VNC port to go by: the side sending a banner is the server.
        if !conn.syn_seen
            && matches!(conn.content, Content::Undecided)
            && dir == Dir::ClientToServer
            && !self.config.ports.contains(conn.server.port())
            && seg.payload.len() >= 4
            && could_be_banner(seg.payload)
            && !conn.streams[1].is_synced()
        {
            conn.swap_roles();
            dir = Dir::ServerToClient;
        }

        let d = dir.index();
        if seg.rst {
            // A forged RST must not end the session (nor keep it from going idle).
            let (sender, receiver) = (&conn.streams[d], &conn.streams[1 - d]);
            let said = &conn.advertised;
            match judge_rst(seg, sender, &said[d], receiver, &said[1 - d]) {
                RstVerdict::Exact => conn.rst = true,
                RstVerdict::InWindow => {
                    self.stats.rst_in_window += 1;
                    return;
                }
                RstVerdict::OutOfWindow => {
                    self.stats.rst_out_of_window += 1;
                    return;
                }
            }
        }
        conn.last_packet = conn.last_packet.max(ts);
        conn.advertised[d].observe(seg);
        conn.packets[d] += 1;
        if seg.syn && !seg.ack_flag && dir == Dir::ClientToServer && !conn.syn_seen {
            conn.syn_seen = true;
            conn.handshake = Handshake::from_syn(seg.seq);
        } else {
            conn.handshake.observe(dir, seg);
        }
        if seg.fin {
            conn.fin[d] = true;
        }
        if matches!(conn.content, Content::Ignored) {
            return;
        }

        let ctx = Ctx::of(&self.config, self.stats_interval, &self.parse_budget, conn);
        let Connection {
            streams, content, ..
        } = &mut **conn;
        let [c2s, s2c] = streams;
        let (mine, peer) = match dir {
            Dir::ClientToServer => (c2s, s2c),
            Dir::ServerToClient => (s2c, c2s),
        };
        // The acknowledgement first: it speaks of the peer's earlier bytes.
        if seg.ack_flag {
            peer.acknowledged(seg.ack, &mut self.budget, &mut |chunk| {
                deliver(content, dir.other(), chunk, &ctx)
            });
        }
        mine.accept(
            seg.seq,
            seg.syn,
            seg.fin,
            seg.payload,
            seg.missing,
            self.config.max_buffered_per_flow,
            &mut self.budget,
            &mut |chunk| deliver(content, dir, chunk, &ctx),
        );

        if let Content::Session(s) = &mut conn.content {
            let traffic = traffic_of(conn.packets, &conn.streams, conn.handshake);
            let before = self.events.len();
            s.poll(ts, &traffic, &mut self.events);
            self.stats.sessions_total += self.events[before..]
                .iter()
                .filter(|e| e.kind == SessionEventKind::Started)
                .count() as u64;
        } else if matches!(conn.content, Content::Ignored) {
            for s in &mut conn.streams {
                s.release(&mut self.budget);
            }
        }
    }

    /// Stats events, and the end of closed and idle connections. Connections are visited in
    /// the order they started, so a replayed capture emits the same events in the same order.
    fn sweep(&mut self) {
        let now = self.now;
        let (linger, idle) = (self.linger, self.idle_timeout);
        let mut due: Vec<(Nanos, SocketAddr, SocketAddr, FlowKey, bool)> = Vec::new();
        for (key, conn) in self.flows.iter() {
            let quiet = now.saturating_sub(conn.last_packet);
            let ended = (conn.is_closing() && quiet >= linger) || quiet >= idle;
            let stats = matches!(&conn.content, Content::Session(s) if s.stats_due(now));
            if ended || stats {
                due.push((conn.first_packet, conn.client, conn.server, *key, ended));
            }
        }
        due.sort_unstable();
        for (_, _, _, key, ended) in due {
            if ended {
                if let Some(conn) = self.flows.remove(&key) {
                    let reason = if conn.is_closing() {
                        conn.close_reason()
                    } else {
                        EndReason::IdleTimeout
                    };
                    self.end_connection(conn, reason);
                }
            } else if let Some(conn) = self.flows.get_mut(&key) {
                if let Content::Session(s) = &mut conn.content {
                    let traffic = traffic_of(conn.packets, &conn.streams, conn.handshake);
                    s.tick(now, &traffic, &mut self.events);
                }
            }
        }
    }

    /// Evicts a sixteenth of the flow table: half-open connections first, then unverified
    /// ones, then verified ones, each least recently active first. A flood of forged SYNs (or of
    /// forged mid-stream segments) then only evicts its own kind while real, handshake-verified
    /// sessions stay whole; a verified session goes only when nothing else is left to evict.
    fn evict(&mut self) {
        let n = (self.flows.len() / 16).max(1);
        let mut ages: Vec<(EvictionClass, Nanos, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, c)| (EvictionClass::of(c), c.last_packet, *k))
            .collect();
        if n < ages.len() {
            ages.select_nth_unstable(n - 1);
            ages.truncate(n);
        }
        ages.sort_unstable();
        for (class, _, key) in ages {
            if let Some(conn) = self.flows.remove(&key) {
                self.stats.flows_evicted += 1;
                *match class {
                    EvictionClass::HalfOpen => &mut self.stats.flows_evicted_half_open,
                    EvictionClass::Unverified => &mut self.stats.flows_evicted_unverified,
                    EvictionClass::Verified => &mut self.stats.flows_evicted_verified,
                } += 1;
                let reason = if conn.is_closing() {
                    conn.close_reason()
                } else {
                    EndReason::Evicted
                };
                self.end_connection(conn, reason);
            }
        }
    }

    /// Flushes a connection's reassembly (holes become gaps) and ends its session.
    fn end_connection(&mut self, conn: Box<Connection>, reason: EndReason) {
        let mut conn = *conn;
        let ctx = Ctx::of(&self.config, self.stats_interval, &self.parse_budget, &conn);
        {
            let Connection {
                streams, content, ..
            } = &mut conn;
            for (i, stream) in streams.iter_mut().enumerate() {
                let dir = if i == 0 {
                    Dir::ClientToServer
                } else {
                    Dir::ServerToClient
                };
                stream.flush(&mut self.budget, &mut |chunk| {
                    deliver(content, dir, chunk, &ctx)
                });
                stream.release(&mut self.budget);
            }
        }
        let traffic = traffic_of(conn.packets, &conn.streams, conn.handshake);
        self.stats.gap_bytes += traffic.gap_bytes;
        if let Content::Session(s) = &mut conn.content {
            let before = self.events.len();
            s.end(reason, conn.last_packet, &traffic, &mut self.events);
            let new = &self.events[before..];
            self.stats.sessions_total += new
                .iter()
                .filter(|e| e.kind == SessionEventKind::Started)
                .count() as u64;
            if let Some(last) = new.last() {
                self.stats.parse_errors += last.summary.parse_errors as u64;
            }
        }
    }

    /// Ends every connection: closed ones with `fin`/`rst`, the others with `reason`
    /// (`capture_end` at the end of a file, `shutdown` when the agent stops).
    pub fn finish(&mut self, reason: EndReason) {
        let mut conns: Vec<Box<Connection>> = self.flows.drain().map(|(_, c)| c).collect();
        // Deterministic order: by first packet, then by address.
        conns.sort_by(|a, b| {
            (a.first_packet, a.client, a.server).cmp(&(b.first_packet, b.client, b.server))
        });
        for conn in conns {
            let r = if conn.is_closing() {
                conn.close_reason()
            } else {
                reason
            };
            self.end_connection(conn, r);
        }
    }
}

fn traffic_of(
    packets: [u64; 2],
    streams: &[crate::flow::reassembly::HalfStream; 2],
    handshake: Handshake,
) -> Traffic {
    Traffic {
        packets,
        bytes: [streams[0].counters.delivered, streams[1].counters.delivered],
        gap_bytes: streams[0].counters.gap + streams[1].counters.gap,
        handshake_verified: handshake.is_verified(),
    }
}

/// Which connections a full flow table gives up first (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EvictionClass {
    /// No payload and no verified handshake: a SYN, a SYN-ACK, a port probe.
    HalfOpen,
    /// Payload without a verified handshake: a mid-stream pickup or forged segments.
    Unverified,
    Verified,
}

impl EvictionClass {
    fn of(conn: &Connection) -> EvictionClass {
        if conn.handshake.is_verified() {
            EvictionClass::Verified
        } else if conn.streams.iter().all(|s| s.counters.delivered == 0)
            && matches!(conn.content, Content::Undecided)
        {
            EvictionClass::HalfOpen
        } else {
            EvictionClass::Unverified
        }
    }
}

/// Who is the client of a connection first seen with this segment: the SYN's sender, else the
/// side away from a VNC port, else (any-port mode, mid-stream) the sender of an RFB banner is
/// the server, else the higher port is the client.
fn orientation(
    seg: &TcpSegment<'_>,
    src: SocketAddr,
    dst: SocketAddr,
    ports: &PortSet,
) -> (SocketAddr, SocketAddr) {
    if seg.syn {
        return if seg.ack_flag { (dst, src) } else { (src, dst) };
    }
    match (ports.contains(src.port()), ports.contains(dst.port())) {
        (false, true) => (src, dst),
        (true, false) => (dst, src),
        _ if seg.payload.len() >= 4 && could_be_banner(seg.payload) => (dst, src),
        _ if src.port() > dst.port() => (src, dst),
        _ => (dst, src),
    }
}
