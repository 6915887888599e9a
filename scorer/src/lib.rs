//! Scoring of VNC sessions: how unusual a session is next to those seen before (`forest`, an
//! Isolation Forest fitted on session features), what the threat rules say about it (`rules`),
//! the composite risk score (`risk`), the stage that runs on the bus (`stage`), the model in
//! use and its hot swap (`model`), learning a model of normal use in the stage (`learn`), and
//! retraining by replay (`train`).

pub mod forest;
pub mod learn;
pub mod model;
pub mod risk;
pub mod rules;
pub mod stage;
pub mod train;
