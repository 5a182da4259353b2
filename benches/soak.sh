#!/usr/bin/env bash
# `make soak`: a long, moderate, mixed load (client-sim mix: game players, ticker readers,
# chat viewers and senders) against a fresh release server, with the server's resident memory
# and alive tasks sampled every SAMPLE seconds. Prints start, end and the least-squares slope
# of each (a leak shows as a slope that does not flatten), and leaves the samples as CSV.
#
#   benches/soak.sh [SECONDS] [SAMPLE]      (defaults: 600 s, every 10 s)
#   MIX_ARGS="--game-clients 200 --ticker-clients 200 --chat-viewers 1000 --chat-senders 10 --source-ips 4"
set -euo pipefail
secs=${1:-600} every=${2:-10}
mix_args=${MIX_ARGS:---game-clients 200 --ticker-clients 200 --chat-viewers 1000 --chat-senders 10 --source-ips 4}
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
port=18080 ops=19090
out=${OUT:-results/soak-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
taskset -c 0 target/release/tickroom serve --listen 127.0.0.1:$port \
    --ops-listen 127.0.0.1:$ops --log warn &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$ops/readyz >/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086
taskset -c 1 target/release/client-sim mix --url ws://127.0.0.1:$port/ws \
    --metrics-url http://127.0.0.1:$ops/metrics --duration "$secs" --json "$out/mix.json" \
    $mix_args > "$out/mix.txt" 2>&1 &
sim=$!
echo "t_s,rss_bytes,alive_tasks,connections" > "$out/samples.csv"
start=$(date +%s)
while kill -0 $sim 2>/dev/null; do
    m=$(curl -sf --max-time 2 http://127.0.0.1:$ops/metrics || true)
    v() { awk -v n="$1" '$1 == n { print $2 }' <<<"$m"; }
    echo "$(( $(date +%s) - start )),$(v process_resident_memory_bytes),$(v tokio_alive_tasks),$(v tickroom_connections_active)" \
        >> "$out/samples.csv"
    sleep "$every"
done
wait $sim || echo "client-sim mix failed: see $out/mix.txt" >&2
# Over the hold only: the samples with every client connected (the most connections seen).
python3 - "$out/samples.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rss_bytes"] and r["connections"]]
peak = max(float(r["connections"]) for r in rows)
hold = [r for r in rows if float(r["connections"]) >= peak * 0.99]
def slope(xs, ys):
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    d = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / d if d else 0.0
t = [float(r["t_s"]) for r in hold]
for key, unit, scale in [("rss_bytes", "MB", 1e6), ("alive_tasks", "tasks", 1)]:
    y = [float(r[key]) / scale for r in hold]
    print(f"{key}: start {y[0]:.1f} {unit}, end {y[-1]:.1f} {unit}, "
          f"slope {slope(t, y) * 60:+.3f} {unit}/min over {t[-1] - t[0]:.0f} s of hold "
          f"({len(hold)} samples, {peak:.0f} connections)")
PY
echo "samples: $out/samples.csv, report: $out/mix.txt"
