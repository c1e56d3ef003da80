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

Paths are dotted, with integer segments indexing lists: ``geometry.coordinates.1``.
USGS earthquake GeoJSON ships as the ready example ``USGS_EARTHQUAKES``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    "FeedSpec",
    "PaginationSpec",
    "builtin_feed",
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


class FeedSpec(BaseModel):
    """One polled JSON API, as configuration. Every field is documented; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$", description="Feed name in tables.")
    url: str | None = Field(default=None, description="Where the poller fetches the feed.")
    items_path: str = Field(default="", description="Path of the item list; empty: the document.")
    id_field: str = Field(description="Path of the item id within an item.")
    time_field: str = Field(description="Path of the event time within an item.")
    time_format: TimeFormat = "iso8601"
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
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)


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


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path through objects and lists; a missing step gives ``None``."""
    if not path:
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
    item_id = get_path(item, spec.id_field)
    if item_id is None or item_id == "":
        raise RecordRejected(ErrorType.MISSING_FIELD, f"no item id at {spec.id_field!r}")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int | float):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION,
            f"the item id at {spec.id_field!r} must be a string or a number, "
            f"not {type(item_id).__name__}",
        )
    event_time = get_path(item, spec.time_field)
    if event_time is None:
        raise RecordRejected(ErrorType.MISSING_FIELD, f"no event time at {spec.time_field!r}")
    updated = get_path(item, spec.updated_field) if spec.updated_field else None
    fields: dict[str, FeedValue] = {}
    if spec.fields_path is not None:
        members = get_path(item, spec.fields_path)
        if isinstance(members, Mapping):
            fields.update((str(k), _scalar(str(k), v)) for k, v in members.items())
    for name, path in spec.fields.items():
        fields[name] = _scalar(name, get_path(item, path))
    location = None
    if spec.lat_field and spec.lon_field:
        lat, lon = get_path(item, spec.lat_field), get_path(item, spec.lon_field)
        if lat is not None and lon is not None:
            location = {"lat": lat, "lon": lon}
    return FeedItem.model_validate(
        {
            "feed": spec.name,
            "item_id": str(item_id),
            "event_time": parse_time(event_time, spec.time_format),
            "updated_time": None if updated is None else parse_time(updated, spec.time_format),
            "location": location,
            "fields": fields,
        },
        context=context,
    )


def feed_items(spec: FeedSpec, document: Any) -> list[Any]:
    """The item list of a decoded document; raises ``RecordRejected`` when there is none."""
    items = get_path(document, spec.items_path)
    if not isinstance(items, list):
        raise RecordRejected(
            ErrorType.SCHEMA_VIOLATION,
            f"no item list at {spec.items_path or 'the document root'!r}",
        )
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
