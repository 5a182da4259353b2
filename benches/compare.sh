#!/usr/bin/env bash
# Side-by-side server cost of several builds, in one sitting, runs alternated so every build
# sees the same machine: the bench-load game row (N players at 60 Hz) and chat row (viewers
# + senders), each run on a fresh server pinned to core 0 with one client-sim pinned to core 1.
#
#   benches/compare.sh BIN_DIR[:CONFIG] [BIN_DIR[:CONFIG] ...]
#   RUNS=3 GAME_N=1000 CHAT_VIEWERS=15000 SCENARIOS="game chat" SIM=path/to/client-sim
#
# Each BIN_DIR holds a release `tickroom`, run with CONFIG (default benches/load.toml; an older
# build may need the load.toml of its own commit); one client-sim drives them all, so only the
# server differs (SIM, or the last BIN_DIR's). Prints one line per run and the medians: server CPU
# per frame written (game: µs = CPU share of one core ÷ frames written per s) and per chat
# batch (ms of CPU per 5 Hz batch). Keep GAME_N below saturation, where CPU per frame is the
# server's cost rather than its overload behaviour.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
dirs=() configs=()
for a in "$@"; do
    dirs+=("${a%%:*}")
    if [[ $a == *:* ]]; then configs+=("${a#*:}"); else configs+=(benches/load.toml); fi
done
runs=${RUNS:-3} game_n=${GAME_N:-1000} viewers=${CHAT_VIEWERS:-15000}
scenarios=${SCENARIOS:-game chat}
sim=${SIM:-${dirs[-1]}/client-sim}
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
port=18080 ops=19090
out=$(mktemp -d)

one() { # label bin config scenario args...
    local label=$1 bin=$2 config=$3 scenario=$4; shift 4
    taskset -c 0 "$bin/tickroom" serve --config "$config" \
        --listen 127.0.0.1:$port --ops-listen 127.0.0.1:$ops --log warn &
    local pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$ops/readyz >/dev/null && break; sleep 0.1; done
    timeout 300 taskset -c 1 "$sim" "$scenario" --url ws://127.0.0.1:$port/ws \
        --metrics-url http://127.0.0.1:$ops/metrics --source-ips 8 \
        --json "$out/$label.json" "$@" >/dev/null 2>"$out/$label.log" || true
    kill -TERM $pid; wait $pid || true
    sleep 2
}

figure() { # report kind -> the figure, and "(cpu, frames/s)" on stderr
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
    for i in "${!dirs[@]}"; do
        bin=${dirs[$i]}
        line="run $run ${bin}:"
        for s in $scenarios; do
            if [ "$s" = game ]; then
                one "game-$i-$run" "$bin" "${configs[$i]}" game --clients "$game_n" --room arena --input-hz 30 \
                    --ramp 1000 --duration 15
            else
                one "chat-$i-$run" "$bin" "${configs[$i]}" chat --viewers "$viewers" --senders 100 --rate 1 \
                    --room chat --ramp 2000 --duration 20
            fi
            if f=$(figure "$out/$s-$i-$run.json" "$s" 2>>"$out/figures.log"); then
                results[$i-$s]+="$f "
                line+=" $s $f $(tail -1 "$out/figures.log")"
            else
                line+=" $s failed (see $out/$s-$i-$run.log)"
            fi
        done
        echo "$line"
    done
done
med() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for i in "${!dirs[@]}"; do
    line="median ${dirs[$i]}:"
    for s in $scenarios; do
        line+=" $s $(med "${results[$i-$s]:-}")"
    done
    echo "$line   (game: µs CPU per frame; chat: ms CPU per batch)"
done
echo "reports: $out"
