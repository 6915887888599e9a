//! Link layer to IP datagram to TCP segment: Ethernet (with VLAN tags), NULL/loopback, raw
//! IPv4/IPv6, Linux cooked SLL and SLL2; IPv4 options and IPv6 extension headers (hop-by-hop,
//! routing, destination options, authentication, fragment).
//!
//! A frame decodes to its [`IpPayload`]: the datagram's transport bytes, or one fragment of
//! them, which the agent hands to [`super::fragments`] until the datagram is whole. The IP
//! layer is walked here rather than by etherparse because etherparse goes on parsing
//! "extension headers" inside a non-first IPv6 fragment (where the bytes are the middle of the
//! datagram) and gives no transport layer for fragments at all. etherparse still parses the TCP
//! header and its options.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{TcpOptionElement, TcpSlice};

use super::LinkType;
use crate::flow::TcpSegment;

/// Why a frame gave no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// A link type we do not decode.
    LinkType,
    /// Too short or malformed below TCP.
    Malformed,
    /// Not TCP.
    NotTcp,
}

/// IP protocol numbers the decoder knows.
const TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const IPV6_DESTINATION_OPTIONS: u8 = 60;

/// Extension headers walked before giving up on a datagram. RFC 8200 §4.1 allows each header
/// once (destination options twice), so honest datagrams carry at most six; the bound keeps a
/// datagram of thousands of empty 8-byte headers from costing a loop per header.
const MAX_EXTENSION_HEADERS: usize = 16;

/// Where a fragment's bytes go in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The datagram's identification (IPv4: 16 bits, IPv6: 32 bits).
    pub id: u32,
    /// Byte offset of this fragment's first byte in the datagram's fragmentable part.
    pub offset: usize,
    /// More fragments follow (the MF flag / M bit).
    pub more: bool,
}

/// The transport bytes of one IP datagram, or of one fragment of it.
#[derive(Debug, Clone, Copy)]
pub struct IpPayload<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The next protocol after the IP header and the extension headers walked: the transport
    /// protocol, or for a fragment the first header of the fragmentable part.
    pub protocol: u8,
    pub bytes: &'a [u8],
    /// Bytes the IP header declares beyond `bytes`: the capture's snap length cut them.
    pub missing: usize,
    pub fragment: Option<Fragment>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The IP packet a frame carries (its version nibble says which IP).
fn link_payload(link: LinkType, frame: &[u8]) -> Result<&[u8], Skipped> {
    fn by_ether_type(ether_type: u16, rest: &[u8]) -> Result<&[u8], Skipped> {
        match ether_type {
            0x0800 | 0x86dd => Ok(rest),
            _ => Err(Skipped::NotTcp),
        }
    }
    match link {
        LinkType::ETHERNET => {
            if frame.len() < 14 {
                return Err(Skipped::Malformed);
            }
            let mut ether_type = be16(frame, 12);
            let mut rest = &frame[14..];
            // 802.1Q, 802.1ad (QinQ) and the old 0x9100 tags, any depth.
            while matches!(ether_type, 0x8100 | 0x88a8 | 0x9100) {
                if rest.len() < 4 {
                    return Err(Skipped::Malformed);
                }
                ether_type = be16(rest, 2);
                rest = &rest[4..];
            }
            by_ether_type(ether_type, rest)
        }
        // 4-byte address family (host or network order); the IP version nibble decides.
        LinkType::NULL | LinkType::LOOP => frame.get(4..).ok_or(Skipped::Malformed),
        LinkType::RAW
        | LinkType::DLT_RAW
        | LinkType::DLT_RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => Ok(frame),
        LinkType::LINUX_SLL if frame.len() >= 16 => by_ether_type(be16(frame, 14), &frame[16..]),
        LinkType::LINUX_SLL2 if frame.len() >= 20 => by_ether_type(be16(frame, 0), &frame[20..]),
        LinkType::LINUX_SLL | LinkType::LINUX_SLL2 => Err(Skipped::Malformed),
        _ => Err(Skipped::LinkType),
    }
}

/// The bytes after an IP header that declares `declared` bytes of payload (`None`: the
/// header does not say, as in a TSO capture's IPv4 total length of 0), and how many of those
/// the capture lacks.
fn declared_payload(rest: &[u8], declared: Option<usize>) -> (&[u8], usize) {
    match declared {
        Some(len) if len <= rest.len() => (&rest[..len], 0),
        Some(len) => (rest, len - rest.len()),
        None => (rest, 0),
    }
}

/// Decodes one frame to its IP payload (the transport bytes, or a fragment of them).
pub fn ip_payload(link: LinkType, frame: &[u8]) -> Result<IpPayload<'_>, Skipped> {
    let ip = link_payload(link, frame)?;
    match ip.first().map(|b| b >> 4) {
        Some(4) => ipv4(ip),
        Some(6) => ipv6(ip),
        _ => Err(Skipped::Malformed),
    }
}

fn ipv4(ip: &[u8]) -> Result<IpPayload<'_>, Skipped> {
    if ip.len() < 20 {
        return Err(Skipped::Malformed);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len < 20 || ip.len() < header_len {
        return Err(Skipped::Malformed);
    }
    let total = usize::from(be16(ip, 2));
    // A total length below the header's own (0 in TSO captures) says nothing: the frame's
    // length is used, as etherparse's lax parser does.
    let declared = (total >= header_len).then(|| total - header_len);
    let (bytes, missing) = declared_payload(&ip[header_len..], declared);
    let flags = be16(ip, 6);
    let more = flags & 0x2000 != 0;
    let offset = usize::from(flags & 0x1fff) * 8;
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    let protocol = ip[9];
    let fragment = (more || offset > 0).then(|| Fragment {
        id: u32::from(be16(ip, 4)),
        offset,
        more,
    });
    Ok(IpPayload {
        src,
        dst,
        protocol,
        bytes,
        missing,
        fragment,
    })
}

fn ipv6(ip: &[u8]) -> Result<IpPayload<'_>, Skipped> {
    if ip.len() < 40 {
        return Err(Skipped::Malformed);
    }
    let length = usize::from(be16(ip, 4));
    // A payload length of 0 is a jumbogram or a TSO capture: the frame's length is used.
    let (rest, missing) = declared_payload(&ip[40..], (length > 0).then_some(length));
    let octets = |at: usize| -> [u8; 16] { ip[at..at + 16].try_into().expect("16 bytes") };
    let src = IpAddr::V6(Ipv6Addr::from(octets(8)));
    let dst = IpAddr::V6(Ipv6Addr::from(octets(24)));
    let walk = walk_extension_headers(ip[6], rest)?;
    if walk.offset > rest.len() {
        return Err(Skipped::Malformed);
    }
    Ok(IpPayload {
        src,
        dst,
        protocol: walk.protocol,
        bytes: &rest[walk.offset..],
        missing,
        fragment: walk.fragment,
    })
}

/// Where the extension headers before a payload end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderWalk {
    /// The header that follows: the transport protocol, or after a fragment header the first
    /// header of the fragmentable part.
    pub protocol: u8,
    /// Offset of that header in the walked bytes.
    pub offset: usize,
    /// A fragment header ended the walk: what follows is a fragment.
    pub fragment: Option<Fragment>,
}

/// Walks the extension headers (hop-by-hop, routing, destination options, authentication)
/// that start with `protocol` at the beginning of `bytes`, up to the transport header or a
/// fragment header. An atomic fragment (offset 0, no more fragments; RFC 6946) is no fragment:
/// the walk goes on behind it. Used on the unfragmentable part of a packet and again on a
/// reassembled datagram, whose fragmentable part may start with destination options.
pub fn walk_extension_headers(mut protocol: u8, bytes: &[u8]) -> Result<HeaderWalk, Skipped> {
    let mut offset = 0;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let header = &bytes[offset.min(bytes.len())..];
        let len = match protocol {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {
                (usize::from(*header.get(1).ok_or(Skipped::Malformed)?) + 1) * 8
            }
            AUTHENTICATION => (usize::from(*header.get(1).ok_or(Skipped::Malformed)?) + 2) * 4,
            IPV6_FRAGMENT => {
                if header.len() < 8 {
                    return Err(Skipped::Malformed);
                }
                let field = be16(header, 2);
                let fragment = Fragment {
                    id: u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")),
                    offset: usize::from(field >> 3) * 8,
                    more: field & 1 != 0,
                };
                protocol = header[0];
                offset += 8;
                if fragment.more || fragment.offset > 0 {
                    return Ok(HeaderWalk {
                        protocol,
                        offset,
                        fragment: Some(fragment),
                    });
                }
                continue;
            }
            _ => {
                return Ok(HeaderWalk {
                    protocol,
                    offset,
                    fragment: None,
                })
            }
        };
        if header.len() < len {
            return Err(Skipped::Malformed);
        }
        protocol = header[0];
        offset += len;
    }
    Err(Skipped::Malformed)
}

/// The TCP segment in `bytes` (header and payload) from `src` to `dst`; `missing` payload
/// bytes were cut off by the capture.
pub fn tcp_of(
    src: IpAddr,
    dst: IpAddr,
    bytes: &[u8],
    missing: usize,
) -> Result<TcpSegment<'_>, Skipped> {
    let tcp = TcpSlice::from_slice(bytes).map_err(|_| Skipped::NotTcp)?;
    let window_scale = tcp.syn().then(|| {
        tcp.options_iterator().find_map(|option| match option {
            Ok(TcpOptionElement::WindowScale(shift)) => Some(shift),
            _ => None,
        })
    });
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
        window: tcp.window_size(),
        window_scale: window_scale.flatten(),
        payload: tcp.payload(),
        missing: u32::try_from(missing).unwrap_or(u32::MAX),
    })
}

/// The transport header of an unfragmented payload (or a reassembled one): where the TCP
/// header starts, behind any extension headers of the fragmentable part.
pub fn tcp_bytes(protocol: u8, bytes: &[u8]) -> Result<&[u8], Skipped> {
    let walk = walk_extension_headers(protocol, bytes)?;
    if walk.fragment.is_some() {
        // A fragment header inside a reassembled datagram: fragments of fragments.
        return Err(Skipped::Malformed);
    }
    if walk.protocol != TCP {
        return Err(Skipped::NotTcp);
    }
    Ok(&bytes[walk.offset..])
}

/// Decodes one frame to its TCP segment; fragments are not decoded here (see
/// [`super::fragments`]) and count as not TCP.
pub fn tcp_segment(link: LinkType, frame: &[u8]) -> Result<TcpSegment<'_>, Skipped> {
    let ip = ip_payload(link, frame)?;
    if ip.fragment.is_some() {
        return Err(Skipped::NotTcp);
    }
    tcp_of(
        ip.src,
        ip.dst,
        tcp_bytes(ip.protocol, ip.bytes)?,
        ip.missing,
    )
}

/// Whether an IP protocol number may lead to TCP: TCP itself, or an extension header that can
/// precede it in a fragmentable part.
pub fn may_carry_tcp(protocol: u8) -> bool {
    matches!(
        protocol,
        TCP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS | AUTHENTICATION
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv6RawExtHeader, PacketBuilder};

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
            assert_eq!(seg.window, 65535);
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

    /// An IPv6 packet from `[1; 16]` to `[2; 16]` whose header chain is `chain` (each a
    /// protocol number and its header bytes) and then `tcp`.
    fn ipv6_with(chain: &[(u8, Vec<u8>)], tcp: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (_, header)) in chain.iter().enumerate() {
            let mut header = header.clone();
            header[0] = chain.get(i + 1).map_or(TCP, |(p, _)| *p);
            body.extend_from_slice(&header);
        }
        body.extend_from_slice(tcp);
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ip.push(chain.first().map_or(TCP, |(p, _)| *p));
        ip.push(64);
        ip.extend_from_slice(&[1; 16]);
        ip.extend_from_slice(&[2; 16]);
        ip.extend_from_slice(&body);
        ip
    }

    fn tcp_header_and(payload: &[u8]) -> Vec<u8> {
        let mut ip6 = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(40000, 5900, 7, 1024)
            .write(&mut ip6, payload)
            .unwrap();
        ip6[40..].to_vec()
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_tcp() {
        let tcp = tcp_header_and(b"RFB 003.008\n");
        let options = Ipv6RawExtHeader::new_raw(IpNumber(6), &[1, 4, 0, 0, 0, 0])
            .unwrap()
            .to_bytes()
            .to_vec();
        let routing = vec![0u8; 8];
        for chain in [
            vec![(IPV6_DESTINATION_OPTIONS, options.clone())],
            vec![
                (IPV6_HOP_BY_HOP, options.clone()),
                (IPV6_ROUTING, routing.clone()),
                (IPV6_DESTINATION_OPTIONS, options.clone()),
            ],
            // An atomic fragment (RFC 6946) is walked through.
            vec![(IPV6_FRAGMENT, vec![0, 0, 0, 0, 0, 0, 0, 9])],
        ] {
            let packet = ipv6_with(&chain, &tcp);
            let seg =
                tcp_segment(LinkType::IPV6, &packet).unwrap_or_else(|e| panic!("{chain:?}: {e:?}"));
            assert_eq!(seg.payload, b"RFB 003.008\n");
            assert_eq!((seg.src_port, seg.dst_port, seg.seq), (40000, 5900, 7));
        }
        // A real fragment stops the walk with the fragment's place.
        let packet = ipv6_with(
            &[
                (IPV6_DESTINATION_OPTIONS, options.clone()),
                (IPV6_FRAGMENT, vec![0, 0, 0x00, 0x11, 0, 0, 0x12, 0x34]),
            ],
            &tcp,
        );
        let ip = ip_payload(LinkType::IPV6, &packet).unwrap();
        assert_eq!(
            ip.fragment,
            Some(Fragment {
                id: 0x1234,
                offset: 16,
                more: true
            })
        );
        assert_eq!(ip.protocol, TCP);
        assert_eq!(ip.bytes, &tcp[..]);
        assert_eq!(
            tcp_segment(LinkType::IPV6, &packet).unwrap_err(),
            Skipped::NotTcp
        );
        // A chain cut short, or endless, is malformed, not a panic.
        let cut = &ipv6_with(&[(IPV6_DESTINATION_OPTIONS, options.clone())], &[])[..44];
        assert_eq!(
            tcp_segment(LinkType::IPV6, cut).unwrap_err(),
            Skipped::Malformed
        );
        let endless: Vec<(u8, Vec<u8>)> = (0..40)
            .map(|_| (IPV6_DESTINATION_OPTIONS, vec![0; 8]))
            .collect();
        assert_eq!(
            tcp_segment(LinkType::IPV6, &ipv6_with(&endless, &tcp)).unwrap_err(),
            Skipped::Malformed
        );
    }

    #[test]
    fn ipv4_fragments_are_told_apart() {
        let mut ip = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(40000, 5900, 1, 1024)
            .write(&mut ip, &[7; 40])
            .unwrap();
        ip[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
        // More fragments, offset 0.
        ip[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        let first = ip_payload(LinkType::RAW, &ip).unwrap();
        assert_eq!(
            first.fragment,
            Some(Fragment {
                id: 0xbeef,
                offset: 0,
                more: true
            })
        );
        assert_eq!(first.bytes.len(), 60);
        // The last fragment, at byte 1480.
        ip[6..8].copy_from_slice(&185u16.to_be_bytes());
        let last = ip_payload(LinkType::RAW, &ip).unwrap();
        assert_eq!(
            last.fragment.map(|f| (f.offset, f.more)),
            Some((1480, false))
        );
        // Don't-fragment alone is no fragment.
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        assert!(ip_payload(LinkType::RAW, &ip).unwrap().fragment.is_none());
    }
}
