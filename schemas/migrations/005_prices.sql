-- Money: what the charges cost, from a price book, and the model each cost came from.
--
-- A price is per provider and model, in force from valid_from on; account_id NULL is the
-- default for every account, an account's own row (negotiated or corrected) wins while in force.
-- Rates are per million tokens. A charge is priced with the price in force at its occurred_at
-- for its account, exactly, in whole nano-units of the currency (see streams/rules/pricing.py).

CREATE TABLE IF NOT EXISTS billing_prices (
    id              bigserial   PRIMARY KEY,
    provider        text        NOT NULL,
    model           text        NOT NULL,            -- lower-case, as charges are matched
    account_id      text,                            -- NULL: the default for every account
    valid_from      timestamptz NOT NULL,
    input           numeric     NOT NULL CHECK (input >= 0),
    output          numeric     NOT NULL CHECK (output >= 0),
    cache_read      numeric     CHECK (cache_read >= 0),    -- NULL: cached reads at the input rate
    cache_write     numeric     CHECK (cache_write >= 0),
    reasoning       numeric     CHECK (reasoning >= 0),     -- NULL: reasoning at the output rate
    currency        text        NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    source          text        NOT NULL DEFAULT 'set',     -- 'set', 'import', 'genai-prices'
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One price per start: setting it again replaces it (NULLS NOT DISTINCT needs Postgres 15, so
-- the default's empty account is spelled with coalesce).
CREATE UNIQUE INDEX IF NOT EXISTS billing_prices_key
    ON billing_prices (provider, model, coalesce(account_id, ''), valid_from);

-- Workers keep the book in memory and reload it when this number moves.
CREATE TABLE IF NOT EXISTS billing_price_book (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint  NOT NULL DEFAULT 0
);
INSERT INTO billing_price_book DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION billing_price_book_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE billing_price_book SET version = version + 1;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS billing_prices_changed ON billing_prices;
CREATE TRIGGER billing_prices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON billing_prices
    FOR EACH STATEMENT EXECUTE FUNCTION billing_price_book_changed();

-- The daily rows gain their cost. Rows counted before there were prices were never priced:
-- their charges are unpriced until `billing reprice` recomputes those days with the book.
ALTER TABLE daily_billing_records
    ADD COLUMN IF NOT EXISTS cost_nanos bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS currency text,
    ADD COLUMN IF NOT EXISTS unpriced_charge_count bigint NOT NULL DEFAULT 0;
UPDATE daily_billing_records SET unpriced_charge_count = charge_count;

-- The same sums by model: a daily row is the sum of its model rows, written in the same
-- transaction behind the same fences. model '' is a charge without a model.
CREATE TABLE IF NOT EXISTS daily_model_records (
    id                     bigserial   PRIMARY KEY,
    account_id             text        NOT NULL,
    user_id                text        NOT NULL,
    provider               text        NOT NULL,
    model                  text        NOT NULL,
    date                   date        NOT NULL,
    charge_type            text        NOT NULL,
    prompt_tokens          bigint      NOT NULL DEFAULT 0,
    completion_tokens      bigint      NOT NULL DEFAULT 0,
    total_tokens           bigint      NOT NULL DEFAULT 0,
    cached_tokens          bigint      NOT NULL DEFAULT 0,
    reasoning_tokens       bigint      NOT NULL DEFAULT 0,
    charge_count           bigint      NOT NULL DEFAULT 0,
    late_charge_count      bigint      NOT NULL DEFAULT 0,
    cost_nanos             bigint      NOT NULL DEFAULT 0,
    currency               text,
    unpriced_charge_count  bigint      NOT NULL DEFAULT 0,
    revision               integer     NOT NULL DEFAULT 0,
    finalized_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daily_model_records_key UNIQUE (account_id, user_id, provider, model, date, charge_type)
);
CREATE INDEX IF NOT EXISTS daily_model_records_date ON daily_model_records (date);
CREATE INDEX IF NOT EXISTS daily_model_records_updated_at ON daily_model_records (updated_at);
CREATE INDEX IF NOT EXISTS daily_model_records_open ON daily_model_records (date) WHERE finalized_at IS NULL;

-- Existing rows, whose model was not kept, become model '' so both tables hold the same sums.
INSERT INTO daily_model_records
    (account_id, user_id, provider, model, date, charge_type, prompt_tokens, completion_tokens,
     total_tokens, cached_tokens, reasoning_tokens, charge_count, late_charge_count, cost_nanos,
     currency, unpriced_charge_count, revision, finalized_at, created_at, updated_at)
SELECT account_id, user_id, provider, '', date, charge_type, prompt_tokens, completion_tokens,
       total_tokens, cached_tokens, reasoning_tokens, charge_count, late_charge_count, cost_nanos,
       currency, unpriced_charge_count, revision, finalized_at, created_at, updated_at
FROM daily_billing_records
ON CONFLICT DO NOTHING;
