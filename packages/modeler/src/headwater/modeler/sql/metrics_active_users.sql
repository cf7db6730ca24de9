-- grain: one row per project and day, from the project's first active day to the last day
-- with data: DAU, and WAU / MAU over the 7 and 30 days ending on that day.
WITH
    activity AS (SELECT DISTINCT project, day, user_id FROM {events}),
    bounds AS (
        SELECT project, min(toDate(timestamp)) AS first_day FROM {db}.events GROUP BY project
    ),
    calendar AS (
        SELECT b.project AS project, d AS day
        FROM bounds AS b
        ARRAY JOIN arrayMap(
            i -> toDate('{start_day}') + i,
            range(toUInt64(dateDiff('day', toDate('{start_day}'), toDate('{end_day}')) + 1))
        ) AS d
        WHERE d >= b.first_day
    ),
    windows AS (
        SELECT
            project,
            d AS day,
            uniqExactIf(user_id, activity.day = d) AS dau,
            uniqExactIf(user_id, activity.day > d - 7) AS wau,
            uniqExact(user_id) AS mau
        FROM activity
        ARRAY JOIN arrayMap(i -> activity.day + i, range(30)) AS d
        WHERE d BETWEEN toDate('{start_day}') AND toDate('{end_day}')
        GROUP BY project, d
    )
SELECT
    c.project AS project,
    c.day AS day,
    w.dau AS dau,
    w.wau AS wau,
    w.mau AS mau,
    if(w.mau = 0, 0, w.dau / w.mau) AS stickiness
FROM calendar AS c
LEFT JOIN windows AS w ON w.project = c.project AND w.day = c.day
