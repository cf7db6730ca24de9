-- grain: one row per project, funnel, entry day and step. A user enters on each day they
-- do step 1; from one of that day's step-1 events they reach step k when steps 2..k follow
-- in order, each strictly later than the one before, all within the window (inclusive).
-- `users` counts a user once per entry day; `users_state` (uniqExactState) lets a reader
-- count distinct users over any range of days: uniqExactMerge(users_state).
WITH
    {steps} AS steps,
    {window_ms} AS window_ms,
    journeys AS (
        SELECT
            project,
            user_id,
            arraySort(groupArray((toUnixTimestamp64Milli(timestamp), event))) AS trail
        FROM {events}
        WHERE has(steps, event)
        GROUP BY project, user_id
    ),
    entries AS (
        SELECT
            project,
            user_id,
            toDate32(fromUnixTimestamp64Milli(t0, 'UTC')) AS cohort_day,
            arrayFold(
                (reached, step) -> if(
                    reached.1 < length(steps)
                        AND step.2 = steps[reached.1 + 1]
                        AND step.1 > reached.2
                        AND step.1 <= t0 + window_ms,
                    (reached.1 + 1, step.1),
                    reached
                ),
                trail,
                (toUInt64(1), t0)
            ).1 AS level
        FROM journeys
        ARRAY JOIN arrayMap(s -> s.1, arrayFilter(s -> s.2 = steps[1], trail)) AS t0
    ),
    reached AS (
        SELECT project, user_id, cohort_day, max(level) AS level
        FROM entries
        WHERE cohort_day BETWEEN toDate32('{start_day}') AND toDate32('{end_day}')
        GROUP BY project, user_id, cohort_day
    ),
    counts AS (
        SELECT project, cohort_day, step, uniqExact(user_id) AS users,
               uniqExactState(user_id) AS users_state
        FROM reached
        ARRAY JOIN range(1, toUInt64(level) + 1) AS step
        GROUP BY project, cohort_day, step
    )
SELECT
    c.project AS project,
    {funnel} AS funnel,
    c.cohort_day AS cohort_day,
    s AS step,
    steps[s] AS step_name,
    k.users AS users,
    k.users / c.users AS conversion_rate,
    k.users_state AS users_state
FROM (SELECT project, cohort_day, users FROM counts WHERE step = 1) AS c
ARRAY JOIN range(1, length(steps) + 1) AS s
LEFT JOIN counts AS k ON k.project = c.project AND k.cohort_day = c.cohort_day AND k.step = s
