-- Dead letters by reason, last 24 hours: what was rejected, where in the pipeline, and why.
SELECT
    source,
    stage,
    error_type,
    count(*) AS rejected,
    sum(CASE WHEN raw_truncated THEN 1 ELSE 0 END) AS truncated,
    min(first_seen) AS first_seen_at,
    max(first_seen) AS last_seen_at
FROM dead_letters
WHERE first_seen >= current_timestamp - INTERVAL '1' DAY
GROUP BY source, stage, error_type
ORDER BY rejected DESC, source, stage, error_type
