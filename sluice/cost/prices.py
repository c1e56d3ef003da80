"""The price table ``sluice cost`` multiplies by: one data file, ``prices.json``, in this package.

In: ``prices.json`` (loaded with ``importlib.resources``, so it travels with the installed package),
or another file of the same shape (``load_prices(path)``).
Out: a ``PriceTable``: its region, date, currency, hours per month and every price with its unit,
its source and whether a fetched page confirmed it.
Errors: a file that is missing, not JSON or not of that shape is a ``ConfigError`` naming it.

Why one file: a price changes without any code changing, and every figure keeps its source next to
it, so a reader can check it (``sluice cost --json`` prints which prices were not confirmed).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluice.core.config import config_error
from sluice.core.errors import ConfigError

__all__ = ["Price", "PriceTable", "load_prices"]

REQUIRED = (
    "api_gateway_http_per_million",
    "api_gateway_http_per_million_next_700m",
    "api_gateway_http_per_million_over_1b",
    "api_gateway_http_metering_bytes",
    "lambda_per_million_requests",
    "lambda_per_gb_second",
    "lambda_full_vcpu_memory_mb",
    "kinesis_on_demand_stream_hour",
    "kinesis_on_demand_per_gb_in",
    "kinesis_on_demand_per_gb_out",
    "kinesis_on_demand_record_rounding_bytes",
    "kinesis_shard_hour",
    "kinesis_per_million_put_units",
    "kinesis_put_unit_bytes",
    "kinesis_extended_retention_shard_hour",
    "kinesis_on_demand_extended_retention_gb_month",
    "kinesis_long_term_retention_gb_month",
    "kinesis_shard_bytes_in_per_second",
    "kinesis_shard_records_in_per_second",
    "kinesis_shard_bytes_out_per_second",
    "firehose_per_gb",
    "firehose_record_rounding_bytes",
    "firehose_dynamic_partitioning_per_gb",
    "firehose_dynamic_partitioning_per_1000_objects",
    "msf_kpu_hour",
    "msf_orchestration_kpus",
    "msf_storage_gb_per_kpu",
    "msf_storage_gb_month",
    "s3_standard_gb_month",
    "s3_put_per_1000",
    "s3_get_per_1000",
    "glue_free_objects",
    "glue_per_100k_objects",
    "glue_free_requests",
    "glue_per_million_requests",
    "athena_per_tb",
    "athena_min_bytes_per_query",
)
"""Every price the model uses; a table without one of them is refused when loaded."""


class Price(BaseModel):
    """One price: its value in ``unit``, where it comes from, and whether a fetched page confirmed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float = Field(ge=0)
    unit: str
    source: str
    confirmed: bool


class PriceTable(BaseModel):
    """The prices of one region at one date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    region: str
    currency: str
    as_of: str
    checked: str
    hours_per_month: float = Field(gt=0)
    prices: dict[str, Price]

    def __getitem__(self, name: str) -> float:
        return self.prices[name].value

    def unconfirmed(self) -> list[str]:
        """The names of the prices no fetched page confirmed."""
        return sorted(name for name, price in self.prices.items() if not price.confirmed)


def load_prices(path: Path | None = None) -> PriceTable:
    """The price table in ``path``, or the packaged ``prices.json``."""
    where = str(path) if path else "sluice/cost/prices.json"
    try:
        raw = (
            path.read_bytes()
            if path
            else resources.files("sluice.cost").joinpath("prices.json").read_bytes()
        )
        table = PriceTable.model_validate(orjson.loads(raw))
    except (OSError, orjson.JSONDecodeError) as err:
        raise ConfigError(f"price table {where}: {err}") from None
    except ValidationError as err:
        raise config_error(err, prefix=f"price table {where}") from None
    missing = [name for name in REQUIRED if name not in table.prices]
    if missing:
        raise ConfigError(f"price table {where}: missing {', '.join(missing)}")
    return table
