"""Throughput benchmarks (`make bench`). Targets are measured here, never asserted in timed tests."""
