-- Error rate by path, last 24 hours: share of 4xx and 5xx responses, worst paths first.
-- CAST(... AS DOUBLE): Trino divides integers as integers, DuckDB does not; the cast makes both agree.
SELECT
    path,
    sum(requests) AS requests,
    sum(CASE WHEN status_class = '4xx' THEN requests ELSE 0 END) AS client_errors,
    sum(CASE WHEN status_class = '5xx' THEN requests ELSE 0 END) AS server_errors,
    round(
        CAST(sum(CASE WHEN status_class IN ('4xx', '5xx') THEN requests ELSE 0 END) AS DOUBLE)
        / sum(requests),
        4
    ) AS error_rate
FROM web_traffic_1m
WHERE window_start >= current_timestamp - INTERVAL '1' DAY
GROUP BY path
ORDER BY error_rate DESC, requests DESC
LIMIT 50
