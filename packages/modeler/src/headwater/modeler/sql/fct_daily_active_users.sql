-- grain: one row per project, day and active user over the trailing {window} days, with the
-- user's CURRENT plan and signup. A view: a plan change shows on every day at once.
SELECT
    a.project AS project,
    a.activity_date AS activity_date,
    a.user_id AS user_id,
    u.plan AS plan,
    u.signed_up_at AS signed_up_at,
    a.action_count AS action_count,
    a.unique_actions AS unique_actions,
    if(isNull(u.signed_up_at), NULL,
       dateDiff('day', toDate32(u.signed_up_at), a.activity_date)) AS days_since_signup
FROM (
    SELECT * FROM {db}.fct_daily_activity
    WHERE activity_date > (SELECT max(activity_date) FROM {db}.fct_daily_activity) - {window}
) AS a
LEFT JOIN (
    SELECT project, user_id, plan, signed_up_at FROM {db}.dim_users WHERE is_current
) AS u ON u.project = a.project AND u.user_id = a.user_id
