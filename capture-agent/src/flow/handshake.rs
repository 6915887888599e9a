//! Whether a connection's TCP handshake proves its client is real.
//!
//! Anyone can send a segment with any source address; only a host that receives the server's
//! replies can acknowledge the server's initial sequence number (ISN), a 32-bit number the
//! server chose at random. So a connection counts as *handshake-verified* when the capture saw,
//! in this order: the client's SYN, the server's SYN-ACK acknowledging the client's ISN + 1, and
//! a client segment (the third packet of the handshake, or the first data) acknowledging the
//! server's ISN + 1 at the client's ISN + 1. Anything else leaves the connection unverified,
//! for good:
//! - the SYN was not seen (a mid-stream pickup, an agent restarted under the connection);
//! - the client's first acknowledgement after the SYN-ACK is wrong: a forger guessing the ISN
//!   gets one guess per connection, 2^-32;
//! - a second, different SYN-ACK or SYN, or a server RST, during or after the handshake: a forged
//!   SYN-ACK racing the real server's reply (an attacker that can put packets on the capture's
//!   link) cannot be told from the real one, so neither is believed.
//!
//! A capture that drops the SYN-ACK leaves a real connection unverified too: the error is always
//! towards "not proven", never towards "proven".

use super::TcpSegment;
use crate::rfb::state::Dir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handshake {
    /// The client's SYN was not seen, or the handshake broke the order above: never verified.
    #[default]
    Unverifiable,
    /// The client's SYN, with its ISN.
    Syn { client_isn: u32 },
    /// The server's SYN-ACK acknowledged the client's SYN.
    SynAck { client_isn: u32, server_isn: u32 },
    /// The client acknowledged the server's ISN + 1.
    Verified { client_isn: u32, server_isn: u32 },
}

impl Handshake {
    /// Starts from the client's SYN.
    pub fn from_syn(client_isn: u32) -> Handshake {
        Handshake::Syn { client_isn }
    }

    pub fn is_verified(&self) -> bool {
        matches!(self, Handshake::Verified { .. })
    }

    /// The handshake completed or failed: later segments change nothing except a conflicting
    /// SYN, SYN-ACK or server RST, which revokes a verification.
    fn conflicts(&self, dir: Dir, seg: &TcpSegment<'_>) -> bool {
        let (client_isn, server_isn) = match *self {
            Handshake::SynAck {
                client_isn,
                server_isn,
            }
            | Handshake::Verified {
                client_isn,
                server_isn,
            } => (client_isn, Some(server_isn)),
            Handshake::Syn { client_isn } => (client_isn, None),
            Handshake::Unverifiable => return false,
        };
        match dir {
            Dir::ClientToServer => seg.syn && seg.seq != client_isn,
            Dir::ServerToClient if seg.syn => {
                server_isn.is_some_and(|isn| isn != seg.seq)
                    || !seg.ack_flag
                    || seg.ack != client_isn.wrapping_add(1)
            }
            // A RST from the server during the handshake: the port is closed or the server
            // refused; after verification a RST only ends the connection.
            Dir::ServerToClient => seg.rst && !self.is_verified(),
        }
    }

    /// Takes one segment of the connection, in capture order.
    pub fn observe(&mut self, dir: Dir, seg: &TcpSegment<'_>) {
        if self.conflicts(dir, seg) {
            *self = Handshake::Unverifiable;
            return;
        }
        *self = match (*self, dir) {
            (Handshake::Syn { client_isn }, Dir::ServerToClient) if seg.syn => Handshake::SynAck {
                client_isn,
                server_isn: seg.seq,
            },
            // A retransmitted SYN; a client segment with an ACK before any SYN-ACK acknowledges
            // something the capture never saw.
            (Handshake::Syn { .. }, Dir::ClientToServer) if seg.syn || !seg.ack_flag => *self,
            (Handshake::Syn { .. }, Dir::ClientToServer) => Handshake::Unverifiable,
            (
                Handshake::SynAck {
                    client_isn,
                    server_isn,
                },
                Dir::ClientToServer,
            ) if !seg.syn => {
                if !seg.ack_flag {
                    // No acknowledgement to judge (a RST from a SYN scanner): not proof.
                    Handshake::Unverifiable
                } else if seg.ack == server_isn.wrapping_add(1)
                    && seg.seq == client_isn.wrapping_add(1)
                {
                    Handshake::Verified {
                        client_isn,
                        server_isn,
                    }
                } else {
                    Handshake::Unverifiable
                }
            }
            (state, _) => state,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(syn: bool, ack_flag: bool, rst: bool, seq: u32, ack: u32) -> TcpSegment<'static> {
        TcpSegment {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            src_port: 40000,
            dst_port: 5900,
            seq,
            ack,
            syn,
            ack_flag,
            fin: false,
            rst,
            payload: b"",
            missing: 0,
            window: 65535,
            window_scale: None,
        }
    }

    const C: Dir = Dir::ClientToServer;
    const S: Dir = Dir::ServerToClient;

    fn run(steps: &[(Dir, TcpSegment<'static>)]) -> Handshake {
        let mut h = Handshake::from_syn(steps[0].1.seq);
        for (dir, s) in &steps[1..] {
            h.observe(*dir, s);
        }
        h
    }

    #[test]
    fn the_three_way_handshake_verifies() {
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 1001)),
            (C, seg(false, true, false, 1001, 5001)),
        ]);
        assert!(h.is_verified());
        // The ISN wraps.
        let h = run(&[
            (C, seg(true, false, false, u32::MAX, 0)),
            (S, seg(true, true, false, u32::MAX, 0)),
            (C, seg(false, true, false, 0, 0)),
        ]);
        assert!(h.is_verified());
    }

    #[test]
    fn a_wrong_guess_of_the_server_isn_fails_for_good() {
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 1001)),
            (C, seg(false, true, false, 1001, 4242)),
            (C, seg(false, true, false, 1001, 5001)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
    }

    #[test]
    fn no_syn_ack_or_a_closed_port_is_unverified() {
        // The forger's ACK after its SYN, with no server reply in the capture.
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (C, seg(false, true, false, 1001, 77)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
        // A closed port answers the SYN with a RST.
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(false, true, true, 0, 1001)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
        // A SYN scanner resets the half-open connection.
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 1001)),
            (C, seg(false, false, true, 1001, 0)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
    }

    #[test]
    fn a_conflicting_syn_ack_revokes_the_verification() {
        // A forged SYN-ACK (ISN 5000), the forger's matching ACK, then the real server's reply.
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 1001)),
            (C, seg(false, true, false, 1001, 5001)),
            (S, seg(true, true, false, 9000, 1001)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
        // A SYN-ACK that does not acknowledge the SYN.
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 77)),
        ]);
        assert_eq!(h, Handshake::Unverifiable);
    }

    #[test]
    fn retransmissions_keep_the_handshake() {
        let h = run(&[
            (C, seg(true, false, false, 1000, 0)),
            (C, seg(true, false, false, 1000, 0)),
            (S, seg(true, true, false, 5000, 1001)),
            (S, seg(true, true, false, 5000, 1001)),
            (C, seg(false, true, false, 1001, 5001)),
            (S, seg(true, true, false, 5000, 1001)),
            (S, seg(false, true, true, 5001, 1001)),
        ]);
        assert!(h.is_verified());
    }
}
