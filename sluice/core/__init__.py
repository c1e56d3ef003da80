"""The shared foundation: contracts, dead letters, errors, settings, retries, input helpers."""
