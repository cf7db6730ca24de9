-- grain: one row per stored event (project, event_id): the retried copies the
-- ReplacingMergeTree has not merged yet are dropped here, measures typed out of properties.
SELECT
    project,
    event_id,
    event,
    distinct_id AS user_id,
    timestamp,
    toDate(timestamp) AS day,
    properties,
    JSONExtract(properties, '{duration_seconds}', 'Nullable(Float64)') AS duration_seconds,
    JSONExtract(properties, '{items_count}', 'Nullable(Int64)') AS items_count,
    JSONExtract(properties, '{revenue_cents}', 'Nullable(Int64)') AS revenue_cents
FROM {db}.events
WHERE timestamp >= toDateTime64('{start}', 3, 'UTC')
  AND timestamp < toDateTime64('{end}', 3, 'UTC')
LIMIT 1 BY project, event_id
