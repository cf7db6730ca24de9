-- grain: one row per calendar day, from a year before the first event to a year after the last
SELECT
    toYYYYMMDD(full_date) AS date_key,
    full_date,
    toDayOfWeek(full_date) AS day_of_week,
    dateName('weekday', full_date) AS day_name,
    toISOWeek(full_date) AS week_of_year,
    toMonth(full_date) AS month,
    dateName('month', full_date) AS month_name,
    toQuarter(full_date) AS quarter,
    toYear(full_date) AS year,
    toDayOfWeek(full_date) >= 6 AS is_weekend,
    has([{holidays}], full_date) AS is_holiday
FROM (
    SELECT toDate32('{first_day}') + number AS full_date
    FROM numbers(toUInt64(dateDiff('day', toDate32('{first_day}'), toDate32('{last_day}')) + 1))
)
