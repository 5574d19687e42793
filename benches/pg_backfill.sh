#!/usr/bin/env bash
# PostgreSQL backfill throughput and memory, against `COPY … TO STDOUT` of the same table on
# the same server.
#
#   benches/pg_backfill.sh [ROWS] [PIPELINE] [EXTRA RUN ARGS…]
#
# Starts a throwaway PostgreSQL cluster (TRIBUTARY_PG_BIN, else the newest
# /usr/lib/postgresql/*/bin), fills `orders` with ROWS rows (default 2,000,000), times
# `COPY orders TO STDOUT` through psql, then runs `tributary run PIPELINE --until-idle` (default
# op-counts) over the database and reports the backfill's rows/s (from its `backfilled` log
# line), the ratio to COPY's, the run's peak RSS and the state it kept per table. TRIBUTARY_BIN picks the binary (default:
# target/release/tributary); SOURCE_OPTIONS adds URL options (e.g. chunk_rows=20000).
set -euo pipefail

rows="${1:-2000000}"
pipeline="${2:-op-counts}"
shift $(( $# > 2 ? 2 : $# ))
bin="${TRIBUTARY_BIN:-$(dirname "$0")/../target/release/tributary}"
pg_bin="${TRIBUTARY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}"
[ -x "$bin" ] || { echo "no tributary binary at $bin: cargo build --release -p tributary"; exit 1; }

work="$(mktemp -d)"
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
port="$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")"
cleanup() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U postgres --no-sync -D "$work/data" >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -l "$work/log" -w start \
    -o "-c listen_addresses=127.0.0.1 -p $port -c wal_level=logical -c unix_socket_directories= -c fsync=off" >/dev/null
psql=("$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -Atq)

"${psql[@]}" -c "CREATE DATABASE shop"
"${psql[@]}" -d shop -c "
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, status text,
  quantity int, price numeric(10,2), created_at timestamp);
INSERT INTO orders SELECT i, i % 9973, (ARRAY['pending','paid','shipped','delivered'])[1 + i % 4],
  1 + i % 7, (i % 10000) / 100.0, TIMESTAMP '2024-01-01' + i * INTERVAL '1 second'
  FROM generate_series(1, $rows) i;
CREATE PUBLICATION tributary FOR TABLE orders;"
"${psql[@]}" -d shop -c "VACUUM ANALYZE orders"

start=$(date +%s.%N)
"${psql[@]}" -d shop -c "COPY orders TO STDOUT" >/dev/null
copy_s=$(echo "$(date +%s.%N) - $start" | bc -l)

log="$work/run.log"
${PERF:+perf record -g -o "$PERF" --} env RUST_LOG=info "$bin" run "$pipeline" --source "postgres://postgres@127.0.0.1:$port/shop${SOURCE_OPTIONS:+?$SOURCE_OPTIONS}" \
    --warehouse "$work/warehouse" --until-idle "$@" >/dev/null 2>"$log" &
pid=$!
peak_kib=0
while kill -0 "$pid" 2>/dev/null; do
    kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$kib" ] && [ "$kib" -gt "$peak_kib" ] && peak_kib=$kib
    sleep 0.05
done
wait "$pid" || { echo "tributary failed:"; tail -5 "$log"; exit 1; }

line="$(grep 'backfilled' "$log" | grep 'table=public.orders' | tail -n 1)"
backfill_rps="$(sed -E 's/.*rows_per_s=([0-9]+).*/\1/' <<<"$line")"
copy_rps=$(echo "$rows / $copy_s" | bc -l)
printf 'rows %d, pipeline %s\n' "$rows" "$pipeline"
printf 'COPY TO STDOUT: %.2f s, %.0f rows/s\n' "$copy_s" "$copy_rps"
printf 'backfill: %s rows/s (%s)\n' "$backfill_rps" "$(sed -E 's/.*(elapsed_s=[0-9.]+).*/\1/' <<<"$line")"
printf 'ratio to COPY: %.2f\n' "$(echo "$backfill_rps / $copy_rps" | bc -l)"
printf 'peak RSS: %.1f MB\n' "$(echo "$peak_kib / 1024" | bc -l)"
grep 'state kept in memory' "$log" | sed -E 's/.*(table=[^ ]+ rows=[0-9]+ bytes=[0-9]+ bytes_per_row=[0-9]+).*/state: \1/' || true
