//! Geographic and network context of an address: its class, and for public addresses the
//! country, city, coordinates (MaxMind-format city databases) and the autonomous system (the
//! `@ip-location-db/asn` CSV ranges, or a GeoLite2-ASN MMDB file).
//!
//! Non-public addresses are classed and never looked up. A database that is missing or
//! unreadable is logged once as a warning and counted; enrichment goes on with empty geo fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use schemas::GeoInfo;
use serde::Deserialize;

use crate::ranges::AddressRanges;

/// What kind of address this is; only `Public` addresses are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Private,
    Loopback,
    LinkLocal,
    Cgnat,
    Multicast,
    Reserved,
    Public,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link_local",
            AddressClass::Cgnat => "cgnat",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Public => "public",
        }
    }
}

/// The class of `address`; IPv4-mapped IPv6 addresses are classed as their IPv4 address.
pub fn classify(address: IpAddr) -> AddressClass {
    match address.to_canonical() {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> AddressClass {
    let [o1, o2, o3, _] = a.octets();
    if a.is_loopback() {
        AddressClass::Loopback
    } else if a.is_private() {
        AddressClass::Private
    } else if a.is_link_local() {
        AddressClass::LinkLocal
    } else if o1 == 100 && (64..128).contains(&o2) {
        AddressClass::Cgnat
    } else if a.is_multicast() {
        AddressClass::Multicast
    } else if o1 == 0
        || o1 >= 240
        || (o1, o2, o3) == (192, 0, 0)
        || (o1, o2, o3) == (192, 0, 2)
        || (o1, o2, o3) == (198, 51, 100)
        || (o1, o2, o3) == (203, 0, 113)
        || (o1 == 198 && (o2 == 18 || o2 == 19))
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> AddressClass {
    let first = a.segments()[0];
    if a.is_loopback() {
        AddressClass::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if a.is_multicast() {
        AddressClass::Multicast
    } else if first & 0xe000 != 0x2000 || (first == 0x2001 && a.segments()[1] == 0x0db8) {
        // Outside global unicast 2000::/3, or the documentation prefix 2001:db8::/32.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// Great-circle distance between two points in km (haversine, mean Earth radius).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = (lat2 - lat1).to_radians();
    let d_lambda = (lon2 - lon1).to_radians();
    let h = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

/// Distance between the two locations when both have coordinates.
pub fn distance_km(a: &GeoInfo, b: &GeoInfo) -> Option<f64> {
    Some(haversine_km(
        a.latitude?,
        a.longitude?,
        b.latitude?,
        b.longitude?,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Mmdb {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("{path} line {line}: {reason}")]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}: no database files found")]
    NothingFound(PathBuf),
}

/// A city record in ip-location-db's flat layout (coordinates as MMDB single-precision
/// floats, which the decoder does not widen).
#[derive(Debug, Deserialize)]
struct FlatCityRecord {
    country_code: Option<String>,
    city: Option<String>,
    latitude: Option<f32>,
    longitude: Option<f32>,
}

/// A city record in MaxMind's nested GeoLite2-City / GeoIP2-City layout.
#[derive(Debug, Deserialize)]
struct MaxMindCityRecord {
    country: Option<MaxMindCountry>,
    city: Option<MaxMindNames>,
    location: Option<MaxMindLocation>,
}

#[derive(Debug, Deserialize)]
struct MaxMindCountry {
    iso_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MaxMindNames {
    names: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct MaxMindLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A GeoLite2-ASN record.
#[derive(Debug, Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

/// The autonomous system data, from CSV ranges or an MMDB file.
enum AsnSource {
    Ranges {
        table: AddressRanges<(u32, u32)>,
        organisations: Vec<String>,
    },
    Mmdb(Vec<Reader<Vec<u8>>>),
}

/// The geo databases, loaded once and shared by every enricher in the process.
pub struct GeoDatabases {
    city: Vec<Reader<Vec<u8>>>,
    asn: Option<AsnSource>,
}

impl GeoDatabases {
    /// No databases: every public address gets empty geo fields.
    pub fn empty() -> Self {
        GeoDatabases {
            city: Vec::new(),
            asn: None,
        }
    }

    /// Loads the city databases named by `city_spec` and the ASN data named by `asn_spec`.
    /// Each is a comma-separated list of files, or a directory searched for `*city*.mmdb`
    /// (city) and `asn*.csv` / `*asn*.mmdb` (ASN). A part that cannot be loaded is logged as a
    /// warning, counted in `vncguard_enricher_geo_database_unavailable_total`, and left out.
    pub fn load(city_spec: &str, asn_spec: &str) -> Self {
        let city = match load_city(city_spec) {
            Ok(readers) => readers,
            Err(e) => {
                database_unavailable("city", &e);
                Vec::new()
            }
        };
        let asn = match load_asn(asn_spec) {
            Ok(source) => Some(source),
            Err(e) => {
                database_unavailable("asn", &e);
                None
            }
        };
        GeoDatabases { city, asn }
    }

    pub fn has_city(&self) -> bool {
        !self.city.is_empty()
    }

    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }

    /// The context of `address` (text form as in session summaries). An unparseable address is
    /// classed `reserved`.
    pub fn lookup(&self, address: &str) -> GeoInfo {
        let Ok(ip) = address.parse::<IpAddr>() else {
            return GeoInfo {
                address_class: AddressClass::Reserved.as_str().to_string(),
                ..GeoInfo::default()
            };
        };
        let class = classify(ip);
        let mut info = GeoInfo {
            address_class: class.as_str().to_string(),
            ..GeoInfo::default()
        };
        if class != AddressClass::Public {
            return info;
        }
        let ip = ip.to_canonical();
        self.fill_city(ip, &mut info);
        self.fill_asn(ip, &mut info);
        info
    }

    fn fill_city(&self, ip: IpAddr, info: &mut GeoInfo) {
        for reader in &self.city {
            if ip.is_ipv6() && reader.metadata().ip_version == 4 {
                continue;
            }
            let Ok(found) = reader.lookup(ip) else {
                continue;
            };
            let nested = reader.metadata().database_type.starts_with("Geo");
            let (country, city, latitude, longitude) = if nested {
                let Ok(Some(r)) = found.decode::<MaxMindCityRecord>() else {
                    continue;
                };
                let location = r.location.as_ref();
                (
                    r.country.and_then(|c| c.iso_code),
                    r.city.and_then(|mut c| c.names.remove("en")),
                    location.and_then(|l| l.latitude),
                    location.and_then(|l| l.longitude),
                )
            } else {
                let Ok(Some(r)) = found.decode::<FlatCityRecord>() else {
                    continue;
                };
                (
                    r.country_code,
                    r.city,
                    r.latitude.map(widen),
                    r.longitude.map(widen),
                )
            };
            // The flat layout writes unknown fields as empty strings.
            info.country = country.filter(|c| !c.is_empty());
            info.city = city.filter(|c| !c.is_empty());
            info.latitude = latitude;
            info.longitude = longitude;
            return;
        }
    }

    fn fill_asn(&self, ip: IpAddr, info: &mut GeoInfo) {
        match &self.asn {
            Some(AsnSource::Ranges {
                table,
                organisations,
            }) => {
                if let Some(&(asn, org)) = table.find(ip) {
                    info.asn = Some(i64::from(asn));
                    info.as_org = organisations.get(org as usize).cloned();
                }
            }
            Some(AsnSource::Mmdb(readers)) => {
                for reader in readers {
                    if ip.is_ipv6() && reader.metadata().ip_version == 4 {
                        continue;
                    }
                    if let Ok(Some(record)) =
                        reader.lookup(ip).and_then(|r| r.decode::<AsnRecord>())
                    {
                        info.asn = record.autonomous_system_number.map(i64::from);
                        info.as_org = record.autonomous_system_organization;
                        return;
                    }
                }
            }
            None => {}
        }
    }
}

/// A single-precision coordinate as f64, rounded to the 4 decimals (about 11 m) it carries,
/// so 37.751 reads as 37.751 and not 37.75099945068359.
fn widen(coordinate: f32) -> f64 {
    (f64::from(coordinate) * 1e4).round() / 1e4
}

fn database_unavailable(kind: &str, error: &GeoError) {
    telemetry::counter(
        "vncguard_enricher_geo_database_unavailable_total",
        "Geo databases that could not be loaded; their fields stay empty.",
        &[("kind", kind)],
    )
    .inc();
    tracing::warn!(kind, error = %error, "geo database unavailable; enrichment goes on without it");
}

/// The files a spec names: each comma-separated part is a file, or a directory whose entries
/// matching `wanted` are taken in name order.
fn files_of(spec: &str, wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, GeoError> {
    let mut files = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(part);
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|source| GeoError::Io {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| wanted(&n.to_ascii_lowercase()))
                })
                .collect();
            if found.is_empty() {
                return Err(GeoError::NothingFound(path));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(GeoError::NothingFound(PathBuf::from(spec)));
    }
    Ok(files)
}

fn open_mmdb(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|source| GeoError::Mmdb {
        path: path.to_path_buf(),
        source,
    })
}

fn load_city(spec: &str) -> Result<Vec<Reader<Vec<u8>>>, GeoError> {
    files_of(spec, |name| {
        name.contains("city") && name.ends_with(".mmdb")
    })?
    .iter()
    .map(|path| open_mmdb(path))
    .collect()
}

fn load_asn(spec: &str) -> Result<AsnSource, GeoError> {
    let files = files_of(spec, |name| {
        name.contains("asn") && (name.ends_with(".csv") || name.ends_with(".mmdb"))
    })?;
    if files
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "mmdb"))
    {
        return Ok(AsnSource::Mmdb(
            files
                .iter()
                .map(|p| open_mmdb(p))
                .collect::<Result<_, _>>()?,
        ));
    }
    let mut table = AddressRanges::default();
    let mut organisations = Vec::new();
    let mut organisation_ids = std::collections::HashMap::new();
    for path in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "csv"))
    {
        let text = std::fs::read_to_string(path).map_err(|source| GeoError::Io {
            path: path.clone(),
            source,
        })?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let csv_error = |reason: &str| GeoError::Csv {
                path: path.clone(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let (start, end, asn, organisation) = parse_asn_line(line)
                .ok_or_else(|| csv_error("expected start,end,asn,organisation"))?;
            let next_id = organisations.len() as u32;
            let id = *organisation_ids
                .entry(organisation.clone())
                .or_insert_with(|| {
                    organisations.push(organisation);
                    next_id
                });
            if !table.push(start, end, (asn, id)) {
                return Err(csv_error(
                    "range ends are of different families or reversed",
                ));
            }
        }
    }
    table.sort();
    Ok(AsnSource::Ranges {
        table,
        organisations,
    })
}

/// `1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."` → its parts; the organisation may be quoted
/// with `""` escapes.
fn parse_asn_line(line: &str) -> Option<(IpAddr, IpAddr, u32, String)> {
    let mut parts = line.splitn(4, ',');
    let start = parts.next()?.trim().parse().ok()?;
    let end = parts.next()?.trim().parse().ok()?;
    let asn = parts.next()?.trim().parse().ok()?;
    let organisation = parts.next().unwrap_or("").trim();
    let organisation = match organisation
        .strip_prefix('"')
        .and_then(|o| o.strip_suffix('"'))
    {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => organisation.to_string(),
    };
    Some((start, end, asn, organisation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_the_special_ranges_of_both_families() {
        let class = |a: &str| classify(a.parse().unwrap());
        assert_eq!(class("10.1.2.3"), AddressClass::Private);
        assert_eq!(class("172.31.0.1"), AddressClass::Private);
        assert_eq!(class("192.168.0.1"), AddressClass::Private);
        assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(class("100.64.0.1"), AddressClass::Cgnat);
        assert_eq!(class("100.128.0.1"), AddressClass::Public);
        assert_eq!(class("224.0.0.5"), AddressClass::Multicast);
        assert_eq!(class("192.0.2.7"), AddressClass::Reserved);
        assert_eq!(class("240.0.0.1"), AddressClass::Reserved);
        assert_eq!(class("8.8.8.8"), AddressClass::Public);
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("fd00::1"), AddressClass::Private);
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(class("ff02::1"), AddressClass::Multicast);
        assert_eq!(class("2001:db8::1"), AddressClass::Reserved);
        assert_eq!(class("::ffff:192.168.1.1"), AddressClass::Private);
        assert_eq!(class("2606:4700:4700::1111"), AddressClass::Public);
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // Paris to London, about 344 km.
        let d = haversine_km(48.8566, 2.3522, 51.5074, -0.1278);
        assert!((d - 343.9).abs() < 2.0, "{d}");
        assert_eq!(haversine_km(1.0, 2.0, 1.0, 2.0), 0.0);
    }

    #[test]
    fn asn_lines_parse_with_quoted_organisations() {
        let (s, e, asn, org) =
            parse_asn_line("1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"").unwrap();
        assert_eq!(
            (s.to_string(), e.to_string(), asn),
            ("1.0.0.0".into(), "1.0.0.255".into(), 13335)
        );
        assert_eq!(org, "Cloudflare, Inc.");
        assert!(parse_asn_line("garbage").is_none());
    }

    #[test]
    fn a_missing_database_leaves_fields_empty_and_is_counted() {
        let geo = GeoDatabases::load("/nonexistent/city.mmdb", "/nonexistent/asn.csv");
        assert!(!geo.has_city() && !geo.has_asn());
        let info = geo.lookup("8.8.8.8");
        assert_eq!(info.address_class, "public");
        assert_eq!((info.country, info.asn), (None, None));
        let metrics = telemetry::render();
        assert!(
            metrics.contains("vncguard_enricher_geo_database_unavailable_total{kind=\"city\"}"),
            "{metrics}"
        );
    }
}
