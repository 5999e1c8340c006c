-- The audit_log table of CONTRACT.md §8.
-- Creates it, or adopts the table that the gateway's own sqlx migration made (seeds/): its NOT NULL
-- on client_role, backend_name and latency_ms is relaxed, created_at becomes received_at (values
-- kept), extra is added. Every row is kept.

-- Up Migration
DO $$
BEGIN
  IF to_regclass('audit_log') IS NULL THEN
    CREATE TABLE audit_log (
      id              BIGSERIAL PRIMARY KEY,
      request_id      UUID        NOT NULL,
      "timestamp"     TIMESTAMPTZ NOT NULL,
      client_subject  TEXT        NOT NULL,
      client_role     TEXT,
      tool_name       TEXT        NOT NULL,
      backend_name    TEXT,
      request_args    JSONB,
      response_status TEXT        NOT NULL,
      error_message   TEXT,
      latency_ms      BIGINT,
      received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
      extra           JSONB
    );
  ELSE
    ALTER TABLE audit_log
      ALTER COLUMN client_role DROP NOT NULL,
      ALTER COLUMN backend_name DROP NOT NULL,
      ALTER COLUMN latency_ms DROP NOT NULL;
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'audit_log' AND column_name = 'latency_ms') <> 'bigint' THEN
      ALTER TABLE audit_log ALTER COLUMN latency_ms TYPE BIGINT;
    END IF;
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'audit_log' AND column_name = 'request_args') <> 'jsonb' THEN
      ALTER TABLE audit_log ALTER COLUMN request_args TYPE JSONB USING request_args::jsonb;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'audit_log' AND column_name = 'received_at') THEN
      IF EXISTS (SELECT 1 FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = 'audit_log' AND column_name = 'created_at') THEN
        ALTER TABLE audit_log RENAME COLUMN created_at TO received_at;
        UPDATE audit_log SET received_at = now() WHERE received_at IS NULL;
        ALTER TABLE audit_log ALTER COLUMN received_at SET NOT NULL;
      ELSE
        ALTER TABLE audit_log ADD COLUMN received_at TIMESTAMPTZ NOT NULL DEFAULT now();
      END IF;
    END IF;
    ALTER TABLE audit_log ALTER COLUMN received_at SET DEFAULT now();
    ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS extra JSONB;
  END IF;
END
$$;

-- Down Migration
-- Never drops audit rows: it only undoes what "up" added to the gateway's table.
ALTER TABLE audit_log DROP COLUMN IF EXISTS extra;
ALTER TABLE audit_log RENAME COLUMN received_at TO created_at;
