use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{codec::Event, SessionEvent, Timestamp};

/// Geographic and network context of one address (`vncguard.GeoInfo.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GeoInfo {
    pub address_class: String,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
}

/// A raw session event with its context and features (`vncguard.EnrichedSession.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedSession {
    pub event: SessionEvent,
    pub client_geo: GeoInfo,
    pub server_geo: GeoInfo,
    pub distance_km: Option<f64>,
    pub reputation: Option<String>,
    pub features: BTreeMap<String, f64>,
    pub enriched_at: Timestamp,
}

impl Event for EnrichedSession {
    const SCHEMA_NAME: &'static str = "vncguard.EnrichedSession";
}
