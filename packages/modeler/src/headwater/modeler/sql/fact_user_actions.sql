-- grain: one row per stored event, with the user version valid at the event's time
SELECT
    e.project AS project,
    e.event_id AS event_id,
    e.timestamp AS action_timestamp,
    e.user_id AS user_id,
    e.event AS action_type,
    toYYYYMMDD(e.day) AS date_key,
    e.day AS day,
    u.user_key AS user_key,
    e.duration_seconds AS duration_seconds,
    e.items_count AS items_count,
    e.revenue_cents AS revenue_cents
FROM {events} AS e
ASOF LEFT JOIN (SELECT project, user_id, valid_from, user_key FROM {dim_users}) AS u
    ON e.project = u.project AND e.user_id = u.user_id AND e.timestamp >= u.valid_from
