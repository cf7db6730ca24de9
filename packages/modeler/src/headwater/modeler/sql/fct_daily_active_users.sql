-- grain: one row per project, day and active user, with the user's current plan
SELECT
    e.project AS project,
    e.day AS activity_date,
    e.user_id AS user_id,
    any(u.plan) AS plan,
    any(u.signed_up_at) AS signed_up_at,
    count() AS action_count,
    uniqExact(e.event) AS unique_actions,
    if(isNull(any(u.signed_up_at)), NULL,
       dateDiff('day', toDate(any(u.signed_up_at)), e.day)) AS days_since_signup
FROM {events} AS e
LEFT JOIN (
    SELECT project, user_id, plan, signed_up_at FROM {dim_users} WHERE is_current
) AS u ON u.project = e.project AND u.user_id = e.user_id
GROUP BY e.project, e.day, e.user_id
