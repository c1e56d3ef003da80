"""Sluice: the engine-neutral core of a real-time analytics pipeline.

Contracts, parsers, enrichment, filters, aggregation and dead letters as plain functions over
batches; the Lambda edges, the Beam job and the Flink application are thin adapters over them.
This package never imports apache_beam, pyflink or boto3.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
