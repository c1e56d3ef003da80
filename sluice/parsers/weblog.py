"""Web server access-log parser: nginx log lines in, normalized ``WebAccessLog`` records out.

In: a batch of raw lines (bytes or str, with or without the trailing newline) and a log format.
Out: ``BatchResult[WebAccessLog]``.
Dead letters: invalid UTF-8 (``invalid_encoding``), a line the format does not match
(``unparseable_line``), an unusable time (``invalid_timestamp``), a value the contract refuses
(``schema_violation``), an over-long line (``too_large``).

Formats:
- ``auto`` (default): nginx ``combined``, optionally followed by ``"$http_x_forwarded_for"`` (``main``)
  and any further fields; a virtual-host prefix (``host[:port] ``); a client list
  (``a, b, c`` or quoted) in place of ``$remote_addr``; IPv6 clients; empty ``""`` requests.
- ``combined`` and ``main``: nginx's own definitions.
- any nginx ``log_format`` string, e.g. ``'$remote_addr - $remote_user [$time_local] "$request" ...'``,
  compiled once into one regular expression.
Values are kept as logged: ``\\xNN`` escapes and percent-encoding are not decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError

from sluice.contracts import ErrorType, Source, WebAccessLog
from sluice.deadletters import BatchResult, dead_letter, describe_validation_error
from sluice.errors import LogFormatError, RecordRejected

MAX_LINE_BYTES = 64 * 1024
STAGE = "parse"

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

_QUOTED = r'(?:[^"\\]|\\.)*'
_AUTO = re.compile(
    r"^(?P<head>.*?) (?P<ident>\S+) (?P<remote_user>\S+) \[(?P<time>[^\]]+)\] "
    rf'"(?P<request>{_QUOTED})" (?P<status>\d{{3}}) (?P<bytes_sent>\d+|-)'
    rf'(?: "(?P<referer>{_QUOTED})" "(?P<user_agent>{_QUOTED})")?'
    rf'(?: "(?P<forwarded_for>{_QUOTED})")?'
    r"(?: (?P<trailing>.*?))?\s*$"
)
_VARIABLE = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_REQUEST_TIME = re.compile(r"^\d+\.\d+$")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_CLF_TIME = re.compile(r"^(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$")
_TZ_CACHE: dict[str, timezone] = {}


_CLF_CACHE: dict[str, datetime] = {}
_CLF_CACHE_SIZE = 4096


def parse_clf_time(text: str) -> datetime:
    """``22/Jan/2019:03:56:14 +0330`` -> aware UTC datetime.

    Consecutive lines mostly share their second, so parsed times are cached (bounded).
    """
    cached = _CLF_CACHE.get(text)
    if cached is not None:
        return cached
    parsed = _parse_clf_time(text)
    if len(_CLF_CACHE) >= _CLF_CACHE_SIZE:
        _CLF_CACHE.clear()
    _CLF_CACHE[text] = parsed
    return parsed


def _parse_clf_time(text: str) -> datetime:
    match = _CLF_TIME.match(text)
    if match is None or match.group(2) not in _MONTHS:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"not an nginx time_local: {text!r}")
    day, month, year, hh, mm, ss, sign, oh, om = match.groups()
    offset = text[-5:]
    tz = _TZ_CACHE.get(offset)
    if tz is None:
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = _TZ_CACHE.setdefault(offset, timezone(-delta if sign == "-" else delta))
    try:
        local = datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError as err:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None
    return local.astimezone(UTC)


def _parse_time(text: str, kind: str) -> datetime:
    try:
        if kind == "clf":
            return parse_clf_time(text)
        if kind == "iso":
            return datetime.fromisoformat(text).astimezone(UTC)
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError) as err:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{text!r}: {err}") from None


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


def _split_request(request: str) -> dict[str, str | None]:
    parts = request.split(" ")
    if len(parts) == 3 and parts[0].isalpha() and parts[2].startswith("HTTP/"):
        method, target, protocol = parts
    elif len(parts) == 2 and parts[0].isalpha() and parts[1].startswith("/"):
        method, target, protocol = parts[0], parts[1], None  # HTTP/0.9 style
    else:
        return {"method": None, "path": None, "query": None, "protocol": None}
    path, sep, query = target.partition("?")
    return {"method": method, "path": path, "query": query if sep else None, "protocol": protocol}


def _address_list(text: str | None) -> list[str]:
    if not text or text == "-":
        return []
    return [part.strip() for part in text.split(",") if part.strip() and part.strip() != "-"]


def _split_head(head: str) -> tuple[str | None, str | None, list[str]]:
    """The text before ident/user: ``[vhost ]client``, a client list, or ``"list" client``."""
    head = head.strip()
    if head.startswith('"'):
        quoted, _, rest = head[1:].partition('"')
        return None, rest.strip() or None, _address_list(quoted)
    if "," in head:
        listed = _address_list(head.replace(", ", ","))
        last = listed[-1].split(" ") if listed else []
        if len(last) == 2:  # "a, b c": a list, then the client
            return None, last[1], [*listed[:-1], last[0]]
        return None, listed[-1] if listed else None, listed
    tokens = head.split(" ")
    if len(tokens) == 1:
        return None, tokens[0], []
    if len(tokens) == 2:
        return tokens[0], tokens[1], []
    raise RecordRejected(ErrorType.UNPARSEABLE_LINE, f"unexpected text before the client: {head!r}")


def _auto_fields(match: re.Match[str]) -> dict[str, Any]:
    groups = match.groupdict()
    vhost, client, listed = _split_head(groups["head"])
    fields: dict[str, Any] = {
        "vhost": vhost,
        "client_ip": _dash(client),
        "remote_user": _dash(groups["remote_user"]),
        "event_time": parse_clf_time(groups["time"]),
        "request": groups["request"],
        "status": groups["status"],
        "bytes_sent": _dash(groups["bytes_sent"]),
        "referer": _dash(groups["referer"]) or None,
        "user_agent": _dash(groups["user_agent"]) or None,
        "forwarded_for": listed or _address_list(groups["forwarded_for"]),
    }
    trailing = groups["trailing"]
    if trailing:
        if _REQUEST_TIME.match(trailing):
            fields["request_time"] = trailing
        else:
            fields["extra"] = {"trailing": trailing}
    return fields


class LogParser:
    """A log format compiled once; ``parse_line`` turns one line into contract fields."""

    def __init__(self, spec: str = "auto") -> None:
        self.spec = spec
        self._fields: Callable[[re.Match[str]], dict[str, Any]]
        if spec == "auto":
            self._regex = _AUTO
            self._fields = _auto_fields
            return
        log_format = NAMED_FORMATS.get(spec, spec)
        self._regex, self._variables = _compile(log_format)
        self._fields = self._custom_fields

    def _custom_fields(self, match: re.Match[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for variable, value in zip(self._variables, match.groups(), strict=True):
            field = FIELD_OF_VARIABLE.get(variable)
            if field is None:
                if value not in ("", "-"):
                    extra[variable] = value
            elif field == "event_time":
                fields[field] = _parse_time(value, _TIME_FORMAT_OF_VARIABLE[variable])
            elif field == "forwarded_for":
                fields[field] = _address_list(value)
            elif field == "request_uri":
                path, sep, query = value.partition("?")
                fields.setdefault("path", path)
                if sep:
                    fields.setdefault("query", query)
            else:
                fields[field] = None if value in ("-", "") and field != "request" else value
        if extra:
            fields["extra"] = extra
        if "event_time" not in fields:
            raise RecordRejected(ErrorType.MISSING_FIELD, "the log format has no time variable")
        return fields

    def parse_line(self, line: str) -> WebAccessLog:
        match = self._regex.match(line.rstrip("\r\n"))
        if match is None:
            raise RecordRejected(ErrorType.UNPARSEABLE_LINE, f"line does not match log format {self.spec!r}")
        fields = self._fields(match)
        request = fields.get("request")
        if request is not None:
            for key, value in _split_request(request).items():
                if fields.get(key) is None:
                    fields[key] = value
        if request is None and fields.get("method") is None:
            fields.pop("request", None)
        return WebAccessLog.model_validate(fields)

    def parse_batch(self, lines: Iterable[bytes | str], *, stage: str = STAGE) -> BatchResult[WebAccessLog]:
        """Parse a batch of lines. Never raises for bad input; blank lines are skipped, not rejected."""
        result: BatchResult[WebAccessLog] = BatchResult()
        for raw in lines:
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise RecordRejected(
                        ErrorType.TOO_LARGE, f"line of {len(raw)} bytes > {MAX_LINE_BYTES}"
                    )
                try:
                    line = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
                except UnicodeDecodeError as err:
                    raise RecordRejected(ErrorType.INVALID_ENCODING, f"not UTF-8: {err}") from None
                if not line.strip():
                    continue
                result.valid.append(self.parse_line(line))
            except RecordRejected as rejected:
                result.dead_letters.append(
                    dead_letter(Source.WEBLOG, stage, rejected.error_type, rejected.message, raw)
                )
            except ValidationError as err:
                error_type, message = describe_validation_error(err)
                result.dead_letters.append(dead_letter(Source.WEBLOG, stage, error_type, message, raw))
        return result


def _compile(log_format: str) -> tuple[re.Pattern[str], list[str]]:
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
    pattern = ["^", re.escape(literals[0])]
    for index, variable in enumerate(variables):
        following = literals[index + 1]
        preceding = literals[index]
        if following and preceding.endswith('"') and following.startswith('"'):
            pattern.append(f"({_QUOTED})")
        elif following:
            pattern.append(f"([^{re.escape(following[0])}]*)")
        else:
            pattern.append("(.*?)")
        pattern.append(re.escape(following))
    pattern.append(r"\s*$")
    try:
        return re.compile("".join(pattern)), variables
    except re.error as err:  # pragma: no cover - escape() makes this unreachable in practice
        raise LogFormatError(f"log format {log_format!r}: {err}") from err


def parse_weblog_batch(
    lines: Iterable[bytes | str], log_format: str = "auto", *, stage: str = STAGE
) -> BatchResult[WebAccessLog]:
    """Convenience: compile ``log_format`` and parse ``lines`` (compile once yourself on hot paths)."""
    return LogParser(log_format).parse_batch(lines, stage=stage)
