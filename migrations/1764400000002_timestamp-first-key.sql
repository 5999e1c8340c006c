-- The exactly-once key with the timestamp first (CONTRACT.md §8: the kind of each index is chosen by
-- measuring ingest and queries together).
--
-- (request_id, "timestamp") put a random UUID first: every insert landed on a random page of that
-- index. ("timestamp", request_id) holds the same uniqueness (ON CONFLICT infers it whatever the
-- column order), takes inserts near its right edge (entries arrive roughly in time order), and
-- serves --since/--until and the (timestamp, id) order, so the separate timestamp B-tree goes.
-- --request-id gets a hash index: an equality lookup, smaller per entry than a B-tree on a UUID.
-- Measured with bench/indexes.sh, psql \copy of 1M generated rows into a fresh table, local
-- Postgres 15, 2 cores, two alternating reps: previous set 89.0k / 88.7k rows/s, this set
-- 102.7k / 101.7k (+15%), the seed gateway's 78.9k / 89.8k; with a B-tree instead of the hash
-- index 93.8k / 93.3k. The EXPLAIN tests in test/integration/read.test.ts check that every filter
-- of §5 on these columns still uses an index.

-- Up Migration
CREATE UNIQUE INDEX audit_log_timestamp_request_id_key ON audit_log ("timestamp", request_id);
DROP INDEX audit_log_request_id_timestamp_key;
DROP INDEX audit_log_timestamp_idx;
CREATE INDEX audit_log_request_id_hash_idx ON audit_log USING hash (request_id);

-- Down Migration
CREATE UNIQUE INDEX audit_log_request_id_timestamp_key ON audit_log (request_id, "timestamp");
CREATE INDEX audit_log_timestamp_idx ON audit_log ("timestamp");
DROP INDEX audit_log_request_id_hash_idx;
DROP INDEX audit_log_timestamp_request_id_key;
