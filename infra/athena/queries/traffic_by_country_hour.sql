-- Traffic by country per hour, last 24 hours: requests and bytes from the 1-minute windows.
-- Portable SQL (Athena engine 3 / Trino and DuckDB). '' is stored when the country is unknown.
SELECT
    date_trunc('hour', window_start) AS hour_start,
    coalesce(nullif(country_iso, ''), '(unknown)') AS country,
    sum(requests) AS requests,
    sum(bytes) AS bytes
FROM web_traffic_1m
WHERE window_start >= current_timestamp - INTERVAL '1' DAY
GROUP BY date_trunc('hour', window_start), coalesce(nullif(country_iso, ''), '(unknown)')
ORDER BY hour_start DESC, requests DESC
