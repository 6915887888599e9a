//! Live capture through libpcap, with a BPF filter for the configured VNC ports (or all TCP in
//! any-port mode) and libpcap's drop counters for heartbeats.

use super::{CaptureError, LinkType, Packet};
use crate::config::PortSet;

/// The BPF filter for the configured ports (VLAN-tagged frames included).
///
/// Three kinds of packet pass it:
/// - TCP to or from a VNC port (any TCP in any-port mode);
/// - every IPv4 TCP fragment (more-fragments flag or an offset): a non-first fragment carries
///   no ports, and libpcap's `port` rejects all fragments but the first, so a fragmented
///   session would never reach reassembly;
/// - every IPv6 packet whose first next header is an extension header (hop-by-hop 0, routing
///   43, fragment 44, authentication 51, destination options 60): libpcap's `tcp` and `port`
///   read only the fixed header's next header and the bytes after it, so a destination-options
///   header hid a whole session. BPF cannot walk a chain of variable-length headers to the
///   ports (libpcap's `protochain` can find TCP but then not its ports); the decoder walks
///   them and the agent drops what is not for a VNC port. Ordinary IPv6 (TCP to other ports,
///   UDP, ICMPv6) stays out, so the cost is only the rare packets that carry such headers.
pub fn bpf_filter(ports: &PortSet, any_port: bool) -> String {
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
    let tcp = if any_port || ranges.is_empty() {
        "tcp".to_string()
    } else {
        format!("(tcp and ({}))", ranges.join(" or "))
    };
    let packets = format!(
        "{tcp} or (ip proto 6 and ip[6:2] & 0x3fff != 0) or \
         (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60))"
    );
    format!("{packets} or (vlan and ({packets}))")
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
    use etherparse::PacketBuilder;

    /// Whether libpcap's compiled `filter` passes the Ethernet frame around `ip`.
    fn passes(filter: &str, ip: &[u8]) -> bool {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(if ip[0] >> 4 == 6 {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        frame.extend_from_slice(ip);
        let capture = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("dead capture");
        capture
            .compile(filter, true)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .filter(&frame)
    }

    fn ipv4_tcp(dst_port: u16) -> Vec<u8> {
        let mut ip = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(40000, dst_port, 1, 1024)
            .write(&mut ip, &[0; 64])
            .unwrap();
        ip
    }

    fn ipv6_tcp(dst_port: u16, first_header: Option<u8>) -> Vec<u8> {
        let mut ip = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(40000, dst_port, 1, 1024)
            .write(&mut ip, b"RFB 003.008\n")
            .unwrap();
        if let Some(header) = first_header {
            // An empty 8-byte extension header in front of TCP.
            let mut ext = vec![6, 0, 1, 4, 0, 0, 0, 0];
            if header == 44 {
                ext = vec![6, 0, 0, 0, 0, 0, 0, 1];
            }
            ip.splice(40..40, ext);
            ip[6] = header;
            let len = u16::from_be_bytes([ip[4], ip[5]]) + 8;
            ip[4..6].copy_from_slice(&len.to_be_bytes());
        }
        ip
    }

    #[test]
    fn filters() {
        let ports: PortSet = "5900-5905,6900".parse().unwrap();
        let filter = bpf_filter(&ports, false);
        assert!(filter.starts_with("(tcp and (portrange 5900-5905 or port 6900)) or "));
        assert!(bpf_filter(&ports, true).starts_with("tcp or "));
    }

    #[test]
    fn the_filter_passes_fragments_and_extension_headers_in_libpcap() {
        let filter = bpf_filter(&"5900-5905".parse().unwrap(), false);
        assert!(passes(&filter, &ipv4_tcp(5900)));
        assert!(!passes(&filter, &ipv4_tcp(80)));
        // A non-first IPv4 fragment: no ports in it.
        let mut fragment = ipv4_tcp(80);
        fragment[6..8].copy_from_slice(&185u16.to_be_bytes());
        assert!(passes(&filter, &fragment));
        // Its first fragment (more fragments).
        fragment[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(passes(&filter, &fragment));
        // Not TCP: a UDP fragment stays out.
        fragment[9] = 17;
        assert!(!passes(&filter, &fragment));

        assert!(passes(&filter, &ipv6_tcp(5900, None)));
        assert!(!passes(&filter, &ipv6_tcp(443, None)));
        for header in [0, 43, 44, 51, 60] {
            assert!(
                passes(&filter, &ipv6_tcp(5900, Some(header))),
                "header {header}"
            );
        }
        // What the filter used to be: TCP on the ports only, blind to the extension header.
        let old = "(tcp and (portrange 5900-5905)) or (vlan and tcp and (portrange 5900-5905))";
        assert!(!passes(old, &ipv6_tcp(5900, Some(60))));
        assert!(!passes(old, &{
            let mut f = ipv4_tcp(5900);
            f[6..8].copy_from_slice(&185u16.to_be_bytes());
            f
        }));
    }
}
