"""What one poll of one feed did: ``FeedPollSummary``, which the adapters log and turn into metrics.

In: filled in by ``FeedPoller.poll`` as the poll goes (so a poll that fails part way still says what
it did until then).
Out: ``as_dict()``, the JSON-ready form the Lambda logs and ``sluice edge poll`` prints.
Dead letters: counted here (``dead_letters``, ``dead_letters_by_reason``), never produced.
Why: one record per poll, whatever way the poll ended (``status``), keeps the adapters free of
polling logic: they only log it and publish its counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FeedPollSummary"]

PollStatus = Literal["ok", "not_modified", "lease_busy", "failed", "skipped"]


@dataclass(slots=True)
class FeedPollSummary:
    """What one poll of one feed did; the adapters log it and turn it into metrics."""

    feed: str
    status: PollStatus = "ok"
    pages_fetched: int = 0
    items_received: int = 0
    new_items: int = 0
    duplicates_skipped: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    emitted: int = 0
    http_retries: int = 0
    complete: bool = False
    incomplete_reason: str | None = None
    checkpoint_evicted: int = 0
    checkpoint_version: int | None = None
    error: str | None = None
    duration_seconds: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == "not_modified"

    def as_dict(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "status": self.status,
            "pages_fetched": self.pages_fetched,
            "items_received": self.items_received,
            "new_items": self.new_items,
            "duplicates_skipped": self.duplicates_skipped,
            "dead_letters": self.dead_letters,
            "dead_letters_by_reason": dict(self.dead_letters_by_reason),
            "emitted": self.emitted,
            "not_modified": self.not_modified,
            "http_retries": self.http_retries,
            "complete": self.complete,
            "incomplete_reason": self.incomplete_reason,
            "checkpoint_evicted": self.checkpoint_evicted,
            "checkpoint_version": self.checkpoint_version,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 3),
        }
