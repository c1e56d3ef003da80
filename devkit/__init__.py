"""Development-only helpers (sample generators, the synthetic demo GeoIP database); never shipped in an artifact."""
