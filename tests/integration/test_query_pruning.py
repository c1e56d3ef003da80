"""Partition pruning never changes an answer: generated queries run with and without pruning.

Three small tables (``web_requests``, ``dead_letters``, ``iot_metrics_1m``) in a SQLite catalog, each
with rows over twelve days (one data file per day partition), so a pushed-down bound really skips
files. Rows sit on a grid of instants (or one microsecond either side, one millisecond or one second
after) and the generated literals are drawn from the same grid, so bounds fall on rows. The grid is
half an hour out of phase with the clock when the tables are built, so ``now() - INTERVAL n HOUR``
never lands near a row while the module runs (the two runs of a query read the clock a moment apart).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

from sluice.analysts.query import QueryError, TablePlan, run
from sluice.tables.specs import TABLES
from sluice.tables.warehouse import WarehouseSettings, ensure_tables, open_catalog

STEP = timedelta(hours=2)  # whole hours: every row keeps the half-hour phase
STEPS = range(-120, 30)  # the grid: BASE + k * STEP, ten days back and two and a half ahead
NUDGES = [
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(microseconds=-1),
    timedelta(milliseconds=1),
    timedelta(seconds=1),
]
KEYS = [200, 404, 500]


class Grid:
    """The grid's origin, set when the tables are built."""

    base = datetime.now(UTC)


@dataclass(frozen=True)
class Warehouse:
    catalog: Catalog
    namespace: str


def _instant(k: int, nudge: int) -> datetime:
    return Grid.base + k * STEP + NUDGES[nudge]


def _rows() -> dict[str, list[dict[str, Any]]]:
    web, dead, metrics = [], [], []
    for i, k in enumerate(STEPS):
        when = _instant(k, i % len(NUDGES))
        key = KEYS[i % len(KEYS)]
        web.append({
            "event_id": f"w{i}", "event_time": when, "ingest_time": when, "status": key,
            "path": ["/", "/a", "it's", "-- x"][i % 4],
        })  # fmt: skip
        dead.append({
            "dead_letter_id": f"d{i}", "source": ["iot", "weblog"][i % 2], "stage": "parse",
            "error_type": "E", "message": "m", "raw": "r", "raw_encoding": "utf-8",
            "raw_size": KEYS[(i + 1) % len(KEYS)], "raw_truncated": False,
            "event_time": _instant(k + 1, (i + 2) % len(NUDGES)) if i % 3 else None,
            "first_seen": _instant(k, (i + 3) % len(NUDGES)), "pipeline_version": "1",
        })  # fmt: skip
        metrics.append({
            "window_start": _instant(k, (i + 1) % len(NUDGES)),
            "window_end": _instant(k, (i + 1) % len(NUDGES)) + timedelta(minutes=1),
            "device_id": f"dev{i % 2}", "metric": "t", "count": KEYS[(i + 2) % len(KEYS)],
        })  # fmt: skip
    return {"web_requests": web, "dead_letters": dead, "iot_metrics_1m": metrics}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    # Half an hour after the clock: now() - INTERVAL n HOUR stays 30 minutes away from any row.
    Grid.base = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    settings = WarehouseSettings(state_dir=tmp_path_factory.mktemp("pruning") / "state")
    catalog = open_catalog(settings)
    tables = ensure_tables(catalog, settings)
    for name, rows in _rows().items():
        table = tables[name]
        table.append(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))
    return Warehouse(catalog, settings.namespace)


Answer = tuple[str, Any]


def answer(warehouse: Warehouse, sql: str, prune: bool, plans: list[TablePlan]) -> Answer:
    """The rows of ``sql`` as a multiset, or the error DuckDB gave."""
    try:
        columns, rows = run(warehouse.catalog, warehouse.namespace, sql, plans, prune=prune)
    except QueryError as err:
        return "error", str(err)
    return "rows", (columns, Counter(rows))


def check(warehouse: Warehouse, sql: str) -> list[TablePlan]:
    pruned: list[TablePlan] = []
    whole: list[TablePlan] = []
    assert answer(warehouse, sql, True, pruned) == answer(warehouse, sql, False, whole), sql
    assert all(p.files_planned == p.files_total for p in whole)
    return pruned


# --- literals --------------------------------------------------------------------------------------


def _wall(when: datetime, offset_minutes: int) -> str:
    local = when.astimezone(timezone(timedelta(minutes=offset_minutes)))
    return local.strftime("%Y-%m-%d %H:%M:%S.%f").removesuffix(".000000")


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


instants = st.builds(_instant, st.sampled_from(list(STEPS)), st.integers(0, len(NUDGES) - 1))
offsets = st.sampled_from([-360, 330, 60, -600, 0])


@st.composite
def literals(draw: st.DrawFn) -> str:
    """A constant DuckDB compares with a TIMESTAMPTZ column, in one of the forms analysts write."""
    when, minutes = draw(instants), draw(offsets)
    utc, local, zone = _wall(when, 0), _wall(when, minutes), _offset(minutes)
    hours = draw(st.integers(-2, 240))
    # Offsets and dollar quotes first: Hypothesis draws the first choices more often.
    return draw(
        st.sampled_from(
            [
                f"TIMESTAMP '{local}{zone}'",  # DuckDB drops the offset of a TIMESTAMP
                f"TIMESTAMPTZ '{local}{zone}'",  # and applies it for a TIMESTAMPTZ or a string
                f"'{local}{zone}'",
                f"$${local}{zone}$$",
                f"TIMESTAMP '{utc}'",
                f"TIMESTAMP '{local}{zone}'",  # twice: the form the old tokenizer got wrong
                f"TIMESTAMP WITH TIME ZONE '{local}{zone}'",
                f"timestamptz '{utc} America/Chicago'",
                f"'{utc.replace(' ', 'T')}Z'",
                f"'{utc}'",
                f"TIMESTAMP $q${utc}$q$",
                f"DATE '{utc[:10]}'",
                f"'{utc[:10]}'",
                f"'{utc}'::TIMESTAMP",
                f"CAST('{local}{zone}' AS TIMESTAMPTZ)",
                f"TIMESTAMP '{utc}' + INTERVAL 1 HOUR",
                f"TIMESTAMP '{utc[:19]}.1234567'",
                f"now() - INTERVAL {hours} HOUR",
                f"current_timestamp - INTERVAL '{hours // 24}' DAY",
                f"now() - INTERVAL '{hours // 24} days {hours % 24} hours'",
                f"INTERVAL {hours} HOURS + current_timestamp",
                f"current_timestamp + INTERVAL {hours % 5} HOUR - INTERVAL 1 DAY",
                "current_timestamp",
            ]
        )
    )


# --- predicates ------------------------------------------------------------------------------------

OPS = [">=", ">", "<=", "<", "=", ">=", "<", "<>"]
OTHER = {
    "web_requests": [
        "status = 200",
        "path <> $$it's$$",
        "path = '-- x'",
        "path <> $t$ ' $t$",
        "path <> $$ ' $$",
        "path <> $$--$$",
        "path = $$ /* $$",
    ],
    "dead_letters": ["source = 'iot'", "raw_size = 404", "event_time IS NULL"],
    "iot_metrics_1m": ["device_id = 'dev0'", "count >= 404"],
}
COLUMNS = {
    "web_requests": ["event_id", "event_time", "status"],
    "dead_letters": ["dead_letter_id", "first_seen", "event_time"],
    "iot_metrics_1m": ["device_id", "window_start", "count"],
}
KEY = {"web_requests": "status", "dead_letters": "raw_size", "iot_metrics_1m": "count"}
COMMENTS = [" ", " /* c */ ", " -- x'\n", "\n", " /* ' */ "]


@dataclass(frozen=True)
class Ref:
    """A table in a FROM clause, and how the query names its columns."""

    table: str
    name: str  # the alias, or the table name
    spelled: str  # as written in FROM
    qualify: bool  # whether columns get the name (unqualified ones may be ambiguous: an error)

    def col(self, column: str) -> str:
        return f"{self.name}.{column}" if self.qualify else column

    def select(self) -> str:
        return ", ".join(self.col(c) for c in COLUMNS[self.table])


def aliased(table: str, alias: str) -> Ref:
    return Ref(table, alias, f"{table} AS {alias}", True)


@st.composite
def refs(draw: st.DrawFn, alias: str) -> Ref:
    table = draw(st.sampled_from(list(COLUMNS)))
    form = draw(st.sampled_from(["alias", "as", "bare", "bare-qualified"]))
    if form == "alias":
        return Ref(table, alias, f"{table} {alias}", True)
    if form == "as":
        return aliased(table, alias)
    return Ref(table, table, table, form == "bare-qualified")


@st.composite
def atoms(draw: st.DrawFn, ref: Ref) -> str:
    column = ref.col(TABLES[ref.table].time_column)
    kind = draw(st.sampled_from(["cmp"] * 4 + ["flipped", "between", "between", "other"]))
    if kind == "other":
        return ref.col(draw(st.sampled_from(OTHER[ref.table])))
    op, gap = draw(st.sampled_from(OPS)), draw(st.sampled_from(COMMENTS))
    if kind == "cmp":
        return f"{column}{gap}{op} {draw(literals())}"
    if kind == "flipped":
        return f"{draw(literals())} {op}{gap}{column}"
    negated = draw(st.sampled_from(["", "", "", "NOT "]))
    return f"{column} {negated}BETWEEN {draw(literals())} AND{gap}{draw(literals())}"


@st.composite
def predicates(draw: st.DrawFn, ref: Ref, depth: int = 2) -> str:
    """Atoms under AND, OR and NOT, with and without parentheses (AND binds tighter than OR)."""
    if depth == 0 or draw(st.booleans()):
        return draw(atoms(ref))
    left, right = draw(predicates(ref, depth - 1)), draw(predicates(ref, depth - 1))
    form = draw(
        st.sampled_from(
            [
                "{} AND {}",
                "{} AND {}",
                "{} AND {}",
                "({}) AND ({})",
                "{} OR {}",
                "({} OR {})",
                "NOT ({}) AND {}",
                "NOT {} AND {}",
            ]
        )
    )
    return form.format(left, right)


def where(ref: Ref, depth: int = 2) -> st.SearchStrategy[str]:
    """A WHERE clause: terms joined by AND, as analysts mostly write them."""
    terms = st.lists(predicates(ref, depth - 1), min_size=1, max_size=3)
    return terms.map(lambda ps: " WHERE " + " AND ".join(ps))


@st.composite
def queries(draw: st.DrawFn) -> str:
    shapes = ["single"] * 3 + ["join"] * 2 + ["subquery", "cte", "exists", "scalar", "lateral"]
    shape = draw(st.sampled_from([*shapes, "union", "self"]))
    a = draw(refs("a"))
    if shape == "single":
        return f"SELECT {a.select()} FROM {a.spelled}{draw(where(a))}"
    if shape == "subquery":
        s = aliased(a.table, "s")
        outer = draw(st.sampled_from(["", draw(where(s, 1))]))
        return f"SELECT {s.select()} FROM (SELECT * FROM {a.spelled}{draw(where(a))}) AS s{outer}"
    if shape == "cte":
        x = Ref(a.table, "x", "x", False)
        twice = f" UNION ALL SELECT {x.select()} FROM x" if draw(st.booleans()) else ""
        return (
            f"WITH x AS (SELECT * FROM {a.spelled}{draw(where(a))}) "
            f"SELECT {x.select()} FROM x{draw(where(x, 1))}{twice}"
        )
    b = aliased(a.table, "b") if shape == "self" else draw(refs("b"))
    if b.name == a.name:  # the same table unaliased twice
        b = aliased(b.table, "b")
    if shape in ("join", "self"):
        kind = draw(st.sampled_from(["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", ","]))
        on = "" if kind == "," else f" ON {a.col(KEY[a.table])} = {b.col(KEY[b.table])}"
        glue = draw(st.sampled_from(["AND", "OR"]))
        return (
            f"SELECT {a.select()}, {b.select()} FROM {a.spelled}{' ' if kind != ',' else ''}"
            f"{kind} {b.spelled}{on} WHERE {draw(predicates(a, 1))} {glue} "
            f"{draw(predicates(b, 1))}"
        )
    correlated = f"{b.col(KEY[b.table])} = {a.col(KEY[a.table])}"
    if shape == "exists":  # the subquery also filters on the outer table's time column
        negated = draw(st.sampled_from(["", "NOT "]))
        return (
            f"SELECT {a.select()} FROM {a.spelled} WHERE {negated}EXISTS (SELECT 1 FROM "
            f"{b.spelled} WHERE {correlated} AND {draw(predicates(b, 1))} AND "
            f"{draw(atoms(a))})"
        )
    if shape == "scalar":
        return (
            f"SELECT {a.select()}, (SELECT count(*) FROM {b.spelled}{draw(where(b))}) AS n "
            f"FROM {a.spelled}{draw(where(a))}"
        )
    if shape == "lateral":
        return (
            f"SELECT {a.select()}, l.n FROM {a.spelled}, LATERAL (SELECT count(*) AS n FROM "
            f"{b.spelled} WHERE {correlated} AND {draw(predicates(b, 1))}) AS l{draw(where(a))}"
        )
    return (
        f"SELECT {a.select()} FROM {a.spelled}{draw(where(a))} UNION ALL "
        f"SELECT {b.select()} FROM {b.spelled}{draw(where(b))}"
    )


@given(sql=queries())
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_pruning_never_changes_the_answer(warehouse: Warehouse, sql: str) -> None:
    plans = check(warehouse, sql)
    event("files skipped" if any(p.files_planned < p.files_total for p in plans) else "no skip")


# --- the regressions, and pruning that really skips files ------------------------------------------


def _at() -> datetime:
    return _instant(-8, 0)  # sixteen hours ago, a whole second


def _ts() -> str:
    return _wall(_at(), 0)


@pytest.mark.parametrize(
    ("sql", "expect"),
    [
        (  # DuckDB drops the offset of a TIMESTAMP literal: the bound is the wall time, as UTC
            lambda: (
                f"SELECT event_id FROM web_requests WHERE event_time >= TIMESTAMP '{_ts()}-06:00'"
            ),
            lambda plan: plan.bounds[0].value == _at(),
        ),
        (  # ... and applies it in a TIMESTAMPTZ literal
            lambda: (
                f"SELECT event_id FROM web_requests WHERE event_time >= TIMESTAMPTZ '{_ts()}-06:00'"
            ),
            lambda plan: plan.bounds[0].value == _at() + timedelta(hours=6),
        ),
        (  # one string to DuckDB, dashes and quote included: the OR is real
            lambda: (
                f"SELECT event_id FROM web_requests WHERE event_time >= TIMESTAMP '{_ts()}' "
                "AND path <> $$ ' $$ OR status = 200 --'"
            ),
            lambda plan: not plan.bounds,
        ),
        (
            lambda: (
                f"SELECT event_id FROM web_requests WHERE path <> $q$it's$q$ AND event_time < '{_ts()}'"
            ),
            lambda plan: [str(b) for b in plan.bounds] == [f"event_time < {_at().isoformat()}"],
        ),
    ],
    ids=["timestamp-offset", "timestamptz-offset", "dollar-quote-or", "dollar-quote-and"],
)
def test_regressions(
    warehouse: Warehouse, sql: Callable[[], str], expect: Callable[[TablePlan], bool]
) -> None:
    [plan] = check(warehouse, sql())
    assert expect(plan), plan
    if plan.bounds:
        assert plan.files_planned < plan.files_total


@pytest.mark.parametrize(
    "sql",
    [
        lambda: (
            "SELECT a.event_id, b.first_seen FROM web_requests a LEFT JOIN dead_letters b ON "
            f"b.raw_size = a.status WHERE a.event_time > '{_ts()}' AND b.first_seen <= '{_ts()}'"
        ),
        lambda: (
            "SELECT count(*) FROM iot_metrics_1m WHERE window_start BETWEEN "
            "now() - INTERVAL 3 DAY AND now()"
        ),
        lambda: (
            f"WITH x AS (SELECT * FROM dead_letters WHERE first_seen < DATE '{_ts()[:10]}') "
            "SELECT count(*) FROM x"
        ),
    ],
    ids=["left-join-both-sides", "between-clock", "cte-date"],
)
def test_pruned_queries_read_fewer_files(warehouse: Warehouse, sql: Callable[[], str]) -> None:
    plans = check(warehouse, sql())
    assert plans and all(p.bounds and p.files_planned < p.files_total for p in plans)
