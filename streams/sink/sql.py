"""Every statement that writes the billing tables, and the reads that decide those writes.

Values are always bound parameters; only fixed identifiers are spliced. The flush, the day
closer, the metrics and `billing rebuild` share this module so that one reading shows every
way a row can change. (The read-only query builders of `billing totals`, the dashboard and the
HTTP API live with those readers: they build SELECTs from whitelisted columns.)

One flush is one transaction (see `streams.sink.postgres`); the per-charge rules run in Python between
the reads and the write (`streams.rules.settle`):
  1. LOCK_PARTITIONS   — the partitions' rows, in ascending order (no deadlocks with a close):
                         each names its current source and that source's fence;
  2. CLOSURES          — the closure marks of those sources (too late? late?);
  3. RECORD_SEEN       — the winner of each new idempotency key, with its coordinates; the keys
                         the ledger knew already come back from SEEN_ELSEWHERE;
  4. UPSERT            — one delta per daily row, added to it (inserted when new), with its
                         cost; UPSERT_MODELS the same by model;
  5. ADVANCE           — the sources' fences and progress, and the days they fed.
The keys of step 3 and the deltas of step 4 reach Postgres by COPY into the connection's staging
tables (STAGES), which the statements read.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.rules.pending import SUMMED

KEY = ("account_id", "user_id", "provider", "date", "charge_type")

# Index lookups, not hash joins: a flush touches a batch's worth of rows, while the ledger and the
# dedup keys grow to millions (the staging tables are never analyzed: no statistics tell the
# planner so).
PLAN_FOR_BATCH = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

ENSURE_PARTITIONS = """
INSERT INTO billing_partitions (topic, partition)
SELECT $1, p FROM generate_series(0, $2 - 1) AS p
ON CONFLICT DO NOTHING
"""

ENSURE_CALENDAR = "INSERT INTO billing_calendar DEFAULT VALUES ON CONFLICT DO NOTHING"

LOCK_PARTITIONS = """
SELECT bp.partition, bp.applied_offset, bp.first_record, bp.source_id
FROM billing_partitions bp
WHERE bp.topic = $1 AND bp.partition = ANY($2::integer[])
ORDER BY bp.partition FOR UPDATE
"""

LOCK_ALL_PARTITIONS = """
SELECT partition, applied_offset, max_event_time, last_event_at, source_id FROM billing_partitions
WHERE topic = $1 ORDER BY partition FOR UPDATE
"""

LOCK_CALENDAR = "SELECT closed_through FROM billing_calendar FOR UPDATE"
READ_CLOSED = "SELECT closed_through FROM billing_calendar"

# A partition gets a source when first read, and a new one (the next incarnation) when its offset
# 0 holds another record than before: the topic was recreated or the broker came back empty.
# The days already closed are closed for the new source from its first offset on.
NEW_SOURCE = """
WITH retired AS (
    UPDATE billing_sources SET retired_at = now(), last_offset = $4
    WHERE id = $5 RETURNING incarnation
), created AS (
    INSERT INTO billing_sources (topic, partition, incarnation, first_record)
    SELECT $1, $2, coalesce((SELECT max(incarnation) FROM billing_sources WHERE topic = $1 AND partition = $2), 0) + 1, $3
    RETURNING id
), marked AS (
    INSERT INTO billing_source_closures (source_id, closed_through, applied_offset)
    SELECT created.id, c.closed_through, -1 FROM created, billing_calendar c WHERE c.closed_through IS NOT NULL
)
UPDATE billing_partitions bp SET source_id = created.id, first_record = $3, applied_offset = -1,
       max_event_time = NULL, last_event_at = NULL
FROM created WHERE bp.topic = $1 AND bp.partition = $2
RETURNING bp.source_id
"""

SET_FIRST_RECORD = """
WITH s AS (UPDATE billing_sources SET first_record = $3 WHERE id = $4)
UPDATE billing_partitions SET first_record = $3 WHERE topic = $1 AND partition = $2
"""

CLOSURES = """
SELECT source_id, closed_through, applied_offset FROM billing_source_closures
WHERE source_id = ANY($1::integer[])
"""

# What a flush writes arrives by COPY into tables private to the connection, emptied at every
# commit or rollback, and the statements below read them: asyncpg encodes COPY rows at about a
# fifth of the client CPU of the same values bound as arrays (it inspects every array element
# in Python), and Postgres reads them back faster than it parses arrays for unnest().
STAGE_SEEN = "billing_stage_seen"
STAGE_DAILY = "billing_stage_daily"
STAGE_MODELS = "billing_stage_models"


def _stage(name: str, columns: tuple[str, ...], types: tuple[str, ...]) -> str:
    body = ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True))
    return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({body}) ON COMMIT DELETE ROWS"


# One entry per idempotency key of the batch (its smallest coordinates in the batch).
SEEN_COLUMNS = ("key", "source_id", "offset", "position")
STAGE_SEEN_TABLE = _stage(STAGE_SEEN, SEEN_COLUMNS, ("bytea", "integer", "bigint", "integer"))

# Returns how many were new, so that in the common case nothing more is asked or sent back.
RECORD_SEEN = f"""
WITH inserted AS (
    INSERT INTO billing_dedup (key, source_id, "offset", position)
    SELECT key, source_id, "offset", position FROM {STAGE_SEEN}
    ON CONFLICT (key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""  # noqa: S608

# The keys whose winner is elsewhere than in this batch, and where.
SEEN_ELSEWHERE = f"""
SELECT s.key, s.source_id, s."offset", s.position
FROM {STAGE_SEEN} AS b
JOIN billing_dedup s ON s.key = b.key
WHERE (s.source_id, s."offset", s.position) <> (b.source_id, b."offset", b.position)
"""  # noqa: S608

# Before the ledger was scoped by account, it held bare event_ids; until they pass the dedup
# horizon, a re-send of one of them is still a duplicate.
LEGACY_PRESENT = "SELECT EXISTS (SELECT 1 FROM billing_seen_events)"
LEGACY_SEEN = "SELECT event_id FROM billing_seen_events WHERE event_id = ANY($1::text[])"

PRICED = ("cost_nanos", "unpriced_charge_count")
MODEL_KEY = ("account_id", "user_id", "provider", "model", "date", "charge_type")


def delta_columns(key: tuple[str, ...]) -> tuple[str, ...]:
    """A delta's columns, in the order `streams.sink.rows.staging_records` gives its values."""
    return (*key, *SUMMED, "charge_count", "late_charge_count", *PRICED, "currency")


def _delta_stage(name: str, key: tuple[str, ...]) -> str:
    columns = delta_columns(key)
    types = tuple("date" if c == "date" else "text" for c in key) + ("bigint",) * (
        len(columns) - len(key) - 1
    )
    return _stage(name, columns, (*types, "text"))


def _upsert(table: str, stage: str, key: tuple[str, ...]) -> str:
    """Add the staged deltas to their rows (inserted when new): the counts, the cost and its
    currency. $1 is closed_through (may be NULL). A row born after its day closed is final at
    once and is no revision; a final row that gains charges is revised (revision + 1, updated_at
    moves) so invoice exports pick it up.
    """
    columns = delta_columns(key)
    summed = (*SUMMED, "charge_count", "late_charge_count", *PRICED)
    added = ",\n    ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in summed)
    return f"""
INSERT INTO {table} AS d ({", ".join(columns)}, revision, finalized_at)
SELECT {", ".join(f"u.{c}" for c in columns)}, 0, CASE WHEN u.date <= $1::date THEN now() END
FROM {stage} AS u
ON CONFLICT ON CONSTRAINT {table}_key DO UPDATE SET
    {added},
    currency = coalesce(EXCLUDED.currency, d.currency),
    revision = d.revision + CASE WHEN d.finalized_at IS NOT NULL THEN 1 ELSE 0 END,
    finalized_at = coalesce(d.finalized_at, EXCLUDED.finalized_at),
    updated_at = now()
"""  # noqa: S608


STAGE_DAILY_TABLE = _delta_stage(STAGE_DAILY, KEY)
STAGE_MODELS_TABLE = _delta_stage(STAGE_MODELS, MODEL_KEY)
#: The staging tables, created once per connection.
STAGES = (STAGE_SEEN_TABLE, STAGE_DAILY_TABLE, STAGE_MODELS_TABLE)
UPSERT = _upsert("daily_billing_records", STAGE_DAILY, KEY)
UPSERT_MODELS = _upsert("daily_model_records", STAGE_MODELS, MODEL_KEY)

# $1 topic, $2 partitions, $3 max offsets, $4 max event times, $5 had charges, $6 first days,
# $7 last days (NULL where the partition brought no charge).
ADVANCE = """
WITH u AS (
    SELECT * FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[], $5::boolean[], $6::date[], $7::date[])
         AS u(partition, max_offset, max_event_time, had_charges, min_day, max_day)
), progress AS (
    UPDATE billing_partitions bp SET
        applied_offset = greatest(bp.applied_offset, u.max_offset),
        max_event_time = CASE WHEN u.had_charges
                              THEN greatest(bp.max_event_time, u.max_event_time)
                              ELSE bp.max_event_time END,
        last_event_at = CASE WHEN u.had_charges THEN now() ELSE bp.last_event_at END
    FROM u WHERE bp.topic = $1 AND bp.partition = u.partition
    RETURNING bp.source_id, u.min_day, u.max_day
)
UPDATE billing_sources s SET
    min_day = least(s.min_day, progress.min_day),
    max_day = greatest(s.max_day, progress.max_day)
FROM progress WHERE s.id = progress.source_id AND progress.min_day IS NOT NULL
"""

# Closing: every source of the topic is marked where it stood, then the days become final.
RECORD_CLOSURE = """
INSERT INTO billing_source_closures (source_id, closed_through, applied_offset)
SELECT source_id, $2, applied_offset FROM billing_partitions WHERE topic = $1 AND source_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

SET_CLOSED = "UPDATE billing_calendar SET closed_through = $1, updated_at = now()"

FINALIZE = """
WITH by_model AS (
    UPDATE daily_model_records SET finalized_at = now(), updated_at = now()
    WHERE date <= $1 AND finalized_at IS NULL
)
UPDATE daily_billing_records SET finalized_at = now(), updated_at = now()
WHERE date <= $1 AND finalized_at IS NULL
"""

PURGE_SEEN = "DELETE FROM billing_dedup WHERE seen_at < now() - $1::interval"
PURGE_LEGACY = "DELETE FROM billing_seen_events WHERE seen_at < now() - $1::interval"

SKIPS = 'SELECT partition, "offset" FROM billing_skips WHERE topic = $1'

# Where a partition's reading must resume at the latest: the offset after its fence.
FIRST_UNAPPLIED = """
SELECT partition, applied_offset + 1 FROM billing_partitions
WHERE topic = $1 AND partition = ANY($2::integer[])
"""


# --- Metrics (read-only) ------------------------------------------------------------------

# Distinct dates with provisional rows, by skipping through the partial index
# daily_billing_records_open: one index probe per open day, however many rows a day has.
OPEN_DAYS = """
WITH RECURSIVE open_days AS (
    (SELECT date FROM daily_billing_records WHERE finalized_at IS NULL ORDER BY date LIMIT 1)
    UNION ALL
    SELECT (SELECT d.date FROM daily_billing_records d
            WHERE d.finalized_at IS NULL AND d.date > o.date ORDER BY d.date LIMIT 1)
    FROM open_days o WHERE o.date IS NOT NULL
)
SELECT count(date) FROM open_days
"""


# --- billing rebuild: recompute a range of days and replace their rows ---------------------

# Sources whose records this topic cannot give back, that fed a day of the range.
REBUILD_UNREADABLE = """
SELECT id, topic, partition, incarnation, last_offset, min_day, max_day FROM billing_sources
WHERE NOT (id = ANY($1::integer[])) AND min_day <= $3 AND max_day >= $2
ORDER BY topic, partition, incarnation
"""
REBUILD_SOURCE_FIRST_RECORDS = "SELECT id, first_record FROM billing_sources WHERE id = ANY($1::integer[])"
REBUILD_WINNERS = """
SELECT key, source_id, "offset", position FROM billing_dedup WHERE key = ANY($1::bytea[])
"""
REBUILD_COST_BY_ACCOUNT = """
SELECT account_id, sum(cost_nanos)::bigint FROM daily_billing_records WHERE date BETWEEN $1 AND $2
GROUP BY account_id
"""

REBUILD_COUNTED = (*SUMMED, "charge_count", "late_charge_count", "cost_nanos", "unpriced_charge_count")


@dataclass(frozen=True, slots=True)
class RowTable:
    """One daily table: its name and the columns that make a row's key (fixed identifiers)."""

    name: str
    key: tuple[str, ...]

    @property
    def old_rows(self) -> str:
        columns = ", ".join((*self.key, *REBUILD_COUNTED))
        return (
            f"SELECT id, {columns}, currency, revision, finalized_at FROM {self.name} "  # noqa: S608
            "WHERE date BETWEEN $1 AND $2 ORDER BY id FOR UPDATE"
        )

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.name} WHERE id = ANY($1::bigint[])"  # noqa: S608

    @property
    def update(self) -> str:
        n = len(REBUILD_COUNTED)
        arrays = ", ".join(["$1::bigint[]", *(f"${i}::bigint[]" for i in range(2, n + 2))])
        tail = f"${n + 2}::text[], ${n + 3}::integer[], ${n + 4}::boolean[]"
        sets = ", ".join(f"{c} = u.{c}" for c in REBUILD_COUNTED)
        return f"""
UPDATE {self.name} d SET {sets}, currency = u.currency, revision = u.revision,
    finalized_at = coalesce(d.finalized_at, CASE WHEN u.final THEN now() END), updated_at = now()
FROM unnest({arrays}, {tail}) AS u(id, {", ".join(REBUILD_COUNTED)}, currency, revision, final)
WHERE d.id = u.id
"""  # noqa: S608

    @property
    def insert(self) -> str:
        types = [("date" if c == "date" else "text") for c in self.key] + ["bigint"] * len(REBUILD_COUNTED)
        types += ["text", "boolean"]
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
        columns = ", ".join((*self.key, *REBUILD_COUNTED))
        return f"""
INSERT INTO {self.name} ({columns}, currency, revision, finalized_at)
SELECT {columns}, currency, 0, CASE WHEN final THEN now() END
FROM unnest({arrays}) AS x({columns}, currency, final)
"""  # noqa: S608


REBUILD_DAILY = RowTable(
    "daily_billing_records", ("account_id", "user_id", "provider", "date", "charge_type")
)
REBUILD_BY_MODEL = RowTable(
    "daily_model_records", ("account_id", "user_id", "provider", "model", "date", "charge_type")
)
