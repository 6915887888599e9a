//! Which RSTs end a connection, as RFC 5961 §3 has the endpoints judge them: an RST whose
//! sequence number is exactly the next one the receiver expects resets the connection; one
//! elsewhere in the receive window only draws a challenge ACK (the real sender answers it with
//! an exact RST, which the capture then sees); one outside the window is dropped. An off-path
//! attacker who does not know the sequence numbers therefore cannot end a session in the
//! agent's eyes any more than in the server's, and the session is not split into two halves
//! picked up mid-stream.

use super::reassembly::HalfStream;
use super::TcpSegment;

/// RFC 7323 §2.3: the largest window shift. Assumed when the handshake that negotiated the
/// shift was not seen, so the window is never judged smaller than it may be.
const MAX_WINDOW_SHIFT: u8 = 14;

/// What one side of a connection told the other: its receive window and what it acknowledged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Advertised {
    /// The window field of its last segment.
    window: Option<u16>,
    /// The window shift its SYN offered: `None` until its SYN is seen, `Some(None)` for a SYN
    /// without the option.
    syn_shift: Option<Option<u8>>,
    /// The highest acknowledgement number it sent.
    ack: Option<u32>,
}

/// `a` is after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Advertised {
    /// Takes note of a segment this side sent.
    pub fn observe(&mut self, seg: &TcpSegment<'_>) {
        self.window = Some(seg.window);
        if seg.syn {
            self.syn_shift = Some(seg.window_scale);
        }
        if seg.ack_flag && self.ack.is_none_or(|last| seq_after(seg.ack, last)) {
            self.ack = Some(seg.ack);
        }
    }

    /// The receive window in bytes, scaled as the handshake (`peer` is the other side) agreed.
    fn window_bytes(&self, peer: &Advertised) -> u32 {
        let shift = match (self.syn_shift, peer.syn_shift) {
            // RFC 7323 §2.2: scaling is on only when both SYNs offered it.
            (Some(Some(mine)), Some(Some(_))) => mine.min(MAX_WINDOW_SHIFT),
            (Some(_), Some(_)) => 0,
            _ => MAX_WINDOW_SHIFT,
        };
        self.window.map_or(u32::MAX >> 2, |w| u32::from(w) << shift)
    }
}

/// How an RST stands against the receiver's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstVerdict {
    /// Exactly the next sequence number expected: the connection is reset.
    Exact,
    /// In the window but not exact: a challenge ACK case, ignored.
    InWindow,
    /// Outside the window (or, before the sender ever spoke, not acknowledging the receiver's
    /// SYN): ignored.
    OutOfWindow,
}

/// Judges an RST from the side whose byte stream is `sender` (and whose announcements are
/// `sender_said`) to the side whose stream is `receiver` and announcements `receiver_said`.
pub fn judge_rst(
    seg: &TcpSegment<'_>,
    sender: &HalfStream,
    sender_said: &Advertised,
    receiver: &HalfStream,
    receiver_said: &Advertised,
) -> RstVerdict {
    // The next sequence number the receiver expects: after the sender's bytes seen (and its
    // FIN), or what the receiver itself acknowledged when the capture missed some of them.
    let next = sender
        .next_seq()
        .map(|n| n.wrapping_add(u32::from(sender.fin_reached())));
    let expected = [next, receiver_said.ack];
    let Some(rcv_nxt) = next.or(receiver_said.ack) else {
        // The sender never spoke (RFC 9293 §3.10.7.3, SYN-SENT): the RST answers the
        // receiver's SYN and counts only if it acknowledges exactly that SYN.
        return if seg.ack_flag && receiver.next_seq() == Some(seg.ack) {
            RstVerdict::Exact
        } else {
            RstVerdict::OutOfWindow
        };
    };
    if expected.contains(&Some(seg.seq)) {
        return RstVerdict::Exact;
    }
    if seg.seq.wrapping_sub(rcv_nxt) < receiver_said.window_bytes(sender_said) {
        RstVerdict::InWindow
    } else {
        RstVerdict::OutOfWindow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::reassembly::BufferBudget;
    use std::net::{IpAddr, Ipv4Addr};

    fn seg(seq: u32, ack: Option<u32>, syn: bool, rst: bool, payload: &[u8]) -> TcpSegment<'_> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        TcpSegment {
            src: ip,
            dst: ip,
            src_port: 1,
            dst_port: 2,
            seq,
            ack: ack.unwrap_or(0),
            syn,
            ack_flag: ack.is_some(),
            fin: false,
            rst,
            window: 1000,
            window_scale: syn.then_some(2),
            payload,
            missing: 0,
        }
    }

    fn take(stream: &mut HalfStream, said: &mut Advertised, seg: &TcpSegment<'_>) {
        let mut budget = BufferBudget {
            used: 0,
            limit: 1 << 20,
            flow_cap_hits: 0,
            global_cap_hits: 0,
        };
        said.observe(seg);
        stream.accept(
            seg.seq,
            seg.syn,
            seg.fin,
            seg.payload,
            0,
            1 << 16,
            &mut budget,
            &mut |_| {},
        );
    }

    #[test]
    fn only_the_exact_sequence_resets() {
        let (mut client, mut server) = (HalfStream::default(), HalfStream::default());
        let (mut client_said, mut server_said) = (Advertised::default(), Advertised::default());
        take(
            &mut client,
            &mut client_said,
            &seg(100, None, true, false, b""),
        );
        take(
            &mut server,
            &mut server_said,
            &seg(5000, Some(101), true, false, b""),
        );
        take(
            &mut client,
            &mut client_said,
            &seg(101, Some(5001), false, false, b"hello"),
        );
        take(
            &mut server,
            &mut server_said,
            &seg(5001, Some(106), false, false, b""),
        );
        let judge = |seq: u32| {
            judge_rst(
                &seg(seq, None, false, true, b""),
                &client,
                &client_said,
                &server,
                &server_said,
            )
        };
        assert_eq!(judge(106), RstVerdict::Exact);
        // The server's window is 1000 << 2 bytes.
        assert_eq!(judge(107), RstVerdict::InWindow);
        assert_eq!(judge(106 + 3999), RstVerdict::InWindow);
        assert_eq!(judge(106 + 4000), RstVerdict::OutOfWindow);
        assert_eq!(judge(105), RstVerdict::OutOfWindow);
        assert_eq!(judge(106u32.wrapping_add(1 << 31)), RstVerdict::OutOfWindow);
    }

    #[test]
    fn an_rst_answering_a_syn_must_acknowledge_it() {
        let (mut client, server) = (HalfStream::default(), HalfStream::default());
        let (mut client_said, server_said) = (Advertised::default(), Advertised::default());
        take(
            &mut client,
            &mut client_said,
            &seg(100, None, true, false, b""),
        );
        let judge = |ack: Option<u32>| {
            judge_rst(
                &seg(0, ack, false, true, b""),
                &server,
                &server_said,
                &client,
                &client_said,
            )
        };
        assert_eq!(judge(Some(101)), RstVerdict::Exact);
        assert_eq!(judge(Some(102)), RstVerdict::OutOfWindow);
        assert_eq!(judge(None), RstVerdict::OutOfWindow);
    }
}
