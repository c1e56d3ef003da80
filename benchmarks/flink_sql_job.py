"""The Flink SQL reference job the benchmark submits (runs in .venv-flink, under ``flink run``):
a JSON file of canonical IoT readings -> 1-minute tumbling event-time windows per device -> a
blackhole sink. Usage: ``flink run -m HOST:PORT --python benchmarks/flink_sql_job.py FILE``."""

import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

path = sys.argv[1]
t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t_env.get_config().set("parallelism.default", "1")
t_env.get_config().set("pipeline.name", f"sluice-bench-flink-sql {path}")
t_env.execute_sql(
    f"""
    CREATE TABLE readings (
        device_id STRING,
        event_time TIMESTAMP_LTZ(3),
        metrics MAP<STRING, DOUBLE>,
        attributes MAP<STRING, STRING>,
        WATERMARK FOR event_time AS event_time - INTERVAL '10' MINUTE
    ) WITH (
        'connector' = 'filesystem', 'path' = '{path}', 'format' = 'json',
        'json.timestamp-format.standard' = 'ISO-8601', 'json.fail-on-missing-field' = 'false'
    )
    """
)
t_env.execute_sql(
    """
    CREATE TABLE iot_metrics_1m (
        window_start TIMESTAMP(3), device_id STRING, readings BIGINT,
        temperature_mean DOUBLE, temperature_min DOUBLE, temperature_max DOUBLE
    ) WITH ('connector' = 'blackhole')
    """
)
t_env.execute_sql(
    """
    INSERT INTO iot_metrics_1m
    SELECT window_start, device_id, COUNT(*), AVG(metrics['temperature']),
           MIN(metrics['temperature']), MAX(metrics['temperature'])
    FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
    GROUP BY window_start, window_end, device_id
    """
)
