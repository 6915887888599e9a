//! Where packets come from: capture files (our own pcap and pcapng reader, [`file`]), live
//! interfaces through libpcap ([`live`]), the decoding to IP payloads and TCP segments
//! ([`decode`]), IP fragment reassembly ([`fragments`]) and TCP checksum validation
//! ([`checksum`]).

pub mod checksum;
pub mod decode;
pub mod file;
pub mod fragments;
pub mod live;

use crate::session::Nanos;

/// Link-layer header type (the LINKTYPE_ / DLT_ number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// DLT_RAW as libpcap reports it on Linux (12) and OpenBSD (14).
    pub const DLT_RAW: LinkType = LinkType(12);
    pub const DLT_RAW_OPENBSD: LinkType = LinkType(14);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub ts: Nanos,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length of the frame on the wire (may exceed `data.len()` under a snap length).
    pub orig_len: u32,
}

/// A capture source failed. File errors name the byte offset where reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("read error at byte offset {offset}: {source}")]
    Io { offset: u64, source: std::io::Error },
    #[error("not a pcap or pcapng file: magic {magic:#010x} at byte offset 0")]
    UnknownFormat { magic: u32 },
    #[error(
        "truncated capture file: {what} at byte offset {offset} needs {needed} bytes, \
         the file ends after {available}"
    )]
    Truncated {
        offset: u64,
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("corrupt capture file at byte offset {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("live capture on {interface}: {message}")]
    Live { interface: String, message: String },
}

impl CaptureError {
    /// Byte offset in the file where reading stopped, for file errors.
    pub fn offset(&self) -> Option<u64> {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::Corrupt { offset, .. } => Some(*offset),
            CaptureError::UnknownFormat { .. } => Some(0),
            CaptureError::Open { .. } | CaptureError::Live { .. } => None,
        }
    }
}
