"""A trivial PyFlink Table API job for the local-cluster test: datagen -> 1-minute tumbling window
-> blackhole. Checkpointing comes from the cluster's config.yaml (execution.checkpointing.*)."""

from pyflink.table import EnvironmentSettings, TableEnvironment

t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t_env.get_config().set("pipeline.name", "sluice-test-datagen-window")
t_env.execute_sql(
    """
    CREATE TABLE readings (
        device_id STRING,
        temperature DOUBLE,
        event_time AS LOCALTIMESTAMP,
        WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
    ) WITH ('connector' = 'datagen', 'rows-per-second' = '200', 'fields.device_id.length' = '2')
    """
)
t_env.execute_sql(
    """
    CREATE TABLE sink (
        window_start TIMESTAMP(3), device_id STRING, readings BIGINT, mean DOUBLE
    ) WITH ('connector' = 'blackhole')
    """
)
t_env.execute_sql(
    """
    INSERT INTO sink
    SELECT window_start, device_id, COUNT(*), AVG(temperature)
    FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
    GROUP BY window_start, window_end, device_id
    """
)
