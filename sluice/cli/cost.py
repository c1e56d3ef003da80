"""``sluice cost [options] [--json]``: the monthly AWS cost of a workload, by component.

In: events per second per source, batch sizes, retention and the pipeline's settings (the fields
of ``sluice.cost.CostSettings``: ``sluice cost --help`` lists each with its environment variable
and default); the measurement file ``make bench`` writes (``--measurements FILE``, default
``reports/measurements.json``); the packaged price table.
Out: a table of monthly dollars per component, then what each optimization saves, then what the
figures rest on; with ``--json``, one JSON document with the same figures and the inputs.
Errors: an unknown option, a negative or non-numeric value, an unusable measurement file: one line
on standard error, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from sluice.core.config import build_settings
from sluice.core.flags import FlagParser

__all__ = ["register", "render_table"]

EXAMPLE = (
    "example: sluice cost --iot_events_per_second 2000 --weblog_lines_per_second 500 "
    "--feed_polls_per_minute 1 --json"
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "cost",
        help="the monthly AWS cost of a workload by component, and what each optimization saves",
        add_help=False,  # its --help is the settings' own, with every option
    )
    parser.set_defaults(handler=run, forwards=True, parser_of=parser)


def flags() -> FlagParser:
    from sluice.cost import CostSettings

    parser = FlagParser(
        "sluice cost",
        CostSettings,
        description=__doc__,
        epilog=EXAMPLE,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    for action in parser.parser._actions:  # the flags' default metavar for floats is SECONDS
        if action.metavar == "SECONDS" and not action.dest.endswith("_seconds"):
            action.metavar = "NUMBER"
    return parser


def _option(path: str) -> str:
    field = path.split(".", 1)[0]
    return f"--{field}" if field else "settings"


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from sluice.cost import CostSettings, estimate, load_measurements, load_prices

    options, overrides = flags().parse(rest)
    settings = build_settings(CostSettings, overrides, prefix="invalid cost options", name=_option)
    prices = load_prices()
    measured = load_measurements(settings.measurements)
    result = estimate(settings, prices, measured)
    out = sys.stdout.buffer
    if options.json:
        document = {
            "inputs": settings.model_dump(mode="json"),
            "region": prices.region,
            "prices_as_of": prices.as_of,
            "measured_at": measured.measured_at,
            "measurement_command": measured.command,
            "total_monthly_usd": result.total_usd,
            "components": [line.as_dict() for line in result.lines],
            "savings": [saving.as_dict() for saving in result.savings],
            "notes": list(result.notes),
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    out.write(render_table(result).encode())
    return 0


def render_table(result: Any) -> str:
    """The estimate as text: components, total, savings, notes."""
    rows = [
        (line.component + ("" if line.counted else " (not counted)"), line.monthly_usd, line.detail)
        for line in result.lines
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'component':<{width}}  {'USD/month':>11}  detail", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {usd:>11,.2f}  {detail}" for name, usd, detail in rows]
    lines.append(f"{'total':<{width}}  {result.total_usd:>11,.2f}")
    lines.append("")
    lines.append("what each optimization saves (USD/month of the components it changes):")
    for saving in result.savings:
        options = ", ".join(
            f"{label}{' *' if label == saving.chosen else ''} {usd:,.2f}"
            for label, usd in saving.options.items()
        )
        lines.append(f"- {saving.name}: {options}; chosen (*) saves {saving.saves_usd:,.2f}")
        lines.append(f"    {saving.detail}")
    lines.append("")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines) + "\n"
