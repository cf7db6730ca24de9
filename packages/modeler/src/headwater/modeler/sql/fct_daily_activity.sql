-- grain: one row per project, day and active user: what they did that day
SELECT
    project,
    day AS activity_date,
    user_id,
    count() AS action_count,
    uniqExact(event) AS unique_actions
FROM {events}
GROUP BY project, day, user_id
