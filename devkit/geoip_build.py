"""Build small MaxMind DB (.mmdb) files at run time: for tests, the local demo and fixtures.

In: a mapping of network (CIDR text, IPv4 or IPv6) to a flat record (``CityRecord`` or
``AsnRecord``) and the path to write.
Out: a ``.mmdb`` file whose ``database_type`` is ``GeoLite2-City`` (or ``GeoLite2-Country``) or
``GeoLite2-ASN`` and whose records have the layout ``geoip2.database.Reader.city()`` /
``.country()`` / ``.asn()`` read, so ``sluice.transform.geoip.GeoIpEnricher`` opens them like MaxMind's own.

The files are IPv6 databases (``ip_version`` 6) with IPv4 networks stored in ``::/96``, where
MaxMind readers look IPv4 addresses up, so both IPv4 and IPv6 lookups work.

``DEMO_NETWORKS`` / ``build_demo_databases`` are SYNTHETIC DEMO DATA, NOT REAL GEOLOCATION:
the networks, places and autonomous systems below were made up for tests and the local demo
(the AS numbers are from the private-use ranges, the organisations do not exist). Never use them
to locate anybody.

Writing needs the ``mmdb-writer`` package (a development dependency); it is imported only when a
file is built, and its absence is a ``ConfigError`` saying so.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, NotRequired, TypedDict

from sluice.core.errors import ConfigError

__all__ = ["DEMO_NETWORKS", "DemoNetwork", "build_asn_db", "build_city_db", "build_demo_databases"]

CITY_DATABASE_TYPE = "GeoLite2-City"
COUNTRY_DATABASE_TYPE = "GeoLite2-Country"
ASN_DATABASE_TYPE = "GeoLite2-ASN"

_UINT32_MAX = 0xFFFFFFFF


class CityRecord(TypedDict):
    """One network of a City (or Country) database, flat. Only ``country_iso`` is required."""

    country_iso: str
    country_name: NotRequired[str | None]
    city: NotRequired[str | None]
    lat: NotRequired[float | None]
    lon: NotRequired[float | None]


class AsnRecord(TypedDict):
    """One network of an ASN database."""

    asn: int
    as_org: NotRequired[str | None]


class DemoNetwork(NamedTuple):
    """One synthetic network of the demo databases (see the module docstring: not real data)."""

    network: str
    country_iso: str
    country_name: str
    city: str | None
    lat: float
    lon: float
    asn: int | None
    as_org: str | None

    def city_record(self) -> CityRecord:
        return {
            "country_iso": self.country_iso,
            "country_name": self.country_name,
            "city": self.city,
            "lat": self.lat,
            "lon": self.lon,
        }

    def asn_record(self) -> AsnRecord | None:
        if self.asn is None:
            return None
        return {"asn": self.asn, "as_org": self.as_org}


# fmt: off
DEMO_NETWORKS: tuple[DemoNetwork, ...] = (
    # network, ISO, country, city, lat, lon, ASN (private-use ranges), organisation -- all invented.
    DemoNetwork("81.2.69.0/24", "GB", "United Kingdom", "London", 51.5142, -0.0931, 64501, "Demo Carrier UK"),
    DemoNetwork("81.2.69.192/26", "GB", "United Kingdom", "Manchester", 53.4808, -2.2426, 64501, "Demo Carrier UK"),
    DemoNetwork("216.160.83.0/24", "US", "United States", "Seattle", 47.6062, -122.3321, 64502, "Demo Cable US"),
    DemoNetwork("89.160.20.0/24", "SE", "Sweden", "Linköping", 58.4167, 15.6167, 64503, "Demo Fiber Sverige"),
    DemoNetwork("175.16.199.0/24", "CN", "China", "Changchun", 43.88, 125.3228, 4200000001, "Demo Backbone CN"),
    DemoNetwork("2001:218::/32", "JP", "Japan", "Tokyo", 35.6854, 139.7531, 64505, "Demo Telecom JP"),
    DemoNetwork("85.214.132.0/24", "DE", "Germany", "Berlin", 52.52, 13.405, 64506, "Demo Hosting DE"),
    DemoNetwork("177.54.144.0/22", "BR", "Brazil", "São Paulo", -23.5505, -46.6333, 4200000002, "Demo Provedor BR"),
    DemoNetwork("49.36.128.0/20", "IN", "India", "Mumbai", 19.076, 72.8777, 64508, "Demo Mobile IN"),
    DemoNetwork("1.128.0.0/16", "AU", "Australia", "Sydney", -33.8688, 151.2093, 64509, "Demo Broadband AU"),
    DemoNetwork("90.84.0.0/16", "FR", "France", "Paris", 48.8566, 2.3522, 64510, "Demo Réseau FR"),
    DemoNetwork("105.16.0.0/16", "ZA", "South Africa", "Johannesburg", -26.2041, 28.0473, 64511, "Demo Connect ZA"),
    # A network with no ASN entry: lookups find the place and leave asn empty.
    DemoNetwork("24.48.0.0/16", "CA", "Canada", "Toronto", 43.6532, -79.3832, None, None),
    # Country-level only (no city), IPv6.
    DemoNetwork("2a02:cf40::/29", "NO", "Norway", None, 62.0, 10.0, 64513, "Demo Nett NO"),
    DemoNetwork("2804:14c::/32", "BR", "Brazil", "Rio de Janeiro", -22.9068, -43.1729, 4200000002, "Demo Provedor BR"),
)
"""The demo network table. Pick addresses inside these networks to get ``found`` lookups."""
# fmt: on


def _import_writer() -> tuple[ModuleType, Any]:
    """``mmdb_writer`` and ``netaddr.IPSet``, imported on first use."""
    try:
        import mmdb_writer
        from netaddr import IPSet
    except ImportError as err:
        raise ConfigError(
            f"building a MaxMind DB file needs the 'mmdb-writer' package ({err}); "
            "install the development dependencies (pip install mmdb-writer)"
        ) from None
    return mmdb_writer, IPSet


def _networks_in_insert_order(
    networks: Mapping[str, Any],
) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Any]]:
    """Parsed networks, widest first: mmdb_writer lets a later, wider network overwrite a narrower one."""
    parsed = []
    for text, record in networks.items():
        try:
            network = ipaddress.ip_network(text.strip(), strict=True)
        except (ValueError, TypeError, AttributeError) as err:
            raise ConfigError(f"network {text!r} is not a CIDR network: {err}") from None
        if network.prefixlen == 0:
            raise ConfigError(f"network {text!r}: a /0 network cannot be written")
        parsed.append((network, record))
    parsed.sort(key=lambda item: (item[0].version, item[0].prefixlen, int(item[0].network_address)))
    return parsed


def _float(network: object, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"network {network}: {name} must be a number in [{low}, {high}], got {value!r}"
        )
    return float(value)


def _city_layout(network: object, record: CityRecord, mm: ModuleType) -> dict[str, Any]:
    """A flat ``CityRecord`` in the nested layout of GeoIP2/GeoLite2 City records."""
    iso = record.get("country_iso")
    if not isinstance(iso, str) or len(iso) != 2 or not iso.isalpha():
        raise ConfigError(f"network {network}: country_iso must be a 2-letter code, got {iso!r}")
    country: dict[str, Any] = {"iso_code": iso.upper()}
    if record.get("country_name"):
        country["names"] = {"en": str(record["country_name"])}
    layout: dict[str, Any] = {"country": country}
    if record.get("city"):
        layout["city"] = {"names": {"en": str(record["city"])}}
    lat, lon = record.get("lat"), record.get("lon")
    if (lat is None) != (lon is None):
        raise ConfigError(f"network {network}: give both lat and lon, or neither")
    if lat is not None and lon is not None:
        layout["location"] = {
            # MMDB doubles; a bare Python int would be written as an unsigned integer.
            "latitude": mm.MmdbF64(_float(network, "lat", lat, -90.0, 90.0)),
            "longitude": mm.MmdbF64(_float(network, "lon", lon, -180.0, 180.0)),
        }
    return layout


def _asn_layout(network: object, record: AsnRecord, mm: ModuleType) -> dict[str, Any]:
    """An ``AsnRecord`` in the layout of GeoLite2-ASN records."""
    asn = record.get("asn")
    if isinstance(asn, bool) or not isinstance(asn, int) or not 0 <= asn <= _UINT32_MAX:
        raise ConfigError(
            f"network {network}: asn must be an integer in [0, 2**32 - 1], got {asn!r}"
        )
    # GeoLite2-ASN stores the number as uint32; mmdb_writer's "auto" would pick uint16 for small ones.
    layout: dict[str, Any] = {"autonomous_system_number": mm.MmdbU32(asn)}
    if record.get("as_org"):
        layout["autonomous_system_organization"] = str(record["as_org"])
    return layout


def _write(
    path: str | os.PathLike[str],
    database_type: str,
    description: str,
    layouts: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, dict[str, Any]]],
    mm: ModuleType,
    ip_set: Any,
) -> Path:
    target = Path(path)
    writer = mm.MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,  # IPv4 networks go to ::/96, where readers look IPv4 addresses up
        database_type=database_type,
        languages=["en"],
        description={"en": description},
    )
    for network, layout in layouts:
        writer.insert_network(ip_set([str(network)]), layout)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a reader never sees a half-written database.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        writer.to_db_file(str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def build_city_db(
    path: str | os.PathLike[str],
    networks: Mapping[str, CityRecord],
    *,
    database_type: str = CITY_DATABASE_TYPE,
    description: str = "Sluice synthetic City database (not real geolocation)",
) -> Path:
    """Write a City database (or, with ``database_type='GeoLite2-Country'``, a Country one).

    ``networks`` maps CIDR text to a ``CityRecord``; nested networks are fine (the narrowest
    wins at lookup). Returns the path written. Raises ``ConfigError`` for an unusable network
    or record, or when ``mmdb-writer`` is not installed.
    """
    mm, ip_set = _import_writer()
    layouts = [
        (net, _city_layout(net, rec, mm)) for net, rec in _networks_in_insert_order(networks)
    ]
    return _write(path, database_type, description, layouts, mm, ip_set)


def build_asn_db(
    path: str | os.PathLike[str],
    networks: Mapping[str, AsnRecord],
    *,
    description: str = "Sluice synthetic ASN database (not real routing data)",
) -> Path:
    """Write a GeoLite2-ASN-type database from CIDR text -> ``AsnRecord``. Returns the path."""
    mm, ip_set = _import_writer()
    layouts = [(net, _asn_layout(net, rec, mm)) for net, rec in _networks_in_insert_order(networks)]
    return _write(path, ASN_DATABASE_TYPE, description, layouts, mm, ip_set)


def build_demo_databases(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the SYNTHETIC demo City and ASN databases of ``DEMO_NETWORKS`` into ``directory``.

    Returns ``(city_db, asn_db)``: ``demo-city.mmdb`` and ``demo-asn.mmdb``.
    """
    folder = Path(directory)
    city = build_city_db(
        folder / "demo-city.mmdb",
        {n.network: n.city_record() for n in DEMO_NETWORKS},
        description="Sluice demo City database: SYNTHETIC data, not real geolocation",
    )
    asn_records = {n.network: rec for n in DEMO_NETWORKS if (rec := n.asn_record()) is not None}
    asn = build_asn_db(
        folder / "demo-asn.mmdb",
        asn_records,
        description="Sluice demo ASN database: SYNTHETIC data, not real routing data",
    )
    return city, asn
