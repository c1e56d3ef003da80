"""Optional: GeoIP enrichment over MaxMind's official test databases in ../shared/realdata.

Skipped when that folder is absent. The files are read in place, never copied into the project.
Expected values come from the folder's KNOWN_IPS.txt and MaxMind's source-data JSON.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.core.contracts import GeoInfo
from sluice.core.errors import GeoIpDatabaseError
from sluice.transform.geoip import GeoIpEnricher

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
TEST_DATA = REALDATA / "maxmind_test_mmdb" / "test-data"
if not TEST_DATA.is_dir():
    pytest.skip(f"no MaxMind test databases at {TEST_DATA}", allow_module_level=True)

pytestmark = pytest.mark.realdata

CITY = TEST_DATA / "GeoIP2-City-Test.mmdb"
LITE_CITY = TEST_DATA / "GeoLite2-City-Test.mmdb"
COUNTRY = TEST_DATA / "GeoIP2-Country-Test.mmdb"
ASN = TEST_DATA / "GeoLite2-ASN-Test.mmdb"
ISP = TEST_DATA / "GeoIP2-ISP-Test.mmdb"

CORRUPT = [
    "GeoIP2-City-Test-Broken-Double-Format.mmdb",
    "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
    "MaxMind-DB-test-broken-pointers-24.mmdb",
    "MaxMind-DB-test-broken-search-tree-24.mmdb",
]

PROBES = [
    "1.1.1.1",
    "1.1.1.3",
    "1.1.1.16",
    "1.1.1.32",
    "81.2.69.142",
    "216.160.83.56",
    "255.255.255.255",
    "2001:218::1",
    "::1",
    "not an ip",
]


@pytest.fixture(scope="module")
def city_asn() -> GeoIpEnricher:
    return GeoIpEnricher(CITY, ASN)


@pytest.mark.parametrize(
    ("ip", "country_iso", "city", "lat", "lon"),
    [
        ("81.2.69.142", "GB", "London", 51.5142, -0.0931),
        ("::ffff:81.2.69.142", "GB", "London", 51.5142, -0.0931),
        ("2.125.160.216", "GB", "Boxford", 51.75, -1.25),
        ("216.160.83.56", "US", "Milton", 47.2513, -122.3149),
        ("89.160.20.112", "SE", "Linköping", 58.4167, 15.6167),
        ("175.16.199.0", "CN", "Changchun", 43.88, 125.3228),
        ("67.43.156.0", "BT", None, 27.5, 90.5),
        ("2001:218::1", "JP", None, 35.68536, 139.75309),
        ("[2a02:cf40::1]", "NO", None, 62.0, 10.0),
    ],
)
def test_geoip2_city_test_db(
    city_asn: GeoIpEnricher,
    ip: str,
    country_iso: str,
    city: str | None,
    lat: float,
    lon: float,
) -> None:
    # GIVEN MaxMind's GeoIP2-City test database
    # WHEN a known address is looked up
    info = city_asn.lookup(ip)
    # THEN the place is MaxMind's
    assert info.status == "found"
    assert (info.country_iso, info.city) == (country_iso, city)
    assert (info.lat, info.lon) == pytest.approx((lat, lon))


def test_country_names_are_english(city_asn: GeoIpEnricher) -> None:
    # GIVEN the City test database (names in several locales) WHEN looked up THEN names are English
    info = city_asn.lookup("81.2.69.142")
    assert info.country_name == "United Kingdom"
    assert city_asn.lookup("2001:218::1").country_name == "Japan"


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1"])
def test_addresses_outside_the_test_db_are_not_found(city_asn: GeoIpEnricher, ip: str) -> None:
    # GIVEN public addresses the test databases do not cover WHEN looked up THEN not_found
    assert city_asn.lookup(ip).status == "not_found"


@pytest.mark.parametrize(("ip", "status"), [("10.0.0.1", "private"), ("127.0.0.1", "private")])
def test_private_addresses_are_not_looked_up(city_asn: GeoIpEnricher, ip: str, status: str) -> None:
    # GIVEN addresses KNOWN_IPS.txt reports as absent WHEN looked up THEN they are private
    assert city_asn.lookup(ip) == GeoInfo(status=status)


@pytest.mark.parametrize(
    ("ip", "asn", "as_org"),
    [
        ("1.128.0.0", 1221, "Telstra Pty Ltd"),
        ("1.0.0.1", 15169, "Google Inc."),
        ("12.81.92.1", 7018, "AT&T Services"),
        ("12.81.96.1", 7018, None),
    ],
)
def test_geolite2_asn_test_db(
    city_asn: GeoIpEnricher, ip: str, asn: int, as_org: str | None
) -> None:
    # GIVEN the City and GeoLite2-ASN test databases (which cover different networks)
    # WHEN an address of the ASN database is looked up
    info = city_asn.lookup(ip)
    # THEN its autonomous system is reported, even though the City test database lacks it
    assert (info.asn, info.as_org) == (asn, as_org)
    assert info.status in {"found", "not_found"}


@pytest.mark.parametrize(
    ("ip", "asn", "as_org"),
    [
        ("1.128.0.0", 1221, "Telstra Pty Ltd"),
        ("84.128.23.4", 3320, "Deutsche Telekom AG"),
        ("149.101.100.0", 6167, "CELLCO-PART"),
    ],
)
def test_geoip2_isp_db_serves_as_asn_db(ip: str, asn: int, as_org: str) -> None:
    # GIVEN the GeoIP2-ISP test database as the ASN database
    with GeoIpEnricher(CITY, ISP) as enricher:
        # WHEN an address is looked up THEN the ISP database's AS number and organisation are used
        info = enricher.lookup(ip)
        assert info.asn == asn
        assert info.as_org == as_org


def test_geolite2_city_and_country_test_dbs() -> None:
    # GIVEN the GeoLite2-City and GeoIP2-Country test databases
    with GeoIpEnricher(LITE_CITY) as lite, GeoIpEnricher(COUNTRY) as country:
        # WHEN known addresses are looked up
        # THEN the City database gives the city and the Country database the country only
        assert lite.lookup("175.16.199.1").city == "Changchun"
        assert lite.lookup("2001:480::1").city == "San Diego"
        assert country.lookup("81.2.69.142") == GeoInfo(
            status="found", country_iso="GB", country_name="United Kingdom"
        )
        assert country.lookup("2001:218::1").country_iso == "JP"
        assert country.database_info["city"].database_type == "GeoIP2-Country"


@pytest.mark.parametrize("name", CORRUPT)
@pytest.mark.parametrize("role", ["city", "asn"])
def test_corrupt_databases_fail_at_startup(name: str, role: str) -> None:
    # GIVEN one of MaxMind's deliberately corrupt databases
    path = TEST_DATA / name
    # WHEN it is opened as the City or the ASN database
    try:
        enricher = GeoIpEnricher(path) if role == "city" else GeoIpEnricher(CITY, path)
    except GeoIpDatabaseError as err:
        # THEN a start-up error names the file and says it is damaged
        assert str(path) in str(err)
        assert re.search(r"corrupt", str(err))
        return
    # (fallback, should the damage only be reachable by lookups: these must then not raise)
    with enricher:
        statuses = {enricher.lookup(ip).status for ip in PROBES}
    pytest.fail(f"{name} opened as {role} database; lookups gave {sorted(statuses)}")


@pytest.mark.parametrize(
    ("path", "as_asn", "wrong_type"),
    [
        (ASN, False, "GeoLite2-ASN"),
        (ISP, False, "GeoIP2-ISP"),
        (TEST_DATA / "GeoIP2-Anonymous-IP-Test.mmdb", False, "GeoIP2-Anonymous-IP"),
        (CITY, True, "GeoIP2-City"),
        (COUNTRY, True, "GeoIP2-Country"),
        (TEST_DATA / "GeoIP2-Domain-Test.mmdb", True, "GeoIP2-Domain"),
    ],
)
def test_wrong_database_type_fails_at_startup(path: Path, as_asn: bool, wrong_type: str) -> None:
    # GIVEN a valid database of the wrong kind WHEN opened THEN the error names file and type
    with pytest.raises(GeoIpDatabaseError) as caught:
        GeoIpEnricher(CITY, path) if as_asn else GeoIpEnricher(path)
    assert str(path) in str(caught.value)
    assert f"database type '{wrong_type}'" in str(caught.value)


@pytest.mark.parametrize("path", sorted(TEST_DATA.glob("*.mmdb")), ids=lambda p: p.name)
def test_any_test_database_opens_or_fails_cleanly(path: Path) -> None:
    # GIVEN any of MaxMind's test databases, whatever its type or state
    for role in ("city", "asn"):
        # WHEN opened in either role
        try:
            enricher = GeoIpEnricher(path) if role == "city" else GeoIpEnricher(CITY, path)
        except GeoIpDatabaseError as err:
            # THEN it either fails with an error naming the file ...
            assert str(path) in str(err)
            continue
        # ... or opens, and no lookup raises
        with enricher:
            for ip in PROBES:
                assert isinstance(enricher.lookup(ip), GeoInfo)
