"""Generated sample input for the demo, the benchmarks and tests: deterministic for a given seed.

Out: raw IoT messages (NDJSON lines in several device shapes), nginx access-log lines (combined,
``main``, vhost-prefixed, IPv6, bots, health checks) and USGS-style GeoJSON documents. A chosen
fraction of inputs is deliberately bad (invalid JSON, missing fields, malformed lines) so the dead-letter
path is always exercised. Client addresses come from the synthetic demo GeoIP networks.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

__all__ = ["access_log_lines", "iot_messages", "usgs_document"]

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DEVICE_SENSORS = ("temperature", "humidity", "battery", "co2")
PATHS = (
    "/",
    "/products",
    "/products/42",
    "/cart",
    "/checkout",
    "/api/v1/items",
    "/search",
    "/login",
)
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
STATUSES = (200, 200, 200, 200, 200, 304, 301, 404, 500, 503)


def _demo_addresses() -> list[str]:
    from devkit.geoip_build import DEMO_NETWORKS

    addresses: list[str] = []
    for demo in DEMO_NETWORKS:
        net = ipaddress.ip_network(demo.network)
        addresses.extend(str(net.network_address + offset) for offset in (7, 42, 99))
    return [*addresses, "10.1.2.3", "192.168.0.12"]  # private peers stay un-located, by design


def iot_messages(
    count: int,
    *,
    devices: int = 50,
    seed: int = 7,
    bad_ratio: float = 0.01,
    start: datetime = START,
    interval: float = 0.05,
) -> Iterator[bytes]:
    """``count`` device messages, one JSON document each, in the shapes real devices send.

    Readings are ``interval`` seconds apart from ``start`` (plus up to 40 ms of jitter).
    """
    rng = random.Random(seed)
    base_ms = int(start.timestamp() * 1000)
    for i in range(count):
        device = f"device-{i % devices:04d}"
        at_ms = base_ms + int(i * interval * 1000) + rng.randint(0, 40)
        values = {name: round(rng.gauss(20 + 3 * k, 2), 3) for k, name in enumerate(DEVICE_SENSORS)}
        if rng.random() < bad_ratio:
            yield rng.choice((b'{"device_id": "broken', b'{"temperature": 21.5}', b"\xff\xfe"))
            continue
        shape = i % 3
        if shape == 0:  # canonical, as Sluice's own SDK sends it
            message = {"device_id": device, "event_time": at_ms / 1000, "metrics": values,
                       "attributes": {"firmware": "1.4.2"}}  # fmt: skip
        elif shape == 1:  # flat, camelCase, epoch milliseconds
            message = {"deviceId": device, "ts": at_ms, **values, "status": "ok"}
        else:  # an MQTT bridge capture
            message = {"topic": f"site/{device}/telemetry",
                       "payload": {**values, "timestamp": datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()},
                       "_msgid": f"{seed:x}.{i:x}"}  # fmt: skip
        yield orjson.dumps(message)


def _clf(at: datetime) -> str:
    return at.strftime("%d/%b/%Y:%H:%M:%S +0000")


def access_log_lines(
    count: int,
    *,
    seed: int = 11,
    bad_ratio: float = 0.01,
    start: datetime = START,
    interval: float = 0.02,
) -> Iterator[str]:
    """``count`` nginx access-log lines (``main`` format unless a variation is drawn), ``interval`` s apart."""
    rng = random.Random(seed)
    addresses = _demo_addresses()
    for i in range(count):
        at = start + timedelta(seconds=i * interval)
        client = rng.choice(addresses)
        path = "/healthz" if i % 97 == 0 else rng.choice(PATHS)
        if rng.random() < 0.2:
            path += f"?q={rng.randint(1, 500)}"
        status = rng.choice(STATUSES)
        agent = rng.choice(AGENTS)
        request = f"GET {path} HTTP/1.1"
        if rng.random() < bad_ratio:
            yield rng.choice((f"{client} [{_clf(at)}] garbage", "not a log line at all", ""))
            continue
        line = (
            f'{client} - - [{_clf(at)}] "{request}" {status} {rng.randint(0, 50_000)} "-" "{agent}"'
        )
        variation = i % 10
        if variation == 1:
            line = f"shop.example.com:443 {line} {rng.random():.3f}"
        elif variation != 2:
            line += ' "-"'
        yield line


def usgs_document(count: int, *, seed: int = 3, start: datetime = START) -> bytes:
    """A USGS-style GeoJSON FeatureCollection with ``count`` earthquakes."""
    rng = random.Random(seed)
    features = []
    for i in range(count):
        at_ms = int((start + timedelta(seconds=37 * i)).timestamp() * 1000)
        features.append({
            "type": "Feature",
            "id": f"sx{seed:02d}{i:06d}",
            "properties": {"mag": round(rng.uniform(0.5, 6.5), 2), "place": f"{rng.randint(1, 90)}km N of Somewhere",
                           "time": at_ms, "updated": at_ms + 60_000, "type": "earthquake", "status": "automatic"},
            "geometry": {"type": "Point",
                         "coordinates": [round(rng.uniform(-180, 180), 4), round(rng.uniform(-60, 70), 4),
                                         round(rng.uniform(0, 300), 2)]},
        })  # fmt: skip
    features.append({"type": "Feature", "properties": {"mag": 1.0}})  # no id: a dead letter
    return orjson.dumps(
        {"type": "FeatureCollection", "metadata": {"count": count}, "features": features}
    )
