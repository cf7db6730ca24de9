-- grain: one row per project, granularity, cohort start and period: of the users whose
-- first {start_what} falls in the cohort's {granularity}, how many were active {granularity}s later.
-- A period has a row once it has begun by the project's newest day, and is complete when
-- all of its days lie before that day (which may still be receiving events).
-- Each user's active days are gathered once; no join with the activity. Days are counted
-- from 1970-01-01 (negative before it): integer arrays cost half of Date32 ones.
WITH
    users AS (
        SELECT
            project,
            user_id,
            {first_day} AS first_day,
            groupUniqArray(toInt32(day)) AS days,
            {starts} AS starts
        FROM {events}
        GROUP BY project, user_id
    ),
    newest AS (
        -- the day of the project's newest event (of any user, a starter or not)
        SELECT project, toInt32(toDate32(max(timestamp))) AS last_day
        FROM {db}.events
        GROUP BY project
    ),
    cohorts AS (
        SELECT
            project,
            {cohort_of_first_day} AS cohort_start,
            arrayDistinct(arrayMap(
                d -> intDiv({cohort_of_d} - cohort_start, {days_per_period}),
                arrayFilter(d -> d >= first_day, days)
            )) AS periods
        FROM users
        WHERE starts
    ),
    sizes AS (
        -- joined with the project's newest day here, on a row per cohort, not per user
        SELECT c.project AS project, c.cohort_start AS cohort_start, c.cohort_size AS cohort_size,
               n.last_day AS last_day
        FROM (
            SELECT project, cohort_start, count() AS cohort_size
            FROM cohorts
            GROUP BY project, cohort_start
        ) AS c
        INNER JOIN newest AS n ON n.project = c.project
    ),
    retained AS (
        SELECT project, cohort_start, period, count() AS retained
        FROM cohorts
        ARRAY JOIN periods AS period
        GROUP BY project, cohort_start, period
    )
SELECT
    s.project AS project,
    '{granularity}' AS granularity,
    toDate32('1970-01-01') + s.cohort_start AS cohort_start,
    p AS period,
    s.cohort_size AS cohort_size,
    r.retained AS retained,
    r.retained / s.cohort_size AS retention_rate,
    toUInt8(s.cohort_start + (p + 1) * {days_per_period} - 1 < s.last_day) AS is_complete
FROM sizes AS s
ARRAY JOIN range(toUInt64({periods} + 1)) AS p
LEFT JOIN retained AS r
    ON r.project = s.project AND r.cohort_start = s.cohort_start AND r.period = p
WHERE s.cohort_start + p * {days_per_period} <= s.last_day
  AND s.cohort_start BETWEEN toInt32(toDate32('{start_day}')) AND toInt32(toDate32('{end_day}'))
