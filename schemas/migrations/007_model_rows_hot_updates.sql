-- The rows by model are updated in place: every flush adds to rows that already exist.
--
-- An update that changes no indexed column and finds room on its page is a heap-only (HOT)
-- update: the row's new version goes next to the old one and none of the table's indexes gets a
-- new entry. The index on updated_at forbade that (updated_at moves on every update), so every
-- flush wrote one new entry into each of the table's five indexes per row. Nothing reads the
-- rows by model by updated_at (the change feed reads daily_billing_records, which keeps its
-- index), so the index goes; fillfactor 80 keeps a fifth of each new page free for the next
-- versions of its rows. Pages written before keep their layout until rows move or VACUUM FULL.
DROP INDEX IF EXISTS daily_model_records_updated_at;
ALTER TABLE daily_model_records SET (fillfactor = 80);
