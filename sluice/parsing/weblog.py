"""Web server access-log parser: nginx log lines in, normalized ``WebAccessLog`` records out.

In: a batch of raw lines (bytes or str, with or without the trailing newline) and a log format.
Out: ``BatchResult[WebAccessLog]``. Blank lines (empty or ASCII whitespace, within the size limit) are
skipped and counted (``skipped``), so valid + rejected + skipped = lines in. Never raises for bad input.
Dead letters: invalid UTF-8 (``invalid_encoding``), a line the format does not match, including a line
cut inside a quoted field (``unparseable_line``), an unusable time or one outside the ``TimeHorizon``
(``invalid_timestamp``), a value the contract refuses (``schema_violation``: a client with control
characters, a byte count beyond 64 bits, a non-finite request time), an over-long line
(``too_large``). At most ``max_dead_letters`` per batch one by one, the rest summarized
(``too_many_errors``).

Formats:
- ``auto`` (default): nginx ``combined`` (or the common log format without referer and user agent),
  optionally followed by ``"$http_x_forwarded_for"`` (``main``) and further fields: a lone decimal
  number is ``$request_time``, anything else is kept as ``extra["trailing"]``. A third quoted field
  that is no list of addresses (a ``$gzip_ratio``, say) is not X-Forwarded-For: it goes to ``extra``
  too. Before ident and user, ``auto`` reads ``client``, ``vhost[:port] client``, and client lists in
  place of ``$remote_addr``: ``a, b, client``, ``a, b client`` and ``"a, b" client`` (each optionally
  after a vhost). The client is always the last address (the peer nginx logged), ``forwarded_for``
  the addresses before it.
- ``combined`` and ``main``: nginx's own definitions, exactly (no vhost, no extra fields).
- any nginx ``log_format`` string, e.g. ``'$remote_addr - $remote_user [$time_local] "$request" ...'``,
  compiled once into one regular expression; it must log a time and ``$status`` (the contract needs
  both). Variables with no field of their own land in ``extra`` (``-`` and empty values are dropped).
Values are kept as logged: ``\\xNN`` escapes and percent-encoding are not decoded; ``-`` (and an
empty referer or user agent) becomes None. The request line is split into method, path, query and
protocol only when it has nginx's shape (``METHOD target HTTP/x``, or ``METHOD /path``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from pydantic import ValidationError

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    ErrorType,
    Source,
    Stage,
    TimeHorizon,
    WebAccessLog,
)
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    Rejection,
    describe_validation_error,
    is_blank,
)
from sluice.core.errors import LogFormatError, RecordRejected

__all__ = [
    "FIELD_OF_VARIABLE",
    "MAX_LINE_BYTES",
    "NAMED_FORMATS",
    "LogParser",
    "parse_clf_time",
    "parse_weblog_batch",
]

MAX_LINE_BYTES = 64 * 1024
STAGE = Stage.PARSE

NAMED_FORMATS = {
    "combined": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"',
    "main": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"',
}

# nginx variable -> contract field. Variables not listed land in ``extra``.
FIELD_OF_VARIABLE = {
    "remote_addr": "client_ip",
    "remote_user": "remote_user",
    "time_local": "event_time",
    "time_iso8601": "event_time",
    "msec": "event_time",
    "request": "request",
    "request_method": "method",
    "uri": "path",
    "document_uri": "path",
    "request_uri": "request_uri",
    "args": "query",
    "query_string": "query",
    "server_protocol": "protocol",
    "status": "status",
    "body_bytes_sent": "bytes_sent",
    "bytes_sent": "bytes_sent",
    "http_referer": "referer",
    "http_user_agent": "user_agent",
    "http_x_forwarded_for": "forwarded_for",
    "request_time": "request_time",
    "host": "vhost",
    "http_host": "vhost",
    "server_name": "vhost",
}
_TIME_FORMAT_OF_VARIABLE = {"time_local": "clf", "time_iso8601": "iso", "msec": "epoch"}

# A double-quoted value. nginx escapes '"' and '\' as \x22 and \x5C, Apache as \" and \\: both are read.
# Written as an unrolled loop (no alternation per character), which keeps matching linear and fast.
_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
# One token of the free-form text after the known fields: no blanks, quoted parts allowed inside
# (``rt=0.012``, ``uct="0.000"``, ``"-"``), but never an unclosed quote: a line cut in the middle of a
# quoted field does not match.
_TOKEN = rf'(?:[^\s"]|"{_QUOTED}")+'
# A request line nginx could parse, ``METHOD target HTTP/x``, split inside the line's regular expression
# (anything else - HTTP/0.9 ``GET /``, TLS bytes, ``-`` - is split by ``_split_request``).
# Blanks end each part; ``\X`` escape pairs are kept whole (``\?`` and ``\ `` leave it to _split_request).
_PATH_CHARS = r'[^ ?"\\]*(?:\\[^ ?][^ ?"\\]*)*'
_PART_CHARS = r'[^ "\\]*(?:\\[^ ][^ "\\]*)*'
_REQUEST_PATTERN = (
    rf"(?P<method>[A-Za-z][A-Za-z_-]*) (?P<path>{_PATH_CHARS})(?:\?(?P<query>{_PART_CHARS}))?"
    rf' (?P<protocol>HTTP/{_PART_CHARS})(?=")|{_QUOTED}'
)
# Groups are named after the contract's fields, so ``groupdict()`` is most of a record already.
_AUTO = re.compile(
    r"(?P<client_ip>.*?) \S+ (?P<remote_user>\S+) \[(?P<event_time>[^[\]]{1,64})\] "
    rf'"(?P<request>{_REQUEST_PATTERN})" (?P<status>\d{{3}}) (?P<bytes_sent>\d+|-)'
    rf'(?: "(?P<referer>{_QUOTED})" "(?P<user_agent>{_QUOTED})")?'
    rf'(?: "(?P<forwarded_for>{_QUOTED})")?(?:\s+(?P<trailing>{_TOKEN}(?:\s+{_TOKEN})*))?'
    r"\s*$",
    re.ASCII,
)
_VARIABLE = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
# Sub-patterns of variables whose values have a fixed shape; any other variable matches up to the next
# literal character of the format.
_PATTERN_OF_VARIABLE = {"status": r"\d{3}", "body_bytes_sent": r"\d+|-", "bytes_sent": r"\d+|-"}
_REQUEST_TIME = re.compile(r"\d+\.\d+", re.ASCII)
# What an X-Forwarded-For entry looks like: IPv4[:port], IPv6 (bracketed, with a port, or not), 'unknown'.
_ADDRESS = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?|\[?[0-9a-f.]*:[0-9a-f:.]*(?:\]:\d{1,5}|\])?|unknown",
    re.ASCII | re.IGNORECASE,
)
_METHOD = re.compile(r"[A-Za-z][A-Za-z_-]*", re.ASCII)
_LIST_SEPARATOR = re.compile(r"\s*,\s*")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_CLF_TIME = re.compile(
    r"(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", re.ASCII
)
_TZ_CACHE: dict[str, timezone] = {}


_CLF_CACHE: dict[str, datetime] = {}
_CLF_CACHE_SIZE = 4096
_MINUTE_CACHE: dict[str, datetime] = {}
"""``22/Jan/2019:03:56 +0330`` (a valid time without its seconds) -> that minute in UTC."""
_SECONDS = tuple(timedelta(seconds=s) for s in range(60))


def parse_clf_time(text: str) -> datetime:
    """``22/Jan/2019:03:56:14 +0330`` -> aware UTC datetime.

    Consecutive lines mostly share their second, and nearly always their minute: parsed times and
    minutes are cached (bounded), so a new second costs an addition, not a parse.
    """
    cached = _CLF_CACHE.get(text)
    if cached is not None:
        return cached
    # A key equal to that of a valid time means the same 26-character shape; only the seconds are new.
    minute = _MINUTE_CACHE.get(text[:17] + text[20:])
    second = text[18:20]
    if (
        minute is not None
        and text[17] == ":"
        and second.isascii()
        and second.isdigit()
        and second < "60"
    ):
        parsed = minute + _SECONDS[int(second)]
    else:
        parsed = _parse_clf_time(text)
        if len(_MINUTE_CACHE) >= _CLF_CACHE_SIZE:
            _MINUTE_CACHE.clear()
        _MINUTE_CACHE[text[:17] + text[20:]] = parsed - _SECONDS[parsed.second]
    if len(_CLF_CACHE) >= _CLF_CACHE_SIZE:
        _CLF_CACHE.clear()
    _CLF_CACHE[text] = parsed
    return parsed


def _parse_clf_time(text: str) -> datetime:
    match = _CLF_TIME.fullmatch(text)
    month = _MONTHS.get(match.group(2)) if match is not None else None
    if match is None or month is None:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"not an nginx time_local: {text!r}")
    day, _, year, hh, mm, ss, sign, oh, om = match.groups()
    offset = text[-5:]
    tz = _TZ_CACHE.get(offset)
    if tz is None:
        if int(oh) > 23 or int(om) > 59:
            raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: bad UTC offset")
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = _TZ_CACHE.setdefault(offset, timezone(-delta if sign == "-" else delta))
    try:
        local = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as err:  # day 31 of a 30-day month; year 1 or 9999 off UTC
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None


def _parse_time(text: str, kind: str) -> datetime:
    try:
        if kind == "clf":
            return parse_clf_time(text)
        if kind == "iso":
            parsed = datetime.fromisoformat(text)
            # Without an offset the time is taken as UTC (as the contract does), never as this host's zone.
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError) as err:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


def _is_method(token: str) -> bool:
    """An HTTP method as nginx accepts it: letters, '_' and '-' (``GET``, ``M-SEARCH``)."""
    return (token.isascii() and token.isalpha()) or _METHOD.fullmatch(token) is not None


def _split_request(request: str) -> tuple[str | None, str | None, str | None, str | None]:
    """``GET /a?b HTTP/1.1`` -> (method, path, query, protocol); all None for anything else."""
    parts = request.split(" ")
    if len(parts) == 3 and parts[2].startswith("HTTP/") and _is_method(parts[0]):
        method, target, protocol = parts
    elif len(parts) == 2 and parts[1].startswith("/") and _is_method(parts[0]):
        method, target, protocol = parts[0], parts[1], None  # HTTP/0.9 style
    else:
        return None, None, None, None
    path, sep, query = target.partition("?")
    return method, path, query if sep else None, protocol


def _address_list(text: str | None) -> list[str]:
    if not text or text == "-":
        return []
    return [part for part in (p.strip() for p in text.split(",")) if part and part != "-"]


def _split_head(head: str) -> tuple[str | None, str | None, list[str]]:
    """The text before ident and user -> (vhost, client, forwarded_for).

    Shapes: ``client``; ``vhost client``; ``a, b, client`` (``$proxy_add_x_forwarded_for``: the
    X-Forwarded-For list, then the peer); ``a, b client`` and ``"a, b" client`` (the list, then
    ``$remote_addr``); each optionally after ``vhost ``. The client is always the last address and
    ``forwarded_for`` holds the addresses before it, never the client itself.
    """
    head = head.strip()
    if '"' in head:
        before, _, inside = head.partition('"')
        quoted, closed, client = inside.partition('"')
        before, client = before.strip(), client.strip()
        if closed and " " not in before and client and not any(c in client for c in ' ",'):
            return _dash(before or None), _dash(client), _address_list(quoted)
        raise RecordRejected(
            ErrorType.UNPARSEABLE_LINE, f"unexpected text before the client: {head!r}"
        )
    tokens = _LIST_SEPARATOR.sub(",", head).split()
    vhost: str | None = None
    if len(tokens) == 3 or (len(tokens) == 2 and "," not in tokens[0]):
        vhost = _dash(tokens.pop(0))
    if len(tokens) == 1 and "," not in tokens[0]:
        return vhost, _dash(tokens[0]), []
    if len(tokens) == 1:  # a, b, client
        listed = _address_list(tokens[0])
        return vhost, listed[-1] if listed else None, listed[:-1]
    if len(tokens) == 2 and "," not in tokens[1]:  # a, b client
        return vhost, _dash(tokens[1]), _address_list(tokens[0])
    raise RecordRejected(ErrorType.UNPARSEABLE_LINE, f"unexpected text before the client: {head!r}")


def _auto_fields(match: re.Match[str]) -> dict[str, Any]:
    fields: dict[str, Any] = match.groupdict()
    head = fields["client_ip"]
    if " " in head or "," in head or '"' in head:
        vhost, fields["client_ip"], listed = _split_head(head)
        if vhost is not None:
            fields["vhost"] = vhost
    else:
        listed = []
        if head == "-":
            fields["client_ip"] = None
    if fields["remote_user"] == "-":
        fields["remote_user"] = None
    fields["event_time"] = parse_clf_time(fields["event_time"])
    if fields["method"] is None:
        fields["method"], fields["path"], fields["query"], fields["protocol"] = _split_request(
            fields["request"]
        )
    if fields["bytes_sent"] == "-":
        fields["bytes_sent"] = None
    referer = fields["referer"]
    if referer == "-" or referer == "":
        fields["referer"] = None
    agent = fields["user_agent"]
    if agent == "-" or agent == "":
        fields["user_agent"] = None
    forwarded = fields["forwarded_for"]
    trailing = fields.pop("trailing")
    fields["forwarded_for"] = listed
    if forwarded:
        addresses = _address_list(forwarded)
        if not all(_ADDRESS.fullmatch(a) for a in addresses):
            # A third quoted field that is no address list ($gzip_ratio, ...) is not X-Forwarded-For.
            fields["extra"] = {"trailing": match.string[match.start("forwarded_for") - 1 :].strip()}
            return fields
        if not listed:
            fields["forwarded_for"] = addresses
    if trailing:
        if _REQUEST_TIME.fullmatch(trailing):
            fields["request_time"] = trailing
        else:
            fields["extra"] = {"trailing": trailing}
    return fields


_REQUEST_PARTS = ("method", "path", "query", "protocol")

# How a log_format variable's value becomes part of a record.
_AS_IS, _DASH_IS_NONE, _TIME, _LIST, _URI, _EXTRA = range(6)


def _how(variable: str) -> tuple[int, str]:
    """(how, target): what to do with the value of ``variable`` and which field or extra key it sets."""
    field = FIELD_OF_VARIABLE.get(variable)
    if field is None:
        return _EXTRA, variable
    if field == "event_time":
        return _TIME, field
    if field == "forwarded_for":
        return _LIST, field
    if field == "request_uri":
        return _URI, "path"
    if field == "request":
        return _AS_IS, field
    return _DASH_IS_NONE, field


class _Format(NamedTuple):
    """A compiled log_format. Its regex names a group after the field it fills where the value is used
    as logged (or '-' -> None): ``groupdict()`` then builds most of a record in one step."""

    regex: re.Pattern[str]
    variables: list[str]
    dash_fields: tuple[str, ...]
    """Groups named after a field, where '-' and '' become None."""
    special: tuple[tuple[int, str, str, str], ...]
    """(how, group, target, time kind) of every other variable, in the order of the format."""
    has_client: bool
    """The format has ``$remote_addr``; without it every record's ``client_ip`` is None."""
    has_request: bool
    """The format has ``$request``: method, path, query and protocol not logged apart come from it."""
    regex_splits_request: bool
    """The regex splits ``$request`` into method, path, query and protocol where it can."""


def _compile(log_format: str) -> _Format:
    """Compile an nginx ``log_format`` string: each variable matches up to the next literal character."""
    pieces = _VARIABLE.split(log_format)
    # split() alternates literal, variable, literal, ...
    literals, variables = pieces[0::2], [v.strip("{}") for v in pieces[1::2]]
    if not variables:
        raise LogFormatError(f"log format {log_format!r} has no $variables")
    for before in literals[1:-1]:
        if before == "":
            raise LogFormatError(
                f"log format {log_format!r}: two variables with nothing between them cannot be split"
            )
    targets = [_how(variable)[1] for variable in variables]
    if "event_time" not in targets:
        raise LogFormatError(
            f"log format {log_format!r} has no time ($time_local, $time_iso8601 or $msec)"
        )
    if "status" not in targets:
        raise LogFormatError(f"log format {log_format!r} has no $status")
    # The request line is split by the regex when nothing else fills method, path, query or protocol.
    split_in_regex = targets.count("request") == 1 and not set(_REQUEST_PARTS).intersection(targets)
    pattern = [re.escape(literals[0])]
    dash_fields: list[str] = []
    special: list[tuple[int, str, str, str]] = []
    named: set[str] = set()
    for index, variable in enumerate(variables):
        how, target = _how(variable)
        if how in (_AS_IS, _DASH_IS_NONE) and target not in named:
            group = target
            named.add(target)
            if how == _DASH_IS_NONE:
                dash_fields.append(target)
        else:
            group = f"_{index}"
            special.append((how, group, target, _TIME_FORMAT_OF_VARIABLE.get(variable, "")))
        following = literals[index + 1]
        preceding = literals[index]
        quoted = bool(following) and preceding.endswith('"') and following.startswith('"')
        if variable in _PATTERN_OF_VARIABLE:
            value = _PATTERN_OF_VARIABLE[variable]
        elif quoted:
            value = _REQUEST_PATTERN if group == "request" and split_in_regex else _QUOTED
        elif following:
            value = f"[^{re.escape(following[0])}]*"
        else:
            value = ".*?"
        if group == "request" and value != _REQUEST_PATTERN:
            split_in_regex = False
        pattern.append(f"(?P<{group}>{value})")
        pattern.append(re.escape(following))
    pattern.append(r"\s*$")
    try:
        regex = re.compile("".join(pattern), re.ASCII)
    except re.error as err:  # pragma: no cover - escape() makes this unreachable in practice
        raise LogFormatError(f"log format {log_format!r}: {err}") from err
    return _Format(
        regex,
        variables,
        tuple(dash_fields),
        tuple(special),
        "client_ip" in named,
        "request" in named,
        split_in_regex,
    )


class LogParser:
    """A log format compiled once; ``parse_line`` turns one line into a record."""

    def __init__(self, spec: str = "auto") -> None:
        self.spec = spec
        self._mismatch = f"line does not match log format {spec!r}"
        self._fields: Callable[[re.Match[str]], dict[str, Any]]
        if spec == "auto":
            self._regex = _AUTO
            self._fields = _auto_fields
            return
        self._format = _compile(NAMED_FORMATS.get(spec, spec))
        self._regex = self._format.regex
        self._fields = self._custom_fields

    def _custom_fields(self, match: re.Match[str]) -> dict[str, Any]:
        fields: dict[str, Any] = match.groupdict()
        compiled = self._format
        for name in compiled.dash_fields:
            value = fields[name]
            if value == "-" or value == "":
                fields[name] = None
        extra: dict[str, str] = {}
        for how, group, target, time_kind in compiled.special:
            value = fields.pop(group)
            if how == _TIME:
                fields[target] = _parse_time(value, time_kind)
            elif how == _DASH_IS_NONE:
                fields[target] = None if value == "-" or value == "" else value
            elif how == _AS_IS:
                fields[target] = value
            elif how == _LIST:
                fields[target] = _address_list(value)
            elif how == _URI:
                if value != "-" and value != "":
                    path, sep, query = value.partition("?")
                    if fields.get("path") is None:
                        fields["path"] = path
                    if sep and fields.get("query") is None:
                        fields["query"] = query
            elif value != "-" and value != "":
                extra[target] = value
        if extra:
            fields["extra"] = extra
        if not compiled.has_client:
            fields["client_ip"] = None
        request = fields["request"] if compiled.has_request else None
        if request is None:
            pass
        elif not compiled.regex_splits_request:
            for key, part in zip(_REQUEST_PARTS, _split_request(request), strict=True):
                if part is not None and fields.get(key) is None:
                    fields[key] = part
        elif fields["method"] is None:  # the regex did not split it (HTTP/0.9, garbage, '-')
            fields["method"], fields["path"], fields["query"], fields["protocol"] = _split_request(
                request
            )
        return fields

    def parse_line(self, line: str, context: dict[str, Any] | None = None) -> WebAccessLog:
        """One line (without or with its line break) -> a record.

        Raises ``RecordRejected`` or pydantic's ``ValidationError``; ``parse_batch`` turns both into
        dead letters.
        """
        match = self._regex.match(line)
        if match is None:
            raise RecordRejected(ErrorType.UNPARSEABLE_LINE, self._mismatch)
        return _validate(self._fields(match), context=context)

    def parse_raw(
        self, raw: bytes | str, context: dict[str, Any] | None = None
    ) -> WebAccessLog | Rejection | None:
        """One raw line -> its record, its rejection, or ``None`` for a blank line. Never raises for
        bad input. ``context``: the contracts' validation context (``TimeHorizon.context``)."""
        try:
            if type(raw) is bytes and len(raw) <= MAX_LINE_BYTES:  # the common case, inline
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise RecordRejected(ErrorType.INVALID_ENCODING, f"not UTF-8: {err}") from None
            else:
                line = _text(raw)
            match = self._regex.match(line)
            if match is None:
                if is_blank(line):  # no format matches a blank line: it needs $status
                    return None
                return Rejection(ErrorType.UNPARSEABLE_LINE, self._mismatch, _letter_raw(raw))
            return _validate(self._fields(match), context=context)
        except RecordRejected as rejected:
            return Rejection(rejected.error_type, rejected.message, _letter_raw(raw))
        except ValidationError as err:
            error_type, message = describe_validation_error(err)
            return Rejection(error_type, message, _letter_raw(raw))

    def parse_batch(
        self,
        lines: Iterable[bytes | str],
        *,
        stage: Stage = STAGE,
        horizon: TimeHorizon = DEFAULT_HORIZON,
        now: datetime | None = None,
        max_dead_letters: int = MAX_DEAD_LETTERS,
    ) -> BatchResult[WebAccessLog]:
        """Parse a batch of lines. Never raises for bad input; blank lines are skipped and counted.

        ``horizon`` and ``now`` bound event times (``now`` defaults to the time of the call);
        ``max_dead_letters`` caps the dead letters built one by one (``CappedDeadLetters``). Their
        defaults are ``CoreSettings``' own.
        """
        result: BatchResult[WebAccessLog] = BatchResult()
        letters = CappedDeadLetters(Source.WEBLOG, stage, max_dead_letters)
        context = horizon.context(now)
        valid, parse = result.valid, self.parse_raw
        skipped = 0
        for raw in lines:
            outcome = parse(raw, context)
            if outcome is None:
                skipped += 1
            elif type(outcome) is Rejection:
                letters.add(outcome)
            else:
                valid.append(outcome)  # type: ignore[arg-type]
        result.skipped = skipped
        letters.finish(result)
        return result


# ``WebAccessLog.model_validate`` without its per-call keyword handling: the same validation.
_validate: Callable[..., WebAccessLog] = WebAccessLog.__pydantic_validator__.validate_python


def _text(raw: bytes | str) -> str:
    """A raw line as text; refuses over-long lines and anything that is not UTF-8."""
    if isinstance(raw, str):
        size = len(raw)
        if size > MAX_LINE_BYTES // 4 and not raw.isascii():  # up to 4 bytes per character
            size = len(_as_bytes(raw))
        if size > MAX_LINE_BYTES:
            raise RecordRejected(ErrorType.TOO_LARGE, f"line of {size} bytes > {MAX_LINE_BYTES}")
        if not raw.isascii():
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError as err:  # lone surrogates, e.g. from a surrogateescape decode
                raise RecordRejected(ErrorType.INVALID_ENCODING, f"not UTF-8: {err}") from None
        return raw
    if len(raw) > MAX_LINE_BYTES:
        raise RecordRejected(ErrorType.TOO_LARGE, f"line of {len(raw)} bytes > {MAX_LINE_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordRejected(ErrorType.INVALID_ENCODING, f"not UTF-8: {err}") from None


def _as_bytes(text: str) -> bytes:
    """Text back to its bytes: surrogate escapes become the bytes they stand for; other lone
    surrogates (which no UTF-8 text holds) are written as UTF-8 would, had it allowed them."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _letter_raw(raw: bytes | str) -> bytes | str:
    """What a dead letter keeps: text as is, unless it holds surrogates UTF-8 cannot carry."""
    if isinstance(raw, str) and not raw.isascii():
        try:
            raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return raw.encode("utf-8", "surrogatepass")
    return raw


def parse_weblog_batch(
    lines: Iterable[bytes | str], log_format: str = "auto", *, stage: Stage = STAGE
) -> BatchResult[WebAccessLog]:
    """Convenience: compile ``log_format`` and parse ``lines`` (compile once yourself on hot paths)."""
    return LogParser(log_format).parse_batch(lines, stage=stage)
