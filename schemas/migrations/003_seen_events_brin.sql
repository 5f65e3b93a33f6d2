-- Every charge inserts one row into billing_seen_events, so each index on it is paid per charge.
-- seen_at only serves the purge of entries older than BILLING_DEDUP_HORIZON, and rows arrive
-- in seen_at order: a BRIN index answers that range as well, at almost no cost per insert,
-- where the B-tree was a second index insertion for every charge.
DROP INDEX IF EXISTS billing_seen_events_seen_at;
CREATE INDEX IF NOT EXISTS billing_seen_events_seen_at_brin ON billing_seen_events USING brin (seen_at);
