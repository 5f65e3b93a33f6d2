"""Read-only SQL behind the worker's metrics (kept apart from the sink's write path).

The late-charge count comes from the sink's own settlement of each flush (one source of truth).
"""

from __future__ import annotations

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
