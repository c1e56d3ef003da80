"""The local Flink cluster's settings: one typed object, every field documented.

In: flags (``sluice flink cluster start --rest_port 8081``, made from the fields by
``sluice.core.flags``), else environment variables ``SLUICE_<FIELD>``, else the defaults.
Out: a frozen, validated ``ClusterSettings``; unknown options are refused with the closest name.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.core.config import build_settings

__all__ = ["REPO_ROOT", "ClusterSettings", "load_cluster_settings"]

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout: ``flink_conf/`` (the configuration template, the jar manifest) and ``.venv-flink``."""


class ClusterSettings(BaseSettings):
    """Everything ``sluice flink cluster`` can be told."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid", frozen=True)

    flink_dir: Path | None = Field(
        default=None,
        description="The cluster's folder: its config.yaml, logs, pid files, checkpoints and "
        "savepoints (default: <SLUICE_STATE_DIR or .sluice>/flink).",
    )
    flink_venv: Path = Field(
        default=REPO_ROOT / ".venv-flink",
        description="The PyFlink environment (make flink-venv) whose Flink distribution runs the "
        "cluster and whose Python runs the Python workers.",
    )
    config_template: Path = Field(
        default=REPO_ROOT / "flink_conf" / "config.yaml",
        description="The committed Flink configuration the cluster's config.yaml is written from.",
    )
    rest_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="REST port on 127.0.0.1 (0: a free one). The JobManager's RPC and blob ports "
        "are free ones; a TaskManager's RPC and data ports are chosen by the system.",
    )
    checkpoint_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        le=3_600,
        description="Checkpoint interval (default: the template's execution.checkpointing.interval).",
    )
    start_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=1_800,
        description="How long start (and start-taskmanager) waits for a TaskManager with free slots.",
    )
    stop_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long stop waits after SIGTERM before it sends SIGKILL.",
    )
    jobmanager_memory: str = Field(
        default="1024m",
        pattern=r"^[0-9]+[mg]$",
        description="JobManager process size (jobmanager.memory.process.size).",
    )
    taskmanager_memory: str = Field(
        default="1600m",
        pattern=r"^[0-9]+[mg]$",
        description="TaskManager process size (taskmanager.memory.process.size).",
    )
    heartbeat_timeout_seconds: int = Field(
        default=10,
        ge=2,
        le=300,
        description="How soon the JobManager declares a silent TaskManager lost and restarts its "
        "tasks (Flink's default is 50 s; a local cluster can notice sooner).",
    )

    @model_validator(mode="after")
    def _default_dir(self) -> ClusterSettings:
        if self.flink_dir is None:
            # The state folder's default is WarehouseSettings' (.sluice); read here without
            # importing the tables layer, which the cluster does not need.
            state = Path(os.environ.get("SLUICE_STATE_DIR") or ".sluice")
            object.__setattr__(self, "flink_dir", state / "flink")
        return self

    @property
    def folder(self) -> Path:
        """The cluster's folder, absolute."""
        assert self.flink_dir is not None
        return self.flink_dir.resolve()


def _option(path: str) -> str:
    head = path.partition(".")[0]
    return f"--{head}" if head else "options"


def load_cluster_settings(overrides: dict[str, object] | None = None) -> ClusterSettings:
    """``ClusterSettings`` from ``overrides`` (flags) over the environment; any problem is one
    ``ConfigError`` naming the option."""
    return build_settings(
        ClusterSettings, overrides, prefix="invalid flink cluster options", name=_option
    )
