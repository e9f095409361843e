#!/usr/bin/env bash
# Runs the benchmark three times (cargo bench --bench portcullis: SQLite, or PostgreSQL with
# PORTCULLIS_BENCH_DATABASE_URL) and prints, per target, the median of the three runs as one line:
#   P2 2143.0 sessions/s target >= 2000 met
# Each run's full output is kept in $BENCH_LOG_DIR (default: a temporary directory). P4 runs
# against moto's EC2 server, started here unless PORTCULLIS_BENCH_MOTO_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PORTCULLIS_BENCH_MOTO_URL:-}" ]]; then
    motodir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-bench-moto.XXXXXX")
    trap 'scripts/moto.sh stop "$motodir"' EXIT
    eval "$(scripts/moto.sh start "$motodir")"
    export PORTCULLIS_BENCH_MOTO_URL=$PORTCULLIS_TEST_MOTO_URL
fi

runs=${BENCH_RUNS:-3}
logs=${BENCH_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")}
mkdir -p "$logs"
cargo bench --bench portcullis --no-run >&2
for run in $(seq 1 "$runs"); do
    echo "bench run $run of $runs (log: $logs/run-$run.txt)" >&2
    cargo bench -q --bench portcullis > "$logs/run-$run.txt"
done

# The target lines of every run: ID VALUE UNIT target OP GOAL met|short.
cat "$logs"/run-*.txt | awk '/^## Targets/ { on = 1; next } on && NF == 7 && $4 == "target"' |
    sort -k1,1 -k2,2g |
    awk '
        { id = $1; values[id, ++count[id]] = $2; unit[id] = $3; op[id] = $5; goal[id] = $6
          if (!(id in seen)) { seen[id] = 1; order[++ids] = id } }
        END {
            for (i = 1; i <= ids; i++) {
                id = order[i]; n = count[id]
                median = (n % 2) ? values[id, (n + 1) / 2] : (values[id, n / 2] + values[id, n / 2 + 1]) / 2
                met = (op[id] == ">=") ? (median >= goal[id]) : (median <= goal[id])
                printf "%s %.1f %s target %s %s %s\n", id, median, unit[id], op[id], goal[id], met ? "met" : "short"
            }
        }'
