//! Link layer to TCP segment, with etherparse: Ethernet (with VLAN tags), NULL/loopback, raw
//! IPv4/IPv6, Linux cooked SLL and SLL2.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::LinkType;
use crate::flow::TcpSegment;

/// Why a frame gave no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// A link type we do not decode.
    LinkType,
    /// Too short or malformed below TCP.
    Malformed,
    /// Not TCP (or a non-first IP fragment).
    NotTcp,
}

/// Decodes one frame to its TCP segment.
pub fn tcp_segment(link: LinkType, frame: &[u8]) -> Result<TcpSegment<'_>, Skipped> {
    let sliced = match link {
        LinkType::ETHERNET => {
            LaxSlicedPacket::from_ethernet(frame).map_err(|_| Skipped::Malformed)?
        }
        LinkType::NULL | LinkType::LOOP => {
            // 4-byte address family (host or network order); the IP version nibble decides.
            let ip = frame.get(4..).ok_or(Skipped::Malformed)?;
            LaxSlicedPacket::from_ip(ip).map_err(|_| Skipped::Malformed)?
        }
        LinkType::RAW
        | LinkType::DLT_RAW
        | LinkType::DLT_RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => LaxSlicedPacket::from_ip(frame).map_err(|_| Skipped::Malformed)?,
        LinkType::LINUX_SLL => {
            if frame.len() < 16 {
                return Err(Skipped::Malformed);
            }
            let proto = u16::from_be_bytes([frame[14], frame[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[16..])
        }
        LinkType::LINUX_SLL2 => {
            if frame.len() < 20 {
                return Err(Skipped::Malformed);
            }
            let proto = u16::from_be_bytes([frame[0], frame[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[20..])
        }
        _ => return Err(Skipped::LinkType),
    };
    let (src, dst, declared_ip_payload) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let declared = usize::from(h.total_len()).saturating_sub(usize::from(h.ihl()) * 4);
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                (v4.payload().incomplete).then_some(declared),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ext = v6.extensions().slice().len();
            let declared = usize::from(h.payload_length()).saturating_sub(ext);
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                (v6.payload().incomplete).then_some(declared),
            )
        }
        _ => return Err(Skipped::NotTcp),
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Err(Skipped::NotTcp);
    };
    let payload = tcp.payload();
    let missing = declared_ip_payload
        .map(|d| d.saturating_sub(tcp.header_slice().len() + payload.len()))
        .unwrap_or(0);
    Ok(TcpSegment {
        src,
        dst,
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        syn: tcp.syn(),
        ack_flag: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload,
        missing: missing as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn decodes_every_supported_link_type() {
        let payload = b"RFB 003.008\n";
        let build = || {
            PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
                .tcp(5900, 40000, 1000, 65535)
                .ack(1)
                .psh()
        };
        let mut ip = Vec::new();
        build().write(&mut ip, payload).unwrap();

        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut vlan = vec![0u8; 12];
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        vlan.extend_from_slice(&ip);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut ip6 = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(5900, 40000, 1000, 65535)
            .write(&mut ip6, payload)
            .unwrap();

        for (link, frame) in [
            (LinkType::ETHERNET, &eth),
            (LinkType::ETHERNET, &vlan),
            (LinkType::NULL, &null),
            (LinkType::RAW, &ip),
            (LinkType::IPV4, &ip),
            (LinkType::LINUX_SLL, &sll),
            (LinkType::LINUX_SLL2, &sll2),
            (LinkType::IPV6, &ip6),
        ] {
            let seg = tcp_segment(link, frame).unwrap_or_else(|e| panic!("{link:?}: {e:?}"));
            assert_eq!(seg.payload, payload, "{link:?}");
            assert_eq!((seg.src_port, seg.dst_port), (5900, 40000));
            assert_eq!(seg.missing, 0);
        }
        // Snap length cut the payload: the missing bytes are reported.
        let cut = &eth[..eth.len() - 5];
        let seg = tcp_segment(LinkType::ETHERNET, cut).unwrap();
        assert_eq!(seg.payload.len(), 7);
        assert_eq!(seg.missing, 5);
        assert_eq!(
            tcp_segment(LinkType(147), &ip).unwrap_err(),
            Skipped::LinkType
        );
    }
}
