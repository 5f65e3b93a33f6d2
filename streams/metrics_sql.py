"""Read-only SQL behind the worker's metrics (kept apart from the sink's write path).

COUNT_LATE mirrors the `fresh` set of `sink_sql.APPLY` (a first sighting, past the row's fence)
restricted to charges whose day was closed before their partition reached them, so the late
counter agrees with `late_charge_count`. The sink runs it inside the flush transaction, before
APPLY moves the fences, and only when the batch holds a charge of an already-closed day.
"""

from __future__ import annotations

from streams.sink_sql import KEY

_key_match = " AND ".join(f"r.{c} = p.{c}" for c in KEY)

# $1 topic
COUNT_LATE = f"""
SELECT count(*) FROM pending_charges p
JOIN billing_seen_events s
  ON s.event_id = p.event_id AND s.partition = p.partition AND s."offset" = p."offset"
     AND s.position = p.position
LEFT JOIN daily_billing_records r ON {_key_match}
JOIN LATERAL (
    SELECT applied_offset FROM billing_closures cl
    WHERE cl.topic = $1 AND cl.partition = p.partition AND cl.closed_through >= p.date
    ORDER BY cl.closed_through LIMIT 1
) c ON true
WHERE (r.id IS NULL OR p."offset" > r.last_offset) AND p."offset" > c.applied_offset
"""  # noqa: S608

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

READ_CLOSED = "SELECT closed_through FROM billing_state WHERE topic = $1"
