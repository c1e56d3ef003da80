"""The feed poller: one poll of one feed under its lease: walk the pages, emit, write the checkpoint.

In: ``FeedSpec`` values (``sluice.parsing.feeds``), a ``Fetch`` (``transport``), a ``CheckpointStore``
(``checkpoints``) and an ``Emit`` callable.
Out: per feed, the ``Envelope``s of items not emitted before (``wrap_feed_item``) and of dead letters
(``wrap_dead_letter``, so they travel the same stream), handed to ``emit`` in one call, and a
``FeedPollSummary`` (pages fetched, new items, duplicates skipped, not modified, errors).
Dead letters: those of the pages read (``pages.read_page``, stage ``edge.feed``). A feed that cannot
be fetched is *not* a dead letter (there is no input to keep): it is an error in the summary.
Why: the order of the side effects (lease, GETs, one emit, one conditional checkpoint write) is what
makes the delivery guarantee below hold; everything else is in the sibling modules.

One poll of one feed (``FeedPoller.poll``):

1. Take the feed's lease: a conditional write that succeeds only when no unexpired lease exists; it
   returns the checkpoint (validators, the bounded set of seen (item id, updated time) pairs, version).
2. GET the first page with ``If-None-Match`` / ``If-Modified-Since`` from the checkpoint. A 304 ends
   the poll: nothing is parsed or emitted, the lease is released (one GET and two small writes).
3. Walk the pages (``pages.PageWalk``), at most ``max_pages``, each request retried with exponential
   backoff and full jitter (``retries``) on connection errors, timeouts, 429 (honouring
   ``Retry-After``) and 5xx, never on other 4xx.
4. Read each page (``pages.read_page``) and keep the items whose (item id, updated time) is not in
   the checkpoint and not already seen in this poll; dead letters are de-duplicated by their id too.
5. Emit all envelopes of the poll in one ``emit`` call.
6. Write the checkpoint conditionally on (lease owner, version); the same write releases the lease.
   New validators are stored only when the walk was complete, so a 304 can never hide a page that was
   not read.

Delivery guarantee, exactly:

- **No two emitters.** The lease is a conditional write, so at most one invocation holds a feed's
  lease; one that cannot take it emits nothing (``lease_busy``). A holder fetches no page once less
  than ``lease_margin_seconds`` of its lease remain, and emits nothing once less than half of that
  remains. Deploy with ``lease_seconds`` greater than the Lambda timeout: then a holder is dead before
  its lease can expire, and a lease is only ever taken over from a dead holder. (Lease times are the
  callers' wall clocks, NTP-synchronised in Lambda; the margin absorbs any skew.)
- **Exactly once without crashes.** An item version is recorded as seen in the checkpoint write that
  follows its emission, conditional on the version read when the lease was taken; the next holder
  starts from that checkpoint and skips it.
- **Crash after emit, before checkpoint.** If the process dies (or ``emit`` raises after delivering some
  envelopes, or the checkpoint write fails) the checkpoint still holds the previous poll's state. The
  next poll (after the lease expires, or at once when the lease was released on an error) fetches the
  feed again and re-emits every item version still in the feed that was not recorded, with the *same*
  event ids (``feed_event_id``: feed + item id + updated time; dead-letter ids depend only on the raw
  input). It never emits a new id for an already emitted item version; only ``ingest_time`` differs.
  Downstream de-duplication by ``event_id`` makes the result exactly once.
- **Nothing lost, within the feed's window.** An item is recorded only after ``emit`` returned, i.e.
  after the stream accepted it; bounding the seen set (by count and age) can only cause re-emission
  (same ids), never a skip. An item that leaves the feed's window before any successful poll saw it
  cannot be recovered by any poller; choose a feed window much longer than the poll interval plus the
  lease time (USGS ``all_hour`` polled every minute).
"""

from __future__ import annotations

import logging
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sluice.core.contracts import Envelope
from sluice.core.errors import SluiceError
from sluice.edges.polling.auth import (
    ApiKeyUnavailable,
    SecretLookup,
    resolve_api_key,
    with_api_key,
)
from sluice.edges.polling.checkpoints import (
    Checkpoint,
    CheckpointCorrupt,
    CheckpointStore,
    LeaseLost,
    SeenSet,
    bound_checkpoint,
)
from sluice.edges.polling.config import PollerConfig
from sluice.edges.polling.pages import PageOutcome, PageWalk, conditional_headers, read_page
from sluice.edges.polling.retries import (
    FeedFetchError,
    RetryDecision,
    RetryPolicy,
    fetch_with_retries,
)
from sluice.edges.polling.summary import FeedPollSummary
from sluice.edges.polling.transport import Fetch, HttpRequest, HttpResponse
from sluice.parsing.feeds import FeedSpec
from sluice.stream.envelopes import wrap_dead_letter, wrap_feed_item

__all__ = ["Emit", "FeedPoller"]

log = logging.getLogger(__name__)

Emit = Callable[[list[Envelope]], None]
"""Delivers envelopes. Must raise unless every envelope was accepted (by the stream, or by the
publisher's own dead-letter destination): the checkpoint is written once it returns."""


class _PollAborted(SluiceError):
    """Internal: the poll stops without emitting (the summary says why)."""


@dataclass(frozen=True, slots=True)
class _Fetched:
    """One request after its retries: the response, or why there is none."""

    response: HttpResponse | None
    error: FeedFetchError | None
    retries: int


@dataclass(frozen=True, slots=True)
class _Walk:
    """What the page walk of one poll read, and how it ended."""

    first_url: str
    pages: tuple[tuple[PageOutcome, datetime], ...] = ()
    """Each page read, with the wall time it was read at (its envelopes' ingest time)."""
    first_response: HttpResponse | None = None
    responses: int = 0
    """Responses received, a 304 included (the summary's ``pages_fetched``)."""
    retries: int = 0
    not_modified: bool = False
    fetch_error: FeedFetchError | None = None
    stop_reason: str | None = None
    """Why the walk stopped before the plan's end (time, a failed fetch, a 304, ``max_pages``)."""

    @property
    def incomplete_reason(self) -> str | None:
        if self.stop_reason is None and not all(page.usable for page, _ in self.pages):
            return "a page was not a usable document"
        return self.stop_reason

    def read(self, response: HttpResponse, page: PageOutcome, ingest_time: datetime) -> _Walk:
        first = response if self.first_response is None else self.first_response
        return replace(self, pages=(*self.pages, (page, ingest_time)), first_response=first)

    def envelopes(self) -> list[Envelope]:
        """The envelopes of every page read, in order: each page's new items, then its dead letters."""
        envelopes: list[Envelope] = []
        for page, ingest_time in self.pages:
            envelopes.extend(wrap_feed_item(item, ingest_time) for item in page.items)
            envelopes.extend(wrap_dead_letter(letter, ingest_time) for letter in page.dead_letters)
        return envelopes


def _record_walk(summary: FeedPollSummary, walk: _Walk) -> None:
    """Set the summary's counts and ``incomplete_reason`` to what ``walk`` says."""
    pages = [page for page, _ in walk.pages]
    summary.pages_fetched = walk.responses
    summary.http_retries = walk.retries
    summary.items_received = sum(page.received for page in pages)
    summary.new_items = sum(len(page.items) for page in pages)
    summary.duplicates_skipped = sum(page.duplicates for page in pages)
    summary.dead_letters = sum(len(page.dead_letters) for page in pages)
    summary.dead_letters_by_reason = dict(
        Counter(letter.error_type.value for page in pages for letter in page.dead_letters)
    )
    summary.incomplete_reason = walk.incomplete_reason


def _first_request_headers(checkpoint: Checkpoint, first_url: str) -> dict[str, str]:
    if checkpoint.source_url != first_url:
        return {}  # validators of another URL (the feed's config changed) could wrongly match
    return conditional_headers(checkpoint.etag, checkpoint.last_modified)


class FeedPoller:
    """Polls feeds with injected I/O: ``fetch`` (HTTP), ``store`` (checkpoints), ``emit`` (stream).

    The clocks, ``sleep`` and ``rng`` are injectable so tests are fast and deterministic.
    """

    def __init__(
        self,
        *,
        fetch: Fetch,
        store: CheckpointStore,
        emit: Emit,
        config: PollerConfig | None = None,
        owner_prefix: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        secrets: SecretLookup | None = None,
    ) -> None:
        self.fetch = fetch
        self.secrets = secrets
        """Reads a feed's API key from Secrets Manager (``ApiKeySpec.secret_id``)."""
        self.store = store
        self.emit = emit
        self.config = config or PollerConfig()
        self.owner_prefix = owner_prefix or f"{socket.gethostname()}:{id(self):x}"
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng or random.Random()

    def poll_all(
        self, specs: Iterable[FeedSpec], *, deadline: float | None = None
    ) -> list[FeedPollSummary]:
        """Poll each feed in turn; one feed's failure never stops the others."""
        return [self.poll(spec, deadline=deadline) for spec in specs]

    def poll(self, spec: FeedSpec, *, deadline: float | None = None) -> FeedPollSummary:
        """One poll of one feed (see the module docstring). Never raises for feed or store problems."""
        started = self.monotonic()
        summary = FeedPollSummary(spec.name)
        if deadline is not None and deadline - started < spec.timeout_seconds:
            # Not even one request would fit: leave the feed to the next invocation untouched.
            summary.status, summary.error = "skipped", "no time left to poll"
            return summary
        owner = f"{self.owner_prefix}:{uuid.uuid4().hex[:12]}"
        try:
            checkpoint = self.store.acquire(
                spec.name, owner, self.wall_clock(), self.config.lease_seconds
            )
        except Exception as err:  # store down or misconfigured: this feed fails, others go on
            log.exception("cannot take the feed lease", extra={"feed": spec.name})
            summary.status, summary.error = "failed", f"checkpoint store: {err}"
            return summary
        if checkpoint is None:
            summary.status = "lease_busy"
            summary.duration_seconds = self.monotonic() - started
            return summary
        lease_deadline = started + self.config.lease_seconds - self.config.lease_margin_seconds
        committed = False
        try:
            fetch = self.fetch
            if spec.api_key is not None:
                key = resolve_api_key(spec.api_key, secrets=self.secrets)
                fetch = with_api_key(self.fetch, spec.api_key, key)
            committed = self._poll_leased(
                fetch,
                spec,
                checkpoint,
                owner,
                summary,
                deadline=deadline,
                lease_deadline=lease_deadline,
            )
        except (
            FeedFetchError,
            LeaseLost,
            CheckpointCorrupt,
            _PollAborted,
            ApiKeyUnavailable,
        ) as err:
            log.error("feed poll failed", extra={"feed": spec.name, "error": str(err)})
            summary.status, summary.error = "failed", str(err)
        except Exception as err:  # emitter or store failure: logged with its traceback
            log.exception("feed poll failed", extra={"feed": spec.name})
            summary.status, summary.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            if not committed:
                self._release(spec.name, owner)
            summary.duration_seconds = self.monotonic() - started
        return summary

    def _poll_leased(
        self,
        fetch: Fetch,
        spec: FeedSpec,
        checkpoint: Checkpoint,
        owner: str,
        summary: FeedPollSummary,
        *,
        deadline: float | None,
        lease_deadline: float,
    ) -> bool:
        """The poll under a held lease: walk, emit, checkpoint. Returns whether it committed.

        ``summary`` is this poll's own record, kept current at each step, so that whatever raises
        leaves it saying what happened until then.
        """
        now = self.wall_clock()
        seen = SeenSet(checkpoint, now)
        plan = PageWalk(spec)
        walk = start = _Walk(first_url=plan.first_url)
        walk_deadline = lease_deadline if deadline is None else min(deadline, lease_deadline)
        for walk in self._walk(fetch, plan, start, spec, checkpoint, seen, walk_deadline):
            _record_walk(summary, walk)
        if walk.not_modified:
            summary.status, summary.complete = "not_modified", True
            summary.checkpoint_version = checkpoint.version
            return False
        if walk.first_response is None:  # the first request failed for good, or had no time
            raise walk.fetch_error or _PollAborted(f"no time left to fetch {walk.first_url}")
        summary.complete = walk.incomplete_reason is None

        envelopes = walk.envelopes()
        self._check_lease_left(lease_deadline)
        if envelopes:
            self.emit(envelopes)
        summary.emitted = len(envelopes)

        bounded, evicted = self._next_checkpoint(checkpoint, seen, walk, now)
        self.store.commit(bounded, owner, checkpoint.version)
        summary.checkpoint_evicted, summary.checkpoint_version = evicted, bounded.version
        if walk.fetch_error is not None:  # the pages before it were emitted and checkpointed
            log.error("feed poll failed", extra={"feed": spec.name, "error": str(walk.fetch_error)})
            summary.status, summary.error = "failed", str(walk.fetch_error)
        return True

    def _walk(
        self,
        fetch: Fetch,
        plan: PageWalk,
        walk: _Walk,
        spec: FeedSpec,
        checkpoint: Checkpoint,
        seen: SeenSet,
        deadline: float,
    ) -> Iterator[_Walk]:
        """Fetch and read the planned pages until the plan ends, time runs out, a fetch fails or a
        304 comes. Yields the walk after each request and each page read; the last value yielded
        says how it ended."""
        policy = replace(self.config.retry, max_retries=spec.max_retries)
        validators = _first_request_headers(checkpoint, plan.first_url)
        while plan.next_url is not None:
            if self.monotonic() >= deadline:
                yield replace(walk, stop_reason="time or lease ran out")
                return
            url = plan.next_url
            headers = validators if walk.first_response is None else {}
            fetched = self._fetch(fetch, self._request(url, spec, headers), policy, deadline)
            walk = replace(walk, retries=walk.retries + fetched.retries)
            if fetched.response is None:
                # The pages already read are kept (emitted and checkpointed); a first page that
                # fails for good fails the poll.
                reason = None if walk.first_response is None else "a page could not be fetched"
                yield replace(walk, fetch_error=fetched.error, stop_reason=reason)
                return
            response = fetched.response
            walk = replace(walk, responses=walk.responses + 1)
            if response.status == 304:
                if walk.first_response is None:
                    yield replace(walk, not_modified=True)
                else:
                    yield replace(walk, stop_reason="unexpected 304 for a later page")
                return
            yield walk
            read_at = datetime.fromtimestamp(self.wall_clock(), UTC)
            page = read_page(
                spec, response, seen, horizon=self.config.horizon, now=read_at,
                max_dead_letters=self.config.max_dead_letters,
            )  # fmt: skip
            walk = walk.read(response, page, read_at)
            yield walk
            plan.fetched(url, page.document, page.items_on_page, final_url=response.url)
        if plan.truncated:
            yield replace(walk, stop_reason=f"max_pages ({spec.pagination.max_pages}) reached")
        else:
            yield walk

    def _fetch(
        self, fetch: Fetch, request: HttpRequest, policy: RetryPolicy, deadline: float
    ) -> _Fetched:
        retries: list[RetryDecision] = []
        try:
            response = fetch_with_retries(
                fetch,
                request,
                policy,
                sleep=self.sleep,
                monotonic=self.monotonic,
                wall_clock=self.wall_clock,
                deadline=deadline,
                rng=self.rng,
                on_retry=retries.append,
            )
        except FeedFetchError as err:
            return _Fetched(None, err, len(retries))
        return _Fetched(response, None, len(retries))

    def _check_lease_left(self, lease_deadline: float) -> None:
        if self.monotonic() >= lease_deadline + self.config.lease_margin_seconds / 2:
            # The walk stops at the deadline, but parsing or a slow last page can overrun it; with
            # less than half the margin left, the lease could expire while emitting and another
            # invocation could emit the same items: better to emit nothing and let the next poll do it.
            raise _PollAborted("the lease was about to expire before emitting; nothing emitted")

    def _next_checkpoint(
        self, checkpoint: Checkpoint, seen: SeenSet, walk: _Walk, now: float
    ) -> tuple[Checkpoint, int]:
        """The checkpoint to write after emitting, bounded, and how many entries bounding dropped."""
        validators: Mapping[str, str | None] = {}
        if walk.incomplete_reason is None and walk.first_response is not None:
            validators = {
                "source_url": walk.first_url,
                "etag": walk.first_response.header("etag"),
                "last_modified": walk.first_response.header("last-modified"),
            }
        # else keep the old validators: a 304 must not hide a page this poll did not read
        proposed = seen.checkpoint(
            checkpoint, version=checkpoint.version + 1, committed_at=now, **validators
        )
        bounded, _, evicted = bound_checkpoint(proposed, self.config.bounds, now)
        return bounded, evicted

    def _release(self, feed: str, owner: str) -> None:
        try:
            self.store.release(feed, owner)
        except Exception:  # the lease then simply expires; nothing else depends on it
            log.exception("cannot release the feed lease", extra={"feed": feed})

    def _request(self, url: str, spec: FeedSpec, extra: Mapping[str, str]) -> HttpRequest:
        headers = {"User-Agent": self.config.user_agent, "Accept": "application/json", **extra}
        return HttpRequest(url=url, headers=headers, timeout=spec.timeout_seconds)
