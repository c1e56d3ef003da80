"""The feed poller's settings: ``PollerConfig``, and the defaults the Lambda's settings take from it.

In: values from the feed poller Lambda's settings (``edge_lambdas.feed_poller.settings``), or none
(tests, local runs: the defaults).
Out: a validated, immutable ``PollerConfig``.
Dead letters: none.
Why: every default the Lambda's settings also declare is defined once, in the core, and the
settings' fields take it from there, so the documented setting and the poller cannot drift apart:
the lease and its margin here (``DEFAULT_LEASE_SECONDS``, ``DEFAULT_LEASE_MARGIN_SECONDS``), the HTTP
retries with ``RetryPolicy`` (``retries``), the seen-state bounds with ``CheckpointBounds``
(``checkpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice import __version__
from sluice.core.contracts import DEFAULT_HORIZON, TimeHorizon
from sluice.core.deadletters import MAX_DEAD_LETTERS
from sluice.edges.polling.checkpoints import CheckpointBounds
from sluice.edges.polling.retries import RetryPolicy

__all__ = [
    "DEFAULT_LEASE_MARGIN_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_USER_AGENT",
    "PollerConfig",
]

DEFAULT_USER_AGENT = f"sluice-feed-poller/{__version__}"

DEFAULT_LEASE_SECONDS = 300.0
"""How long one poll may hold a feed's lease, unless configured (``SLUICE_LEASE_SECONDS``)."""

DEFAULT_LEASE_MARGIN_SECONDS = 30.0
"""The one default of the lease margin: ``PollerConfig`` and the feed poller Lambda's settings
(``SLUICE_LEASE_MARGIN_SECONDS``) both take it from here."""


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """Poller-wide settings; per-feed ones (timeout, retries, pagination) are in the ``FeedSpec``."""

    user_agent: str = DEFAULT_USER_AGENT
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    lease_margin_seconds: float = DEFAULT_LEASE_MARGIN_SECONDS
    """Part of the lease kept for emitting and the checkpoint write: no page is fetched once less
    than this remains, and nothing is emitted once less than half of it remains."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    bounds: CheckpointBounds = field(default_factory=CheckpointBounds)
    horizon: TimeHorizon = DEFAULT_HORIZON
    """Event-time bounds of items, around the time a page is read (``CoreSettings``)."""
    max_dead_letters: int = MAX_DEAD_LETTERS
    """Dead letters per page built one by one, the rest summarized (``CoreSettings``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.lease_margin_seconds < self.lease_seconds:
            raise ValueError("lease_margin_seconds must be >= 0 and below lease_seconds")
