"""MaxMind databases for GeoIP enrichment: opened, checked at open time, read record by record.

In: the path of a MaxMind City, Country or Enterprise database, or of an ASN or ISP one.
Out: an open ``Database``: its reader, ``DatabaseInfo`` (type, build time, IP version) and ``read``,
which gives the fields of an address's record (country, city, position; or autonomous system) or
``None`` when the database has none. A damaged file can still fail a read with one of
``DATABASE_ERRORS``; the enricher (``sluice.transform.geoip``) turns that into a status.
Errors: a file that cannot serve (missing, unreadable, empty, gzip-compressed, not a MaxMind DB, of
the wrong type, or found corrupt by a probe of networks and lookups) is a ``GeoIpDatabaseError``
naming the file and the reason, raised at open time, never per record.
Why a module of its own: what makes a file usable, and how to say precisely why not, is apart from
caching and looking up addresses; the C reader only says "Is this a valid MaxMind DB file?", so the
checks here ask the file and the pure-Python reader for a reason a user can act on.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import geoip2.database
import geoip2.errors
import maxminddb
from pydantic import ValidationError

from sluice.core.contracts import GeoInfo
from sluice.core.errors import GeoIpDatabaseError

__all__ = ["DATABASE_ERRORS", "Database", "DatabaseInfo", "open_asn_database", "open_city_database"]

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_METADATA_SEARCH_BYTES = 128 * 1024
"""The MaxMind DB metadata section sits in the last 128 KiB of the file (MaxMind DB spec)."""

_PROBE_NETWORKS = 2048
"""Networks decoded at open time, walking the search tree from its start."""

_PROBE_ADDRESSES = (
    "1.1.1.1",
    "1.1.1.32",
    "8.8.8.8",
    "81.2.69.142",
    "89.160.20.128",
    "128.0.0.1",
    "175.16.199.0",
    "216.160.83.56",
    "223.255.255.254",
    "255.255.255.255",
    "2001:218::1",
    "2001:4860:4860::8888",
    "2a02:cf40::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
)
"""Addresses looked up at open time. Some corruption (a bad pointer, a bad double, a broken
search-tree node) only shows when a lookup reaches it, so a spread of addresses is tried."""

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    maxminddb.InvalidDatabaseError,  # a RuntimeError
    RuntimeError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
    struct.error,
    ValidationError,
)
"""What a damaged database or an unexpected record layout can raise from a read."""
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, OSError)


class DatabaseInfo(NamedTuple):
    """What an open database says about itself (worth a log line at start-up)."""

    path: str
    database_type: str
    build_epoch: int
    built: str
    """``build_epoch`` as an ISO 8601 UTC time."""
    ip_version: int
    node_count: int


_CITY_KINDS = (("Enterprise", "enterprise"), ("City", "city"), ("Country", "country"))
_ASN_KINDS = (("GeoLite2-ASN", "asn"), ("GeoIP2-ISP", "isp"))
_EXPECTED = {
    "city": "a GeoIP2/GeoLite2 City, Country or Enterprise database",
    "ASN": "a GeoLite2-ASN or GeoIP2-ISP database",
}


class Database:
    """One open database: the geoip2 reader, its bound lookup method, what a record gives, the metadata."""

    __slots__ = ("extract", "info", "ipv4_only", "lookup", "path", "reader", "role")

    def __init__(
        self,
        path: str,
        role: str,
        reader: geoip2.database.Reader,
        lookup: Callable[[str], Any],
        extract: Callable[[Any], dict[str, Any]],
        info: DatabaseInfo,
    ) -> None:
        self.path = path
        self.role = role
        self.reader = reader
        self.lookup = lookup
        self.extract = extract
        self.info = info
        self.ipv4_only = info.ip_version == 4

    def read(self, text: str) -> dict[str, Any] | None:
        """The fields of the record of address ``text``, ``None`` when the database has none.

        A damaged database may raise one of ``DATABASE_ERRORS``.
        """
        try:
            return self.extract(self.lookup(text))
        except geoip2.errors.AddressNotFoundError:
            return None

    def close(self) -> None:
        self.reader.close()


def _fail(role: str, path: str, reason: str) -> GeoIpDatabaseError:
    return GeoIpDatabaseError(f"GeoIP {role} database '{path}': {reason}")


def _check_file(role: str, path: str) -> None:
    """Reasons a file cannot be a database, found before any MaxMind reader sees it."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise _fail(role, path, "no such file") from None
    except OSError as err:
        raise _fail(role, path, f"cannot access the file: {err.strerror or err}") from None
    if not Path(path).is_file():
        raise _fail(role, path, "not a regular file (a directory?)")
    if stat.st_size == 0:
        raise _fail(role, path, "the file is empty")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, stat.st_size - _METADATA_SEARCH_BYTES))
            tail = handle.read()
    except OSError as err:
        raise _fail(role, path, f"the file is unreadable: {err.strerror or err}") from None
    if _METADATA_MARKER not in tail:
        if head.startswith(b"\x1f\x8b"):
            reason = (
                "gzip-compressed, not a MaxMind DB file: extract the .mmdb from the download first"
            )
        else:
            reason = "not a MaxMind DB file (no MaxMind DB metadata section found)"
        raise _fail(role, path, reason)


def _open_reason(path: str, err: BaseException) -> str:
    """Why a file with a metadata marker does not open. The C extension only says "Is this a
    valid MaxMind DB file?", so the pure-Python reader is asked for a precise reason."""
    try:
        maxminddb.open_database(path, maxminddb.MODE_MMAP).close()
    except _OPEN_ERRORS as precise:
        return f"corrupt or not a MaxMind DB file ({precise})"
    return f"corrupt or not a MaxMind DB file ({err})"


def _probe_raw(role: str, path: str, ipv4_only: bool) -> None:
    """Decode the first networks of the search tree and a spread of addresses."""
    try:
        raw = maxminddb.open_database(path)
    except _OPEN_ERRORS as err:
        raise _fail(role, path, _open_reason(path, err)) from None
    try:
        for _ in islice(raw, _PROBE_NETWORKS):
            pass
        for probe in _PROBE_ADDRESSES:
            if ipv4_only and ":" in probe:
                continue
            raw.get(probe)
    except DATABASE_ERRORS as err:
        raise _fail(role, path, f"the database is corrupt: {err}") from None
    finally:
        raw.close()


def _open_database(role: str, path: str, kinds: tuple[tuple[str, str], ...]) -> Database:
    _check_file(role, path)
    try:
        reader = geoip2.database.Reader(path)
    except _OPEN_ERRORS as err:
        raise _fail(role, path, _open_reason(path, err)) from None
    try:
        metadata = reader.metadata()
        # Corruption first: a damaged file is worth reporting even when it is also the wrong type.
        _probe_raw(role, path, int(metadata.ip_version) == 4)
        database_type = str(metadata.database_type)
        method = next((name for marker, name in kinds if marker in database_type), None)
        if method is None:
            raise _fail(
                role,
                path,
                f"database type '{database_type}' cannot be used as the {role} database "
                f"(expected {_EXPECTED[role]})",
            )
        build_epoch = int(metadata.build_epoch)
        info = DatabaseInfo(
            path=path,
            database_type=database_type,
            build_epoch=build_epoch,
            built=datetime.fromtimestamp(build_epoch, UTC).isoformat(),
            ip_version=int(metadata.ip_version),
            node_count=int(metadata.node_count),
        )
        lookup: Callable[[str], Any] = getattr(reader, method)
        extract = _geo_fields if role == "city" else _asn_fields
        for probe in _PROBE_ADDRESSES:
            if info.ip_version == 4 and ":" in probe:
                continue
            try:
                fields = extract(lookup(probe))
                if role == "city":
                    GeoInfo(status="found", **fields)  # values of the expected types
            except geoip2.errors.AddressNotFoundError:
                continue
            except DATABASE_ERRORS as err:
                raise _fail(
                    role, path, f"records are corrupt or not in the {database_type} layout: {err}"
                ) from None
    except BaseException:
        reader.close()
        raise
    return Database(path, role, reader, lookup, extract, info)


def open_city_database(path: str) -> Database:
    """A GeoIP2/GeoLite2 City, Country or Enterprise database, checked (see the module docstring)."""
    return _open_database("city", path, _CITY_KINDS)


def open_asn_database(path: str) -> Database:
    """A GeoLite2-ASN or GeoIP2-ISP database, checked (see the module docstring)."""
    return _open_database("ASN", path, _ASN_KINDS)


def _english(record: Any) -> str | None:
    names = getattr(record, "names", None)
    name = names.get("en") if isinstance(names, dict) else None
    return name if isinstance(name, str) else None


def _geo_fields(model: Any) -> dict[str, Any]:
    """Country, city and position of a City/Country/Enterprise model (Country has no city)."""
    country = model.country
    fields: dict[str, Any] = {"country_iso": country.iso_code, "country_name": _english(country)}
    city = getattr(model, "city", None)
    if city is not None:
        fields["city"] = _english(city)
    location = getattr(model, "location", None)
    if location is not None:
        fields["lat"] = location.latitude
        fields["lon"] = location.longitude
    return fields


def _asn_fields(model: Any) -> dict[str, Any]:
    return {
        "asn": model.autonomous_system_number,
        "as_org": model.autonomous_system_organization,
    }
