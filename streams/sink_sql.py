"""The SQL of the sink. Values are always bound parameters; only fixed identifiers are spliced.

One flush is one transaction (see `streams.sink`):
  1. LOCK_PARTITIONS   — the partitions' rows, in ascending order (no deadlocks with a close);
  2. COPY              — the batch's charges into the session's temp table `pending_charges`;
  3. RECORD_SEEN       — first sighting of each event_id, with its source coordinates;
  4. APPLY             — charges whose event_id was first seen at these very coordinates
                         (a re-send elsewhere is a duplicate) and whose offset lies beyond the
                         row's `last_offset` (already counted otherwise), summed into the rows;
  5. ADVANCE           — the partitions' progress, which feeds the watermark.
"""

from __future__ import annotations

from streams.aggregate import PENDING_COLUMNS

SUMMED = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
KEY = ("account_id", "user_id", "provider", "date", "charge_type")

# Index lookups, not hash joins: a flush touches a batch's worth of rows, while the ledger and the
# dedup keys grow to millions (the temp table has no statistics to tell the planner so).
PLAN_FOR_BATCH = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

CREATE_PENDING = """
CREATE TEMP TABLE IF NOT EXISTS pending_charges (
    event_id text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL, position integer NOT NULL,
    account_id text NOT NULL, user_id text NOT NULL, provider text NOT NULL, date date NOT NULL,
    charge_type text NOT NULL, prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL, cached_tokens bigint NOT NULL, reasoning_tokens bigint NOT NULL
) ON COMMIT DELETE ROWS
"""

ENSURE_PARTITIONS = """
INSERT INTO billing_partitions (topic, partition)
SELECT $1, p FROM generate_series(0, $2 - 1) AS p
ON CONFLICT DO NOTHING
"""

ENSURE_STATE = "INSERT INTO billing_state (topic) VALUES ($1) ON CONFLICT DO NOTHING"

LOCK_PARTITIONS = """
SELECT partition, applied_offset, first_record FROM billing_partitions
WHERE topic = $1 AND partition = ANY($2::integer[])
ORDER BY partition FOR UPDATE
"""

SET_FIRST_RECORD = "UPDATE billing_partitions SET first_record = $3 WHERE topic = $1 AND partition = $2"

# The partition's offsets started again at 0 (topic recreated, embedded broker restarted empty):
# the old fences and first-seen coordinates refer to records that no longer exist.
RESET_PARTITION_ROWS = "UPDATE daily_billing_records SET last_offset = -1 WHERE source_partition = $1"
RESET_PARTITION_SEEN = 'UPDATE billing_seen_events SET "offset" = -1 WHERE partition = $1'
RESET_PARTITION = """
UPDATE billing_partitions SET applied_offset = -1, first_record = $3 WHERE topic = $1 AND partition = $2
"""

READ_CLOSED = "SELECT closed_through FROM billing_state WHERE topic = $1"

RECORD_SEEN = """
INSERT INTO billing_seen_events (event_id, partition, "offset", position)
SELECT DISTINCT ON (event_id) event_id, partition, "offset", position
FROM pending_charges ORDER BY event_id, partition, "offset", position
ON CONFLICT (event_id) DO NOTHING
"""

_key_match = " AND ".join(f"r.{c} = t.{c}" for c in KEY)
_sums = ",\n       ".join(f"coalesce(sum(f.{c}) FILTER (WHERE f.counted), 0) AS {c}" for c in SUMMED)
_cols = ", ".join(KEY + SUMMED)
_added = (*SUMMED, "charge_count", "late_charge_count")
_excluded = ",\n    ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in _added)

# $1 topic, $2 closed_through (may be NULL). A charge is late when its day was already closed
# when its partition passed the offset recorded at that closure (billing_closures).
# Only the fixed column names above are spliced in; every value is a bound parameter.
# $1 topic, $2 closed_through (may be NULL). A charge counts when its event_id was first seen at
# these very coordinates (a re-send elsewhere is a duplicate) and lies beyond the row's fence.
# Duplicates still move the fence past themselves, so that a replay long after their dedup
# entry expired finds them fenced off. A charge is late when its day had been closed by the
# time its partition passed the offset recorded at that closure (billing_closures).
# One statement returns what the flush did: rows written, late charges added, duplicates seen.
APPLY = f"""
WITH tagged AS (
    SELECT p.*,
           (s.partition = p.partition AND s."offset" = p."offset" AND s.position = p.position) AS counted
    FROM pending_charges p
    JOIN billing_seen_events s ON s.event_id = p.event_id
),
fresh AS (
    SELECT t.*, r.id AS row_id,
           (c.applied_offset IS NOT NULL AND t."offset" > c.applied_offset) AS late
    FROM tagged t
    LEFT JOIN daily_billing_records r ON {_key_match}
    LEFT JOIN LATERAL (
        SELECT applied_offset FROM billing_closures cl
        WHERE cl.topic = $1 AND cl.partition = t.partition AND cl.closed_through >= t.date
        ORDER BY cl.closed_through LIMIT 1
    ) c ON true
    WHERE r.id IS NULL OR t."offset" > r.last_offset
),
summed AS (
    SELECT f.account_id, f.user_id, f.provider, f.date, f.charge_type,
           {_sums},
           count(*) FILTER (WHERE f.counted) AS charge_count,
           count(*) FILTER (WHERE f.counted AND f.late) AS late_charge_count,
           CASE WHEN bool_or(f.counted AND f.late) THEN 1 ELSE 0 END AS revision,
           CASE WHEN f.date <= $2::date THEN now() END AS finalized_at,
           f.partition AS source_partition, max(f."offset") AS last_offset
    FROM fresh f
    GROUP BY f.account_id, f.user_id, f.provider, f.date, f.charge_type, f.partition
    HAVING bool_or(f.counted) OR bool_or(f.row_id IS NOT NULL)
),
written AS (
    INSERT INTO daily_billing_records AS d
        ({_cols}, charge_count, late_charge_count, revision, finalized_at,
         source_partition, last_offset)
    SELECT * FROM summed
    ON CONFLICT ON CONSTRAINT daily_billing_records_key DO UPDATE SET
        {_excluded},
        revision = d.revision + CASE WHEN EXCLUDED.late_charge_count > 0 THEN 1 ELSE 0 END,
        finalized_at = coalesce(d.finalized_at, EXCLUDED.finalized_at),
        last_offset = greatest(d.last_offset, EXCLUDED.last_offset),
        updated_at = CASE WHEN EXCLUDED.charge_count > 0 THEN now() ELSE d.updated_at END
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS rows_written,
       (SELECT coalesce(sum(late_charge_count), 0) FROM summed) AS late,
       (SELECT count(*) FILTER (WHERE NOT counted) FROM tagged) AS duplicates
"""  # noqa: S608

# $1 topic, $2 partitions, $3 max offsets, $4 max event times, $5 had charges
ADVANCE = """
UPDATE billing_partitions bp SET
    applied_offset = greatest(bp.applied_offset, u.max_offset),
    max_event_time = CASE WHEN u.had_charges
                          THEN greatest(bp.max_event_time, u.max_event_time)
                          ELSE bp.max_event_time END,
    last_event_at = CASE WHEN u.had_charges THEN now() ELSE bp.last_event_at END
FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[], $5::boolean[])
     AS u(partition, max_offset, max_event_time, had_charges)
WHERE bp.topic = $1 AND bp.partition = u.partition
"""

LOCK_ALL_PARTITIONS = """
SELECT partition, applied_offset, max_event_time, last_event_at FROM billing_partitions
WHERE topic = $1 ORDER BY partition FOR UPDATE
"""

LOCK_STATE = "SELECT closed_through FROM billing_state WHERE topic = $1 FOR UPDATE"

RECORD_CLOSURE = """
INSERT INTO billing_closures (topic, closed_through, partition, applied_offset)
SELECT topic, $2, partition, applied_offset FROM billing_partitions WHERE topic = $1
ON CONFLICT DO NOTHING
"""

SET_CLOSED = "UPDATE billing_state SET closed_through = $2, updated_at = now() WHERE topic = $1"

FINALIZE = """
UPDATE daily_billing_records SET finalized_at = now(), updated_at = now()
WHERE date <= $1 AND finalized_at IS NULL
"""

PURGE_SEEN = "DELETE FROM billing_seen_events WHERE seen_at < now() - $1::interval"

PENDING_COPY_COLUMNS = PENDING_COLUMNS
