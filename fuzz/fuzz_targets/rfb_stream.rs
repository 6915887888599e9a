//! The RFB parsers and the per-direction state machine over arbitrary bytes in arbitrary
//! segmentation: no panic, no unbounded allocation.
//!
//! Input: a mode byte (bit 0: start mid-stream), then chunks, each a header byte (bit 7: server
//! to client; bit 6: a gap of the low six bits instead of data; else the low six bits + 1 data
//! bytes follow).
#![no_main]

use capture_agent::rfb::parser;
use capture_agent::rfb::state::{Dir, RfbEvent, RfbSink, RfbState};
use libfuzzer_sys::fuzz_target;

struct CountingSink(u64);

impl RfbSink for CountingSink {
    fn on_event(&mut self, _dir: Dir, _event: RfbEvent<'_>) {
        self.0 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    // The pure parsers on the whole input, as either side's first bytes.
    let _ = parser::parse_protocol_version(rest);
    let _ = parser::parse_security_types(rest);
    let _ = parser::parse_security_type_v33(rest);
    let _ = parser::parse_server_init(rest);
    let _ = parser::parse_client_message(rest);
    let _ = parser::parse_server_message(rest);
    let _ = parser::parse_rect_header(rest);
    let _ = parser::escape_text(rest);

    let mut state = if mode & 1 == 1 {
        RfbState::new_midstream()
    } else {
        RfbState::new()
    };
    let mut sink = CountingSink(0);
    while let Some((&header, tail)) = rest.split_first() {
        let dir = if header & 0x80 != 0 {
            Dir::ServerToClient
        } else {
            Dir::ClientToServer
        };
        let len = usize::from(header & 0x3f);
        if header & 0x40 != 0 {
            state.gap(dir, len as u64 + 1, &mut sink);
            rest = tail;
            continue;
        }
        let take = (len + 1).min(tail.len());
        state.feed(dir, &tail[..take], &mut sink);
        rest = &tail[take..];
    }
    state.finish(&mut sink);
});
