"""Settings of the transform Lambda (``SLUICE_*`` environment variables, validated at cold start).

In: the environment. Out: ``StreamTransformSettings``: the core's processing settings (log format,
GeoIP, filter rules, window and lateness: ``CoreSettings``), where the tables live
(``WarehouseSettings``), and what only this deployable has: the stream it is mapped to, the
deployment's owner id and the positions-commit interval. The same split as the stream job's
``JobSettings``, so one option never has two definitions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sluice.core.config import CoreSettings
from sluice.tables.catalog import WarehouseSettings
from sluice.tables.warehouse import DEFAULT_POSITIONS_COMMIT_SECONDS

__all__ = ["StreamTransformSettings"]


class StreamTransformSettings(CoreSettings, WarehouseSettings):
    """Everything the transform Lambda can be told."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid", frozen=True)

    stream_name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[a-zA-Z0-9_.-]+$",
        description="Kinesis stream the function is mapped to (a name); its identity is checked "
        "against the stream the tables hold positions of. Required.",
    )
    deployment_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9:_.-]+$",
        description="Owner id of this deployment of the Lambda path, the same for all its "
        "invocations (sluice deploy sets a new one each deploy). A deployment claims the tables "
        "at its first invocation; once another writer claims them after it, it writes no more. "
        "Required.",
    )
    positions_commit_seconds: float = Field(
        default=DEFAULT_POSITIONS_COMMIT_SECONDS,
        ge=0,
        le=86_400,
        description="Longest a table that receives no rows goes without recording its positions; "
        "a switch to the Flink job re-reads at most about this much of the stream.",
    )
    on_new_stream: Literal["refuse", "start_from_position"] = Field(
        default="refuse",
        description="When the stream was recreated since the tables' positions were written: "
        "refuse (every batch fails, logged) or start_from_position (forget the old positions).",
    )

    def warehouse_settings(self) -> WarehouseSettings:
        """Where the tables live (the ``WarehouseSettings`` part of these settings)."""
        return WarehouseSettings.model_validate(
            {name: getattr(self, name) for name in WarehouseSettings.model_fields}
        )
