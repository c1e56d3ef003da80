"""GeoIP enrichment against small MaxMind DB files built at test time (synthetic demo data)."""

from __future__ import annotations

import gzip
import ipaddress
import os
import pickle
import re
import sys
from pathlib import Path

import maxminddb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.geoip_build import (
    DEMO_NETWORKS,
    DemoNetwork,
    build_asn_db,
    build_city_db,
    build_demo_databases,
)
from sluice.core.contracts import GeoInfo
from sluice.core.errors import ConfigError, GeoIpDatabaseError
from sluice.transform.geoip import (
    CacheInfo,
    GeoIpEnricher,
    address_scope,
    choose_client_ip,
    is_public_ip,
    parse_ip,
)

ALL_STATUSES = {"found", "not_found", "private", "reserved", "invalid", "lookup_error"}


@pytest.fixture(scope="module")
def demo_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_demo_databases(tmp_path_factory.mktemp("geoip-demo"))


@pytest.fixture(scope="module")
def enricher(demo_dbs: tuple[Path, Path]) -> GeoIpEnricher:
    city, asn = demo_dbs
    return GeoIpEnricher(city, asn)


@pytest.fixture
def fresh(demo_dbs: tuple[Path, Path]) -> GeoIpEnricher:
    """An enricher of its own, for tests that count cache hits."""
    city, asn = demo_dbs
    return GeoIpEnricher(city, asn)


# --------------------------------------------------------------------------------------------
# found


@pytest.mark.parametrize(
    ("ip", "country_iso", "country_name", "city", "asn", "as_org"),
    [
        ("81.2.69.142", "GB", "United Kingdom", "London", 64501, "Demo Carrier UK"),
        (
            "81.2.69.200",
            "GB",
            "United Kingdom",
            "Manchester",
            64501,
            "Demo Carrier UK",
        ),  # nested /26
        ("216.160.83.56", "US", "United States", "Seattle", 64502, "Demo Cable US"),
        ("89.160.20.5", "SE", "Sweden", "Linköping", 64503, "Demo Fiber Sverige"),
        ("175.16.199.1", "CN", "China", "Changchun", 4200000001, "Demo Backbone CN"),  # > 2**31
        ("2001:218::1", "JP", "Japan", "Tokyo", 64505, "Demo Telecom JP"),
        ("2a02:cf40::1", "NO", "Norway", None, 64513, "Demo Nett NO"),  # country-level record
        ("24.48.1.1", "CA", "Canada", "Toronto", None, None),  # no ASN record
        ("177.54.147.255", "BR", "Brazil", "São Paulo", 4200000002, "Demo Provedor BR"),
    ],
)
def test_lookup_found(
    enricher: GeoIpEnricher,
    ip: str,
    country_iso: str,
    country_name: str,
    city: str | None,
    asn: int | None,
    as_org: str | None,
) -> None:
    # GIVEN the demo City and ASN databases
    # WHEN a public address inside one of their networks is looked up
    info = enricher.lookup(ip)
    # THEN the record is found with English names and the autonomous system joined in
    assert info.status == "found"
    assert (info.country_iso, info.country_name, info.city) == (country_iso, country_name, city)
    assert (info.asn, info.as_org) == (asn, as_org)
    assert info.lat is not None
    assert info.lon is not None


def test_lookup_found_is_the_whole_record(enricher: GeoIpEnricher) -> None:
    # GIVEN the demo databases WHEN a London address is looked up THEN every field is filled
    assert enricher.lookup("81.2.69.142") == GeoInfo(
        status="found",
        country_iso="GB",
        country_name="United Kingdom",
        city="London",
        lat=51.5142,
        lon=-0.0931,
        asn=64501,
        as_org="Demo Carrier UK",
    )


@pytest.mark.parametrize("network", DEMO_NETWORKS, ids=lambda n: n.network)
def test_every_demo_network_is_found(enricher: GeoIpEnricher, network: DemoNetwork) -> None:
    # GIVEN one network of the demo table
    first = ipaddress.ip_network(network.network).network_address + 1
    # WHEN its first host address is looked up (nested networks sit at the end of their parent)
    info = enricher.lookup(str(first))
    # THEN the database answers with that table row
    assert info.status == "found"
    assert (info.country_iso, info.city, info.asn) == (
        network.country_iso,
        network.city,
        network.asn,
    )
    assert (info.lat, info.lon) == pytest.approx((network.lat, network.lon))


# --------------------------------------------------------------------------------------------
# not found, private, reserved, invalid


@pytest.mark.parametrize(
    ("ip", "status"),
    [
        # not in the database
        ("8.8.8.8", "not_found"),
        ("81.2.70.1", "not_found"),
        ("2606:4700::1111", "not_found"),
        # private: RFC 1918, loopback, link-local, CGNAT, unique local
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "private"),
        ("169.254.10.1", "private"),
        ("100.64.0.1", "private"),
        ("::1", "private"),
        ("fe80::1", "private"),
        ("fe80::1%eth0", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:192.168.0.1", "private"),
        # reserved: unspecified, multicast, reserved, documentation, other special purpose
        ("0.0.0.0", "reserved"),
        ("::", "reserved"),
        ("0.1.2.3", "reserved"),
        ("224.0.0.1", "reserved"),
        ("239.255.255.250", "reserved"),
        ("ff02::1", "reserved"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.51.100.7", "reserved"),
        ("203.0.113.9", "reserved"),
        ("2001:db8::1", "reserved"),
        ("198.18.0.1", "reserved"),
        # invalid
        ("", "invalid"),
        ("   ", "invalid"),
        ("-", "invalid"),
        ("not an ip", "invalid"),
        ("256.1.1.1", "invalid"),
        ("1.2.3", "invalid"),
        ("01.2.3.4", "invalid"),
        ("1.2.3.4:80", "invalid"),
        ("1.2.3.4/24", "invalid"),
        ("2001:218::1::", "invalid"),
        ("[", "invalid"),
        ("[]", "invalid"),
        ("\x00", "invalid"),
        ("8.8.8.8" * 100, "invalid"),
    ],
)
def test_lookup_status(enricher: GeoIpEnricher, ip: str, status: str) -> None:
    # GIVEN the demo databases WHEN an address is looked up THEN the status says what it is
    info = enricher.lookup(ip)
    assert info.status == status
    # AND nothing else is filled in
    assert info == GeoInfo(status=info.status)


def test_private_and_reserved_are_decided_before_the_database(tmp_path: Path) -> None:
    # GIVEN a City database that (wrongly) has records for private and documentation ranges
    city = build_city_db(
        tmp_path / "leaky.mmdb",
        {
            "10.0.0.0/8": {"country_iso": "GB", "city": "Nowhere"},
            "192.0.2.0/24": {"country_iso": "GB", "city": "Nowhere"},
            "81.2.69.0/24": {"country_iso": "GB", "city": "London"},
        },
    )
    with GeoIpEnricher(city) as enricher:
        # WHEN those addresses are looked up
        # THEN they are classified from the address alone, and the public one is found
        assert enricher.lookup("10.0.0.1").status == "private"
        assert enricher.lookup("192.0.2.1").status == "reserved"
        assert enricher.lookup("81.2.69.1").city == "London"


def test_lookup_of_a_non_string_is_invalid(enricher: GeoIpEnricher) -> None:
    # GIVEN a value that is not text WHEN looked up THEN it is invalid, not an exception
    assert enricher.lookup(None).status == "invalid"  # type: ignore[arg-type]
    assert enricher.lookup_many([None, 42, "8.8.8.8"]) == [  # type: ignore[list-item]
        GeoInfo(status="invalid"),
        GeoInfo(status="invalid"),
        GeoInfo(status="not_found"),
    ]


# --------------------------------------------------------------------------------------------
# IPv6, IPv4-mapped, spelling variants


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("::ffff:81.2.69.142", "81.2.69.142"),
        ("::ffff:5102:458e", "81.2.69.142"),
        ("[::ffff:81.2.69.142]", "81.2.69.142"),
        (" 81.2.69.142\n", "81.2.69.142"),
        ("[81.2.69.142]", "81.2.69.142"),
        ("[2001:218::1]", "2001:218::1"),
        (" [ 2001:218::1 ] ", "2001:218::1"),
        ("2001:0218:0000:0000:0000:0000:0000:0001", "2001:218::1"),
        ("2001:218::1%eth0", "2001:218::1"),
        ("2A02:CF40::1", "2a02:cf40::1"),
    ],
)
def test_spelling_variants_give_the_same_answer(
    enricher: GeoIpEnricher, variant: str, canonical: str
) -> None:
    # GIVEN an address written another way (brackets, padding, zone, IPv4-mapped, long form)
    # WHEN both spellings are looked up THEN the answers are the same, and found
    assert enricher.lookup(variant) == enricher.lookup(canonical)
    assert enricher.lookup(variant).status == "found"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("81.2.69.142", ipaddress.ip_address("81.2.69.142")),
        ("::ffff:1.2.3.4", ipaddress.ip_address("1.2.3.4")),
        ("[2001:db8::1]", ipaddress.ip_address("2001:db8::1")),
        ("fe80::1%eth0", ipaddress.ip_address("fe80::1")),
        ("1.2.3.4:80", None),
        ("", None),
    ],
)
def test_parse_ip(text: str, expected: object) -> None:
    # GIVEN text WHEN parsed THEN it is the normalized address, or None
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    ("ip", "scope"),
    [
        ("8.8.8.8", "public"),
        ("10.0.0.1", "private"),
        ("::1", "private"),
        ("2001:db8::", "reserved"),
    ],
)
def test_address_scope(ip: str, scope: str) -> None:
    # GIVEN an address WHEN classified THEN its scope is given without a database
    address = parse_ip(ip)
    assert address is not None
    assert address_scope(address) == scope
    assert is_public_ip(ip) is (scope == "public")


# --------------------------------------------------------------------------------------------
# ASN join


def test_without_asn_database_asn_is_empty(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN only a City database
    city, _ = demo_dbs
    with GeoIpEnricher(city) as enricher:
        # WHEN an address is found THEN place fields are filled and the ASN fields are empty
        info = enricher.lookup("81.2.69.142")
        assert (info.status, info.city, info.asn, info.as_org) == ("found", "London", None, None)
        assert set(enricher.database_info) == {"city"}


def test_asn_of_an_address_the_city_database_lacks(tmp_path: Path) -> None:
    # GIVEN an ASN database covering a network the City database does not
    city = build_city_db(tmp_path / "c.mmdb", {"81.2.69.0/24": {"country_iso": "GB"}})
    asn = build_asn_db(
        tmp_path / "a.mmdb",
        {"81.2.69.0/24": {"asn": 64501}, "5.6.0.0/16": {"asn": 64999, "as_org": "Only ASN"}},
    )
    with GeoIpEnricher(city, asn) as enricher:
        # WHEN both are looked up
        # THEN the place is not found but the autonomous system is kept; a record without an
        # organisation leaves as_org empty
        assert enricher.lookup("5.6.7.8") == GeoInfo(
            status="not_found", asn=64999, as_org="Only ASN"
        )
        found = enricher.lookup("81.2.69.9")
        assert (found.status, found.country_iso, found.asn, found.as_org) == (
            "found",
            "GB",
            64501,
            None,
        )


# --------------------------------------------------------------------------------------------
# cache


def test_cache_counts_hits_and_misses(fresh: GeoIpEnricher) -> None:
    # GIVEN a fresh enricher
    assert fresh.cache_info() == CacheInfo(hits=0, misses=0, size=0, maxsize=65536)
    # WHEN the same address is looked up three times and another once
    first = [fresh.lookup("81.2.69.142") for _ in range(3)]
    fresh.lookup("10.0.0.1")
    # THEN one miss per distinct address, the rest are hits, with identical results
    assert fresh.cache_info() == CacheInfo(hits=2, misses=2, size=2, maxsize=65536)
    assert first[0] == first[1] == first[2]


def test_cache_is_lru(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN a cache of 2 holding a and b, with a used last
    with GeoIpEnricher(demo_dbs[0], cache_size=2) as enricher:
        enricher.lookup("81.2.69.1")
        enricher.lookup("89.160.20.1")
        enricher.lookup("81.2.69.1")
        # WHEN c is added
        enricher.lookup("175.16.199.1")
        # THEN b (least recently used) was evicted and a was kept
        before = enricher.cache_info()
        enricher.lookup("81.2.69.1")
        assert enricher.cache_info().hits == before.hits + 1
        enricher.lookup("89.160.20.1")
        assert enricher.cache_info().misses == before.misses + 1


@pytest.mark.parametrize("cache_size", [0, 1, 3, 50])
def test_cache_never_exceeds_its_size(demo_dbs: tuple[Path, Path], cache_size: int) -> None:
    # GIVEN an enricher with a small cache
    with GeoIpEnricher(demo_dbs[0], demo_dbs[1], cache_size=cache_size) as enricher:
        # WHEN many distinct addresses (and repeats) are looked up
        for i in range(200):
            enricher.lookup(f"81.2.69.{i % 120}")
            # THEN the cache never holds more than cache_size entries
            assert enricher.cache_info().size <= cache_size
        info = enricher.cache_info()
        assert info.hits + info.misses == 200
        if cache_size == 0:
            assert info == CacheInfo(hits=0, misses=200, size=0, maxsize=0)


def test_cache_clear(fresh: GeoIpEnricher) -> None:
    # GIVEN a cache with entries WHEN cleared THEN it is empty with counters reset
    fresh.lookup("81.2.69.1")
    fresh.cache_clear()
    assert fresh.cache_info() == CacheInfo(0, 0, 0, 65536)


def test_negative_cache_size_is_refused(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN a negative cache size WHEN opening THEN a configuration error says so
    with pytest.raises(ConfigError, match="cache_size"):
        GeoIpEnricher(demo_dbs[0], cache_size=-1)


# --------------------------------------------------------------------------------------------
# batches


@pytest.mark.parametrize("cache_size", [0, 65536])
def test_lookup_many_looks_each_distinct_address_up_once(
    demo_dbs: tuple[Path, Path], cache_size: int
) -> None:
    # GIVEN a batch with repeated addresses
    batch = ["81.2.69.142", "10.0.0.1", "81.2.69.142", "bogus", "2001:218::1", "10.0.0.1"] * 5
    with GeoIpEnricher(demo_dbs[0], demo_dbs[1], cache_size=cache_size) as enricher:
        # WHEN the batch is enriched (from a generator, as a pipeline stage would pass it)
        results = enricher.lookup_many(ip for ip in batch)
        # THEN there is one result per input, in order, equal to single lookups
        assert len(results) == len(batch)
        assert [r.status for r in results[:6]] == [
            "found",
            "private",
            "found",
            "invalid",
            "found",
            "private",
        ]
        # AND each of the 4 distinct addresses went to the cache/database once
        assert enricher.cache_info().misses == len(set(batch)) == 4
        assert enricher.cache_info().hits == 0
        assert results == [enricher.lookup(ip) for ip in batch]


def test_lookup_many_counts_one_miss_per_distinct_address(fresh: GeoIpEnricher) -> None:
    # GIVEN a fresh enricher WHEN a batch of 4 distinct addresses x 10 is enriched
    fresh.lookup_many(["81.2.69.142", "8.8.8.8", "10.0.0.1", "x"] * 10)
    # THEN the cache saw 4 lookups, all misses
    assert fresh.cache_info() == CacheInfo(hits=0, misses=4, size=4, maxsize=65536)
    # AND an empty batch is an empty list
    assert fresh.lookup_many([]) == []


def test_lookup_many_serves_repeats_across_batches_from_the_cache(fresh: GeoIpEnricher) -> None:
    # GIVEN a batch already looked up WHEN a second batch repeats its addresses and adds one
    first = fresh.lookup_many(["81.2.69.142", "10.0.0.1", "bogus"] * 3)
    second = fresh.lookup_many(["81.2.69.142", "10.0.0.1", "bogus", "8.8.8.8"])
    # THEN the repeats are cache hits, the new address one miss, and the answers are the same
    assert fresh.cache_info() == CacheInfo(hits=3, misses=4, size=4, maxsize=65536)
    assert second[:3] == first[:3]
    assert second == [fresh.lookup(ip) for ip in ["81.2.69.142", "10.0.0.1", "bogus", "8.8.8.8"]]


def test_lookup_many_keeps_the_cache_within_its_size(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN a cache of 2 WHEN a batch has 4 distinct addresses (and text too long to be one)
    with GeoIpEnricher(demo_dbs[0], demo_dbs[1], cache_size=2) as small:
        results = small.lookup_many(["81.2.69.142", "8.8.8.8", "10.0.0.1", "1.1.1.1", "1" * 300])
        # THEN the answers are those of single lookups and the cache holds the last 2 misses
        assert results[-1].status == "invalid"
        assert small.cache_info() == CacheInfo(hits=0, misses=4, size=2, maxsize=2)
        assert results == [small.lookup(ip) for ip in
                           ["81.2.69.142", "8.8.8.8", "10.0.0.1", "1.1.1.1", "1" * 300]]  # fmt: skip


def test_enrich_equals_model_copy_with_geo(enricher: GeoIpEnricher) -> None:
    """GIVEN parsed web requests (bulk path, per-line path, X-Forwarded-For, no client) WHEN they
    are enriched THEN each is ``model_copy(update={"geo": ...})`` of its input, fields set and
    all, and the inputs are unchanged."""
    from sluice.parsing.weblog import LogParser

    tail = '- - [26/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x"'
    lines = [f"81.2.69.142 {tail}", f"81.2.69.142 {tail}", f"10.0.0.1 {tail}", f"- {tail}",
             f'10.0.0.1 {tail} "89.160.20.112, 10.0.0.2"', f"\\x38.8.8.8 {tail}"]  # fmt: skip
    records = LogParser("auto").parse_batch(lines).valid
    assert len(records) == len(lines)
    before = [r.model_dump() for r in records]
    enriched = enricher.enrich(records)
    choose = [choose_client_ip(r.client_ip, r.forwarded_for) or "" for r in records]
    expected = [
        r.model_copy(update={"geo": enricher.lookup(ip)})
        for r, ip in zip(records, choose, strict=True)
    ]
    for got, want in zip(enriched, expected, strict=True):
        assert repr(got) == repr(want) and got == want
        assert got.__pydantic_fields_set__ == want.__pydantic_fields_set__
    assert [r.geo.status for r in enriched if r.geo] == ["found", "found", "private", "invalid",
                                                         "found", "not_found"]  # fmt: skip
    assert [r.model_dump() for r in records] == before
    assert enricher.enrich([]) == []


# --------------------------------------------------------------------------------------------
# life cycle, pickling, metadata


def test_pickle_round_trip(fresh: GeoIpEnricher) -> None:
    # GIVEN an enricher that has looked something up
    before = fresh.lookup("81.2.69.142")
    # WHEN it is pickled and unpickled (as Beam ships a DoFn to workers)
    clone = pickle.loads(pickle.dumps(fresh))
    # THEN the clone reopened the same files, starts with an empty cache and answers the same
    assert isinstance(clone, GeoIpEnricher)
    assert clone is not fresh
    assert clone.cache_info() == CacheInfo(0, 0, 0, 65536)
    assert clone.database_info == fresh.database_info
    assert clone.lookup("81.2.69.142") == before
    assert clone.lookup("2001:218::1").country_iso == "JP"
    clone.close()
    # AND the original still works
    assert fresh.lookup("2001:218::1").country_iso == "JP"


def test_context_manager_closes(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN an enricher used as a context manager
    with GeoIpEnricher(*demo_dbs) as enricher:
        assert not enricher.closed
        enricher.lookup("81.2.69.142")
    # WHEN the block ends THEN it is closed, the cache is gone and lookups are refused
    assert enricher.closed
    assert enricher.cache_info().size == 0
    with pytest.raises(ValueError, match="closed"):
        enricher.lookup("81.2.69.142")
    # AND closing again is harmless
    enricher.close()


def test_database_info(enricher: GeoIpEnricher, demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN the demo databases WHEN their info is read THEN it names the files, types and builds
    info = enricher.database_info
    assert info["city"].path == str(demo_dbs[0])
    assert info["city"].database_type == "GeoLite2-City"
    assert info["asn"].database_type == "GeoLite2-ASN"
    for db in info.values():
        assert db.build_epoch > 1_600_000_000
        assert db.ip_version == 6
        assert db.built.startswith("20")
    assert "GeoIpEnricher(city_db=" in repr(enricher)


def test_a_country_database_gives_country_only(tmp_path: Path) -> None:
    # GIVEN a Country-type database (records may still carry more than a country)
    country = build_city_db(
        tmp_path / "country.mmdb",
        {n.network: n.city_record() for n in DEMO_NETWORKS},
        database_type="GeoLite2-Country",
    )
    with GeoIpEnricher(country) as enricher:
        # WHEN an address is looked up THEN only the country is reported
        assert enricher.lookup("81.2.69.142") == GeoInfo(
            status="found", country_iso="GB", country_name="United Kingdom"
        )


def test_a_lookup_error_is_a_status_not_an_exception(
    fresh: GeoIpEnricher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a City database that fails at lookup time (as a damaged file can)
    def broken(ip: str) -> object:
        raise maxminddb.InvalidDatabaseError("The MaxMind DB file's data section contains bad data")

    monkeypatch.setattr(fresh._city, "lookup", broken)
    # WHEN an address is looked up THEN the result says lookup_error and nothing is raised
    assert fresh.lookup("81.2.69.142") == GeoInfo(status="lookup_error")
    assert fresh.lookup_errors == 1
    # AND private addresses never reach the database
    assert fresh.lookup("10.0.0.1").status == "private"


# --------------------------------------------------------------------------------------------
# start-up errors


def _text_file(path: Path) -> Path:
    path.write_text("this is not a database\n")
    return path


def _empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _gzip_file(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"x" * 1000))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp, dbs: tmp / "missing.mmdb", "no such file"),
        (lambda tmp, dbs: _text_file(tmp / "notes.txt"), "not a MaxMind DB file"),
        (lambda tmp, dbs: _empty_file(tmp / "empty.mmdb"), "empty"),
        (lambda tmp, dbs: _gzip_file(tmp / "GeoLite2-City.tar.gz"), "gzip"),
        (lambda tmp, dbs: tmp, "not a regular file"),
        (lambda tmp, dbs: dbs[1], "database type 'GeoLite2-ASN' cannot be used as the city"),
    ],
    ids=["missing", "text", "empty", "gzip", "directory", "asn-as-city"],
)
def test_unusable_city_database_is_a_clear_startup_error(
    tmp_path: Path, demo_dbs: tuple[Path, Path], make: object, reason: str
) -> None:
    # GIVEN a path that is not a usable City database
    path = make(tmp_path, demo_dbs)  # type: ignore[operator]
    # WHEN the enricher is opened
    with pytest.raises(GeoIpDatabaseError) as caught:
        GeoIpEnricher(path)
    # THEN the error names the file and the reason
    assert str(path) in str(caught.value)
    assert reason in str(caught.value)


def test_city_database_as_asn_database_is_refused(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN the City database passed as the ASN database WHEN opening THEN the ASN file is named
    with pytest.raises(GeoIpDatabaseError) as caught:
        GeoIpEnricher(demo_dbs[0], demo_dbs[0])
    assert f"GeoIP ASN database '{demo_dbs[0]}'" in str(caught.value)
    assert "GeoLite2-City" in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data, tree: b"\xff" * 60 + data[60:], id="search-tree"),
        pytest.param(
            lambda data, tree: data[: tree + 16] + b"\xff" * 200 + data[tree + 216 :],
            id="data-section",
        ),
        pytest.param(lambda data, tree: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data, tree: data[len(data) // 2 :], id="head-cut"),
    ],
)
def test_corrupt_database_is_a_clear_startup_error(
    tmp_path: Path, demo_dbs: tuple[Path, Path], damage: object
) -> None:
    # GIVEN a copy of the demo City database, damaged
    data = demo_dbs[0].read_bytes()
    with maxminddb.open_database(str(demo_dbs[0])) as reader:
        meta = reader.metadata()
        tree = meta.node_count * meta.record_size * 2 // 8
    path = tmp_path / "damaged.mmdb"
    path.write_bytes(damage(data, tree))  # type: ignore[operator]
    # WHEN the enricher is opened THEN the damage is found at start-up and the file named
    with pytest.raises(GeoIpDatabaseError) as caught:
        GeoIpEnricher(path)
    assert str(path) in str(caught.value)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_file_is_a_clear_startup_error(
    tmp_path: Path, demo_dbs: tuple[Path, Path]
) -> None:
    # GIVEN a database file nobody may read
    path = tmp_path / "locked.mmdb"
    path.write_bytes(demo_dbs[0].read_bytes())
    path.chmod(0)
    # WHEN opened THEN the error names the file
    with pytest.raises(GeoIpDatabaseError, match=re.escape(str(path))):
        GeoIpEnricher(path)


# --------------------------------------------------------------------------------------------
# choose_client_ip


@pytest.mark.parametrize(
    ("client_ip", "forwarded_for", "expected"),
    [
        # behind a load balancer: the first public X-Forwarded-For entry is the client
        ("10.0.0.5", ["81.2.69.142"], "81.2.69.142"),
        ("10.0.0.5", ["81.2.69.142", "10.0.0.4"], "81.2.69.142"),
        # private hops before the client (a corporate proxy) are skipped
        ("10.0.0.5", ["192.168.1.20", "81.2.69.142", "172.16.0.1"], "81.2.69.142"),
        # one header value holding the whole list
        ("10.0.0.5", ["unknown, 192.168.1.20 , 2001:218::1"], "2001:218::1"),
        # ports and brackets are removed
        ("10.0.0.5", ["81.2.69.142:51234"], "81.2.69.142"),
        ("10.0.0.5", ["[2001:218::1]:443"], "2001:218::1"),
        ("10.0.0.5", ["[2001:218::1]"], "2001:218::1"),
        # nothing public or valid in the header: the connecting peer
        ("81.2.69.142", [], "81.2.69.142"),
        ("81.2.69.142", ["-"], "81.2.69.142"),
        ("81.2.69.142", ["unknown", "10.0.0.1", "192.0.2.1", "::1"], "81.2.69.142"),
        ("10.0.0.5", ["garbage"], "10.0.0.5"),
        (None, [], None),
        (None, ["81.2.69.142"], "81.2.69.142"),
        # a bare string instead of a list is read as one entry
        ("10.0.0.5", "81.2.69.142, 10.0.0.1", "81.2.69.142"),
    ],
)
def test_choose_client_ip(
    client_ip: str | None, forwarded_for: list[str], expected: str | None
) -> None:
    # GIVEN a request's peer address and X-Forwarded-For list
    # WHEN the address to geolocate is chosen THEN it is the first public forwarded address
    assert choose_client_ip(client_ip, forwarded_for) == expected


# --------------------------------------------------------------------------------------------
# build module


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ({"81.2.69.0/33": {"country_iso": "GB"}}, "not a CIDR network"),
        ({"81.2.69.1/24": {"country_iso": "GB"}}, "not a CIDR network"),
        ({"0.0.0.0/0": {"country_iso": "GB"}}, "/0"),
        ({"81.2.69.0/24": {"country_iso": "GBR"}}, "country_iso"),
        ({"81.2.69.0/24": {"country_iso": "GB", "lat": 91.0, "lon": 0.0}}, "lat"),
        ({"81.2.69.0/24": {"country_iso": "GB", "lat": 1.0}}, "both lat and lon"),
    ],
)
def test_build_city_db_refuses_bad_input(tmp_path: Path, networks: object, message: str) -> None:
    # GIVEN an unusable network table WHEN built THEN a configuration error says what is wrong
    with pytest.raises(ConfigError, match=message):
        build_city_db(tmp_path / "x.mmdb", networks)  # type: ignore[arg-type]
    assert not (tmp_path / "x.mmdb").exists()


def test_build_asn_db_refuses_an_out_of_range_asn(tmp_path: Path) -> None:
    # GIVEN an ASN beyond uint32 WHEN built THEN a configuration error
    with pytest.raises(ConfigError, match="asn"):
        build_asn_db(tmp_path / "a.mmdb", {"1.0.0.0/24": {"asn": 2**32}})


def test_build_without_mmdb_writer_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN mmdb_writer cannot be imported
    monkeypatch.setitem(sys.modules, "mmdb_writer", None)
    # WHEN a database is built THEN the error says which package to install
    with pytest.raises(ConfigError, match="mmdb-writer"):
        build_demo_databases(tmp_path)


def test_demo_asn_numbers_are_uint32(demo_dbs: tuple[Path, Path]) -> None:
    # GIVEN the demo ASN database WHEN read with the raw reader THEN numbers are plain ints
    # and coordinates doubles, as in MaxMind's own files
    with maxminddb.open_database(str(demo_dbs[1])) as reader:
        record = reader.get("175.16.199.1")
    assert record == {
        "autonomous_system_number": 4200000001,
        "autonomous_system_organization": "Demo Backbone CN",
    }
    with maxminddb.open_database(str(demo_dbs[0])) as reader:
        city = reader.get("81.2.69.142")
    assert isinstance(city, dict)
    assert city["location"] == {"latitude": 51.5142, "longitude": -0.0931}


# --------------------------------------------------------------------------------------------
# properties


@settings(max_examples=400)
@given(text=st.text(max_size=80))
def test_lookup_of_any_text_never_raises(enricher: GeoIpEnricher, text: str) -> None:
    # GIVEN arbitrary text WHEN looked up THEN a GeoInfo comes back, never an exception
    info = enricher.lookup(text)
    assert isinstance(info, GeoInfo)
    assert info.status in ALL_STATUSES


@settings(max_examples=400)
@given(address=st.ip_addresses())
def test_lookup_of_any_address_is_never_invalid(enricher: GeoIpEnricher, address: object) -> None:
    # GIVEN any IPv4 or IPv6 address WHEN looked up (also bracketed) THEN it is classified
    info = enricher.lookup(str(address))
    assert info.status in {"found", "not_found", "private", "reserved"}
    assert enricher.lookup(f"[{address}]") == info


@given(
    client_ip=st.none() | st.text(max_size=40),
    forwarded_for=st.lists(st.text(max_size=40) | st.ip_addresses().map(str), max_size=5),
)
def test_choose_client_ip_never_raises(client_ip: str | None, forwarded_for: list[str]) -> None:
    # GIVEN any peer and header WHEN the address is chosen
    chosen = choose_client_ip(client_ip, forwarded_for)
    # THEN it is the peer unchanged or a public address taken from the header
    assert chosen == client_ip or (chosen is not None and is_public_ip(chosen))
