"""For analysts: DuckDB queries over the tables with partition pruning, Athena DDL."""
