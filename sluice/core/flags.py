"""Command-line flags made from a settings model, so the flags, the environment and ``--help`` agree.

In: a pydantic settings class (every field has a description and a default) and an argument list.
Out: the flags given, as overrides for the settings class (fields not given come from the
environment ``SLUICE_<FIELD>`` or the default, as ``build_settings`` does).
Errors: an unknown option is a ``ConfigError`` naming the closest valid option; never argparse's
usage dump, never silently ignored.

Why: the job's options used to be a second table beside its settings class, and Beam discarded any
flag it did not know ("Discarding unparseable args"), so a mistyped option did nothing. Here the
settings class is the only list: each field is ``--field_name`` (and ``--field-name``), and its help
line says its environment variable and its default.
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sluice.core.errors import ConfigError

__all__ = ["ErrorParser", "FlagParser", "closest_option", "unknown_option"]

ENV_PREFIX = "SLUICE_"
_SCALARS = (str, int, float, bool, Path)


def _is_structured(annotation: Any) -> bool:
    """Whether a field takes JSON on the command line (lists, tuples, mappings, models)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(
            _is_structured(arg) for arg in typing.get_args(annotation) if arg is not type(None)
        )
    if origin is typing.Literal:
        return False
    if origin in (list, tuple, dict, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _metavar(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _metavar(args[0]) if len(args) == 1 else "VALUE"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(annotation)) + "}"
    if _is_structured(annotation):
        return "JSON"
    if annotation is bool:
        return "{on,off}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "{" + ",".join(str(m.value) for m in annotation) + "}"
    names = {int: "N", float: "SECONDS", Path: "PATH"}
    return names.get(annotation, "VALUE")


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        return "required" if info.default_factory is None else "computed"
    value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list) and value and not isinstance(value[0], _SCALARS):
        return "see the docs"
    return str(value.value if isinstance(value, Enum) else value)


def closest_option(flag: str, known: Sequence[str]) -> str | None:
    """The valid option nearest to a mistyped one (``--windw_seconds`` -> ``--window_seconds``)."""
    normalized = flag.split("=", 1)[0].replace("-", "_")
    candidates: dict[str, str] = {}
    for k in known:
        candidates.setdefault(k.replace("-", "_"), k)  # the first spelling, --field_name
    found = difflib.get_close_matches(normalized, list(candidates), n=1, cutoff=0.6)
    return candidates[found[0]] if found else None


def unknown_option(flag: str, known: Sequence[str], prog: str) -> ConfigError:
    """The one-line error for an option (or argument) nobody takes, naming the closest valid one."""
    is_flag = flag.startswith("-")
    hint = closest_option(flag, known) if is_flag else None
    what = "unknown option" if is_flag else "unexpected argument"
    suggestion = f"; did you mean {hint}?" if hint else f"; see {prog} --help"
    return ConfigError(f"{what} {flag.split('=', 1)[0]!r}{suggestion}")


class ErrorParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one-line ``ConfigError``s instead of a usage dump and exit."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)

    def known_flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]


class FlagParser:
    """An argparse parser whose options are ``settings_class``' fields (plus any ``extra`` ones).

    ``aliases`` maps extra flag spellings to field names (``--stop-when-idle`` ->
    ``stop_when_idle_seconds``). ``--help`` prints every option with its environment variable and
    default, and exits 0.
    """

    def __init__(
        self,
        prog: str,
        settings_class: type[BaseModel],
        *,
        description: str | None = None,
        aliases: Mapping[str, str] | None = None,
        epilog: str | None = None,
    ) -> None:
        self.settings_class = settings_class
        self.parser = ErrorParser(
            prog=prog,
            description=description,
            epilog=epilog,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.extra = self.parser.add_argument_group("command options")
        group = self.parser.add_argument_group(
            "settings", f"each also read from the environment variable {ENV_PREFIX}<NAME>"
        )
        by_field: dict[str, list[str]] = {}
        for alias, field_name in (aliases or {}).items():
            by_field.setdefault(field_name, []).append(alias)
        for name, info in settings_class.model_fields.items():
            flags = [f"--{name}"]
            if "_" in name:
                flags.append(f"--{name.replace('_', '-')}")
            flags.extend(by_field.get(name, []))
            description_text = (info.description or "").replace("%", "%%")
            group.add_argument(
                *flags,
                dest=f"setting:{name}",
                default=argparse.SUPPRESS,
                metavar=_metavar(info.annotation),
                help=f"{description_text} (env {ENV_PREFIX}{name.upper()}; default: "
                f"{_default_text(info).replace('%', '%%')})",
            )

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        """A command option that is not a setting (``sluice replay --from``)."""
        self.extra.add_argument(*flags, **kwargs)

    def parse(self, argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
        """The command options and the settings overrides given in ``argv``."""
        namespace, unknown = self.parser.parse_known_args(list(argv))
        if unknown:
            flag = next((u for u in unknown if u.startswith("-")), unknown[0])
            raise unknown_option(flag, self.parser.known_flags(), self.parser.prog)
        overrides: dict[str, Any] = {}
        fields = self.settings_class.model_fields
        for key, value in vars(namespace).copy().items():
            if not key.startswith("setting:"):
                continue
            delattr(namespace, key)
            name = key.removeprefix("setting:")
            if _is_structured(fields[name].annotation):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError as err:
                    raise ConfigError(f"--{name}: not valid JSON ({err})") from None
            overrides[name] = value
        return namespace, overrides
