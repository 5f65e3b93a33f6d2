"""The SQL of the sink. Values are always bound parameters; only fixed identifiers are spliced.

One flush is one transaction (see `streams.sink`); the per-charge rules run in Python between
the reads and the write (`streams.settle`):
  1. LOCK_PARTITIONS   — the partitions' rows, in ascending order (no deadlocks with a close);
  2. RECORD_SEEN       — first sighting of each event_id, with its source coordinates; the ones
                         Postgres knew already come back from SEEN_ELSEWHERE;
  3. FENCES, CLOSURES  — `last_offset` of the batch's existing rows, the closures of its days;
  4. UPSERT            — one delta per daily row, added to it (inserted when new);
  5. ADVANCE           — the partitions' progress, which feeds the watermark.
"""

from __future__ import annotations

SUMMED = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
KEY = ("account_id", "user_id", "provider", "date", "charge_type")

# Index lookups, not hash joins: a flush touches a batch's worth of rows, while the ledger and the
# dedup keys grow to millions (unnest() arrays carry no statistics to tell the planner so).
PLAN_FOR_BATCH = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

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

# $1..$4: one entry per event_id of the batch (its smallest coordinates in the batch).
_unnest_seen = "unnest($1::text[], $2::integer[], $3::bigint[], $4::integer[])"

# Returns how many were new, so that in the common case nothing more is asked or sent back.
RECORD_SEEN = f"""
WITH inserted AS (
    INSERT INTO billing_seen_events (event_id, partition, "offset", position)
    SELECT * FROM {_unnest_seen}
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""  # noqa: S608

# The same arrays: the event_ids first seen elsewhere than in this batch, and where.
SEEN_ELSEWHERE = f"""
SELECT s.event_id, s.partition, s."offset", s.position
FROM {_unnest_seen} AS b(event_id, partition, "offset", position)
JOIN billing_seen_events s ON s.event_id = b.event_id
WHERE (s.partition, s."offset", s.position) <> (b.partition, b."offset", b.position)
"""  # noqa: S608

_unnest_key = "unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[])"
_key_match = " AND ".join(f"r.{c} = k.{c}" for c in KEY)

FENCES = f"""
SELECT r.account_id, r.user_id, r.provider, r.date, r.charge_type, r.last_offset
FROM {_unnest_key} AS k({", ".join(KEY)})
JOIN daily_billing_records r ON {_key_match}
"""  # noqa: S608

CLOSURES = """
SELECT partition, closed_through, applied_offset FROM billing_closures
WHERE topic = $1 AND partition = ANY($2::integer[]) AND closed_through >= $3
"""

DELTA_COLUMNS = (*KEY, *SUMMED, "charge_count", "late_charge_count", "source_partition", "last_offset")
_delta_types = ("text", "text", "text", "date", "text", *["bigint"] * 7, "integer", "bigint")
_unnest_delta = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_delta_types, 1))
_added = (*SUMMED, "charge_count", "late_charge_count")
_excluded = ",\n    ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in _added)

# $1..$14 the deltas column by column (DELTA_COLUMNS), $15 closed_through (may be NULL).
UPSERT = f"""
INSERT INTO daily_billing_records AS d
    ({", ".join(KEY + SUMMED)}, charge_count, late_charge_count, revision, finalized_at,
     source_partition, last_offset)
SELECT {", ".join(f"u.{c}" for c in KEY + SUMMED)}, u.charge_count, u.late_charge_count,
       CASE WHEN u.late_charge_count > 0 THEN 1 ELSE 0 END,
       CASE WHEN u.date <= $15::date THEN now() END,
       u.source_partition, u.last_offset
FROM unnest({_unnest_delta}) AS u({", ".join(DELTA_COLUMNS)})
ON CONFLICT ON CONSTRAINT daily_billing_records_key DO UPDATE SET
    {_excluded},
    revision = d.revision + CASE WHEN EXCLUDED.late_charge_count > 0 THEN 1 ELSE 0 END,
    finalized_at = coalesce(d.finalized_at, EXCLUDED.finalized_at),
    last_offset = greatest(d.last_offset, EXCLUDED.last_offset),
    updated_at = CASE WHEN EXCLUDED.charge_count > 0 THEN now() ELSE d.updated_at END
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
