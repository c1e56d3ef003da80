"""GeoIP enrichment: an IP address (text) in, a ``GeoInfo`` out.

In: IP address strings as logged (IPv4 or IPv6, optionally ``[bracketed]`` or padded with
whitespace), one at a time (``GeoIpEnricher.lookup``) or as a batch (``lookup_many``), and the
paths of a MaxMind City (or Country) database and optionally an ASN (or ISP) database.
Out: one ``sluice.core.contracts.GeoInfo`` per address. A lookup never raises for bad input: the
``status`` says why fields are empty (``invalid``, ``private``, ``reserved``, ``not_found``,
``lookup_error``) or is ``found`` with country, city, coordinates and autonomous system.
Errors: an unusable database (missing, unreadable, not a MaxMind DB, wrong type, corrupt) is a
``GeoIpDatabaseError`` naming the file, raised when the enricher is opened, never per record
(the checks are ``sluice.transform.geoip_databases``'s).

Private, loopback, link-local, reserved, multicast and documentation addresses are classified
from the address alone (stdlib ``ipaddress``) before the database is consulted. Results are
kept in a bounded LRU cache keyed by the address text; web traffic repeats addresses a lot.
The enricher pickles as its paths and cache size and reopens the files when unpickled, so a
Beam ``DoFn`` can carry it to workers (the files must exist at the same path there).

``choose_client_ip`` picks the address of a web request to geolocate from the connecting peer
and the ``X-Forwarded-For`` list.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

from pydantic import ValidationError

from sluice.core.contracts import GeoInfo, WebAccessLog
from sluice.core.errors import GeoIpDatabaseError
from sluice.transform.geoip_databases import (
    DATABASE_ERRORS,
    Database,
    DatabaseInfo,
    open_asn_database,
    open_city_database,
)

__all__ = [
    "CacheInfo",
    "GeoIpEnricher",
    "address_scope",
    "choose_client_ip",
    "is_public_ip",
    "parse_ip",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Scope = Literal["public", "private", "reserved"]

DEFAULT_CACHE_SIZE = 65_536

_MAX_ADDRESS_TEXT = 256
"""Longer input is ``invalid`` without parsing (and is never cached)."""


def _networks_by_version(
    *cidrs: str,
) -> dict[int, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
    return {v: tuple(n for n in networks if n.version == v) for v in (4, 6)}


_DOCUMENTATION_NETWORKS = _networks_by_version(
    "192.0.2.0/24",  # TEST-NET-1
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "233.252.0.0/24",  # MCAST-TEST-NET
    "2001:db8::/32",
    "3fff::/20",  # RFC 9637
)
_PRIVATE_NETWORKS = _networks_by_version(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT shared address space
    "fc00::/7",  # unique local
    "fec0::/10",  # deprecated site-local
)

_INVALID = GeoInfo(status="invalid")
_PRIVATE = GeoInfo(status="private")
_RESERVED = GeoInfo(status="reserved")
_NOT_FOUND = GeoInfo(status="not_found")
_LOOKUP_ERROR = GeoInfo(status="lookup_error")


class CacheInfo(NamedTuple):
    """Lookup cache counters. ``size`` never exceeds ``maxsize``; ``maxsize`` 0 means no cache."""

    hits: int
    misses: int
    size: int
    maxsize: int


# ---------------------------------------------------------------------------------------------
# Addresses


def _strip(text: str) -> str:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return text


def parse_ip(text: str) -> IPAddress | None:
    """The address in ``text``, or ``None`` when it is not one.

    Surrounding whitespace and ``[brackets]`` are removed; an IPv4-mapped IPv6 address
    (``::ffff:a.b.c.d``) is returned as its IPv4 address. Ports are not accepted.
    """
    if not isinstance(text, str) or len(text) > _MAX_ADDRESS_TEXT:
        return None
    candidate = _strip(text)
    if not candidate:
        return None
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            # A zone (``fe80::1%eth0``) names the local interface: irrelevant to location, and
            # MaxMind readers refuse it.
            return ipaddress.IPv6Address(int(address))
    return address


def address_scope(address: IPAddress) -> Scope:
    """Where an address can be: ``public`` (worth a database lookup), ``private`` or ``reserved``.

    ``private``: loopback, link-local, RFC 1918, carrier-grade NAT (100.64.0.0/10), IPv6 unique
    local (and the deprecated site-local). ``reserved``: unspecified, multicast, reserved,
    documentation and every other special-purpose block that is not globally routable.
    Loopback and link-local are tested first because ``::1`` also lies in the reserved ``::/8``;
    documentation ranges before the private ones, because Python's ``is_private`` counts them
    as private. The last test, ``is_global``, is ``not is_private`` (minus 100.64.0.0/10).
    """
    if address.is_loopback or address.is_link_local:
        return "private"
    version = address.version
    if (
        address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or any(address in network for network in _DOCUMENTATION_NETWORKS[version])
    ):
        return "reserved"
    if any(address in network for network in _PRIVATE_NETWORKS[version]):
        return "private"
    if not address.is_global:
        # This-network 0/8, IETF protocol assignments, benchmarking 198.18/15, Teredo/ORCHID, ...
        return "reserved"
    return "public"


def is_public_ip(text: str) -> bool:
    """Whether ``text`` is a valid, globally routable (public) IP address."""
    address = parse_ip(text)
    return address is not None and address_scope(address) == "public"


def _without_port(token: str) -> str:
    """``a.b.c.d:port`` -> ``a.b.c.d`` and ``[v6]:port`` -> ``v6``; anything else unchanged."""
    token = token.strip()
    if token.startswith("[") and "]:" in token:
        return token[1 : token.index("]:")]
    if token.count(":") == 1:
        return token.split(":", 1)[0]
    return token


def _with_geo(records: Sequence[WebAccessLog], geos: Sequence[GeoInfo]) -> list[WebAccessLog]:
    """``record.model_copy(update={"geo": geo})`` for each pair, as pydantic builds such a copy (a
    shallow copy of the values, the fields set plus ``geo``), with one fields set shared by the
    copies of records that shared one (pydantic copies a fields set before it changes one)."""
    out: list[WebAccessLog] = []
    append = out.append
    new, set_ = object.__new__, object.__setattr__
    sets: dict[int, tuple[set[str], set[str]]] = {}  # id -> (the set, kept alive; the set + geo)
    for record, geo in zip(records, geos, strict=True):
        cls = type(record)
        if record.__pydantic_extra__ is not None or record.__pydantic_private__ is not None:
            append(record.model_copy(update={"geo": geo}))  # not a plain contract: pydantic's copy
            continue
        fields_set = record.__pydantic_fields_set__
        known = sets.get(id(fields_set))
        if known is None:
            known = sets[id(fields_set)] = (fields_set, fields_set | {"geo"})
        values = record.__dict__.copy()
        values["geo"] = geo
        copy = new(cls)
        set_(copy, "__dict__", values)
        set_(copy, "__pydantic_fields_set__", known[1])
        set_(copy, "__pydantic_extra__", None)
        set_(copy, "__pydantic_private__", None)
        append(copy)
    return out


def choose_client_ip(client_ip: str | None, forwarded_for: Sequence[str]) -> str | None:
    """The address to geolocate for one web request.

    The connecting peer (``client_ip``, nginx ``$remote_addr``) is often not the client but a
    load balancer, CDN edge or reverse proxy, typically with a private address, which would
    geolocate every request to the data centre (or to nowhere). Proxies append the address they
    received the request from to ``X-Forwarded-For``, so the leftmost entry is the original
    client. Returns the first entry of ``forwarded_for`` that is a valid public IP address
    (entries may hold comma-separated lists and ``addr:port``; the address is returned without
    brackets or port), else ``client_ip`` unchanged (``None`` stays ``None``).

    The header is written by the client first, so it can be forged: good enough to place a
    request on a map, never for access control or rate limiting.
    """
    entries: Sequence[str] = [forwarded_for] if isinstance(forwarded_for, str) else forwarded_for
    for entry in entries:
        if not isinstance(entry, str):
            continue
        for token in entry.split(","):
            candidate = _strip(token)
            if parse_ip(candidate) is None:
                candidate = _without_port(candidate)
            if is_public_ip(candidate):
                return candidate
    return client_ip


# ---------------------------------------------------------------------------------------------
# The enricher


class GeoIpEnricher:
    """Looks IP addresses up in a MaxMind City (or Country) database and an optional ASN one.

    ``city_db``: GeoIP2/GeoLite2 City (country, city, position), Country (country only) or
    Enterprise. ``asn_db``: GeoLite2-ASN or GeoIP2-ISP (autonomous system number and
    organisation). ``cache_size``: entries of the LRU result cache, 0 to disable.
    Raises ``GeoIpDatabaseError`` naming the file when a database is missing, unreadable, not a
    MaxMind DB, of the wrong type or found corrupt by a probe of lookups at open time.

    Lookups are thread-safe. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        city_db: str | Path,
        asn_db: str | Path | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._open(city_db, asn_db, cache_size)

    def _open(self, city_db: str | Path, asn_db: str | Path | None, cache_size: int) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise GeoIpDatabaseError(
                f"GeoIP cache_size must be an integer >= 0, got {cache_size!r}"
            )
        self._closed = True
        self._city_path = os.fspath(city_db)
        self._asn_path = None if asn_db is None else os.fspath(asn_db)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, GeoInfo] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._lookup_errors = 0
        self._city = open_city_database(self._city_path)
        self._asn: Database | None = None
        if self._asn_path is not None:
            try:
                self._asn = open_asn_database(self._asn_path)
            except BaseException:
                self._city.close()
                raise
        self._closed = False
        logger.info("GeoIP databases opened: %s", self.database_info)

    # -- lookups --------------------------------------------------------------------------------

    def lookup(self, ip: str) -> GeoInfo:
        """The ``GeoInfo`` of one address. Never raises for bad input (see the module docstring).

        A missing ASN record (or no ASN database) leaves ``asn``/``as_org`` empty; when the City
        database has no record but the ASN database has one, the result is ``not_found`` with
        the ASN filled in.
        """
        if self._closed:
            raise ValueError("lookup on a closed GeoIpEnricher")
        if not isinstance(ip, str) or len(ip) > _MAX_ADDRESS_TEXT:
            return _INVALID
        if not self._cache_size:
            with self._lock:
                self._misses += 1
            return self._resolve(ip)
        with self._lock:
            cached = self._cache.get(ip)
            if cached is not None:
                self._cache.move_to_end(ip)
                self._hits += 1
                return cached
            self._misses += 1
        result = self._resolve(ip)
        with self._lock:
            self._cache[ip] = result
            self._cache.move_to_end(ip)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def lookup_many(self, ips: Iterable[str]) -> list[GeoInfo]:
        """One ``GeoInfo`` per input, in order; each distinct address of the batch is looked up once
        (a cache hit or a miss, counted as ``lookup`` counts them), under one lock for the batch's
        cache hits and one for storing its misses."""
        batch = ips if isinstance(ips, list) else list(ips)
        try:
            distinct: dict[Any, GeoInfo] = dict.fromkeys(batch, _INVALID)
        except TypeError:  # an unhashable non-address: one by one
            return [self.lookup(ip) if isinstance(ip, str) else _INVALID for ip in batch]
        if not self._cache_size or not distinct:
            lookup = self.lookup
            for ip in distinct:
                distinct[ip] = lookup(ip) if isinstance(ip, str) else _INVALID
            return list(map(distinct.__getitem__, batch))
        if self._closed:
            raise ValueError("lookup on a closed GeoIpEnricher")
        missing: list[str] = []
        cache = self._cache
        hits = 0
        with self._lock:
            for ip in distinct:
                if not isinstance(ip, str) or len(ip) > _MAX_ADDRESS_TEXT:
                    continue  # _INVALID, never cached (as ``lookup``)
                cached = cache.get(ip)
                if cached is None:
                    missing.append(ip)
                    continue
                cache.move_to_end(ip)
                distinct[ip] = cached
                hits += 1
            self._hits += hits
            self._misses += len(missing)
        if missing:
            resolved = [(ip, self._resolve(ip)) for ip in missing]
            with self._lock:
                for ip, result in resolved:
                    distinct[ip] = cache[ip] = result
                    cache.move_to_end(ip)
                while len(cache) > self._cache_size:
                    cache.popitem(last=False)
        return list(map(distinct.__getitem__, batch))

    def enrich(self, records: Sequence[WebAccessLog]) -> list[WebAccessLog]:
        """Each web request with its ``geo`` set (``lookup_clients``): equal to
        ``record.model_copy(update={"geo": ...})``, built without pydantic's per-copy overhead.
        New records; the inputs are left as they are."""
        geos = self.lookup_clients(
            [r.client_ip for r in records], [r.forwarded_for for r in records]
        )
        return _with_geo(records, geos)

    def lookup_clients(
        self, client_ips: Sequence[str | None], forwarded_for: Sequence[Sequence[str]]
    ) -> list[GeoInfo]:
        """The ``GeoInfo`` of each web request given as columns (its peer address and its
        X-Forwarded-For list): ``lookup_many`` of ``choose_client_ip``'s address (an unknown one
        is ``invalid``), what ``enrich`` sets as ``geo``."""
        return self.lookup_many(
            [
                (ip if not chain else choose_client_ip(ip, chain)) or ""
                for ip, chain in zip(client_ips, forwarded_for, strict=True)
            ]
        )

    def _resolve(self, ip: str) -> GeoInfo:
        address = parse_ip(ip)
        if address is None:
            return _INVALID
        scope = address_scope(address)
        if scope == "private":
            return _PRIVATE
        if scope == "reserved":
            return _RESERVED
        text = str(address)
        city = self._city
        geo: dict[str, Any] | None = None
        if not (city.ipv4_only and address.version == 6):
            try:
                geo = city.read(text)
            except DATABASE_ERRORS as err:
                self._lookup_failed(city, text, err)
                return _LOOKUP_ERROR
        asn = self._asn_of(text, address.version)
        if geo is None:
            return GeoInfo(status="not_found", **asn) if asn else _NOT_FOUND
        try:
            return GeoInfo(status="found", **geo, **asn)
        except ValidationError as err:
            self._lookup_failed(city, text, err)
            return _LOOKUP_ERROR

    def _asn_of(self, text: str, version: int) -> dict[str, Any]:
        db = self._asn
        if db is None or (db.ipv4_only and version == 6):
            return {}
        try:
            fields = db.read(text)
        except DATABASE_ERRORS as err:
            self._lookup_failed(db, text, err)
            return {}
        if fields is None:
            return {}
        asn, org = fields["asn"], fields["as_org"]
        return {
            "asn": asn if isinstance(asn, int) and not isinstance(asn, bool) else None,
            "as_org": org if isinstance(org, str) else None,
        }

    def _lookup_failed(self, db: Database, text: str, err: BaseException) -> None:
        self._lookup_errors += 1
        level = logging.WARNING if self._lookup_errors == 1 else logging.DEBUG
        logger.log(
            level, "GeoIP %s database '%s' failed looking up %s: %s", db.role, db.path, text, err
        )

    # -- introspection --------------------------------------------------------------------------

    def cache_info(self) -> CacheInfo:
        """Hits, misses and current size of the result cache."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    def cache_clear(self) -> None:
        """Empty the cache and reset its counters."""
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    @property
    def lookup_errors(self) -> int:
        """Lookups the database failed (``lookup_error`` results and failed ASN lookups)."""
        return self._lookup_errors

    @property
    def database_info(self) -> dict[str, DatabaseInfo]:
        """``{"city": ..., "asn": ...}`` (``asn`` only when an ASN database is open)."""
        info = {"city": self._city.info}
        if self._asn is not None:
            info["asn"] = self._asn.info
        return info

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(city_db={self._city_path!r}, asn_db={self._asn_path!r}, "
            f"cache_size={self._cache_size})"
        )

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the databases and drop the cache. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._city.close()
        if self._asn is not None:
            self._asn.close()
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Readers and locks do not pickle: ship the paths and reopen on the other side."""
        return {
            "city_db": self._city_path,
            "asn_db": self._asn_path,
            "cache_size": self._cache_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open(state["city_db"], state["asn_db"], state["cache_size"])
