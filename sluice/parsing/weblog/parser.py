"""``LogParser``: one compiled format turning raw lines into records or rejections.

In: raw lines (bytes or str), a format spec (see ``sluice.parsing.weblog``).
Out: ``WebAccessLog`` records, ``Rejection``s, ``BatchResult`` for a batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
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
from sluice.core.errors import RecordRejected
from sluice.parsing.weblog.auto import auto_fields
from sluice.parsing.weblog.bulk import bulk_plan, plain_lines
from sluice.parsing.weblog.formats import (
    AS_IS,
    AUTO,
    DASH_IS_NONE,
    LIST,
    REQUEST_PARTS,
    TIME,
    UPSTREAM,
    URI,
    CompiledFormat,
    compile_format,
)
from sluice.parsing.weblog.times import parse_time
from sluice.parsing.weblog.values import (
    address_list,
    decode_escapes,
    repair_fields,
    split_request,
    upstream_list,
)

__all__ = ["MAX_LINE_BYTES", "LogParser", "parse_weblog_batch"]

MAX_LINE_BYTES = 64 * 1024
STAGE = Stage.PARSE
_NGINX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")


def _json_escape(match: re.Match[str]) -> str:
    """An nginx ``\\xNN`` as JSON can read it: ``\\u00NN`` for ASCII, else the raw byte (kept as a
    surrogate escape, so the bytes of a UTF-8 sequence join up again)."""
    code = int(match.group(1), 16)
    return f"\\u{code:04x}" if code < 0x80 else chr(0xDC00 + code)


def _json_text(value: Any) -> str | None:
    """A JSON value of a JSON-shaped log as the text nginx wrote (``"status": 200`` -> ``"200"``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return None  # an object or a list where the format has a variable


class LogParser:
    """A log format compiled once; ``parse_raw`` turns one line into a record or a rejection."""

    def __init__(self, spec: str = "auto") -> None:
        self.spec = spec
        self._mismatch = f"line does not match log format {spec!r}"
        self._format: CompiledFormat | None = None
        if spec == "auto":
            self.escape = "default"
            self._regex: re.Pattern[str] | None = AUTO
            self._fields: Callable[[re.Match[str]], dict[str, Any]] = auto_fields
            self._bulk = bulk_plan(None)
            return
        self._format = compile_format(spec)
        self.escape = self._format.escape
        self._regex = self._format.regex
        self._fields = self._regex_fields
        self._bulk = bulk_plan(self._format)

    # --- values of one line -------------------------------------------------------------------

    def _regex_fields(self, match: re.Match[str]) -> dict[str, Any]:
        return self._convert(match.groupdict())

    def _json_values(self, line: str) -> dict[str, Any] | None:
        """The group values of a line of a JSON-shaped format; None when it is no such line."""
        compiled = self._format
        assert compiled is not None
        text = _NGINX_ESCAPE.sub(_json_escape, line) if self.escape == "default" else line
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:  # not JSON, or raw bytes that are not UTF-8 (surrogates)
            try:
                document = json.loads(text, strict=False)
            except ValueError:
                return None
        values: dict[str, Any] = {}
        for leaf in compiled.json_leaves:
            node = document
            for step in leaf.path:
                if isinstance(node, dict) and step in node:
                    node = node[step]
                elif isinstance(node, list) and isinstance(step, int) and step < len(node):
                    node = node[int(step)]
                else:
                    raise RecordRejected(
                        ErrorType.UNPARSEABLE_LINE,
                        f"{self._mismatch}: no value at {'.'.join(map(str, leaf.path))!r}",
                    )
            value = _json_text(node)
            if value is None:
                return None
            if leaf.group is not None:
                values[leaf.group] = value
                continue
            assert leaf.regex is not None
            found = leaf.regex.match(value)
            if found is None:
                return None
            values.update(found.groupdict())
        return values

    def _convert(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Group values -> the record's fields: '-' to None, times, lists, the request split."""
        compiled = self._format
        assert compiled is not None
        for name in compiled.dash_fields:
            value = fields[name]
            if value == "-" or value == "":
                fields[name] = None
        extra: dict[str, str] = {}
        for how, group, target, time_kind in compiled.special:
            value = fields.pop(group)
            if how == TIME:
                fields[target] = parse_time(value, time_kind)
            elif how == DASH_IS_NONE:
                fields[target] = None if value == "-" or value == "" else value
            elif how == AS_IS:
                fields[target] = value
            elif how == LIST:
                fields[target] = address_list(value)
            elif how == UPSTREAM:
                fields[target] = upstream_list(value)
            elif how == URI:
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
        if compiled.bytes_from_total and fields.get("bytes_sent") is None:
            fields["bytes_sent"] = fields.get("response_bytes")
        request = fields["request"] if compiled.has_request else None
        if request is None:
            pass
        elif not compiled.regex_splits_request:
            for key, part in zip(REQUEST_PARTS, split_request(request), strict=True):
                if part is not None and fields.get(key) is None:
                    fields[key] = part
        elif fields["method"] is None:  # the regex did not split it (HTTP/0.9, garbage, '-')
            fields["method"], fields["path"], fields["query"], fields["protocol"] = split_request(
                request
            )
        return fields

    def _record_fields(self, line: str) -> dict[str, Any] | None:
        """The decoded fields of a line, ``invalid_utf8`` set where bytes were replaced; None when
        the line does not match the format."""
        if self._regex is None:
            values = self._json_values(line)
            if values is None:
                return None
            fields = self._convert(values)
        else:
            match = self._regex.match(line)
            if match is None:
                return None
            fields = self._fields(match)
        if self.escape == "default" and self._regex is not None:
            replaced = "\\" in line and decode_escapes(fields)
        else:  # JSON-shaped (escapes already decoded), escape=none: raw bytes, nginx's request form
            replaced = repair_fields(fields)
        if replaced:
            fields["invalid_utf8"] = True
        return fields

    # --- lines ----------------------------------------------------------------------------------

    def parse_line(self, line: str, context: dict[str, Any] | None = None) -> WebAccessLog:
        """One line (without or with its line break) -> a record.

        Raises ``RecordRejected`` or pydantic's ``ValidationError``; ``parse_batch`` turns both into
        dead letters.
        """
        fields = self._record_fields(line)
        if fields is None:
            raise RecordRejected(ErrorType.UNPARSEABLE_LINE, self._mismatch)
        return _validate(fields, context=context)

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
                    if self.escape == "default":
                        raise RecordRejected(
                            ErrorType.INVALID_ENCODING, f"not UTF-8: {err}"
                        ) from None
                    line = raw.decode("utf-8", "surrogateescape")  # nginx logs raw bytes here
            else:
                line = _text(raw, raw_bytes_allowed=self.escape != "default")
            fields = self._record_fields(line)
            if fields is None:
                if is_blank(line):  # no format matches a blank line: it needs $status
                    return None
                return Rejection(ErrorType.UNPARSEABLE_LINE, self._mismatch, _letter_raw(raw))
            return _validate(fields, context=context)
        except RecordRejected as rejected:
            return Rejection(rejected.error_type, rejected.message, _letter_raw(raw))
        except ValidationError as err:
            error_type, message = describe_validation_error(err)
            return Rejection(error_type, message, _letter_raw(raw))

    def parse_many(
        self, raws: Sequence[bytes | str], context: dict[str, Any] | None = None
    ) -> list[WebAccessLog | Rejection | None]:
        """``[parse_raw(raw, context) for raw in raws]``, the same outcomes in the same order, through
        the bulk path (``sluice.parsing.weblog.bulk``) where the format and the lines allow it."""
        if context is None:  # one "now" for the batch, the fallback lines included
            context = DEFAULT_HORIZON.context()
        parse = self.parse_raw
        plan = self._bulk
        plain = plain_lines(raws, MAX_LINE_BYTES) if plan is not None else None
        if plan is None or plain is None:
            return [parse(raw, context) for raw in raws]
        lines, where = plain
        outcomes: list[WebAccessLog | Rejection | None] = [None] * len(raws)
        done = bytearray(len(raws))
        for index, record in zip(where, plan.records(lines, context), strict=True):
            if record is not None:
                outcomes[index] = record
                done[index] = 1
        for index, raw in enumerate(raws):
            if not done[index]:
                outcomes[index] = parse(raw, context)
        return outcomes

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
        valid = result.valid
        skipped = 0
        for outcome in self.parse_many(lines if isinstance(lines, list) else list(lines), context):
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


def _text(raw: bytes | str, *, raw_bytes_allowed: bool = False) -> str:
    """A raw line as text; refuses over-long lines and, unless ``raw_bytes_allowed`` (then they are
    kept as surrogate escapes), anything that is not UTF-8."""
    if isinstance(raw, str):
        size = len(raw)
        if size > MAX_LINE_BYTES // 4 and not raw.isascii():  # up to 4 bytes per character
            size = len(_as_bytes(raw))
        if size > MAX_LINE_BYTES:
            raise RecordRejected(ErrorType.TOO_LARGE, f"line of {size} bytes > {MAX_LINE_BYTES}")
        if not raw.isascii():
            try:
                raw.encode("utf-8", "surrogateescape" if raw_bytes_allowed else "strict")
            except UnicodeEncodeError as err:  # lone surrogates, e.g. from a surrogateescape decode
                raise RecordRejected(ErrorType.INVALID_ENCODING, f"not UTF-8: {err}") from None
        return raw
    if len(raw) > MAX_LINE_BYTES:
        raise RecordRejected(ErrorType.TOO_LARGE, f"line of {len(raw)} bytes > {MAX_LINE_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if raw_bytes_allowed:
            return raw.decode("utf-8", "surrogateescape")
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
