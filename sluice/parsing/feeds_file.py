"""Feeds files: the feeds people configure, ``{"feeds": [spec, ...]}`` in JSON or YAML.

In: a path (``SLUICE_FEEDS_FILE`` for the poller, ``sluice parse feed --feed-spec FILE``). ``.yaml`` and
``.yml`` files are YAML (PyYAML, safe loading), anything else JSON.
Out: the ``FeedSpec``s, validated (``sluice.parsing.feeds``: every key documented, unknown ones refused,
names unique).
Errors: one ``ConfigError`` line naming the file and the field: ``feeds.1.id_fields: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from sluice.core.errors import ConfigError
from sluice.parsing.feeds import FeedSpec

__all__ = ["load_feeds_file", "select_feed"]

MAX_FEEDS_FILE_BYTES = 1024 * 1024


def _decode(path: Path, data: bytes) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML is a dependency of the core
            raise ConfigError(
                f"feeds file {path}: reading YAML needs PyYAML (pip install pyyaml)"
            ) from None
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"feeds file {path}: not YAML{line}: {problem}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"feeds file {path}: not JSON: {err}") from None


def load_feeds_file(path: Path) -> tuple[FeedSpec, ...]:
    """The feeds of ``path``; any problem is one ``ConfigError`` naming the file and the field."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FEEDS_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"feeds file {path}: {err.strerror or err}") from None
    if len(data) > MAX_FEEDS_FILE_BYTES:
        raise ConfigError(f"feeds file {path}: larger than {MAX_FEEDS_FILE_BYTES} bytes")
    document = _decode(path, data)
    if not isinstance(document, dict) or not isinstance(document.get("feeds"), list):
        raise ConfigError(f'feeds file {path}: expected {{"feeds": [feed spec, ...]}}')
    unknown = sorted(set(document) - {"feeds"})
    if unknown:
        raise ConfigError(f"feeds file {path}: unknown key {unknown[0]!r} (only 'feeds')")
    specs = []
    for index, entry in enumerate(document["feeds"]):
        try:
            specs.append(FeedSpec.model_validate(entry))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in ('feeds', index, *e['loc']))}: {e['msg']}"
                for e in err.errors(include_url=False)
            )
            raise ConfigError(f"feeds file {path}: {problems}") from None
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"feeds file {path}: feed names must be unique: {duplicates[0]!r} twice")
    if not specs:
        raise ConfigError(f"feeds file {path}: feeds: no feed")
    return tuple(specs)


def select_feed(specs: tuple[FeedSpec, ...], name: str | None, where: str) -> FeedSpec:
    """The feed called ``name`` among ``specs`` (the only one when no name is given)."""
    if name is None:
        if len(specs) == 1:
            return specs[0]
        raise ConfigError(
            f"{where} has {len(specs)} feeds; name one with --feed: "
            + ", ".join(s.name for s in specs)
        )
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError(f"no feed {name!r} in {where}; it has: {', '.join(s.name for s in specs)}")
