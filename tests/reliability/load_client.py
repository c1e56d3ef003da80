"""A load client for ``sluice edge serve``, run as a process of its own (``python load_client.py``).

``python load_client.py URL CONNECTIONS SECONDS TAG``: CONNECTIONS threads, each with one keep-alive
connection, POST one IoT reading per request (device ``TAG-<thread>``, a message id per request) for
SECONDS; prints one JSON line: requests, accepted events, errors by status, p50/p99 latency, and the
message ids the edge accepted (202), so the caller can look for each on the stream.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from datetime import UTC, datetime


def main(argv: list[str]) -> int:
    url, connections, seconds, tag = argv[0], int(argv[1]), float(argv[2]), argv[3]
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    accepted: list[str] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def worker(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        sent = 0
        while time.monotonic() < stop:
            message = f"{tag}-{number}-{sent}"
            body = json.dumps(
                {"deviceId": f"{tag}-{number}", "ts": stamp, "t": 1.0, "messageId": message}
            ).encode()
            started = time.monotonic()
            try:
                connection.request("POST", "/iot", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except OSError as error:
                status = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
            elapsed = time.monotonic() - started
            with lock:
                latencies.append(elapsed)
                if status == "202":
                    accepted.append(message)
                else:
                    errors[status] = errors.get(status, 0) + 1
            sent += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    latencies.sort()

    def quantile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    print(
        json.dumps(
            {
                "connections": connections,
                "seconds": round(wall, 2),
                "requests": len(latencies),
                "accepted": accepted,
                "errors": errors,
                "p50_ms": quantile(0.5) if latencies else None,
                "p99_ms": quantile(0.99) if latencies else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
