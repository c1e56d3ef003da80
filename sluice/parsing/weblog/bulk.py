"""The bulk path of ``LogParser.parse_many``: a whole batch of lines through the compiled format at once.

In: a batch of raw lines (bytes or str) and the validation context of the batch (``TimeHorizon``).
Out: one outcome per line, in order (a ``WebAccessLog``, a ``Rejection`` or ``None`` for a blank
line), exactly what ``LogParser.parse_raw`` gives for each line: the same records (values,
``__dict__`` order, fields set) and the same rejections. ``BulkPlan.analytics`` stops before
the records: the ``ANALYTIC_FIELDS`` of the lines as columns (``sluice.parsing.weblog.columns``).
Dead letters: none of its own. A line the fast checks cannot vouch for goes through
``parse_raw``, so its dead letter keeps today's error type and reason.

Which formats: ``auto`` and every line-shaped (regex) format with nginx's default escaping whose
variables each fill one field the same way on every line (``combined``, ``main``, and custom formats
with times, numbers, ``$upstream_*`` lists, X-Forwarded-For, ``$http_*`` extras). Formats shaped as
JSON, ``escape=json``/``escape=none``, and formats with ``$request_uri``, ``$bytes_sent`` without
``$body_bytes_sent``, no ``$remote_addr``, or a request split apart from ``$request``
(``$request_method`` and ``$request`` both) run line by line (``parse_raw``), transparently.

The fast checks, per batch: a line is bytes or str of printable ASCII without a backslash (so no
escape to decode, no byte to replace, no control character in ``client_ip``) and within
``MAX_LINE_BYTES``; the batch is joined, decoded once and split again; each line is matched by the
compiled regex in its plain form (``plain_regex``: the escape loops left out, which a line without a
backslash never enters; about a fifth less time per match); the groups are converted column by
column (each distinct time string parsed and checked against the horizon once per batch, numbers
with ``int``/``float`` only where their text leaves pydantic no other reading: digits, 18 at most,
or a plain decimal); the records are built from those values without a second validation.
Anything else about a line (no match, a time out of the horizon, a huge number, ``auto``'s vhost
and client-list heads or a third quoted field) sends that line alone to ``parse_raw``.

Why: the per-line path validates each record with pydantic after the regex already shaped its
values; a batch lets each check run once per column and each distinct time string once. Python's
``re`` is used line by line over the batch's text: ``pyarrow.compute.extract_regex`` (RE2) refuses
the compiled formats (no lookahead) and was no faster on a simplified one once its columns were
turned back into Python values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sluice.core.contracts import WebAccessLog, event_time_bounds
from sluice.core.errors import RecordRejected
from sluice.parsing.weblog.formats import (
    AS_IS,
    AUTO,
    DASH_IS_NONE,
    EXTRA,
    LIST,
    REQUEST_PARTS,
    TIME,
    UPSTREAM,
    CompiledFormat,
    plain_regex,
)
from sluice.parsing.weblog.times import parse_time
from sluice.parsing.weblog.values import address_list, split_request, upstream_list

__all__ = ["BulkPlan", "bulk_plan", "plain_lines"]

# Bytes that rule the fast path out: anything but printable ASCII (and the batch's own line breaks),
# and the backslash, which starts an escape the per-line path decodes.
_PLAIN_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x5C) + b"\n"
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_REQUEST_TIME = re.compile(r"\d+\.\d+", re.ASCII)  # auto's trailing $request_time (auto.py's)
_MAX_DIGITS = 18  # below 2**63 - 1 whatever the digits: pydantic reads them as int() does
_MAX_DECIMAL = 40  # a plain decimal this long is a finite float, read alike by pydantic and float()
_INT_FIELDS = {"status": 999, "bytes_sent": None, "response_bytes": None, "request_length": None,
              "server_port": 65535}  # fmt: skip
"""The contract's integer fields a format can fill, with their upper bound (None: 64 bits)."""
_FIELDS = WebAccessLog.model_fields
_TEMPLATE = {name: None if info.default_factory else info.default for name, info in _FIELDS.items()}
"""Every field in declaration order (the order validation fills ``__dict__`` in), unset values."""
_LIST_FIELDS = frozenset(name for name, info in _FIELDS.items() if info.default_factory is list)
_DICT_FIELDS = frozenset(name for name, info in _FIELDS.items() if info.default_factory is dict)
if {n for n, i in _FIELDS.items() if i.default_factory} != _LIST_FIELDS | _DICT_FIELDS:
    raise TypeError("WebAccessLog has a default factory other than list or dict: teach bulk.py")
CHUNK_LINES = 256
"""Lines converted together; the batch's distinct times are parsed once across its slices."""
_DASH = {"-": None, "": None}.get
_DASH_ONLY = {"-": None}.get
_new = object.__new__
_set = object.__setattr__


def _int_column(column: Sequence[str | None], bound: int | None, slow: set[int]) -> list[Any]:
    """Texts of digits (or None) -> ints; rows with anything else, or beyond ``bound``, are slow."""
    present = [v for v in column if v is not None]
    text = "".join(present)
    if not present or (text.isdigit() and max(map(len, present)) <= _MAX_DIGITS):
        values = [None if v is None else int(v) for v in column]
    else:
        values = []
        for row, v in enumerate(column):
            if v is not None and not (len(v) <= _MAX_DIGITS and v.isdigit()):
                slow.add(row)
                v = None
            values.append(None if v is None else int(v))
    if bound is not None and present:
        for row, value in enumerate(values):
            if value is not None and value > bound:
                slow.add(row)
    return values


def _float_of(text: str) -> float | None:
    """A plain decimal as pydantic reads it, or None when the fast path cannot say."""
    if len(text) > _MAX_DECIMAL or _PLAIN_DECIMAL.fullmatch(text) is None:
        return None
    return float(text)


def _float_column(column: Sequence[str | None], slow: set[int]) -> list[Any]:
    values: list[Any] = []
    for row, v in enumerate(column):
        if v is None:
            values.append(None)
            continue
        number = _float_of(v)
        if number is None:
            slow.add(row)
        values.append(number)
    return values


def _item_column(
    column: Sequence[list[str | None]], floats: bool, slow: set[int]
) -> list[list[Any]]:
    """``$upstream_*`` lists: each entry an int (``upstream_status``) or a float, or None."""
    values: list[list[Any]] = []
    for row, entries in enumerate(column):
        if floats:
            items = [None if e is None else _float_of(e) for e in entries]
            if any(item is None and e is not None for item, e in zip(items, entries, strict=True)):
                slow.add(row)
        else:
            bad: set[int] = set()
            items = _int_column(entries, None, bad)
            if bad:
                slow.add(row)
        values.append(items)
    return values


class _Times:
    """Each distinct time string of a batch parsed and checked against the horizon once."""

    __slots__ = ("_earliest", "_latest", "_seen")

    def __init__(self, context: dict[str, Any]) -> None:
        self._earliest, self._latest = event_time_bounds(context)
        self._seen: dict[tuple[str, str], datetime | None] = {}

    def column(self, texts: Sequence[str], kind: str, slow: set[int]) -> list[datetime | None]:
        """The time of every row; rows whose time is unusable or out of the horizon are slow
        (the per-line path says why)."""
        known: dict[str, datetime | None] = {}
        for text in dict.fromkeys(texts):
            key = (text, kind)
            if key not in self._seen:
                try:
                    found: datetime | None = parse_time(text, kind)
                except RecordRejected:
                    found = None
                if found is not None and not self._earliest <= found <= self._latest:
                    found = None
                self._seen[key] = found
            known[text] = self._seen[key]
        values = list(map(known.__getitem__, texts))
        if None in known.values():
            slow.update(row for row, value in enumerate(values) if value is None)
        return values


def _records(
    size: int,
    columns: dict[str, Sequence[Any]],
    fields_set: set[str],
    slow: set[int],
    rows_apart: dict[int, tuple[dict[str, Any], set[str]]],
) -> list[WebAccessLog | None]:
    """Records from columns of values their contract accepts unchanged, built as validation builds
    them: every field in declaration order, a new list or dict for each unset one, the fields set
    (a new set per batch, shared by its rows: pydantic copies it before changing it). ``rows_apart``:
    the rows with more fields than ``columns`` (their values and fields set); ``slow`` rows: None."""
    names = [name for name in _TEMPLATE if name in columns]
    lists = [name for name in _LIST_FIELDS if name not in columns]
    dicts = [name for name in _DICT_FIELDS if name not in columns]
    template = _TEMPLATE
    out: list[WebAccessLog | None] = []
    append = out.append
    cls = WebAccessLog
    fields_set = set(fields_set)
    sets: dict[int, set[str]] = {}
    for row, values in (
        enumerate(zip(*(columns[name] for name in names), strict=True)) if size else ()
    ):
        if row in slow:
            append(None)
            continue
        merged = template.copy()
        merged.update(zip(names, values, strict=True))
        for name in lists:
            merged[name] = []
        for name in dicts:
            merged[name] = {}
        row_set = fields_set
        if row in rows_apart:
            more, shape = rows_apart[row]
            merged.update(more)
            row_set = sets.get(id(shape)) or sets.setdefault(id(shape), set(shape))
        record = _new(cls)
        _set(record, "__dict__", merged)
        _set(record, "__pydantic_fields_set__", row_set)
        _set(record, "__pydantic_extra__", None)
        _set(record, "__pydantic_private__", None)
        append(record)
    return out


Converted = tuple[
    int, dict[str, Any], set[str], set[int], dict[int, tuple[dict[str, Any], set[str]]]
]
"""A slice's rows as columns: (rows, columns, fields set, slow rows, rows with more fields), what
``_records`` takes."""
Convert = Callable[[list[tuple[Any, ...]], _Times], Converted]

ANALYTIC_FIELDS = ("client_ip", "forwarded_for", "event_time", "path", "status", "bytes_sent",
                   "request_time")  # fmt: skip
"""The fields enrichment and aggregation read (``BulkPlan.analytics``)."""


def _analytic(converted: Converted, name: str) -> list[Any]:
    """One analytic field of every row of a slice, as the record built from it would hold it."""
    size, columns, _, _, apart = converted
    if name in columns:
        values = list(columns[name])
    elif name in _LIST_FIELDS:
        values = [[] for _ in range(size)]
    else:
        values = [_TEMPLATE[name]] * size
    for row, (more, _) in apart.items():
        if name in more:
            values[row] = more[name]
    return values


class BulkPlan:
    """How the groups of one compiled regex become records, column by column."""

    def __init__(self, regex: re.Pattern[str], convert: Convert) -> None:
        self.regex = plain_regex(regex)  # lines here hold no backslash (``plain_lines``)
        self._convert = convert

    def _slices(
        self, lines: list[str], context: dict[str, Any]
    ) -> Iterator[tuple[list[int], Converted]]:
        """Per slice of the lines, the indexes of the lines the regex matched and their columns."""
        times = _Times(context)
        match = self.regex.match
        # In slices: the groups of a slice are still in the processor's cache when its records are
        # built (a whole batch at each step measured slower than the per-line path).
        for first in range(0, len(lines), CHUNK_LINES):
            rows: list[tuple[Any, ...]] = []
            where: list[int] = []
            for index, found in enumerate(map(match, lines[first : first + CHUNK_LINES]), first):
                if found is not None:
                    rows.append(found.groups())
                    where.append(index)
            yield where, self._convert(rows, times)

    def records(self, lines: list[str], context: dict[str, Any]) -> list[WebAccessLog | None]:
        """A record per plain line (printable ASCII, no backslash), or None where that line needs
        the per-line path."""
        out: list[WebAccessLog | None] = [None] * len(lines)
        for where, converted in self._slices(lines, context):
            for index, record in zip(where, _records(*converted), strict=True):
                out[index] = record
        return out

    def analytics(
        self, lines: list[str], context: dict[str, Any]
    ) -> tuple[dict[str, list[Any]], bytearray]:
        """The ``ANALYTIC_FIELDS`` of every plain line, column by column, as the records
        ``records`` builds would hold them, without building the records; and a flag per line, 1
        where the line was read here (0: it needs the per-line path, its values are placeholders)."""
        out: dict[str, list[Any]] = {name: [] for name in ANALYTIC_FIELDS}
        done = bytearray(len(lines))
        position = 0
        for where, converted in self._slices(lines, context):
            slow = converted[3]
            end = where[-1] + 1 if where else position
            if where and len(where) == end - position and not slow:
                for name, column in out.items():  # every line of the slice read: whole columns
                    column.extend(_analytic(converted, name))
                done[position:end] = b"\x01" * (end - position)
            else:
                filler = [None] * (end - position)
                fast = [i for row, i in enumerate(where) if row not in slow]
                for name, column in out.items():
                    values = filler.copy()
                    for row, value in enumerate(_analytic(converted, name)):
                        values[where[row] - position] = value
                    column.extend(values)
                for i in fast:
                    done[i] = 1
            position = end
        missing = len(lines) - position  # the last lines of the batch, none of them matched
        for column in out.values():
            column.extend([None] * missing)
        return out, done


def _split_requests(columns: dict[str, Any], slow: set[int]) -> None:
    """Where the regex did not split the request line (method None), ``split_request`` does."""
    method = columns["method"]
    if None not in method:
        return
    parts = [list(columns[name]) for name in REQUEST_PARTS]
    for row, found in enumerate(method):
        if found is None and row not in slow:
            split = split_request(columns["request"][row])
            for part, value in zip(parts, split, strict=True):
                part[row] = value
    columns.update(zip(REQUEST_PARTS, parts, strict=True))


def _auto_plan() -> BulkPlan:
    """``auto``: the plain shapes of ``auto_fields`` (one client address, no third quoted field
    but ``-``); the other rows go line by line."""
    at = {name: number - 1 for name, number in AUTO.groupindex.items()}
    base = {name for name in at if name != "trailing"}
    with_time, with_extra = base | {"request_time"}, base | {"extra"}

    def convert(rows: list[tuple[Any, ...]], times: _Times) -> Converted:
        size = len(rows)
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(at)
        slow: set[int] = set()
        heads = cols[at["client_ip"]]
        joined = "\0".join(heads)
        if " " in joined or "," in joined or '"' in joined:
            slow.update(row for row, h in enumerate(heads) if " " in h or "," in h or '"' in h)
        forwarded = cols[at["forwarded_for"]]
        if any(forwarded):
            slow.update(row for row, f in enumerate(forwarded) if f and f != "-")
        sent = cols[at["bytes_sent"]]
        columns: dict[str, Any] = {
            "client_ip": list(map(_DASH_ONLY, heads, heads)),
            "remote_user": list(map(_DASH_ONLY, cols[at["remote_user"]], cols[at["remote_user"]])),
            "event_time": times.column(cols[at["event_time"]], "clf", slow),
            "request": cols[at["request"]],
            **{name: cols[at[name]] for name in REQUEST_PARTS},
            "status": _int_column(cols[at["status"]], 999, slow),
            "bytes_sent": _int_column(list(map(_DASH_ONLY, sent, sent)), None, slow),
            "referer": list(map(_DASH, cols[at["referer"]], cols[at["referer"]])),
            "user_agent": list(map(_DASH, cols[at["user_agent"]], cols[at["user_agent"]])),
            "forwarded_for": [[] for _ in range(size)],
        }
        _split_requests(columns, slow)
        apart: dict[int, tuple[dict[str, Any], set[str]]] = {}
        trailing = cols[at["trailing"]]
        if any(trailing):
            for row, tail in enumerate(trailing):
                if not tail:
                    continue
                if _REQUEST_TIME.fullmatch(tail):
                    seconds = _float_of(tail)
                    if seconds is None:
                        slow.add(row)
                    apart[row] = ({"request_time": seconds}, with_time)
                else:
                    apart[row] = ({"extra": {"trailing": tail}}, with_extra)
        return size, columns, base, slow, apart

    return BulkPlan(AUTO, convert)


def _compiled_plan(compiled: CompiledFormat) -> BulkPlan | None:
    """A line-shaped format whose fields are the same on every line (see the module docstring);
    None for the others."""
    regex = compiled.regex
    if regex is None or compiled.escape != "default":
        return None
    if not compiled.has_client or compiled.bytes_from_total:
        return None
    if compiled.has_request and not compiled.regex_splits_request:
        return None
    if not {how for how, _, _, _ in compiled.special} <= {TIME, DASH_IS_NONE, AS_IS, LIST,
                                                          UPSTREAM, EXTRA}:  # fmt: skip
        return None  # $request_uri fills path and query only where they are unset
    at = {name: number - 1 for name, number in regex.groupindex.items()}
    plain = [name for name in at if not name.startswith("_")]
    dash_fields = set(compiled.dash_fields)
    special = [(how, at[group], target, kind) for how, group, target, kind in compiled.special]
    base = set(plain) | {target for how, _, target, _ in special if how != EXTRA}
    with_extra = base | {"extra"}
    ints = [(name, bound) for name, bound in _INT_FIELDS.items() if name in base]
    floats = [name for name in ("request_time",) if name in base]
    upstreams = [name for name in sorted(base) if name.startswith("upstream_")]

    def convert(rows: list[tuple[Any, ...]], times: _Times) -> Converted:
        size = len(rows)
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(at)
        slow: set[int] = set()
        columns: dict[str, Any] = {}
        for name in plain:
            col = cols[at[name]]
            columns[name] = list(map(_DASH, col, col)) if name in dash_fields else col
        extras: list[tuple[str, Sequence[str]]] = []
        for how, index, target, kind in special:
            col = cols[index]
            if how == TIME:
                columns[target] = times.column(col, kind, slow)
            elif how == DASH_IS_NONE:
                columns[target] = list(map(_DASH, col, col))
            elif how == AS_IS:
                columns[target] = col
            elif how == LIST:
                columns[target] = list(map(address_list, col))
            elif how == UPSTREAM:
                columns[target] = list(map(upstream_list, col))
            else:
                extras.append((target, col))
        for name, bound in ints:
            columns[name] = _int_column(columns[name], bound, slow)
        for name in floats:
            columns[name] = _float_column(columns[name], slow)
        for name in upstreams:
            if name != "upstream_addr":
                columns[name] = _item_column(columns[name], name != "upstream_status", slow)
        if compiled.has_request:
            _split_requests(columns, slow)
        apart: dict[int, tuple[dict[str, Any], set[str]]] = {}
        for row in range(size) if extras else ():
            extra = {key: col[row] for key, col in extras if col[row] != "-" and col[row] != ""}
            if extra:
                apart[row] = ({"extra": extra}, with_extra)
        return size, columns, base, slow, apart

    return BulkPlan(regex, convert)


def bulk_plan(compiled: CompiledFormat | None) -> BulkPlan | None:
    """The bulk plan of a format (``None``: ``auto``), or None when it runs line by line."""
    if compiled is None:
        return _auto_plan()
    return _compiled_plan(compiled)


def _plain(data: bytes) -> bool:
    """Printable ASCII without a backslash (line breaks aside): deleting those bytes leaves none."""
    return not data.translate(None, _PLAIN_BYTES)


def plain_lines(raws: Sequence[bytes | str], max_bytes: int) -> tuple[list[str], list[int]] | None:
    """The lines of a batch that may take the fast path, as text, and their indexes; None when
    none may. One check over the joined batch when all of it is plain, else line by line."""
    if not raws:
        return None
    kind = type(raws[0])
    one_kind = (kind is bytes or kind is str) and all(type(raw) is kind for raw in raws)
    if one_kind and max(map(len, raws)) <= max_bytes:
        if kind is bytes:
            blob = b"\n".join(raws)  # type: ignore[arg-type]
        else:
            text = "\n".join(raws)  # type: ignore[arg-type]
            blob = text.encode("ascii") if text.isascii() else b"\x00"  # \x00: not plain
        if _plain(blob) and blob.count(b"\n") == len(raws) - 1:
            return blob.decode("ascii").split("\n"), list(range(len(raws)))
    lines: list[str] = []
    where: list[int] = []
    for index, raw in enumerate(raws):
        if type(raw) is str:
            if not raw.isascii():
                continue
            data = raw.encode("ascii")
        elif type(raw) is bytes:
            data = raw
        else:
            continue
        if len(data) <= max_bytes and b"\n" not in data and _plain(data):
            lines.append(data.decode("ascii"))
            where.append(index)
    return (lines, where) if lines else None
