-- audit_log partitioned by "timestamp", one partition per UTC day (CONTRACT.md §10), and the
-- audit_retention table that records what `retention` removed.
--
-- Partitions are owned by this project's own code (no extension: the embedded Postgres has none):
-- audit_log_partition_name(day) names them (audit_log_pYYYYMMDD), audit_log_make_partition(day)
-- makes one, audit_log_ensure_partitions(text[]) makes the days of a batch's timestamps. A partition
-- is made as a plain table (LIKE audit_log) and then ATTACHed: ATTACH PARTITION takes only a SHARE
-- UPDATE EXCLUSIVE lock on audit_log, so a partition made on demand never waits for, nor blocks,
-- the COPYs of other writers (CREATE TABLE … PARTITION OF would take ACCESS EXCLUSIVE; Postgres
-- docs 5.11.2.2). Makers serialise on one advisory transaction lock and look again under it, so two
-- daemons making the same day never fail. There is no DEFAULT partition (it would block
-- DETACH … CONCURRENTLY and make every ATTACH scan it).
--
-- Keys: a partitioned table's primary key and unique indexes must include the partition key, so the
-- primary key becomes (id, "timestamp"); ids still come from the same sequence (kept, with its
-- value), so they stay unique and increasing and `tail` follows them. The exactly-once key
-- UNIQUE ("timestamp", request_id) already includes it. Every §5 filter keeps its index in every
-- partition (indexes made on audit_log cascade to each partition, also to those attached later).
--
-- An existing unpartitioned audit_log (this project's earlier layout, or the gateway's sqlx table
-- after migration 0000 adopted it) is converted in this transaction: renamed aside, a partitioned
-- table made LIKE it (so columns added by other migrations come along), one partition per day that
-- holds rows, every row copied with its id, the old table dropped, the indexes built once the rows
-- are in. Triggers of the old table (the append-only trigger of the integrity migration, when it
-- ran before) are made again on the new table. Objects that depend on the old table (views, foreign
-- keys) stop the migration with Postgres' own message, and nothing is changed.
--
-- With the integrity migration (1764400000004, chains and the append-only trigger) before this one:
-- ids are kept, so batch records that name row ids stay true; its row triggers are made again on
-- the partitioned table (a BEFORE UPDATE/DELETE row trigger and a TRUNCATE statement trigger on a
-- partitioned table cover every partition). `retention` passes the append-only trigger without
-- bypassing it: DETACH and DROP fire no row or TRUNCATE trigger. An event trigger guarding DROP of
-- partitions could allow a drop whose audit_retention row was inserted in the same transaction
-- (retention inserts the record first). No foreign key may reference audit_log (id): a partitioned
-- table's referenced key must include "timestamp".

-- Up Migration
CREATE TABLE audit_retention (
  id              BIGSERIAL PRIMARY KEY,
  removed_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  -- The UTC day whose partition was removed, and the partition's name.
  day             DATE        NOT NULL,
  partition_name  TEXT        NOT NULL,
  -- The cut-off that `retention --older-than` was given (every removed entry is older).
  cutoff          TIMESTAMPTZ NOT NULL,
  entries         BIGINT      NOT NULL,
  first_timestamp TIMESTAMPTZ,
  last_timestamp  TIMESTAMPTZ,
  min_id          BIGINT,
  max_id          BIGINT,
  -- The exact ids of the removed rows as ascending ranges ('1-500,731,900-1200'): verify reports
  -- a chained row missing among them as removed by retention, not as tampering (a day's ids are not
  -- one range: entries of other days arrive between them).
  ids             TEXT        NOT NULL DEFAULT '',
  -- The archive (file name only, its SHA-256 in hex and its size), or null when not archived.
  archive_file    TEXT,
  archive_sha256  TEXT,
  archive_bytes   BIGINT,
  -- Who removed it (host, process) for the record.
  removed_by      TEXT        NOT NULL
);
CREATE INDEX audit_retention_day_idx ON audit_retention (day);
-- Append-only like the chain tables (migration 1764400000004's function).
CREATE TRIGGER audit_retention_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_retention
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE FUNCTION audit_log_partition_name(day date) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT 'audit_log_p' || to_char(day, 'FMYYYYMMDD') || CASE WHEN day < DATE '0001-01-01' THEN 'bc' ELSE '' END $$;

CREATE FUNCTION audit_log_make_partition(day date) RETURNS boolean
  LANGUAGE plpgsql
  AS $$
DECLARE
  part text := audit_log_partition_name(day);
BEGIN
  IF to_regclass(quote_ident(part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  -- One maker at a time (any day); look again under the lock: another session may have made it.
  -- The second look reads pg_class with a fresh snapshot (to_regclass reads the relation cache,
  -- which an advisory lock does not refresh).
  PERFORM pg_advisory_xact_lock(hashtext('audit_log_make_partition'));
  IF EXISTS (SELECT 1 FROM pg_class WHERE relname = part AND relnamespace = current_schema()::regnamespace) THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE)', part);
  EXECUTE format('ALTER TABLE audit_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part,
                 day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  RETURN true;
EXCEPTION WHEN duplicate_table THEN
  -- Made meanwhile by a session that did not take the lock (an operator's DDL): it exists.
  RETURN false;
END
$$;

-- Makes the partition of the UTC day of each timestamp text (as Postgres reads it); texts that are
-- not valid timestamps are skipped (their entries are refused by the COPY as data, as before).
-- Returns how many partitions it made. Its DDL waits at most 2 s for a lock (lock_timeout, set for
-- the function's run only; the caller retries on SQLSTATE 55P03); it is one statement, so a writer
-- calls it in autocommit, outside any batch's transaction.
CREATE FUNCTION audit_log_ensure_partitions(stamps text[]) RETURNS integer
  LANGUAGE plpgsql
  SET lock_timeout = '2s'
  AS $$
DECLARE
  t text;
  d date;
  days date[] := '{}';
  made integer := 0;
BEGIN
  FOREACH t IN ARRAY stamps LOOP
    BEGIN
      d := (t::timestamptz AT TIME ZONE 'UTC')::date;
    EXCEPTION WHEN data_exception THEN
      CONTINUE;
    END;
    IF NOT d = ANY (days) THEN
      days := days || d;
    END IF;
  END LOOP;
  FOR d IN SELECT x FROM unnest(days) x ORDER BY x LOOP
    IF audit_log_make_partition(d) THEN
      made := made + 1;
    END IF;
  END LOOP;
  RETURN made;
END
$$;

-- Writers make partitions through these two functions only: they run with the owner's rights
-- (SECURITY DEFINER, the search_path fixed as the migration had it), so `audit_writer` (insert only,
-- `migrate --roles`) needs no CREATE on the schema; EXECUTE is granted to it, and to no one else.
ALTER FUNCTION audit_log_make_partition(date) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION audit_log_ensure_partitions(text[]) SECURITY DEFINER SET search_path FROM CURRENT;
REVOKE EXECUTE ON FUNCTION audit_log_make_partition(date), audit_log_ensure_partitions(text[]) FROM PUBLIC;

DO $$
DECLARE
  seq text;
  d date;
  trg record;
  def text;
BEGIN
  IF (SELECT c.relkind FROM pg_class c WHERE c.oid = 'audit_log'::regclass) = 'p' THEN
    RETURN;
  END IF;
  seq := pg_get_serial_sequence('audit_log', 'id');
  ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
  IF seq IS NOT NULL THEN
    EXECUTE format('ALTER SEQUENCE %s OWNED BY NONE', seq);
  END IF;
  CREATE TABLE audit_log (LIKE audit_log_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)
    PARTITION BY RANGE ("timestamp");
  IF seq IS NOT NULL THEN
    EXECUTE format('ALTER SEQUENCE %s OWNED BY audit_log.id', seq);
  END IF;
  FOR d IN SELECT DISTINCT ("timestamp" AT TIME ZONE 'UTC')::date FROM audit_log_unpartitioned LOOP
    PERFORM audit_log_make_partition(d);
  END LOOP;
  INSERT INTO audit_log SELECT * FROM audit_log_unpartitioned;
  -- Triggers of the old table (e.g. the integrity migration's append-only trigger) on the new one.
  FOR trg IN
    SELECT t.oid, t.tgname FROM pg_trigger t
     WHERE t.tgrelid = 'audit_log_unpartitioned'::regclass AND NOT t.tgisinternal
  LOOP
    def := pg_get_triggerdef(trg.oid);
    def := regexp_replace(def, ' ON (\S+\.)?audit_log_unpartitioned ', ' ON audit_log ');
    EXECUTE def;
  END LOOP;
  DROP TABLE audit_log_unpartitioned;
END
$$;

-- Indexes on audit_log cascade to every partition, and to each one attached later (ATTACH makes or
-- adopts the matching index). Built after the rows are in: one sort per partition.
ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id, "timestamp");
CREATE UNIQUE INDEX audit_log_timestamp_request_id_key ON audit_log ("timestamp", request_id);
CREATE INDEX audit_log_request_id_hash_idx ON audit_log USING hash (request_id);
CREATE INDEX audit_log_client_subject_idx ON audit_log (client_subject);
CREATE INDEX audit_log_tool_name_idx ON audit_log (tool_name);

-- The days around today, so that the first batches need no DDL (serve makes more ahead).
SELECT audit_log_make_partition(d::date)
  FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day') d;

-- Down Migration
-- Back to one unpartitioned table, keeping every row and id (the sequence is kept).
DO $$
DECLARE
  seq text := pg_get_serial_sequence('audit_log', 'id');
BEGIN
  ALTER TABLE audit_log RENAME TO audit_log_partitioned;
  IF seq IS NOT NULL THEN
    EXECUTE format('ALTER SEQUENCE %s OWNED BY NONE', seq);
  END IF;
  CREATE TABLE audit_log (LIKE audit_log_partitioned INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS);
  IF seq IS NOT NULL THEN
    EXECUTE format('ALTER SEQUENCE %s OWNED BY audit_log.id', seq);
  END IF;
  INSERT INTO audit_log SELECT * FROM audit_log_partitioned;
  DROP TABLE audit_log_partitioned;
END
$$;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX audit_log_timestamp_request_id_key ON audit_log ("timestamp", request_id);
CREATE INDEX audit_log_request_id_hash_idx ON audit_log USING hash (request_id);
CREATE INDEX audit_log_client_subject_idx ON audit_log (client_subject);
CREATE INDEX audit_log_tool_name_idx ON audit_log (tool_name);
-- The append-only trigger of migration 1764400000004, on the table that replaces the partitioned one.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
DROP FUNCTION audit_log_ensure_partitions(text[]);
DROP FUNCTION audit_log_make_partition(date);
DROP FUNCTION audit_log_partition_name(date);
DROP TABLE audit_retention;
