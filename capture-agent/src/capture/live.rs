//! Live capture through libpcap, with a BPF filter for the configured VNC ports (or all TCP in
//! any-port mode) and libpcap's drop counters for heartbeats.

use super::{CaptureError, LinkType, Packet};
use crate::config::PortSet;

/// The BPF filter for the configured ports (VLAN-tagged frames included).
pub fn bpf_filter(ports: &PortSet, any_port: bool) -> String {
    if any_port {
        return "tcp or (vlan and tcp)".to_string();
    }
    let ranges: Vec<String> = ports
        .ranges()
        .map(|(lo, hi)| {
            if lo == hi {
                format!("port {lo}")
            } else {
                format!("portrange {lo}-{hi}")
            }
        })
        .collect();
    if ranges.is_empty() {
        return "tcp or (vlan and tcp)".to_string();
    }
    let ports = ranges.join(" or ");
    format!("(tcp and ({ports})) or (vlan and tcp and ({ports}))")
}

/// libpcap's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub received: u64,
    /// Dropped by the kernel (no room in the buffer) plus by the interface.
    pub dropped: u64,
}

/// An open live capture.
pub struct LiveCapture {
    interface: String,
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
}

impl LiveCapture {
    /// Opens `interface` (promiscuous, full frames, immediate delivery, non-blocking) with
    /// `filter`.
    pub fn open(interface: &str, filter: &str) -> Result<LiveCapture, CaptureError> {
        let err = |e: pcap::Error| CaptureError::Live {
            interface: interface.to_string(),
            message: e.to_string(),
        };
        let mut cap = pcap::Capture::from_device(interface)
            .map_err(err)?
            .promisc(true)
            .snaplen(262_144)
            .buffer_size(64 * 1024 * 1024)
            .immediate_mode(true)
            .open()
            .map_err(err)?
            // Non-blocking: libpcap's read timeout does not start before a first packet on
            // Linux, and a quiet link must not stop the agent's clock, sweeps and shutdown.
            .setnonblock()
            .map_err(err)?;
        cap.filter(filter, true).map_err(err)?;
        let link = LinkType(cap.get_datalink().0 as u32);
        Ok(LiveCapture {
            interface: interface.to_string(),
            cap,
            link,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// The next frame; `None` when none is waiting (the caller sleeps briefly).
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.cap.next_packet() {
            Ok(p) => {
                let ts = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000;
                Ok(Some(Packet {
                    ts,
                    link: self.link,
                    data: p.data,
                    orig_len: p.header.len,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(None),
            Err(e) => Err(CaptureError::Live {
                interface: self.interface.clone(),
                message: e.to_string(),
            }),
        }
    }

    pub fn stats(&mut self) -> LiveStats {
        match self.cap.stats() {
            Ok(s) => LiveStats {
                received: u64::from(s.received),
                dropped: u64::from(s.dropped) + u64::from(s.if_dropped),
            },
            Err(_) => LiveStats::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let ports: PortSet = "5900-5905,6900".parse().unwrap();
        assert_eq!(
            bpf_filter(&ports, false),
            "(tcp and (portrange 5900-5905 or port 6900)) or \
             (vlan and tcp and (portrange 5900-5905 or port 6900))"
        );
        assert_eq!(bpf_filter(&ports, true), "tcp or (vlan and tcp)");
    }
}
