"""The ``auto`` format: nginx ``combined`` and the shapes around it, told apart line by line.

In: a match of ``formats.AUTO``.
Out: the record's fields (values still as logged; ``values.decode_escapes`` decodes them).
Dead letters: ``unparseable_line`` for text before ident and user that is no client (list).
"""

from __future__ import annotations

import re
from typing import Any

from sluice.core.contracts import ErrorType
from sluice.core.errors import RecordRejected
from sluice.parsing.weblog.times import parse_clf_time
from sluice.parsing.weblog.values import address_list, split_request

__all__ = ["auto_fields"]

_REQUEST_TIME = re.compile(r"\d+\.\d+", re.ASCII)
# What an X-Forwarded-For entry looks like: IPv4[:port], IPv6 (bracketed, with a port, or not), 'unknown'.
_ADDRESS = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?|\[?[0-9a-f.]*:[0-9a-f:.]*(?:\]:\d{1,5}|\])?|unknown",
    re.ASCII | re.IGNORECASE,
)
_LIST_SEPARATOR = re.compile(r"\s*,\s*")


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


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
            return _dash(before or None), _dash(client), address_list(quoted)
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
        listed = address_list(tokens[0])
        return vhost, listed[-1] if listed else None, listed[:-1]
    if len(tokens) == 2 and "," not in tokens[1]:  # a, b client
        return vhost, _dash(tokens[1]), address_list(tokens[0])
    raise RecordRejected(ErrorType.UNPARSEABLE_LINE, f"unexpected text before the client: {head!r}")


def auto_fields(match: re.Match[str]) -> dict[str, Any]:
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
        fields["method"], fields["path"], fields["query"], fields["protocol"] = split_request(
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
        addresses = address_list(forwarded)
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
