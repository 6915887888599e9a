//! Scoring of VNC sessions: how unusual a session is next to those seen before (`forest`, an
//! Isolation Forest fitted on session features).

pub mod forest;
