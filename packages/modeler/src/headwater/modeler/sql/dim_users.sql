-- grain: one row per project, user and version of their tracked traits (SCD type 2):
-- an $identify whose traits differ from the version before opens a new version.
WITH
    identifies AS (
        SELECT project, user_id, timestamp, event_id, {trait_values}
        FROM {events}
        WHERE event = '$identify'
    ),
    carried AS (
        -- a trait an $identify leaves out (or sends as a non-string) keeps the value it had
        SELECT project, user_id, timestamp, toString(event_id) AS tiebreak, {trait_carry}
        FROM identifies
    ),
    hashed AS (
        SELECT
            *,
            cityHash64({trait_hash}) AS traits_hash,
            lagInFrame(cityHash64({trait_hash}), 1, cityHash64({no_traits_hash})) OVER (
                PARTITION BY project, user_id ORDER BY timestamp, tiebreak
                ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
            ) AS previous_hash
        FROM carried
    ),
    -- a version opens when the merged traits change (the first: when there is any trait)
    versions AS (SELECT * FROM hashed WHERE traits_hash != previous_hash)
SELECT
    cityHash64(project, user_id, timestamp, tiebreak) AS user_key,
    project,
    user_id,
    {trait_columns},
    timestamp AS valid_from,
    leadInFrame(timestamp, 1, toDateTime64('9999-12-31 00:00:00', 3, 'UTC')) OVER (
        PARTITION BY project, user_id ORDER BY timestamp, tiebreak
        ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING
    ) AS valid_to,
    valid_to = toDateTime64('9999-12-31 00:00:00', 3, 'UTC') AS is_current
FROM versions
