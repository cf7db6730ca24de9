-- grain: one row per project and day, from the project's first event day to its last:
-- DAU, and WAU / MAU over the 7 and 30 days ending on that day.
-- A user active on day a counts in the W-day window of days a .. a+W-1; each user's active
-- days (sorted, as days since 1970: negative before it) are turned into the disjoint days
-- they newly cover, so a count per day is a distinct count: no set of users is ever merged.
WITH
    users AS (
        SELECT project, arraySort(groupUniqArray(toInt32(day))) AS days
        FROM {events}
        GROUP BY project, user_id
    ),
    covered AS (
        -- the day before each active day's predecessor; the first has none (long before 1900)
        SELECT project, days, arrayPushFront(arrayPopBack(days), toInt32(-1000000)) AS previous
        FROM users
    ),
    counts AS (
        SELECT project, d, 1 AS dau, 0 AS wau, 0 AS mau
        FROM covered ARRAY JOIN days AS d
        UNION ALL
        SELECT project, d, 0, 1, 0
        FROM covered ARRAY JOIN arrayFlatten(arrayMap(
            (a, p) -> range(greatest(a, p + 7), a + 7), days, previous)) AS d
        UNION ALL
        SELECT project, d, 0, 0, 1
        FROM covered ARRAY JOIN arrayFlatten(arrayMap(
            (a, p) -> range(greatest(a, p + 30), a + 30), days, previous)) AS d
    ),
    bounds AS (
        SELECT project, min(toDate32(timestamp)) AS first_day, max(toDate32(timestamp)) AS last_day
        FROM {db}.events
        GROUP BY project
    ),
    calendar AS (
        SELECT b.project AS project, d AS day
        FROM bounds AS b
        ARRAY JOIN arrayMap(
            i -> toDate32('{start_day}') + i,
            range(toUInt64(dateDiff('day', toDate32('{start_day}'), toDate32('{end_day}')) + 1))
        ) AS d
        WHERE d BETWEEN b.first_day AND b.last_day
    ),
    windows AS (
        SELECT project, toDate32('1970-01-01') + d AS day, sum(dau) AS dau, sum(wau) AS wau,
               sum(mau) AS mau
        FROM counts
        WHERE d BETWEEN toInt32(toDate32('{start_day}')) AND toInt32(toDate32('{end_day}'))
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
