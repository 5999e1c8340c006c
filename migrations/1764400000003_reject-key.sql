-- audit_reject exactly once (CONTRACT.md §4: "none is stored twice"; issue 10: after a write
-- timeout every reject of the batch was stored twice, and replaying a file twice stored its rejects
-- twice). Each reject carries a key: a random UUID given when the daemon rejects the line (kept with
-- the reject through retries and the spool), or, where none was given (replay, rows Postgres
-- refused), a UUID made of the SHA-256 of its source, reason and raw bytes, so that the same line of
-- the same file is the same reject. The writer inserts with ON CONFLICT (reject_key) DO NOTHING.
-- Rows stored before this migration keep a NULL key (a unique index allows many NULLs): no row is
-- lost, and the duplicates the bug made stay as they were.

-- Up Migration
ALTER TABLE audit_reject ADD COLUMN reject_key uuid;
CREATE UNIQUE INDEX audit_reject_reject_key_key ON audit_reject (reject_key);

-- Down Migration
DROP INDEX audit_reject_reject_key_key;
ALTER TABLE audit_reject DROP COLUMN reject_key;
