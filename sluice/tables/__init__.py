"""Iceberg storage: table specs, the exactly-once writer, maintenance, the raw archive, re-drive."""
