-- Cache writes and the cost the caller reported, summed like the other counts.
--
-- cache_write_tokens: the part of prompt_tokens written to a provider's prompt cache (Anthropic's
-- cache_creation_input_tokens). They are priced at the price's cache_write rate, so a row keeps
-- their sum to show what caching cost as well as what cached reads saved. Rows counted before
-- charges carried the count hold 0 (those writes were priced at the input rate, as then).
--
-- reported_cost_nanos: what the callers' own tooling said the charges cost (LiteLLM's
-- response_cost), in nano-units. It is never billed (cost_nanos comes from the price book); it
-- is there to reconcile the two.
ALTER TABLE daily_billing_records
    ADD COLUMN IF NOT EXISTS cache_write_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reported_cost_nanos bigint NOT NULL DEFAULT 0;
ALTER TABLE daily_model_records
    ADD COLUMN IF NOT EXISTS cache_write_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reported_cost_nanos bigint NOT NULL DEFAULT 0;
