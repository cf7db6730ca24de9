-- grain: one row per stored event (project, event_id): the retried copies the
-- ReplacingMergeTree has not merged yet are dropped here, measures typed out of properties.
SELECT
    project,
    event_id,
    event,
    distinct_id AS user_id,
    timestamp,
    toDate32(timestamp) AS day,
    properties,
    -- a measure is the property's value when it is a JSON integer, else NULL
    if(JSONType(properties, '{duration_seconds}') IN ('Int64', 'UInt64'),
       JSONExtract(properties, '{duration_seconds}', 'Nullable(Int64)'), NULL) AS duration_seconds,
    if(JSONType(properties, '{items_count}') IN ('Int64', 'UInt64'),
       JSONExtract(properties, '{items_count}', 'Nullable(Int64)'), NULL) AS items_count,
    if(JSONType(properties, '{revenue_cents}') IN ('Int64', 'UInt64'),
       JSONExtract(properties, '{revenue_cents}', 'Nullable(Int64)'), NULL) AS revenue_cents
FROM {db}.events
WHERE 1 {between} {only}
LIMIT 1 BY project, event_id
