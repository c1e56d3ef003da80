"""Optional dependencies, one extra per layer, checked before use with an actionable message.

In: the name of an extra (``tables``, ``query``, ``edges``, ``beam``, ``flink``, ``dev``) and the modules it
provides.
Out: nothing when they are importable; otherwise ``MissingExtraError`` (a ``ConfigError``): one line
naming the extra and the ``pip install`` that adds it. The CLI prints it and exits 2.

Why: the core installs with only its declared dependencies (``pyproject.toml``); the layers that
need more (Iceberg tables, DuckDB, AWS clients, Beam) declare them as extras, as pyiceberg does for
its catalogs (``pip install 'pyiceberg[glue]'``), instead of ending in an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib.util

from sluice.core.errors import ConfigError

__all__ = ["require"]

EXTRAS: dict[str, str] = {
    "tables": "Iceberg tables (pyiceberg, pyarrow): the writer, maintenance, replay, re-drive",
    "query": "DuckDB over the tables: sluice query, sluice tables, sluice status",
    "edges": "the Lambda edges and their AWS clients (boto3, Powertools)",
    "beam": "the Apache Beam stream job (apache-beam, boto3)",
    "deploy": "sluice deploy and destroy (boto3, aws-sam-translator, PyYAML)",
    "flink": "the local Flink cluster (nothing beyond the core); Flink itself is .venv-flink",
    "dev": "tests, linters, sample and demo-database generators",
}


class MissingExtraError(ConfigError):
    """A layer's optional dependencies are not installed; the message says which extra to add."""


def require(extra: str, *modules: str) -> None:
    """Raise ``MissingExtraError`` unless every one of ``modules`` can be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"this needs the '{extra}' extra ({EXTRAS.get(extra, extra)}; missing: "
            f"{', '.join(missing)}): pip install 'sluice[{extra}]'"
        )
