//! TCP connections: the flow key and its hasher, the per-connection state (orientation, two
//! reassembled directions, traffic counters, the session) and the bounded flow table.

pub mod handshake;
pub mod reassembly;
pub mod rst;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::rfb::state::Dir;
use crate::session::{EndReason, Nanos, Session};
use handshake::Handshake;
use reassembly::HalfStream;
use rst::Advertised;

/// One TCP segment as decoded from a frame.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    /// The window field (unscaled).
    pub window: u16,
    /// A SYN's window scale option (RFC 7323), if it has one.
    pub window_scale: Option<u8>,
    pub payload: &'a [u8],
    /// Payload bytes the capture cut off (snap length).
    pub missing: u32,
}

impl TcpSegment<'_> {
    /// This segment without its payload, to keep (a held SYN carries none).
    pub fn header_only(&self) -> TcpSegment<'static> {
        TcpSegment {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: self.seq,
            ack: self.ack,
            syn: self.syn,
            ack_flag: self.ack_flag,
            fin: self.fin,
            rst: self.rst,
            window: self.window,
            window_scale: self.window_scale,
            payload: &[],
            missing: 0,
        }
    }
}

fn ip_words(ip: IpAddr) -> [u64; 2] {
    let b = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    [
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
    ]
}

/// Direction-independent key of a connection: the two endpoints in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    lo_ip: [u64; 2],
    hi_ip: [u64; 2],
    lo_port: u16,
    hi_port: u16,
}

impl FlowKey {
    pub fn new(a: IpAddr, a_port: u16, b: IpAddr, b_port: u16) -> FlowKey {
        let a = (ip_words(a), a_port);
        let b = (ip_words(b), b_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            lo_ip: lo.0,
            hi_ip: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
        }
    }
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo_ip[0]);
        state.write_u64(self.lo_ip[1]);
        state.write_u64(self.hi_ip[0]);
        state.write_u64(self.hi_ip[1]);
        state.write_u64(u64::from(self.lo_port) << 16 | u64::from(self.hi_port));
    }
}

/// A fast multiply-rotate hasher (FxHash family) keyed with a per-process random seed, so flow
/// keys an attacker chooses cannot be aimed at one bucket across agents.
#[derive(Debug, Clone, Copy)]
pub struct FlowHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FlowHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u64(&mut self, w: u64) {
        self.hash = (self.hash ^ w).wrapping_mul(K).rotate_left(26);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits (the bucket index) depend on every input bit.
        let mut h = self.hash;
        h ^= h >> 32;
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
}

/// Builds [`FlowHasher`]s with one random seed per table.
#[derive(Debug, Clone, Copy)]
pub struct FlowHasherBuilder {
    seed: u64,
}

impl Default for FlowHasherBuilder {
    fn default() -> Self {
        FlowHasherBuilder {
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }
}

impl BuildHasher for FlowHasherBuilder {
    type Hasher = FlowHasher;
    fn build_hasher(&self) -> FlowHasher {
        FlowHasher { hash: self.seed }
    }
}

pub type FlowMap<V> = HashMap<FlowKey, V, FlowHasherBuilder>;

/// What the agent knows about a connection's content.
#[derive(Debug)]
pub enum Content {
    /// No payload decided it yet.
    Undecided,
    /// Possibly or certainly RFB.
    Session(Box<Session>),
    /// Not RFB (or not decidable): only counted until it ends.
    Ignored,
}

/// One TCP connection.
#[derive(Debug)]
pub struct Connection {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first_packet: Nanos,
    pub last_packet: Nanos,
    /// Client to server, server to client.
    pub streams: [HalfStream; 2],
    /// TCP segments seen per direction.
    pub packets: [u64; 2],
    /// What each side announced (window, acknowledgements), for judging RSTs.
    pub advertised: [Advertised; 2],
    /// The client's SYN was seen: the connection is seen from its start.
    pub syn_seen: bool,
    /// How far the TCP handshake proves the client real.
    pub handshake: Handshake,
    pub fin: [bool; 2],
    pub rst: bool,
    /// A client SYN that came while the connection was open, with its time: a new connection
    /// only if the server answers it (see the agent).
    pub pending_syn: Option<(Nanos, TcpSegment<'static>)>,
    pub content: Content,
}

impl Connection {
    pub fn new(client: SocketAddr, server: SocketAddr, now: Nanos) -> Connection {
        Connection {
            client,
            server,
            first_packet: now,
            last_packet: now,
            streams: [HalfStream::default(), HalfStream::default()],
            packets: [0; 2],
            advertised: [Advertised::default(); 2],
            syn_seen: false,
            handshake: Handshake::Unverifiable,
            fin: [false; 2],
            rst: false,
            pending_syn: None,
            content: Content::Undecided,
        }
    }

    /// Direction of a segment from `src`.
    pub fn direction(&self, src: IpAddr, src_port: u16) -> Dir {
        if self.client.ip() == src && self.client.port() == src_port {
            Dir::ClientToServer
        } else {
            Dir::ServerToClient
        }
    }

    /// Both sides closed, or reset.
    pub fn is_closing(&self) -> bool {
        self.rst || (self.fin[0] && self.fin[1])
    }

    pub fn close_reason(&self) -> EndReason {
        if self.rst {
            EndReason::Rst
        } else {
            EndReason::Fin
        }
    }

    /// Turns the connection around (a mid-stream pickup guessed the wrong server).
    pub fn swap_roles(&mut self) {
        std::mem::swap(&mut self.client, &mut self.server);
        self.streams.swap(0, 1);
        self.packets.swap(0, 1);
        self.advertised.swap(0, 1);
        self.fin.swap(0, 1);
    }
}
