"""The monthly AWS cost of a Sluice deployment, from a price table and measured figures.

Pure: no AWS call, no engine; ``sluice cost`` (``sluice/cli/cost.py``) is its command line.
``prices.json`` (this package) holds the prices with their date, region and sources;
``Measurements`` are what ``python -m benchmarks.measure`` (``make bench``) measured on the real
edge, job and writer code.
"""

from sluice.cost.measurements import Measurements, default_measurements_path, load_measurements
from sluice.cost.model import Estimate, Line, Saving, estimate
from sluice.cost.prices import PriceTable, load_prices
from sluice.cost.settings import CostSettings

__all__ = [
    "CostSettings",
    "Estimate",
    "Line",
    "Measurements",
    "PriceTable",
    "Saving",
    "default_measurements_path",
    "estimate",
    "load_measurements",
    "load_prices",
]
