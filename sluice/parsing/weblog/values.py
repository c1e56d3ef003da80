"""Field decoding: what nginx wrote back to what it received.

In: the text of one logged value (and, for whole records, the dict of values the format matched).
Out: decoded text, lists and splits; whether bytes had to be replaced.

- ``escape=default`` (nginx's default, and Apache's): ``"``, ``\\``, control characters and every
  byte outside printable ASCII are written as ``\\xNN``; Apache writes ``\\"`` and ``\\\\``. Both
  are decoded back to the bytes, which are read as UTF-8; a sequence that is not UTF-8 becomes
  U+FFFD and the record's ``invalid_utf8`` is set.
- ``escape=json`` and ``escape=none`` pass bytes above 0x7F through unchanged, so a line can hold
  bytes that are not UTF-8 (a raw 0xFF in a header): the line is read with those bytes kept
  (surrogate escapes), and each value replaces them with U+FFFD the same way.
- ``request`` stays the raw request line in nginx's default escaping (``\\xNN`` for ``"``, ``\\``,
  control and non-ASCII bytes), whatever the format's escaping: one lossless spelling of the bytes
  the client sent, the same for every format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "address_list",
    "canonical_request",
    "decode_escapes",
    "repair_fields",
    "split_request",
    "unescape",
    "upstream_list",
]

_ESCAPE = re.compile(rb'\\x([0-9A-Fa-f]{2})|\\(["\\])')
_METHOD = re.compile(r"[A-Za-z][A-Za-z_-]*", re.ASCII)
_UPSTREAM_SEPARATOR = re.compile(r"\s*[,:]\s+|\s+:\s*")
# Bytes nginx's default escaping writes as \xNN: '"', '\', control characters, DEL and above.
_NEEDS_ESCAPE = re.compile(rb'["\\\x00-\x1f\x7f-\xff]')
_SURROGATE = re.compile("[\udc80-\udcff]")


def _byte(match: re.Match[bytes]) -> bytes:
    hex_digits = match.group(1)
    return bytes((int(hex_digits, 16),)) if hex_digits is not None else match.group(2)


def _as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def unescape(text: str) -> tuple[str, bool]:
    """``\\xNN``, ``\\"`` and ``\\\\`` back to bytes, read as UTF-8: (text, whether any sequence was
    not UTF-8 and became U+FFFD). Other backslashes are kept as they are."""
    raw = _ESCAPE.sub(_byte, _as_bytes(text))
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def _repaired(text: str) -> str:
    """Text holding surrogate escapes (bytes that were not UTF-8) with each one as U+FFFD."""
    return _as_bytes(text).decode("utf-8", "replace")


def canonical_request(text: str) -> str:
    """The request line in nginx's default escaping: ``"``, ``\\``, control characters and bytes
    outside ASCII as ``\\xNN`` (bytes that were not UTF-8 included), the rest as it is."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _NEEDS_ESCAPE.sub(lambda m: b"\\x%02X" % m.group()[0], _as_bytes(text)).decode("ascii")


def _map_strings(value: Any, convert: Callable[[str], tuple[str, bool]]) -> tuple[Any, bool]:
    """``convert`` (text -> (text, replaced)) applied to a value, the items of a list or the values
    of a dict; whether any conversion replaced bytes."""
    if type(value) is str:
        return convert(value)
    if type(value) is list:
        replaced = False
        items = []
        for item in value:
            new, was = _map_strings(item, convert)
            items.append(new)
            replaced = replaced or was
        return items, replaced
    if type(value) is dict:
        replaced = False
        mapping = {}
        for key, item in value.items():
            new, was = _map_strings(item, convert)
            mapping[key] = new
            replaced = replaced or was
        return mapping, replaced
    return value, False


def _unescape_if_needed(text: str) -> tuple[str, bool]:
    return unescape(text) if "\\" in text else (text, False)


def _repair_if_needed(text: str) -> tuple[str, bool]:
    if text.isascii() or _SURROGATE.search(text) is None:
        return text, False
    return _repaired(text), True


def decode_escapes(fields: dict[str, Any]) -> bool:
    """Decode ``escape=default`` escapes in every value of ``fields`` but ``request`` (in place, a
    dict of the parser's own); whether any byte sequence was not UTF-8."""
    replaced = False
    for key, value in fields.items():
        if not value:
            continue
        if key == "request":  # kept as logged; its bytes still say whether the client sent UTF-8
            replaced = replaced or ("\\x" in value and unescape(value)[1])
            continue
        fields[key], was = _map_strings(value, _unescape_if_needed)
        replaced = replaced or was
    return replaced


def repair_fields(fields: dict[str, Any]) -> bool:
    """For ``escape=json``/``none``: bytes that were not UTF-8 become U+FFFD in every value, and the
    request line takes nginx's default escaping (in place); whether any byte was replaced."""
    replaced = False
    for key, value in fields.items():
        if not value:
            continue
        if key == "request":
            if type(value) is str:
                replaced = replaced or _SURROGATE.search(value) is not None
                fields[key] = canonical_request(value)
            continue
        fields[key], was = _map_strings(value, _repair_if_needed)
        replaced = replaced or was
    return replaced


def is_method(token: str) -> bool:
    """An HTTP method as nginx accepts it: letters, '_' and '-' (``GET``, ``M-SEARCH``)."""
    return (token.isascii() and token.isalpha()) or _METHOD.fullmatch(token) is not None


def split_request(request: str) -> tuple[str | None, str | None, str | None, str | None]:
    """``GET /a?b HTTP/1.1`` -> (method, path, query, protocol); all None for anything else."""
    parts = request.split(" ")
    if len(parts) == 3 and parts[2].startswith("HTTP/") and is_method(parts[0]):
        method, target, protocol = parts
    elif len(parts) == 2 and parts[1].startswith("/") and is_method(parts[0]):
        method, target, protocol = parts[0], parts[1], None  # HTTP/0.9 style
    else:
        return None, None, None, None
    path, sep, query = target.partition("?")
    return method, path, query if sep else None, protocol


def address_list(text: str | None) -> list[str]:
    """``a, b, c`` (X-Forwarded-For) -> its addresses; ``-`` and empty entries are left out."""
    if not text or text == "-":
        return []
    return [part for part in (p.strip() for p in text.split(",")) if part and part != "-"]


def upstream_list(text: str | None) -> list[str | None]:
    """An ``$upstream_*`` value -> one entry per upstream tried, in order.

    nginx separates the servers of one group by ``, `` and the groups of an internal redirect
    (``X-Accel-Redirect``, ``error_page``) by `` : ``: ``0.010, 0.002 : 0.004`` is three entries. A
    ``-`` entry (no time: the connection failed) is None; a value of ``-`` alone is no upstream.
    """
    if not text or text == "-":
        return []
    return [None if part == "-" else part for part in _UPSTREAM_SEPARATOR.split(text.strip())]
