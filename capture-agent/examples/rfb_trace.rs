//! Prints the RFB state machine's events for one connection's payloads, to turn a capture into
//! a parser test. Input: one line per segment, `S <hex>` (server to client) or `C <hex>`:
//!
//! ```text
//! tshark -r FILE -Y 'tcp.port==CLIENT_PORT && tcp.len>0' -T fields -e tcp.srcport -e tcp.payload \
//!   | awk '{print ($1==5900?"S":"C"), $2}' | cargo run --example rfb_trace
//! ```
use capture_agent::rfb::state::*;
use std::io::BufRead;
/// Prints every event but cut text bytes.
struct Printer;

impl RfbSink for Printer {
    fn on_event(&mut self, dir: Dir, e: RfbEvent<'_>) {
        match e {
            RfbEvent::CutTextData(_) => {}
            e => println!("{:?} {:?}", dir, e),
        }
    }
}
fn main() {
    let mut st = RfbState::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut it = line.split_whitespace();
        let d = it.next().unwrap();
        let Some(h) = it.next() else { continue };
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        let dir = if d == "S" {
            Dir::ServerToClient
        } else {
            Dir::ClientToServer
        };
        println!("-- {} {} bytes", d, bytes.len());
        st.feed(dir, &bytes, &mut Printer);
    }
}
