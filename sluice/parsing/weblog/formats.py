"""Format compilation: an nginx ``log_format`` (or ``auto``) to what matches a line and names its values.

In: a format spec: ``auto``, ``combined``, ``main``, or the arguments of an nginx ``log_format``
directive after its name, optionally starting with ``escape=default|json|none``.
Out: a ``CompiledFormat``: a regular expression whose groups are named after contract fields (so
``groupdict()`` is most of a record), or, for a JSON-shaped format (``{...}``), a template saying
which key of the decoded line holds which variables; plus how every other variable becomes a field.
Errors: ``LogFormatError`` for a format no line could be parsed with.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple

from sluice.core.errors import LogFormatError

__all__ = [
    "AUTO",
    "FIELD_OF_VARIABLE",
    "NAMED_FORMATS",
    "QUOTED",
    "REQUEST_PARTS",
    "CompiledFormat",
    "JsonLeaf",
    "compile_format",
    "plain_regex",
]

Escape = Literal["default", "json", "none"]

NAMED_FORMATS = {
    "combined": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"',
    "main": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"',
}

# nginx variable -> contract field. Variables not listed land in ``extra`` under their own name
# ($http_*, $cookie_*, $arg_*, $sent_http_*, $request_id, ...).
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
    "bytes_sent": "response_bytes",
    "request_length": "request_length",
    "http_referer": "referer",
    "http_user_agent": "user_agent",
    "http_x_forwarded_for": "forwarded_for",
    "request_time": "request_time",
    "host": "vhost",
    "http_host": "vhost",
    "server_name": "vhost",
    "server_port": "server_port",
    "ssl_protocol": "ssl_protocol",
    "upstream_addr": "upstream_addr",
    "upstream_status": "upstream_status",
    "upstream_response_time": "upstream_response_time",
    "upstream_connect_time": "upstream_connect_time",
    "upstream_header_time": "upstream_header_time",
}
_TIME_FORMAT_OF_VARIABLE = {"time_local": "clf", "time_iso8601": "iso", "msec": "epoch"}
_UPSTREAM_FIELDS = frozenset(
    ("upstream_addr", "upstream_status", "upstream_response_time", "upstream_connect_time",
     "upstream_header_time")
)  # fmt: skip

# A double-quoted value. nginx escapes '"' and '\' as \x22 and \x5C, Apache as \" and \\: both are read.
# Written as an unrolled loop (no alternation per character), which keeps matching linear and fast.
QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
# One token of the free-form text after the known fields: no blanks, quoted parts allowed inside
# (``rt=0.012``, ``uct="0.000"``, ``"-"``), but never an unclosed quote: a line cut in the middle of a
# quoted field does not match.
_TOKEN = rf'(?:[^\s"]|"{QUOTED}")+'
# A request line nginx could parse, ``METHOD target HTTP/x``, split inside the line's regular expression
# (anything else - HTTP/0.9 ``GET /``, TLS bytes, ``-`` - is split by ``split_request``).
# Blanks end each part; ``\X`` escape pairs are kept whole (``\?`` and ``\ `` leave it to split_request).
_PATH_CHARS = r'[^ ?"\\]*(?:\\[^ ?][^ ?"\\]*)*'
_PART_CHARS = r'[^ "\\]*(?:\\[^ ][^ "\\]*)*'
_REQUEST_PATTERN = (
    rf"(?P<method>[A-Za-z][A-Za-z_-]*) (?P<path>{_PATH_CHARS})(?:\?(?P<query>{_PART_CHARS}))?"
    rf' (?P<protocol>HTTP/{_PART_CHARS})(?=")|{QUOTED}'
)
# The same sub-patterns for a line that holds no backslash (the bulk path's lines): every branch that
# reads an escape pair needs a backslash, so on such a line these match the same text, group for
# group, with less work per field (the escape loop's failed tries are left out).
_PLAIN_OF = {QUOTED: '[^"]*', _PATH_CHARS: '[^ ?"]*', _PART_CHARS: '[^ "]*'}
_ESCAPE_AWARE = re.compile("|".join(map(re.escape, _PLAIN_OF)))
# Groups are named after the contract's fields, so ``groupdict()`` is most of a record already.
AUTO = re.compile(
    r"(?P<client_ip>.*?) \S+ (?P<remote_user>\S+) \[(?P<event_time>[^[\]]{1,64})\] "
    rf'"(?P<request>{_REQUEST_PATTERN})" (?P<status>\d{{3}}) (?P<bytes_sent>\d+|-)'
    rf'(?: "(?P<referer>{QUOTED})" "(?P<user_agent>{QUOTED})")?'
    rf'(?: "(?P<forwarded_for>{QUOTED})")?(?:\s+(?P<trailing>{_TOKEN}(?:\s+{_TOKEN})*))?'
    r"\s*$",
    re.ASCII,
)
_VARIABLE = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_ESCAPE_OPTION = re.compile(r"\s*escape=(\S*)\s+")
# Sub-patterns of variables whose values have a fixed shape (some hold blanks or colons); any other
# variable matches up to the next literal character of the format.
_NUMBER_OR_DASH = r"\d+|-"
_UPSTREAM = r"[^\s,]+(?:(?:, | : )[^\s,]+)*"
_HOST = r"\[[0-9A-Fa-f:.]*\](?::\d+)?|"  # an IPv6 host in brackets ([::1], [::1]:8080), or ...
_PATTERN_OF_VARIABLE = {
    "status": r"\d{3}",
    "body_bytes_sent": _NUMBER_OR_DASH,
    "bytes_sent": _NUMBER_OR_DASH,
    "request_length": _NUMBER_OR_DASH,
    "server_port": _NUMBER_OR_DASH,
    **{name: _UPSTREAM for name in _UPSTREAM_FIELDS},
}
_HOST_VARIABLES = frozenset(("host", "http_host", "server_name"))

REQUEST_PARTS = ("method", "path", "query", "protocol")

# How a log_format variable's value becomes part of a record.
AS_IS, DASH_IS_NONE, TIME, LIST, URI, EXTRA, UPSTREAM = range(7)


def _how(variable: str) -> tuple[int, str]:
    """(how, target): what to do with the value of ``variable`` and which field or extra key it sets."""
    field = FIELD_OF_VARIABLE.get(variable)
    if field is None:
        return EXTRA, variable
    if field == "event_time":
        return TIME, field
    if field == "forwarded_for":
        return LIST, field
    if field in _UPSTREAM_FIELDS:
        return UPSTREAM, field
    if field == "request_uri":
        return URI, "path"
    if field == "request":
        return AS_IS, field
    return DASH_IS_NONE, field


class JsonLeaf(NamedTuple):
    """One value of a JSON-shaped format: where it is and what it holds."""

    path: tuple[str | int, ...]
    """Keys (and list indexes) from the top object to the value."""
    group: str | None
    """The one group the value fills when it is exactly one variable; else None and ``regex``."""
    regex: re.Pattern[str] | None
    """Splits a value of several variables and literals (``"$request_method $uri"``)."""


class CompiledFormat(NamedTuple):
    """A compiled log_format. Its regex (or JSON template) names a group after the field it fills
    where the value is used as logged (or '-' -> None)."""

    escape: Escape
    regex: re.Pattern[str] | None
    """The line's regular expression; None for a JSON-shaped format."""
    json_leaves: tuple[JsonLeaf, ...]
    """A JSON-shaped format's values (``regex`` is None)."""
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
    bytes_from_total: bool
    """No ``$body_bytes_sent`` but ``$bytes_sent``: ``bytes_sent`` takes its value too."""


class _Plan(NamedTuple):
    groups: list[str]
    dash_fields: list[str]
    special: list[tuple[int, str, str, str]]
    named: set[str]


def _plan(variables: list[str]) -> _Plan:
    """The group of every variable: a field's own name the first time a plain field is set, else
    ``_<index>`` with an entry in ``special`` saying how its value becomes a field."""
    groups: list[str] = []
    dash_fields: list[str] = []
    special: list[tuple[int, str, str, str]] = []
    named: set[str] = set()
    for index, variable in enumerate(variables):
        how, target = _how(variable)
        if how in (AS_IS, DASH_IS_NONE) and target not in named:
            group = target
            named.add(target)
            if how == DASH_IS_NONE:
                dash_fields.append(target)
        else:
            group = f"_{index}"
            special.append((how, group, target, _TIME_FORMAT_OF_VARIABLE.get(variable, "")))
        groups.append(group)
    return _Plan(groups, dash_fields, special, named)


def _value_pattern(variable: str, preceding: str, following: str, escape: Escape) -> str:
    quoted = bool(following) and preceding.endswith('"') and following.startswith('"')
    if variable in _PATTERN_OF_VARIABLE:
        return _PATTERN_OF_VARIABLE[variable]
    if (
        variable == "time_local" and following[:1] == " "
    ):  # unbracketed: "01/Dec/2026:12:00:00 +0000"
        return r"\S+ \S+?"
    if quoted:
        return ".*?" if escape == "none" else QUOTED
    tail = f"[^{re.escape(following[0])}]*" if following else ".*?"
    return _HOST + tail if variable in _HOST_VARIABLES else tail


def _split_variables(text: str) -> tuple[list[str], list[str]]:
    pieces = _VARIABLE.split(text)
    # split() alternates literal, variable, literal, ...
    return pieces[0::2], [v.strip("{}") for v in pieces[1::2]]


def _check(log_format: str, literals: list[str], variables: list[str]) -> None:
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


def _regex(pattern: list[str], log_format: str) -> re.Pattern[str]:
    try:
        return re.compile("".join(pattern), re.ASCII)
    except re.error as err:  # pragma: no cover - escape() makes this unreachable in practice
        raise LogFormatError(f"log format {log_format!r}: {err}") from err


def plain_regex(regex: re.Pattern[str]) -> re.Pattern[str]:
    """``regex`` for lines without a backslash: the same matches and groups on such a line, faster.

    The escape-aware sub-patterns (``QUOTED`` and the request line's parts) become their
    backslash-free forms. Nothing else in a compiled pattern can hold them: literals are
    ``re.escape``d, so a ``[`` in one is always escaped."""
    return re.compile(_ESCAPE_AWARE.sub(lambda m: _PLAIN_OF[m.group()], regex.pattern), regex.flags)


def split_escape(spec: str) -> tuple[Escape, str]:
    """``escape=json {...}`` -> ("json", "{...}"): nginx's ``escape=`` parameter, if given first."""
    option = _ESCAPE_OPTION.match(spec)
    if option is None:
        return "default", spec
    value = option.group(1)
    if value not in ("default", "json", "none"):
        raise LogFormatError(f"log format escape={value!r}: expected default, json or none")
    escape: Escape = value  # type: ignore[assignment]
    return escape, spec[option.end() :]


def compile_format(spec: str) -> CompiledFormat:
    """Compile an nginx ``log_format`` string (or a named one), with an optional ``escape=``."""
    escape, log_format = split_escape(spec)
    log_format = NAMED_FORMATS.get(log_format, log_format)
    stripped = log_format.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        return _compile_json(stripped, escape)
    literals, variables = _split_variables(log_format)
    _check(log_format, literals, variables)
    plan = _plan(variables)
    targets = [_how(variable)[1] for variable in variables]
    # The request line is split by the regex when nothing else fills method, path, query or protocol.
    split_in_regex = (
        escape != "none"
        and targets.count("request") == 1
        and not set(REQUEST_PARTS).intersection(targets)
    )
    pattern = [re.escape(literals[0])]
    for index, variable in enumerate(variables):
        group = plan.groups[index]
        following = literals[index + 1]
        value = _value_pattern(variable, literals[index], following, escape)
        if group == "request" and value == QUOTED and split_in_regex:
            value = _REQUEST_PATTERN
        elif group == "request":
            split_in_regex = False
        pattern.append(f"(?P<{group}>{value})")
        pattern.append(re.escape(following))
    pattern.append(r"\s*$")
    return CompiledFormat(
        escape, _regex(pattern, log_format), (), tuple(plan.dash_fields), tuple(plan.special),
        "client_ip" in plan.named, "request" in plan.named, split_in_regex,
        "body_bytes_sent" not in variables and "bytes_sent" in variables,
    )  # fmt: skip


_PLACEHOLDER = re.compile("\x00([0-9]+)\x00")


def _template(log_format: str) -> tuple[str, list[str]]:
    """The format as JSON text with every variable a placeholder string (``"\\u0000<n>\\u0000"``
    inside a string, the same quoted where a variable stands bare, as in ``"status":$status``)."""
    out: list[str] = []
    variables: list[str] = []
    in_string = False
    index = 0
    while index < len(log_format):
        char = log_format[index]
        found = _VARIABLE.match(log_format, index) if char == "$" else None
        if found is not None:
            placeholder = f"\\u0000{len(variables)}\\u0000"
            variables.append(found.group(1).strip("{}"))
            out.append(placeholder if in_string else f'"{placeholder}"')
            index = found.end()
            continue
        if in_string and char == "\\":
            out.append(log_format[index : index + 2])
            index += 2
            continue
        if char == '"':
            in_string = not in_string
        out.append(char)
        index += 1
    return "".join(out), variables


def _leaves(node: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, (*path, i))]
    if isinstance(node, str) and "\x00" in node:
        return [(path, node)]
    return []


def _compile_json(log_format: str, escape: Escape) -> CompiledFormat:
    """A JSON-shaped format: each value's variables found by key, whatever the key order of a line."""
    text, variables = _template(log_format)
    try:
        template = json.loads(text)
    except json.JSONDecodeError as err:
        raise LogFormatError(
            f"log format {log_format!r} looks like JSON but is not: {err}"
        ) from None
    if not isinstance(template, dict):  # pragma: no cover - '{...}' decodes to an object
        raise LogFormatError(f"log format {log_format!r}: expected a JSON object")
    literals_all = [""] * (len(variables) + 1)  # JSON values never abut: only the checks below
    _check(log_format, literals_all[:1] + ["x"] * (len(variables) - 1) + [""], variables)
    plan = _plan(variables)
    leaves: list[JsonLeaf] = []
    for path, value in _leaves(template, ()):
        pieces = _PLACEHOLDER.split(value)
        literals, indexes = pieces[0::2], [int(i) for i in pieces[1::2]]
        if len(indexes) == 1 and literals == ["", ""]:
            leaves.append(JsonLeaf(path, plan.groups[indexes[0]], None))
            continue
        pattern = [re.escape(literals[0])]
        for position, index in enumerate(indexes):
            following = literals[position + 1]
            if following == "" and position + 1 < len(indexes):
                raise LogFormatError(
                    f"log format {log_format!r}: two variables with nothing between them cannot "
                    "be split"
                )
            sub = _value_pattern(variables[index], literals[position], following, "none")
            pattern.append(f"(?P<{plan.groups[index]}>{sub})")
            pattern.append(re.escape(following))
        leaves.append(JsonLeaf(path, None, re.compile("".join(pattern) + r"\Z", re.ASCII)))
    return CompiledFormat(
        escape, None, tuple(leaves), tuple(plan.dash_fields), tuple(plan.special),
        "client_ip" in plan.named, "request" in plan.named, False,
        "body_bytes_sent" not in variables and "bytes_sent" in variables,
    )  # fmt: skip
