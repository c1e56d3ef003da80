-- Device anomalies, last 24 hours: 1-minute windows whose maximum exceeds the device's and metric's
-- baseline (mean of its window means) by more than 3 standard deviations of those means.
-- Needs at least 10 windows of baseline per device and metric. Portable SQL (Athena/Trino, DuckDB).
WITH recent AS (
    SELECT window_start, device_id, metric, "count" AS readings, mean, "max" AS max_value
    FROM iot_metrics_1m
    WHERE window_start >= current_timestamp - INTERVAL '1' DAY
),
baseline AS (
    SELECT device_id, metric, avg(mean) AS mu, stddev_samp(mean) AS sigma, count(*) AS windows
    FROM recent
    GROUP BY device_id, metric
)
SELECT
    r.window_start,
    r.device_id,
    r.metric,
    r.readings,
    round(r.max_value, 3) AS max_value,
    round(b.mu, 3) AS baseline_mean,
    round(b.sigma, 3) AS baseline_stddev,
    round((r.max_value - b.mu) / b.sigma, 2) AS z_score
FROM recent AS r
JOIN baseline AS b ON r.device_id = b.device_id AND r.metric = b.metric
WHERE b.windows >= 10 AND b.sigma > 0 AND r.max_value > b.mu + 3 * b.sigma
ORDER BY z_score DESC
LIMIT 100
