-- Exactness per source, not per row.
--
-- A source is one incarnation of one partition of one charges topic: the offsets a worker reads
-- mean something only inside it. A topic that is recreated, or an embedded broker that comes back
-- empty, starts a new incarnation at offset 0; a cut-over to another topic starts new sources
-- too. Every fence, every dedup winner and every closure mark names its source, so nothing is
-- ever compared across partitions, topics or incarnations. See docs/architecture.md.

CREATE TABLE IF NOT EXISTS billing_sources (
    id              serial      PRIMARY KEY,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    incarnation     integer     NOT NULL,
    first_record    text,                   -- fingerprint of the record at offset 0, once read
    started_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,            -- another incarnation replaced it
    last_offset     bigint      NOT NULL DEFAULT -1,  -- the fence when it was retired
    min_day         date,                   -- billing days of the charges it added
    max_day         date,
    UNIQUE (topic, partition, incarnation)
);

-- billing_partitions stays the row a flush locks; it now points at the partition's current source.
ALTER TABLE billing_partitions ADD COLUMN IF NOT EXISTS source_id integer REFERENCES billing_sources (id);

INSERT INTO billing_sources (topic, partition, incarnation, first_record)
SELECT topic, partition, 1, first_record FROM billing_partitions
ON CONFLICT DO NOTHING;
UPDATE billing_partitions bp SET source_id = s.id
FROM billing_sources s
WHERE s.topic = bp.topic AND s.partition = bp.partition AND s.incarnation = 1 AND bp.source_id IS NULL;

-- The days an existing source fed, so that a rebuild knows which rows it cannot recompute.
UPDATE billing_sources s SET min_day = d.min_day, max_day = d.max_day
FROM (SELECT source_partition, min(date) AS min_day, max(date) AS max_day
      FROM daily_billing_records GROUP BY source_partition) d
WHERE s.partition = d.source_partition AND s.incarnation = 1;

-- Days up to closed_through are final. One calendar for the whole ledger: the rows do not
-- belong to a topic, so a cut-over to a new topic keeps the days that are already closed.
CREATE TABLE IF NOT EXISTS billing_calendar (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    closed_through  date,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO billing_calendar (closed_through)
SELECT max(closed_through) FROM billing_state
ON CONFLICT DO NOTHING;

-- Where each source stood when days were closed: a charge of a day up to closed_through read
-- from this source beyond applied_offset was applied after its day had closed (late).
CREATE TABLE IF NOT EXISTS billing_source_closures (
    source_id       integer NOT NULL REFERENCES billing_sources (id),
    closed_through  date    NOT NULL,
    applied_offset  bigint  NOT NULL,
    closed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, closed_through)
);
INSERT INTO billing_source_closures (source_id, closed_through, applied_offset, closed_at)
SELECT s.id, c.closed_through, c.applied_offset, c.closed_at
FROM billing_closures c
JOIN billing_sources s ON s.topic = c.topic AND s.partition = c.partition AND s.incarnation = 1
ON CONFLICT DO NOTHING;

-- Idempotency keys, scoped by account: a 16-byte digest of (account_id, event_id), and the
-- coordinates of the copy that counted (so a rebuild counts the same copy).
CREATE TABLE IF NOT EXISTS billing_dedup (
    key         bytea       PRIMARY KEY,
    source_id   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    position    integer     NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_dedup_seen_at_brin ON billing_dedup USING brin (seen_at);
-- billing_seen_events (event_id only, unscoped) is read as a fallback until its entries pass
-- the dedup horizon and are purged, so an upgrade never counts a recent re-send twice.

-- The rows lose their single-partition fence: a row may be fed by any partition of any topic.
ALTER TABLE daily_billing_records DROP COLUMN IF EXISTS source_partition;
ALTER TABLE daily_billing_records DROP COLUMN IF EXISTS last_offset;

-- Records an operator chose to skip (`billing dlq skip`): the worker sends them to the DLQ
-- with reason `skipped` instead of decoding them.
CREATE TABLE IF NOT EXISTS billing_skips (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

-- Dead letters have a state: open until redriven, resolved when an operator says so.
CREATE TABLE IF NOT EXISTS billing_dead_letters (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    index       integer     NOT NULL DEFAULT -1,   -- -1: the whole record
    reason      text        NOT NULL,
    state       text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'redriven', 'resolved')),
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset", index)
);
