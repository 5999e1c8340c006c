-- Hash chains, signed checkpoints and append-only tables (CONTRACT.md §9).
--
-- audit_chain: one row per writer (--writer-id) with its head (seq, hash), updated in the same
--   transaction as each batch; a trigger lets the head only move forward by one.
-- audit_batch: one record per committed batch: the previous record's hash, the row ids, the
--   Merkle leaves (32 bytes per row, in id order) and root, and the record's own hash. The primary
--   key (chain_id, seq) and UNIQUE (chain_id, prev_hash) make a fork a constraint error.
-- audit_checkpoint: signed checkpoints over every chain's head.
-- audit_retention (migration 1764400000005): what retention removed; verify reports missing rows
--   whose ids a retention record lists (its `ids` ranges) as removed by retention, not as tampering.
-- audit_log, audit_batch and audit_checkpoint refuse UPDATE, DELETE and
-- TRUNCATE (statement triggers); audit_chain refuses DELETE and TRUNCATE.
-- Rows stored before this migration are bound into batches of chain 'adopted-1764400000004',
-- kind 'adopted', 10,000 rows each, in id order. The canonical row and the record hash are those of
-- src/integrity/merkle.ts and README "Integrity" (the same SQL as src/db/chain.ts).

-- Up Migration
CREATE TABLE audit_chain (
  chain_id    TEXT        PRIMARY KEY CHECK (chain_id ~ '^[A-Za-z0-9._:@/+=-]{1,200}$'),
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  head_seq    BIGINT      NOT NULL DEFAULT 0,
  head_hash   BYTEA       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);

CREATE TABLE audit_batch (
  chain_id     TEXT        NOT NULL REFERENCES audit_chain (chain_id),
  seq          BIGINT      NOT NULL CHECK (seq >= 1),
  prev_hash    BYTEA       NOT NULL,
  row_count    INTEGER     NOT NULL,
  merkle_root  BYTEA       NOT NULL,
  ids          TEXT        NOT NULL,
  first_id     BIGINT      NOT NULL,
  last_id      BIGINT      NOT NULL,
  leaves       BYTEA       NOT NULL,
  kind         TEXT        NOT NULL CHECK (kind IN ('write', 'adopted')),
  hash         BYTEA       NOT NULL,
  committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (chain_id, seq),
  UNIQUE (chain_id, prev_hash)
);
-- Leaves are hashes: incompressible, so pglz is not even tried (measured: it only costs CPU).
ALTER TABLE audit_batch ALTER COLUMN leaves SET STORAGE EXTERNAL;
CREATE INDEX audit_batch_first_id_idx ON audit_batch (first_id);
CREATE INDEX audit_batch_committed_at_idx ON audit_batch (committed_at);

CREATE TABLE audit_checkpoint (
  id          BIGSERIAL   PRIMARY KEY,
  made_at     TIMESTAMPTZ NOT NULL,
  writer_id   TEXT        NOT NULL,
  public_key  TEXT        NOT NULL,
  line        TEXT        NOT NULL
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit-gateway: % on % is refused: the table is append-only (CONTRACT.md §9); retention removes whole partitions', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_chain_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.chain_id <> OLD.chain_id OR NEW.created_at <> OLD.created_at OR NEW.head_seq <> OLD.head_seq + 1 THEN
    RAISE EXCEPTION 'audit-gateway: the head of chain % may only move forward by one batch', OLD.chain_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_batch_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_batch
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoint
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE DELETE OR TRUNCATE ON audit_chain
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain
  FOR EACH ROW EXECUTE FUNCTION audit_chain_forward();

-- Adoption of the rows stored before chains existed.
CREATE FUNCTION pg_temp.merkle_root(leaves bytea[]) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
  level bytea[] := leaves;
  nxt bytea[];
  i int;
  n int;
BEGIN
  n := coalesce(array_length(level, 1), 0);
  IF n = 0 THEN RETURN sha256(''::bytea); END IF;
  WHILE n > 1 LOOP
    nxt := '{}';
    i := 1;
    WHILE i + 1 <= n LOOP
      nxt := nxt || sha256('\x01'::bytea || level[i] || level[i + 1]);
      i := i + 2;
    END LOOP;
    IF n % 2 = 1 THEN nxt := nxt || level[n]; END IF;
    level := nxt;
    n := array_length(level, 1);
  END LOOP;
  RETURN level[1];
END
$$;

CREATE FUNCTION pg_temp.id_ranges(ids bigint[]) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(string_agg(CASE WHEN lo = hi THEN lo::text ELSE lo || '-' || hi END, ',' ORDER BY lo), '')
    FROM (SELECT min(id) lo, max(id) hi FROM (SELECT id, id - row_number() OVER (ORDER BY id) g FROM unnest(ids) id) s GROUP BY g) r
$$;

DO $$
DECLARE
  chain text := 'adopted-1764400000004';
  b record;
  prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
  s bigint := 0;
  root bytea;
  ranges text;
  h bytea;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM audit_log) THEN RETURN; END IF;
  INSERT INTO audit_chain (chain_id) VALUES (chain);
  FOR b IN
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(leaf ORDER BY id) AS leaves,
           string_agg(leaf, ''::bytea ORDER BY id) AS leafcat
      FROM (
        SELECT id, (row_number() OVER (ORDER BY id) - 1) / 10000 AS g,
          sha256('\x00'::bytea || convert_to(concat(
            octet_length(id::text), ':', id,
            octet_length(request_id::text), ':', request_id,
            octet_length(((extract(epoch FROM "timestamp") * 1000000)::bigint)::text), ':', (extract(epoch FROM "timestamp") * 1000000)::bigint,
            octet_length(client_subject), ':', client_subject,
            octet_length(client_role), ':', client_role,
            octet_length(tool_name), ':', tool_name,
            octet_length(backend_name), ':', backend_name,
            octet_length(request_args::text), ':', request_args,
            octet_length(response_status), ':', response_status,
            octet_length(error_message), ':', error_message,
            octet_length(latency_ms::text), ':', latency_ms,
            octet_length(((extract(epoch FROM received_at) * 1000000)::bigint)::text), ':', (extract(epoch FROM received_at) * 1000000)::bigint,
            octet_length(extra::text), ':', extra
          ), 'UTF8')) AS leaf
          FROM audit_log
      ) r
     GROUP BY g ORDER BY g
  LOOP
    s := s + 1;
    root := pg_temp.merkle_root(b.leaves);
    ranges := pg_temp.id_ranges(b.ids);
    h := sha256(convert_to(concat_ws(E'\n', 'audit-gateway batch v1', chain, s::text, encode(prev, 'hex'),
           array_length(b.ids, 1)::text, encode(root, 'hex'), ranges, 'adopted'), 'UTF8'));
    INSERT INTO audit_batch (chain_id, seq, prev_hash, row_count, merkle_root, ids, first_id, last_id, leaves, kind, hash)
      VALUES (chain, s, prev, array_length(b.ids, 1), root, ranges, b.ids[1], b.ids[array_length(b.ids, 1)],
              b.leafcat, 'adopted', h);
    UPDATE audit_chain SET head_seq = s, head_hash = h WHERE chain_id = chain;
    prev := h;
  END LOOP;
END
$$;
DROP FUNCTION pg_temp.merkle_root(bytea[]);
DROP FUNCTION pg_temp.id_ranges(bigint[]);

-- Down Migration
DROP TRIGGER audit_log_append_only ON audit_log;
DROP TABLE audit_checkpoint, audit_batch, audit_chain;
DROP FUNCTION audit_chain_forward();
DROP FUNCTION audit_append_only();
