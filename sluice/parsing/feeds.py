"""Feed parser: one JSON API response document in, normalized ``FeedItem`` records out.

In: a ``FeedSpec`` (configuration: where the items are and which fields are id, time, position) and a
response document (bytes, str or already-decoded JSON).
Out: ``BatchResult[FeedItem]``; valid + rejected = items in. Never raises for bad input.
Dead letters: a document that is not JSON, is empty or blank, or has no item list (one dead letter for
the document: a document is a response, not a line, so a blank one is not skipped), an item with no id
or time (``missing_field``), an unusable time or one outside the ``TimeHorizon``
(``invalid_timestamp``), anything else the contract refuses (``schema_violation``: an id that is no
string or number or holds control characters, values nested too deep to re-encode). At most
``max_dead_letters`` per document one by one, the rest summarized (``too_many_errors``).

Paths are dotted, with integer segments indexing lists: ``geometry.coordinates.1``. A path starting
with ``$.`` reads a top-level scalar member of the response instead of the item (a forecast's
``$.latitude``); each item then carries those members under ``"$"``, so its dead letter is whole.

Where the items are:
- ``items_path``: the list of items (empty: the document is the list; ``"."``: the document is one
  item, a status snapshot);
- ``items_columns``: an object of parallel arrays (``hourly: {time: [...], temperature_2m: [...]}``,
  as forecast APIs send), zipped into one item per index; its scalar members go into every item.
  Arrays of different lengths make the document a dead letter.
Item identity: ``id_field`` (one path), or ``id_fields`` (several: sensor + time), whose values are
joined and hashed (BLAKE2b, 128 bits, hex) into ``item_id``, deterministically.
Times (``time_format``): ``epoch_ms``, ``epoch_s``, or ``iso8601`` with or without an offset; no
offset means UTC. A document without the path its spec names is one dead letter that keeps the
document (bounded) and says which path is missing.
USGS earthquake GeoJSON ships as the ready example ``USGS_EARTHQUAKES``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.core.contracts import (
    DEFAULT_HORIZON,
    ErrorType,
    FeedItem,
    FeedValue,
    Source,
    Stage,
    TimeHorizon,
)
from sluice.core.deadletters import (
    MAX_DEAD_LETTERS,
    BatchResult,
    CappedDeadLetters,
    Rejection,
    describe_validation_error,
)
from sluice.core.errors import ConfigError, RecordRejected
from sluice.core.inputs import decode_json, encode_json

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "USGS_EARTHQUAKES",
    "ApiKeySpec",
    "FeedSpec",
    "PaginationSpec",
    "builtin_feed",
    "feed_items",
    "get_path",
    "parse_feed_document",
    "parse_feed_item",
]

STAGE = Stage.PARSE
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
TimeFormat = Literal["epoch_ms", "epoch_s", "iso8601"]


class PaginationSpec(BaseModel):
    """How the poller walks pages. ``none``: one request; ``page``: page/limit query parameters until
    a short page; ``cursor``: a cursor value from the response passed back as a parameter;
    ``next_link``: follow a URL found in the response."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Literal["none", "page", "cursor", "next_link"] = "none"
    page_param: str = "page"
    limit_param: str = "limit"
    limit: int = Field(default=100, ge=1, le=10_000)
    first_page: int = 1
    cursor_param: str = "cursor"
    cursor_path: str = Field(default="meta.next_cursor", description="Where the next cursor is.")
    next_link_path: str = Field(default="links.next", description="Where the next URL is.")
    max_pages: int = Field(default=100, ge=1, description="Stop after this many pages per poll.")


class ApiKeySpec(BaseModel):
    """Where a feed's API key comes from and how it is sent. The key itself is never configuration,
    never logged and never in a URL the poller reports: it is added to the request as it leaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, description="Environment variable holding the key.")
    secret_id: str | None = Field(
        default=None, description="AWS Secrets Manager secret (name or ARN) holding the key."
    )
    secret_key: str | None = Field(
        default=None, description="Member of a JSON secret holding the key; none: the whole secret."
    )
    header: str | None = Field(default=None, description="Send it in this header (X-API-Key).")
    prefix: str = Field(default="", description="Text before the key in the header ('Bearer ').")
    query_param: str | None = Field(default=None, description="Send it as this query parameter.")

    @model_validator(mode="after")
    def _one_source_one_place(self) -> ApiKeySpec:
        if (self.env is None) == (self.secret_id is None):
            raise ValueError("give exactly one of env and secret_id")
        if (self.header is None) == (self.query_param is None):
            raise ValueError("give exactly one of header and query_param")
        return self


class FeedSpec(BaseModel):
    """One polled JSON API, as configuration. Every field is documented; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$", description="Feed name in tables.")
    url: str | None = Field(default=None, description="Where the poller fetches the feed.")
    items_path: str = Field(
        default="",
        description="Path of the item list; empty: the document is the list; '.': the document "
        "is one item (a status snapshot).",
    )
    items_columns: str | None = Field(
        default=None,
        description="Path of an object of parallel arrays zipped into one item per index "
        "(column-oriented APIs); item paths are then relative to one such item.",
    )
    id_field: str | None = Field(default=None, description="Path of the item id within an item.")
    id_fields: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="Paths whose values, joined and hashed, are the item id (items without one id).",
    )
    time_field: str = Field(description="Path of the event time within an item.")
    time_format: TimeFormat = Field(
        default="iso8601",
        description="epoch_ms, epoch_s, or iso8601 with or without an offset (none: UTC).",
    )
    updated_field: str | None = Field(default=None, description="Path of the last-update time.")
    lat_field: str | None = None
    lon_field: str | None = None
    fields_path: str | None = Field(
        default=None, description="Object whose scalar members all become fields (e.g. properties)."
    )
    fields: dict[str, str] = Field(
        default_factory=dict, description="Extra fields: output name -> path within an item."
    )
    pagination: PaginationSpec = PaginationSpec()
    api_key: ApiKeySpec | None = Field(default=None, description="The API key, if one is needed.")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)

    @model_validator(mode="after")
    def _one_identity(self) -> FeedSpec:
        if (self.id_field is None) == (self.id_fields is None):
            raise ValueError("give exactly one of id_field and id_fields")
        if self.items_columns is not None and self.items_path not in ("",):
            raise ValueError("give items_path or items_columns, not both")
        if self.items_path.startswith("$.") or (self.items_columns or "").startswith("$."):
            raise ValueError("items_path and items_columns are paths in the document, without '$.'")
        return self

    def item_paths(self) -> list[str]:
        """Every path read within an item."""
        paths = [self.time_field, *(self.id_fields or (self.id_field or "",))]
        paths += [p for p in (self.updated_field, self.lat_field, self.lon_field) if p]
        paths += [*self.fields.values(), *([self.fields_path] if self.fields_path else [])]
        return paths

    def reads_root(self) -> bool:
        """Some item path reads the document's top level (``$.name``)."""
        return any(path.startswith(ROOT_PREFIX) for path in self.item_paths())


USGS_EARTHQUAKES = FeedSpec(
    name="usgs_earthquakes",
    url="https://earthquake.usgs.gov/earthquakes/feed/v1.0/summary/all_hour.geojson",
    items_path="features",
    id_field="id",
    time_field="properties.time",
    time_format="epoch_ms",
    updated_field="properties.updated",
    lat_field="geometry.coordinates.1",
    lon_field="geometry.coordinates.0",
    fields_path="properties",
    fields={"depth_km": "geometry.coordinates.2"},
)

BUILTIN_FEEDS: dict[str, FeedSpec] = {
    "usgs": USGS_EARTHQUAKES,
    USGS_EARTHQUAKES.name: USGS_EARTHQUAKES,
}

_MISSING = object()
ROOT_PREFIX = "$."
"""An item path starting with it reads a top-level scalar member of the response."""
ROOT_KEY = "$"
"""Where an item carries the response's top-level scalar members its spec reads."""


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path through objects and lists; a missing step gives ``None``. The empty
    path and ``.`` are ``obj`` itself."""
    if not path or path == ".":
        return obj
    for step in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(step, _MISSING)
        elif isinstance(obj, Sequence) and not isinstance(obj, str) and step.lstrip("-").isdigit():
            index = int(step)
            obj = obj[index] if -len(obj) <= index < len(obj) else _MISSING
        else:
            return None
        if obj is _MISSING:
            return None
    return obj


def parse_time(value: Any, time_format: TimeFormat) -> datetime:
    """Convert a feed time value; raises ``RecordRejected(invalid_timestamp)``."""
    try:
        if time_format == "iso8601":
            if not isinstance(value, str):
                raise TypeError(f"expected an ISO-8601 string, got {type(value).__name__}")
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected epoch number, got {type(value).__name__}")
        seconds = float(value) / (1000.0 if time_format == "epoch_ms" else 1.0)
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError) as err:
        raise RecordRejected(ErrorType.INVALID_TIMESTAMP, f"{value!r}: {err}") from None


def _scalar(name: str, value: Any) -> FeedValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return encode_json(value).decode()
    except RecordRejected as rejected:
        raise RecordRejected(rejected.error_type, f"{name}: {rejected.message}") from None


def parse_feed_item(spec: FeedSpec, item: Any, context: dict[str, Any] | None = None) -> FeedItem:
    """One item -> ``FeedItem``; raises ``RecordRejected`` or ``ValidationError``.

    ``context``: the contracts' validation context (``TimeHorizon.context``); none: the default
    horizon around now.
    """
    if not isinstance(item, Mapping):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION, f"an item must be an object, not {type(item).__name__}"
        )
    item_id = _item_id(spec, item)
    event_time = get_path(item, _path(spec.time_field))
    if event_time is None:
        raise RecordRejected(ErrorType.MISSING_FIELD, f"no event time at {spec.time_field!r}")
    updated = get_path(item, _path(spec.updated_field)) if spec.updated_field else None
    fields: dict[str, FeedValue] = {}
    if spec.fields_path is not None:
        members = get_path(item, _path(spec.fields_path))
        if isinstance(members, Mapping):
            fields.update((str(k), _scalar(str(k), v)) for k, v in members.items() if k != ROOT_KEY)
    for name, path in spec.fields.items():
        fields[name] = _scalar(name, get_path(item, _path(path)))
    location = None
    if spec.lat_field and spec.lon_field:
        lat, lon = get_path(item, _path(spec.lat_field)), get_path(item, _path(spec.lon_field))
        if lat is not None and lon is not None:
            location = {"lat": lat, "lon": lon}
    return FeedItem.model_validate(
        {
            "feed": spec.name,
            "item_id": item_id,
            "event_time": parse_time(event_time, spec.time_format),
            "updated_time": None if updated is None else parse_time(updated, spec.time_format),
            "location": location,
            "fields": fields,
        },
        context=context,
    )


def _path(path: str) -> str:
    """An item path as ``get_path`` follows it: ``$.name`` reads the item's ``"$"`` member."""
    return ROOT_KEY + "." + path[len(ROOT_PREFIX) :] if path.startswith(ROOT_PREFIX) else path


def _id_part(item: Mapping[str, Any], path: str) -> str | int | float:
    value = get_path(item, _path(path))
    if value is None or value == "":
        raise RecordRejected(ErrorType.MISSING_FIELD, f"no item id at {path!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION,
            f"the item id at {path!r} must be a string or a number, not {type(value).__name__}",
        )
    return value


def _id_bytes(value: str | int | float) -> bytes:
    """A typed spelling of an id value: ``1``, ``1.0`` and ``"1"`` differ."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    return (b"i" if isinstance(value, int) else b"f") + repr(value).encode()


def _item_id(spec: FeedSpec, item: Mapping[str, Any]) -> str:
    """The item's id: its ``id_field`` as text, or the hash of its ``id_fields`` values (typed,
    joined by U+001F): the same values always give the same id, and ``1`` differs from ``"1"``."""
    if spec.id_fields is None:
        return str(_id_part(item, spec.id_field or ""))
    digest = hashlib.blake2b(digest_size=16)
    for index, path in enumerate(spec.id_fields):
        if index:
            digest.update(b"\x1f")
        digest.update(_id_bytes(_id_part(item, path)))
    return digest.hexdigest()


def _zip_columns(spec: FeedSpec, document: Any) -> list[Any]:
    path = spec.items_columns or ""
    columns = get_path(document, path)
    if not isinstance(columns, Mapping):
        raise RecordRejected(ErrorType.SCHEMA_VIOLATION, f"no object of arrays at {path!r}")
    arrays = {k: v for k, v in columns.items() if isinstance(v, list)}
    if not arrays:
        raise RecordRejected(ErrorType.SCHEMA_VIOLATION, f"no arrays in the object at {path!r}")
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in arrays.items())
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION, f"the arrays at {path!r} differ in length: {sizes}"
        )
    scalars = {k: v for k, v in columns.items() if k not in arrays}
    names = list(arrays)
    return [
        {**scalars, **dict(zip(names, row, strict=True))}
        for row in zip(*arrays.values(), strict=True)
    ]


def feed_items(spec: FeedSpec, document: Any) -> list[Any]:
    """The items of a decoded document; raises ``RecordRejected`` when its spec's path is missing."""
    if spec.items_columns is not None:
        items = _zip_columns(spec, document)
    elif spec.items_path == ".":
        if not isinstance(document, Mapping):
            raise RecordRejected(
                ErrorType.SCHEMA_VIOLATION,
                f"the document must be one object, not {type(document).__name__}",
            )
        items = [document]
    else:
        found = get_path(document, spec.items_path)
        if not isinstance(found, list):
            raise RecordRejected(
                ErrorType.SCHEMA_VIOLATION,
                f"no item list at {spec.items_path or 'the document root'!r}",
            )
        items = found
    if spec.reads_root() and isinstance(document, Mapping):
        roots = {
            k: v for k, v in document.items() if not isinstance(v, Mapping | list) and k != ROOT_KEY
        }
        items = [{**item, ROOT_KEY: roots} if isinstance(item, Mapping) else item for item in items]
    return items


def _encoded(value: Any, fallback: bytes | str) -> bytes | str:
    """A decoded value as JSON for a dead letter; ``fallback`` when it is nested too deep."""
    try:
        return encode_json(value)
    except RecordRejected:
        return fallback


def parse_feed_document(
    spec: FeedSpec,
    document: bytes | str | Any,
    *,
    stage: Stage = STAGE,
    horizon: TimeHorizon = DEFAULT_HORIZON,
    now: datetime | None = None,
    max_dead_letters: int = MAX_DEAD_LETTERS,
) -> BatchResult[FeedItem]:
    """Parse one response document. Never raises for bad input.

    ``horizon`` and ``now`` bound event times (``now`` defaults to the time of the call);
    ``max_dead_letters`` caps the dead letters built one by one (``CappedDeadLetters``). Their
    defaults are ``CoreSettings``' own.
    """
    result: BatchResult[FeedItem] = BatchResult()
    letters = CappedDeadLetters(Source.FEED, stage, max_dead_letters)
    raw_document = document if isinstance(document, bytes | str) else None
    # What an item's dead letter keeps when the item cannot be re-encoded: the document.
    fallback = raw_document if raw_document is not None else "<not re-encodable: nested too deep>"
    try:
        decoded = (
            decode_json(document, MAX_DOCUMENT_BYTES) if raw_document is not None else document
        )
        items = feed_items(spec, decoded)
    except RecordRejected as rejected:
        raw = raw_document if raw_document is not None else _encoded(document, fallback)
        letters.add(Rejection(rejected.error_type, rejected.message, raw))
        letters.finish(result)
        return result
    context = horizon.context(now)
    for item in items:
        try:
            result.valid.append(parse_feed_item(spec, item, context))
        except RecordRejected as rejected:
            letters.add(Rejection(rejected.error_type, rejected.message, _encoded(item, fallback)))
        except ValidationError as err:
            error_type, message = describe_validation_error(err)
            letters.add(Rejection(error_type, message, _encoded(item, fallback)))
    letters.finish(result, scope="document")
    return result


def builtin_feed(name: str) -> FeedSpec:
    try:
        return BUILTIN_FEEDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown feed {name!r}; built in: {', '.join(sorted(BUILTIN_FEEDS))}"
        ) from None
