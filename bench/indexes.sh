#!/usr/bin/env bash
# Ingest cost of index sets on audit_log: psql \copy of the same generated rows (COPY text) into a
# fresh table with each index set, twice, alternating, so the ratios come from one run.
# Usage: bench/indexes.sh [ROWS] [POSTGRES_URL_WITHOUT_DB]   (default 300000, postgres://postgres@127.0.0.1:5432)
# ONLY='seed ours tsfirst_hash' runs some sets only.
# Needs `npm run build` first. Creates and drops databases ix_* on that server.
set -euo pipefail
ROWS=${1:-300000}
URL=${2:-postgres://postgres@127.0.0.1:5432}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
node "$HERE/lib/copyfile.mjs" "$ROWS" "$DATA/rows.copy"
COLS='request_id, "timestamp", client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message, latency_ms, extra'
TABLE='CREATE TABLE audit_log (id BIGSERIAL PRIMARY KEY, request_id UUID NOT NULL, "timestamp" TIMESTAMPTZ NOT NULL, client_subject TEXT NOT NULL, client_role TEXT, tool_name TEXT NOT NULL, backend_name TEXT, request_args JSONB, response_status TEXT NOT NULL, error_message TEXT, latency_ms BIGINT, received_at TIMESTAMPTZ NOT NULL DEFAULT now(), extra JSONB);'
declare -A SETS
SETS[pk_only]=''
SETS[seed]='CREATE INDEX ON audit_log ("timestamp"); CREATE INDEX ON audit_log (request_id); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[ours]='CREATE UNIQUE INDEX ON audit_log (request_id, "timestamp"); CREATE INDEX ON audit_log ("timestamp"); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[ours_nonunique]='CREATE INDEX ON audit_log (request_id, "timestamp"); CREATE INDEX ON audit_log ("timestamp"); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[composites]='CREATE UNIQUE INDEX ON audit_log (request_id, "timestamp"); CREATE INDEX ON audit_log ("timestamp", id); CREATE INDEX ON audit_log (client_subject, "timestamp"); CREATE INDEX ON audit_log (tool_name, "timestamp");'
SETS[brin_ts]='CREATE UNIQUE INDEX ON audit_log (request_id, "timestamp"); CREATE INDEX ON audit_log USING brin ("timestamp"); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
# The exactly-once key with the timestamp first: appends instead of random UUID inserts, and it
# serves --since/--until and the time order, so no separate timestamp index; --request-id then needs
# its own index (hash or B-tree), or none (tsfirst).
SETS[tsfirst]='CREATE UNIQUE INDEX ON audit_log ("timestamp", request_id); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[tsfirst_hash]='CREATE UNIQUE INDEX ON audit_log ("timestamp", request_id); CREATE INDEX ON audit_log USING hash (request_id); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[tsfirst_btree_rid]='CREATE UNIQUE INDEX ON audit_log ("timestamp", request_id); CREATE INDEX ON audit_log (request_id); CREATE INDEX ON audit_log (client_subject); CREATE INDEX ON audit_log (tool_name);'
SETS[unique_and_brin_only]='CREATE UNIQUE INDEX ON audit_log (request_id, "timestamp"); CREATE INDEX ON audit_log USING brin ("timestamp");'
for rep in 1 2; do
  for set in ${ONLY:-pk_only seed ours ours_nonunique composites brin_ts unique_and_brin_only tsfirst tsfirst_hash tsfirst_btree_rid}; do
    db="ix_${set}_$$"
    psql "$URL/postgres" -qAt -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
    psql "$URL/$db" -qAt -c "$TABLE ${SETS[$set]}" -c "CHECKPOINT"
    sync
    start=$(date +%s.%N)
    psql "$URL/$db" -qAt -c "\\copy audit_log ($COLS) FROM '$DATA/rows.copy'"
    end=$(date +%s.%N)
    printf '%s\t%-22s\t%s rows/s\n' "$rep" "$set" "$(echo "$ROWS / ($end - $start)" | bc)"
    psql "$URL/postgres" -qAt -c "DROP DATABASE $db"
  done
done
