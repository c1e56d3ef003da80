"""Polling JSON APIs: conditional GETs, page walking, retries, de-duplication and checkpoints.

In: ``FeedSpec`` values (``sluice.parsing.feeds``), an HTTP ``Fetch`` function (``urllib_fetch`` is
the standard-library one; tests inject others), a ``CheckpointStore`` and an ``Emit`` callable.
Out: per feed, the ``Envelope``s of items not emitted before and of dead letters, handed to ``emit``
in one call, and a ``FeedPollSummary`` (pages fetched, new items, duplicates skipped, not modified,
errors).
Dead letters (stage ``edge.feed``): a page that is not JSON or has no item list (one per page), an item
without id or time, with an unusable time, or otherwise refused by the contract. A feed that cannot be
fetched (retry budget spent, a 4xx other than 429, a redirect loop) is *not* a dead letter, since there
is no input to keep: it is an error in the summary, which the adapter logs and counts; the next
scheduled poll tries again.
Why: one module per concern, each testable alone; this package exports only what the adapters
(``edge_lambdas/feed_poller``) and their tests use.

- ``transport``: ``HttpRequest`` / ``HttpResponse``, the ``Fetch`` type, ``urllib_fetch``
  (http(s) only, redirects included; bodies and gzip bounded), ``TransportError``;
- ``retries``: ``RetryPolicy``, ``decide_retry``, ``parse_retry_after``, ``fetch_with_retries``;
- ``pages``: conditional headers, the page walk, ``read_page`` (a page's ``PageOutcome``);
- ``checkpoints``: ``Checkpoint``, its bounds and seen-state codec, ``SeenSet``, the
  ``CheckpointStore`` contract and ``InMemoryCheckpointStore``;
- ``config``: ``PollerConfig``; it and ``retries`` and ``checkpoints`` define, once, the defaults
  the Lambda's settings share (``DEFAULT_*``);
- ``poller``: ``FeedPoller``, with the steps of a poll and its delivery guarantee (leases, emit
  before checkpoint, re-emission with the same ids after a crash);
- ``summary``: ``FeedPollSummary``;
- ``auth``: API keys from the environment or Secrets Manager (``SecretLookup``, injected), added to
  each request as it leaves and kept out of every URL, log and error.
"""

from __future__ import annotations

from sluice.edges.polling.auth import SecretLookup
from sluice.edges.polling.checkpoints import (
    DEFAULT_CHECKPOINT_MAX_BYTES,
    DEFAULT_SEEN_MAX_AGE_SECONDS,
    DEFAULT_SEEN_MAX_DEAD_LETTERS,
    DEFAULT_SEEN_MAX_ITEMS,
    Checkpoint,
    CheckpointBounds,
    CheckpointStore,
    InMemoryCheckpointStore,
    LeaseLost,
    decode_seen_state,
    encode_seen_state,
)
from sluice.edges.polling.config import (
    DEFAULT_LEASE_MARGIN_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_USER_AGENT,
    PollerConfig,
)
from sluice.edges.polling.poller import Emit, FeedPoller
from sluice.edges.polling.retries import (
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    RetryPolicy,
)
from sluice.edges.polling.summary import FeedPollSummary
from sluice.edges.polling.transport import (
    Fetch,
    HttpRequest,
    HttpResponse,
    TransportError,
    urllib_fetch,
)

__all__ = [
    "DEFAULT_CHECKPOINT_MAX_BYTES",
    "DEFAULT_LEASE_MARGIN_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY_BASE_DELAY",
    "DEFAULT_RETRY_MAX_DELAY",
    "DEFAULT_SEEN_MAX_AGE_SECONDS",
    "DEFAULT_SEEN_MAX_DEAD_LETTERS",
    "DEFAULT_SEEN_MAX_ITEMS",
    "DEFAULT_USER_AGENT",
    "Checkpoint",
    "CheckpointBounds",
    "CheckpointStore",
    "Emit",
    "FeedPollSummary",
    "FeedPoller",
    "Fetch",
    "HttpRequest",
    "HttpResponse",
    "InMemoryCheckpointStore",
    "LeaseLost",
    "PollerConfig",
    "RetryPolicy",
    "SecretLookup",
    "TransportError",
    "decode_seen_state",
    "encode_seen_state",
    "urllib_fetch",
]
