"""Fuzzing every parser and edge body function: no crash, no hang, bounded memory (``fuzz_targets``).

Each target runs in a process of its own (its peak RSS is its own), first replaying the committed
regression corpus (``corpus/shared`` and ``corpus/<target>``: the issue's hostile inputs and every
input a run found), then hypothesis-generated inputs: 100,000 per target at full scale, 300 at
short. Two targets run at a time (the machine's two cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuzz_targets import TARGETS, TIME_BOUND_SECONDS
from report import FAIL, PASS, Result, measure

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
EXAMPLES = {"smoke": 40, "short": 300, "full": 100_000}
SMOKE_CORPUS_BYTES = 1 << 20
"""At smoke scale (``make test``) only corpus inputs of at most 1 MiB (decompressed) are replayed:
the 100 MiB gzip bombs run at short and full scale."""
MEMORY_BOUND_MIB = 1024
"""The edges' documented Lambda memory size."""


def _run(target: str, examples: int, scale: str) -> dict[str, Any]:
    limit = [str(SMOKE_CORPUS_BYTES)] if scale == "smoke" else []
    done = subprocess.run(
        [sys.executable, str(HERE / "fuzz_targets.py"), target, str(examples), str(CORPUS), *limit],
        capture_output=True,
        timeout=3600,
        check=False,
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"target": target, "error": f"exit {done.returncode}: {tail[0][:200]}"}
    outcome: dict[str, Any] = json.loads(lines[-1])
    return outcome


def test_fuzz_every_parser_and_edge_body(scale: str) -> None:
    result = Result("fuzz", "Fuzzing parsers and edge bodies")
    examples = EXAMPLES[scale]
    with measure(result):
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda t: _run(t, examples, scale), TARGETS))
        for outcome in outcomes:
            target = outcome["target"]
            injected = f"corpus + {examples} generated inputs"
            if scale == "smoke":
                injected = f"corpus inputs up to 1 MiB + {examples} generated inputs"
            if "error" in outcome:
                result.fail(target, injected, f"the fuzz process failed: {outcome['error']}")
                continue
            problems = []
            if outcome["crashes"]:
                kinds = sorted(
                    {c["error"].split(":")[0] + " at " + c["at"] for c in outcome["crashes"]}
                )
                inputs = ", ".join(c["input"] for c in outcome["crashes"][:6])
                problems.append(
                    f"{len(outcome['crashes'])} crashes ({'; '.join(kinds)}), e.g. {inputs}"
                )
            if outcome["hangs"]:
                slow = ", ".join(f"{h['input']} ({h['seconds']} s)" for h in outcome["hangs"][:4])
                problems.append(
                    f"{len(outcome['hangs'])} inputs over {TIME_BOUND_SECONDS} s: {slow}"
                )
            if outcome["peak_rss_mib"] > MEMORY_BOUND_MIB:
                problems.append(
                    f"peak RSS {outcome['peak_rss_mib']} MiB > {MEMORY_BOUND_MIB} MiB "
                    f"(slowest input {outcome['slowest_input']})"
                )
            detail = "; ".join(problems) or (
                f"slowest input {outcome['slowest_seconds']} s, peak RSS {outcome['peak_rss_mib']} MiB"
            )
            result.check(
                target,
                injected,
                events_in=outcome["corpus_inputs"] + outcome["generated"],
                events_out=outcome["corpus_inputs"]
                + outcome["generated"]
                - len(outcome["crashes"]),
                verdict=FAIL if problems else PASS,
                detail=detail,
            )
            result.metrics[f"{target}"] = (
                f"{outcome['corpus_inputs']} corpus + {outcome['generated']} generated inputs in "
                f"{outcome['seconds']} s, peak RSS {outcome['peak_rss_mib']} MiB"
            )
        result.notes.append(
            "A crash or over-time input found by generation is saved to "
            "tests/reliability/corpus/<target>/found-<digest>.bin and replayed by every later run."
        )
        result.notes.append(
            "Per-target peak RSS is the target process' ru_maxrss; Linux carries the parent's "
            "high-water mark across fork+exec, so a value equal for every target is the parent's "
            "(a lower bound), not the target's."
        )
        result.notes.append(
            "atheris is not used: no wheel for this Python in the lock; hypothesis generates "
            "structured hostile inputs (deep nesting, extreme dates, huge numbers, NUL, invalid "
            "UTF-8, mutated seeds) plus raw bytes."
        )
    assert result.overall() == PASS, result.checks
