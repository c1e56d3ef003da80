"""Per-batch enrichment and aggregation: GeoIP, filter rules, mergeable window accumulators."""
