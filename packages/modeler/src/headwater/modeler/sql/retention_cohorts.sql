-- grain: one row per project, granularity, cohort start and period: of the users whose
-- first {start_what} falls in the cohort's {granularity}, how many were active {granularity}s later.
WITH
    activity AS (SELECT DISTINCT project, user_id, day FROM {events}),
    firsts AS (
        SELECT project, user_id, min(day) AS first_day
        FROM {events}
        {start_filter}
        GROUP BY project, user_id
    ),
    cohorts AS (SELECT project, user_id, {unit}(first_day) AS cohort_start FROM firsts),
    sizes AS (
        SELECT project, cohort_start, count() AS cohort_size FROM cohorts GROUP BY project, cohort_start
    ),
    retained AS (
        SELECT
            c.project AS project,
            c.cohort_start AS cohort_start,
            intDiv(dateDiff('day', c.cohort_start, {unit}(a.day)), {days_per_period}) AS period,
            uniqExact(c.user_id) AS retained
        FROM cohorts AS c
        INNER JOIN activity AS a ON a.project = c.project AND a.user_id = c.user_id
        WHERE a.day >= c.cohort_start
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
