-- grain: one row per project and day, from the project's first active day to the last day
-- with data: DAU, and WAU / MAU over the 7 and 30 days ending on that day. Each day's users
-- are a bitmap of their 64-bit hashes: a rolling window is an OR of at most 30 bitmaps.
WITH
    daily AS (
        SELECT project, day, groupBitmapState(cityHash64(user_id)) AS users
        FROM {events}
        GROUP BY project, day
    ),
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
            groupBitmapOrIf(users, daily.day = d) AS dau,
            groupBitmapOrIf(users, daily.day > d - 7) AS wau,
            groupBitmapOr(users) AS mau
        FROM daily
        ARRAY JOIN arrayMap(i -> daily.day + i, range(30)) AS d
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
