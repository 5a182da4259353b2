#!/usr/bin/env bash
# Side-by-side server cost of two builds, in one sitting, runs alternated so both see the same
# machine: the bench-load game row (N players at 60 Hz) and chat row (viewers + senders),
# each run on a fresh server pinned to core 0 with one client-sim pinned to core 1.
#
#   benches/compare.sh BEFORE_BIN_DIR AFTER_BIN_DIR [RUNS] [GAME_N] [CHAT_VIEWERS]
#
# Each BIN_DIR holds a release `tickroom`; one client-sim drives both, so only the server
# differs: AFTER_BIN_DIR's, or SIM=/path/to/client-sim. Prints one line per run and the medians: server CPU per frame
# written (game: µs = cpu % of one core ÷ frames written per s) and per chat batch (ms).
set -euo pipefail
before=$1 after=$2 runs=${3:-3} game_n=${4:-2000} viewers=${5:-15000}
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
port=18080 ops=19090
sim="${SIM:-$after/client-sim}"
out=$(mktemp -d)

one() { # label bin scenario args...
    local label=$1 bin=$2 scenario=$3; shift 3
    taskset -c 0 "$bin/tickroom" serve --config benches/load.toml \
        --listen 127.0.0.1:$port --ops-listen 127.0.0.1:$ops --log warn &
    local pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$ops/readyz >/dev/null && break; sleep 0.1; done
    taskset -c 1 "$sim" "$scenario" --url ws://127.0.0.1:$port/ws \
        --metrics-url http://127.0.0.1:$ops/metrics --source-ips 8 \
        --json "$out/$label.json" "$@" >/dev/null 2>"$out/$label.log" || true
    kill -TERM $pid; wait $pid || true
    sleep 2
}

figure() { # json pointer expression over the report
    python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["server"]["metrics"]
cpu, fps = m["cpu_percent_of_one_core"], m["frames_written_per_s"]
if sys.argv[2] == "game":
    print(f'{cpu / 100 / fps * 1e6:.2f}')
else:
    print(f'{cpu / 100 * 200:.1f}')  # ms of CPU per 5 Hz batch
print(f'({cpu:.0f} % CPU, {fps:,.0f} frames/s)', file=sys.stderr)
PY
}

declare -A results
for run in $(seq "$runs"); do
    for side in before after; do
        bin=${!side}
        one "game-$side-$run" "$bin" game --clients "$game_n" --room arena --input-hz 30 \
            --ramp 1000 --duration 15
        g=$(figure "$out/game-$side-$run.json" game 2>>"$out/figures.log")
        one "chat-$side-$run" "$bin" chat --viewers "$viewers" --senders 100 --rate 1 \
            --room chat --ramp 2000 --duration 20
        c=$(figure "$out/chat-$side-$run.json" chat 2>>"$out/figures.log")
        echo "run $run $side: game ${g} µs CPU/frame, chat ${c} ms CPU/batch $(tail -2 "$out/figures.log" | tr '\n' ' ')"
        results[$side-game]+="$g "
        results[$side-chat]+="$c "
    done
done
med() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for side in before after; do
    echo "median $side: game $(med "${results[$side-game]}") µs CPU/frame, chat $(med "${results[$side-chat]}") ms CPU/batch"
done
echo "reports: $out"
