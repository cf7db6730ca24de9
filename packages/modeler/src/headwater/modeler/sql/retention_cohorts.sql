-- grain: one row per project, granularity, cohort start and period: of the users whose
-- first {start_what} falls in the cohort's {granularity}, how many were active {granularity}s later.
-- Each user's active days are gathered once; no join with the activity.
WITH
    users AS (
        SELECT
            project,
            user_id,
            {first_day} AS first_day,
            groupUniqArray(day) AS days
        FROM {events}
        GROUP BY project, user_id
        {having}
    ),
    cohorts AS (
        SELECT
            project,
            {unit}(first_day) AS cohort_start,
            arrayDistinct(arrayMap(
                d -> intDiv(dateDiff('day', cohort_start, {unit}(d)), {days_per_period}),
                arrayFilter(d -> d >= first_day, days)
            )) AS periods
        FROM users
    ),
    sizes AS (
        SELECT project, cohort_start, count() AS cohort_size FROM cohorts GROUP BY project, cohort_start
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
    s.cohort_start AS cohort_start,
    p AS period,
    s.cohort_size AS cohort_size,
    r.retained AS retained,
    r.retained / s.cohort_size AS retention_rate
FROM sizes AS s
ARRAY JOIN range(toUInt64({periods} + 1)) AS p
LEFT JOIN retained AS r
    ON r.project = s.project AND r.cohort_start = s.cohort_start AND r.period = p
WHERE s.cohort_start + p * {days_per_period} <= toDate('{last_day}')
  AND s.cohort_start BETWEEN toDate('{start_day}') AND toDate('{end_day}')
