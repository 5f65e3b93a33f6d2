-- A fingerprint of each partition's record at offset 0. A topic that was deleted and created
-- again (or an embedded broker that restarted empty) starts its offsets at 0 once more; the
-- fingerprint tells the sink, which then resets that partition's fences instead of skipping
-- the new records as if they had been counted already.
ALTER TABLE billing_partitions ADD COLUMN IF NOT EXISTS first_record text;
