//! RFB (VNC): pure parsers over byte slices ([`parser`]) and the per-direction state machine of
//! a connection that drives them and reports what it sees ([`state`]).

pub mod parser;
pub mod state;
