"""Fuzz targets: every parser and edge body function, fed hostile bytes by hypothesis and a corpus.

Run as ``python tests/reliability/fuzz_targets.py TARGET EXAMPLES CORPUS_DIR`` (one process per
target, so its peak memory is its own ``ru_maxrss``); prints one JSON line: inputs tried, crashes
(exception type, message, the input's corpus file), hangs (inputs over the time bound), slowest input,
peak RSS. A crashing or slow input found by generation is written to ``CORPUS_DIR/TARGET/`` (named by
its digest), so it can be committed and is replayed by every later run.

The property is the documented one: each function "never raises for bad input", answers within a
time bound and within bounded memory; what it returns must also be publishable (every envelope and
dead letter encodes to the wire form).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

TIME_BOUND_SECONDS = 5.0
"""An input taking longer is a hang (the edges' Lambda timeout is 15 s for a whole request)."""
WATCHDOG_SECONDS = 15
"""An input still running after this (the edges' Lambda timeout) is interrupted (SIGALRM): a hang."""
ADDRESS_SPACE_LIMIT = 6 * 1024**3
"""Guard for the shared machine: an input that needs more fails with MemoryError (a crash)."""


class _Hang(BaseException):
    pass


# Targets -------------------------------------------------------------------------------------------


def _iot_parser(data: bytes) -> None:
    from sluice.parsing.iot import parse_iot_batch

    result = parse_iot_batch([data])
    _publishable(result.dead_letters, [])


def _weblog_parser(data: bytes) -> None:
    from sluice.parsing.weblog import LogParser

    for log_format in ("auto", "combined"):
        result = LogParser(log_format).parse_batch([data])
        _publishable(result.dead_letters, [])


def _feed_parser(data: bytes) -> None:
    from sluice.parsing.feeds import builtin_feed, parse_feed_document

    result = parse_feed_document(builtin_feed("usgs"), data)
    _publishable(result.dead_letters, [])


def _envelope_decoder(data: bytes) -> None:
    from sluice.stream.envelopes import decode_envelopes

    result = decode_envelopes([data])
    _publishable(result.dead_letters, [])


_REQUEST_SHAPES = (
    {"content_type": "application/json"},
    {"content_type": "application/x-ndjson"},
    {"content_type": None},
    {"content_type": "application/json", "content_encoding": "gzip", "gzip": True},
    {"content_type": "application/json", "base64": True},
    {"content_type": "application/json", "text": True},
)


def _iot_edge(data: bytes) -> None:
    import base64

    from sluice.edges.ingest import IotRequest, ingest_iot_request

    shapes = _REQUEST_SHAPES if len(data) <= 65536 else _REQUEST_SHAPES[:1]
    if data[:2] == b"\x1f\x8b":  # already gzip (a bomb from the corpus): sent as it is
        shapes = ({"content_type": "application/json", "content_encoding": "gzip"}, *shapes[:1])
    for shape in shapes:
        body: str | bytes = data
        if shape.get("gzip"):
            body = gzip.compress(data, compresslevel=1)
        if shape.get("base64"):
            body = base64.b64encode(body).decode()
        elif shape.get("text"):
            body = data.decode("utf-8", "surrogateescape")
        request = IotRequest(
            body=body,
            is_base64_encoded=bool(shape.get("base64")),
            content_type=shape["content_type"],  # type: ignore[arg-type]
            content_encoding=shape.get("content_encoding"),  # type: ignore[arg-type]
        )
        outcome = ingest_iot_request(request)
        _publishable(outcome.dead_letters, outcome.envelopes)
        json.dumps(outcome.response_body())
        assert 200 <= outcome.status < 500, f"status {outcome.status} for bad input"


def _log_edge(data: bytes) -> None:
    from sluice.edges.ingest import read_log_stream
    from sluice.parsing.weblog import LogParser

    parser = LogParser("auto")
    streams: list[Any] = [io.BytesIO(data)]
    if data[:2] == b"\x1f\x8b":  # already gzip (a bomb from the corpus): read decompressing
        streams.append(gzip.GzipFile(fileobj=io.BytesIO(data)))
    elif len(data) <= 65536:
        streams.append(gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(data, 1))))
    for stream in streams:
        for batch in read_log_stream(stream, "s3://fuzz/access.log", parser):  # type: ignore[arg-type]
            _publishable(batch.dead_letters, batch.valid)
    if len(data) > 65536:
        return
    # a truncated gzip stream, as a broken upload
    broken = gzip.compress(data, 1)[: max(1, len(data) // 2)]
    for batch in read_log_stream(
        gzip.GzipFile(fileobj=io.BytesIO(broken)),  # type: ignore[arg-type]
        "s3://fuzz/broken.log.gz",
        parser,
    ):
        _publishable(batch.dead_letters, batch.valid)


def _publishable(letters: list[Any], envelopes: list[Any]) -> None:
    from sluice.stream.envelopes import encode, wrap_dead_letter

    for letter in letters:
        encode(wrap_dead_letter(letter))
    for envelope in envelopes:
        encode(envelope)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "iot_parser": _iot_parser,
    "weblog_parser": _weblog_parser,
    "feed_parser": _feed_parser,
    "envelope_decoder": _envelope_decoder,
    "iot_edge": _iot_edge,
    "log_edge": _log_edge,
}


# Inputs --------------------------------------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
_TIME_KEYS = ("ts", "timestamp", "time", "event_time", "eventTime", "t", "time_local")
_ID_KEYS = ("deviceId", "device_id", "id", "device")


@st.composite
def _extreme_times(draw: st.DrawFn) -> str | int | float:
    year = draw(st.sampled_from([1, 2, 1969, 1970, 2026, 9998, 9999, 10000, 99999]))
    offset = draw(st.sampled_from(["Z", "+14:00", "-14:00", "+23:59", "-23:59", "", "+00:00"]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return f"{year:04d}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 31)):02d}T23:59:59{offset}"
    if kind == 1:
        return draw(st.integers(min_value=-(10**20), max_value=10**20))
    if kind == 2:
        return draw(st.floats(allow_nan=True, allow_infinity=True))
    if kind == 3:
        return draw(st.sampled_from(["31/Dec/9999:23:59:59 +0000", "01/Jan/0001:00:00:00 +1400"]))
    return draw(st.text(max_size=30))


@st.composite
def _readings(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body[draw(st.sampled_from(_ID_KEYS))] = draw(st.one_of(st.text(max_size=20), _json_values))
    if draw(st.booleans()):
        body[draw(st.sampled_from(_TIME_KEYS))] = draw(_extreme_times())
    body.update(draw(st.dictionaries(st.text(max_size=10), _json_values, max_size=4)))
    doc: Any = body
    if draw(st.booleans()):
        doc = draw(st.lists(st.just(body), min_size=1, max_size=4))
    text = json.dumps(doc, allow_nan=True)
    if draw(st.booleans()):
        text = "\n".join(text for _ in range(draw(st.integers(1, 3))))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = draw(st.sampled_from(["1", '"x"', "null", ""]))
    close = draw(st.booleans())
    return (opener * depth + inner + (closer * depth if close else "")).encode()


@st.composite
def _huge_numbers(draw: st.DrawFn) -> bytes:
    digits = draw(st.integers(1, 5000))
    number = draw(st.sampled_from(["9", "1", "-9"])) * digits
    exponent = draw(st.sampled_from(["", "e999999", "e-999999", ".5e308", "e309"]))
    key = draw(st.sampled_from(["t", "temp", "ts", "deviceId"]))
    return f'{{"deviceId":"d","ts":"2026-01-01T00:00:00Z","{key}":{number}{exponent}}}'.encode()


@st.composite
def _log_lines(draw: st.DrawFn) -> bytes:
    ip = draw(st.sampled_from(["1.2.3.4", "::1", "999.1.1.1", "", "1.2.3.4\x00", "-"]))
    when = draw(
        st.sampled_from(
            ["02/Mar/2026:09:00:00 +0000", "31/Dec/9999:23:59:59 +0000", "01/Jan/0001:00:00:00 +1400",
             "99/Foo/2026:99:99:99 +9999", ""]
        )
    )  # fmt: skip
    request = draw(st.text(max_size=60))
    status = draw(st.sampled_from(["200", "999", "-1", "99999999999999999999", "abc"]))
    size = draw(st.sampled_from(["512", "-", "1" * 400, "-5"]))
    tail = draw(st.text(max_size=40))
    line = f'{ip} - - [{when}] "{request}" {status} {size} "-" "{tail}"'
    lines = [line] * draw(st.integers(1, 3)) + [""] * draw(st.integers(0, 2))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=4))
            continue
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[at] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\n", b"\r\n", b"9" * 400]))
    return bytes(data)


SEEDS = [
    b'{"deviceId":"thermo-7","ts":"2026-03-02T09:00:00Z","temp":21.5}',
    b'[{"deviceId":"a","timestamp":1772442000,"t":1},{"id":"b","time":"2026-03-02T09:00:00Z"}]',
    b'{"deviceId":"x","ts":"9999-12-31T23:59:59Z","t":1}',
    b'1.2.3.4 - - [02/Mar/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 512 "-" "curl/8"',
    b'{"type":"FeatureCollection","features":[{"id":"q1","properties":{"mag":2.5,'
    b'"time":1772442000000,"updated":1772442000000},"geometry":{"coordinates":[1,2,3]}}]}',
    b'{"source":"iot","event_id":"e","ingest_time":"2026-03-02T09:00:00Z","partition_key":"k",'
    b'"payload":{"device_id":"d","event_time":"2026-03-02T09:00:00Z","metrics":{"t":1}}}',
]


def inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        _json_values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
        _readings(),
        _deep(),
        _huge_numbers(),
        _log_lines(),
        _mutated(SEEDS),
    )


# Running -------------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


class Run:
    def __init__(self, name: str, corpus: Path) -> None:
        self.name, self.target = name, TARGETS[name]
        self.corpus = corpus
        self.tried = 0
        self.crashes: list[dict[str, str]] = []
        self.hangs: list[dict[str, Any]] = []
        self.slowest = (0.0, "")

    def one(self, data: bytes, origin: str, save: bool) -> None:
        self.tried += 1
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, WATCHDOG_SECONDS)
        failure: BaseException | None = None
        try:
            self.target(data)
        except _Hang as hang:
            failure = hang
        except Exception as error:  # noqa: BLE001 - what the property is about
            failure = error
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.monotonic() - started
        where = origin
        if (failure is not None or seconds > TIME_BOUND_SECONDS) and save:
            where = self.save(data)
        if seconds > self.slowest[0]:
            self.slowest = (seconds, where)
        if isinstance(failure, _Hang) or seconds > TIME_BOUND_SECONDS:
            self.hangs.append({"input": where, "seconds": round(seconds, 2), "bytes": len(data)})
        elif failure is not None:
            frame = traceback.extract_tb(failure.__traceback__)[-1]
            self.crashes.append(
                {
                    "input": where,
                    "bytes": str(len(data)),
                    "error": f"{type(failure).__name__}: {str(failure)[:160]}",
                    "at": f"{Path(frame.filename).name}:{frame.lineno}",
                }
            )

    def save(self, data: bytes) -> str:
        folder = self.corpus / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"found-{_digest(data)}.bin"
        path.write_bytes(data)
        return str(path.relative_to(self.corpus))

    def corpus_files(self) -> list[Path]:
        shared = sorted((self.corpus / "shared").glob("*"))
        own = sorted((self.corpus / self.name).glob("*"))
        return [p for p in shared + own if p.is_file()]


def corpus_input(path: Path) -> bytes:
    """A corpus file's bytes; ``*.repeat.json`` (``{"repeat": UNIT, "bytes": N}``) stands for a large
    input made of one unit repeated, so megabytes of ``1\\n`` are not committed."""
    if path.name.endswith(".repeat.json"):
        spec = json.loads(path.read_text())
        unit = spec["repeat"].encode()
        return (unit * (int(spec["bytes"]) // len(unit) + 1))[: int(spec["bytes"])]
    return path.read_bytes()


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang(f"still running after {WATCHDOG_SECONDS} s")


def expanded_size(path: Path) -> int:
    """Bytes an input stands for: a ``.repeat.json`` spec's size, a gzip file's decompressed size
    (its last member's ISIZE field), else the file's size."""
    if path.name.endswith(".repeat.json"):
        return int(json.loads(path.read_text())["bytes"])
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b" and len(data) >= 4:
        return max(len(data), int.from_bytes(data[-4:], "little"))
    return len(data)


def main(argv: list[str]) -> int:
    name, examples, corpus = argv[0], int(argv[1]), Path(argv[2])
    max_corpus_bytes = int(argv[3]) if len(argv) > 3 else None
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > ADDRESS_SPACE_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, hard))
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    run = Run(name, corpus)
    started = time.monotonic()
    for path in run.corpus_files():
        if max_corpus_bytes is None or expanded_size(path) <= max_corpus_bytes:
            run.one(corpus_input(path), str(path.relative_to(corpus)), save=False)
    replayed = run.tried

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs())
    def generated(data: bytes) -> None:
        run.one(data, "generated", save=True)

    if examples > 0:
        generated()
    print(
        json.dumps(
            {
                "target": name,
                "corpus_inputs": replayed,
                "generated": run.tried - replayed,
                "crashes": run.crashes,
                "hangs": run.hangs,
                "slowest_seconds": round(run.slowest[0], 3),
                "slowest_input": run.slowest[1],
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
