-- grain: one row per project, day and event name
SELECT
    project,
    day,
    event,
    count() AS events,
    uniqExact(user_id) AS users,
    uniqExactState(user_id) AS users_state
FROM {events}
GROUP BY project, day, event
