-- The ledger of daily totals and the bookkeeping that makes every write to it exact.

CREATE TABLE IF NOT EXISTS daily_billing_records (
    id                 bigserial PRIMARY KEY,
    account_id         text        NOT NULL,
    user_id            text        NOT NULL,
    provider           text        NOT NULL,
    date               date        NOT NULL,
    charge_type        text        NOT NULL,
    prompt_tokens      bigint      NOT NULL DEFAULT 0,
    completion_tokens  bigint      NOT NULL DEFAULT 0,
    total_tokens       bigint      NOT NULL DEFAULT 0,
    cached_tokens      bigint      NOT NULL DEFAULT 0,
    reasoning_tokens   bigint      NOT NULL DEFAULT 0,
    charge_count       bigint      NOT NULL DEFAULT 0,
    late_charge_count  bigint      NOT NULL DEFAULT 0,
    revision           integer     NOT NULL DEFAULT 0,
    finalized_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Fence: the charges topic is keyed by account_id, so a row is fed by one partition only;
    -- an event at or below last_offset is already in the row and is never added again.
    source_partition   integer     NOT NULL,
    last_offset        bigint      NOT NULL,
    CONSTRAINT daily_billing_records_key
        UNIQUE (account_id, user_id, provider, date, charge_type)
);
CREATE INDEX IF NOT EXISTS daily_billing_records_updated_at ON daily_billing_records (updated_at);
CREATE INDEX IF NOT EXISTS daily_billing_records_date ON daily_billing_records (date);
CREATE INDEX IF NOT EXISTS daily_billing_records_open
    ON daily_billing_records (date) WHERE finalized_at IS NULL;

-- One row per partition of the charges topic. Every flush locks the rows of its partitions
-- first, so two workers (during a rebalance, or a zombie) never add the same charges twice.
CREATE TABLE IF NOT EXISTS billing_partitions (
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    applied_offset   bigint      NOT NULL DEFAULT -1,
    max_event_time   timestamptz,
    last_event_at    timestamptz,
    PRIMARY KEY (topic, partition)
);

-- Days up to closed_through are final; later days are open. Moved only while holding every
-- partition lock, so a flush sees a consistent answer to "is this charge late?".
CREATE TABLE IF NOT EXISTS billing_state (
    topic           text PRIMARY KEY,
    closed_through  date,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Idempotency keys within BILLING_DEDUP_HORIZON. The source coordinates (partition, offset and
-- position in a batch record) tell a re-sent charge (other coordinates: a duplicate) from a
-- replay of the very same record (same coordinates).
CREATE TABLE IF NOT EXISTS billing_seen_events (
    event_id    text        PRIMARY KEY,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    position    integer     NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_seen_events_seen_at ON billing_seen_events (seen_at);

-- Where each partition stood when days were closed: a charge of a day up to closed_through
-- is late exactly when its offset lies beyond that mark, so a replay reaches the same verdict.
CREATE TABLE IF NOT EXISTS billing_closures (
    topic           text    NOT NULL,
    closed_through  date    NOT NULL,
    partition       integer NOT NULL,
    applied_offset  bigint  NOT NULL,
    closed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, closed_through)
);
