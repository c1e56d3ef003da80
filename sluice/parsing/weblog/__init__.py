"""Web server access-log parser: nginx log lines in, normalized ``WebAccessLog`` records out.

In: a batch of raw lines (bytes or str, with or without the trailing newline) and a log format.
Out: ``BatchResult[WebAccessLog]``. Blank lines (empty or ASCII whitespace, within the size limit) are
skipped and counted (``skipped``), so valid + rejected + skipped = lines in. Never raises for bad input.
Dead letters: invalid UTF-8 in a format with nginx's default escaping (``invalid_encoding``: nginx
never writes raw bytes there), a line the format does not match, including a line cut inside a quoted
field or a JSON line missing a key (``unparseable_line``), an unusable time or one outside the
``TimeHorizon`` (``invalid_timestamp``), a value the contract refuses (``schema_violation``: a client
with control characters, a byte count beyond 64 bits, a non-finite request time), an over-long line
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
- any nginx ``log_format``, written as the directive's arguments after the name, with nginx's
  optional ``escape=default|json|none`` first: ``'escape=json {"time": "$time_iso8601", ...}'``. It
  must log a time and ``$status`` (the contract needs both). A format shaped as a JSON object
  (``{...}``, whatever its escaping) is read as JSON, by key; any other is compiled once into one
  regular expression. Every variable with a column of its own fills it (``FIELD_OF_VARIABLE``:
  ``$msec`` and ``$time_iso8601`` the event time, ``$request_length``, ``$bytes_sent``
  (``response_bytes``; also ``bytes_sent`` when the format has no ``$body_bytes_sent``),
  ``$server_port``, ``$ssl_protocol``, ``$host`` (IPv6 in brackets, ``[::1]:8080`` included), the
  ``$upstream_*`` lists as one entry per upstream tried (``0.010, 0.002 : 0.004``); the rest
  (``$http_*``, ``$cookie_*``, ``$arg_*``, ...) land in ``extra`` under their own names (``-`` and
  empty values are dropped).
Values are decoded back to what nginx received (``sluice.parsing.weblog.values``): ``\\xNN`` escapes
(and Apache's ``\\"``, ``\\\\``) become the bytes, read as UTF-8; bytes that are not UTF-8 (escaped, or
raw in ``escape=json``/``none`` lines) become U+FFFD and set the record's ``invalid_utf8``. The
``request`` column keeps the raw request line in nginx's default escaping, for every format.
Percent-encoding is not decoded; ``-`` (and an empty referer or user agent) becomes None. The request
line is split into method, path, query and protocol only when it has nginx's shape
(``METHOD target HTTP/x``, or ``METHOD /path``).

Batches (``LogParser.parse_many``, which ``parse_batch`` and the log edge use) take the bulk path of
``sluice.parsing.weblog.bulk`` where the format and the lines allow it, with exactly the outcomes of
``parse_raw`` line by line; its docstring says which formats and lines go line by line.
"""

from __future__ import annotations

from sluice.parsing.weblog.formats import FIELD_OF_VARIABLE, NAMED_FORMATS
from sluice.parsing.weblog.parser import MAX_LINE_BYTES, LogParser, parse_weblog_batch
from sluice.parsing.weblog.times import parse_clf_time

__all__ = [
    "FIELD_OF_VARIABLE",
    "MAX_LINE_BYTES",
    "NAMED_FORMATS",
    "LogParser",
    "parse_clf_time",
    "parse_weblog_batch",
]
