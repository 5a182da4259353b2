#!/usr/bin/env bash
# Cluster measurements on one machine (issue #16): a real nats-server with JetStream, the
# `tickroom feed` publisher and N release tickroom nodes on core 0, client-sim on core 1, all on
# loopback. Each mode prints its figures and leaves client-sim's JSON under $OUT.
#
#   benches/cluster.sh feed      # feed -> client latency, 2,000 ticker sessions: one node
#                                # (local feed, then bus feed) vs two nodes (bus feed)
#   benches/cluster.sh failover  # kill -9 of a game room's owner -> first snapshot elsewhere
#   benches/cluster.sh chat      # one chat room over NODES nodes (VIEWERS viewers spread over
#                                # them, senders on the first): send -> receive vs one node
#
# Needs nats-server (apt-get install nats-server) and `cargo build --release --workspace`.
set -euo pipefail
mode=${1:?usage: benches/cluster.sh feed|failover|chat}
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
out=${OUT:-results/cluster-$mode-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
bin=${BIN_DIR:-target/release}/tickroom
sim=${BIN_DIR:-target/release}/client-sim
nats_port=${NATS_PORT:-14222}

start_nats() {
    taskset -c 0 nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$tmp/nats" >"$out/nats.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$nats_port") 2>/dev/null && break; sleep 0.1; done
}

start_feed() { # args for `tickroom feed`
    taskset -c 0 $bin feed --nats "nats://127.0.0.1:$nats_port" --name prices "$@" \
        >"$out/feed.log" 2>&1 &
    pids+=($!)
    sleep 1
}

# start_node NAME PORT OPS CONFIG_BODY: a node with [cluster] when NATS runs.
start_node() {
    local name=$1 port=$2 ops=$3 body=$4
    printf '%s\n' "$body" >"$tmp/$name.toml"
    taskset -c 0 $bin serve --config "$tmp/$name.toml" --listen "127.0.0.1:$port" \
        --ops-listen "127.0.0.1:$ops" --log warn >"$out/$name.log" 2>&1 &
    pids+=($!)
    last_pid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$ops/readyz" >/dev/null && return; sleep 0.1; done
    echo "node $name did not become ready; see $out/$name.log" >&2
    exit 1
}

cluster() { # node name
    printf '[cluster]\nnats_url = "nats://127.0.0.1:%s"\nnode = "%s"\n' "$nats_port" "$1"
}

ticker_room() { # feed kind
    if [ "$1" = bus ]; then
        printf '[[rooms]]\nname = "ticker"\nkind = "ticker"\ntick_hz = 20\n[rooms.feed]\nkind = "bus"\nname = "prices"\n'
    else
        printf '[[rooms]]\nname = "ticker"\nkind = "ticker"\ntick_hz = 20\n[rooms.feed]\nkind = "synthetic"\nsymbols = 500\nupdates_per_sec = 20.0\n'
    fi
}

p99() { # JSON file, latency field
    python3 - "$@" <<'PY'
import json, sys
l = json.load(open(sys.argv[1]))[sys.argv[2]]
print(f"p50 {l['p50'] / 1e3:.2f} ms  p99 {l['p99'] / 1e3:.2f} ms  max {l['max'] / 1e3:.2f} ms  ({l['samples']} samples)")
PY
}

case $mode in
feed)
    clients=${CLIENTS:-2000} secs=${SECS:-20}
    ticker_args=(--symbols 20 --duration "$secs" --ramp 1000)
    echo "== one node, local synthetic feed (no bus)"
    start_node solo 18180 19190 "$(ticker_room synthetic)"
    taskset -c 1 $sim ticker --url ws://127.0.0.1:18180/ws --metrics-url http://127.0.0.1:19190/metrics \
        --clients "$clients" "${ticker_args[@]}" --json "$out/one-local.json" >"$out/one-local.txt" 2>&1
    echo "feed -> client: $(p99 "$out/one-local.json" feed_latency_us)"
    kill -9 "$last_pid"; sleep 1
    start_nats
    start_feed --symbols 500 --updates-per-sec 20
    echo "== one node, bus feed"
    start_node a 18181 19191 "$(cluster a)
$(ticker_room bus)"
    taskset -c 1 $sim ticker --url ws://127.0.0.1:18181/ws --metrics-url http://127.0.0.1:19191/metrics \
        --clients "$clients" "${ticker_args[@]}" --json "$out/one-bus.json" >"$out/one-bus.txt" 2>&1
    echo "feed -> client: $(p99 "$out/one-bus.json" feed_latency_us)"
    echo "== two nodes, bus feed, $((clients / 2)) clients on each"
    start_node b 18182 19192 "$(cluster b)
$(ticker_room bus)"
    taskset -c 1 $sim ticker --url ws://127.0.0.1:18181/ws --metrics-url http://127.0.0.1:19191/metrics \
        --clients $((clients / 2)) "${ticker_args[@]}" --json "$out/two-a.json" >"$out/two-a.txt" 2>&1 &
    s1=$!
    taskset -c 1 $sim ticker --url ws://127.0.0.1:18182/ws --metrics-url http://127.0.0.1:19192/metrics \
        --clients $((clients / 2)) "${ticker_args[@]}" --json "$out/two-b.json" >"$out/two-b.txt" 2>&1
    wait $s1
    echo "node a: feed -> client: $(p99 "$out/two-a.json" feed_latency_us)"
    echo "node b: feed -> client: $(p99 "$out/two-b.json" feed_latency_us)"
    for ops in 19191 19192; do
        curl -s "http://127.0.0.1:$ops/metrics" | grep -E '^tickroom_bus_(messages_total|latency_seconds\{stream="feed",quantile="0.99"\})' | sed "s/^/  ops $ops: /"
    done
    grep -h "published" "$out/feed.log" | tail -1 || true
    ;;
failover)
    start_nats
    body='[game]
auto_create = true'
    start_node a 18181 19191 "$(cluster a)
lease_ms = ${LEASE_MS:-10000}
$body"
    pid_a=$last_pid
    start_node b 18182 19192 "$(cluster b)
lease_ms = ${LEASE_MS:-10000}
$body"
    pid_b=$last_pid
    # Both clients join "duel" on node a (its owner: it is asked first), then node a dies.
    taskset -c 1 $sim failover --urls ws://127.0.0.1:18181/ws,ws://127.0.0.1:18182/ws \
        --room duel --clients "${CLIENTS:-20}" --duration "${SECS:-30}" --json "$out/failover.json" \
        >"$out/failover.txt" 2>&1 &
    s=$!
    sleep "${KILL_AFTER:-5}"
    owner=$(curl -s http://127.0.0.1:18182/rooms | python3 -c 'import json,sys; print(next(r["node"] for r in json.load(sys.stdin)["rooms"] if r["name"]=="duel"))')
    echo "owner of duel: $owner; kill -9 at $(date -u +%T.%N)"
    if [ "$owner" = a ]; then kill -9 "$pid_a"; else kill -9 "$pid_b"; fi
    wait $s || true
    cat "$out/failover.txt"
    ;;
chat)
    nodes=${NODES:-6} viewers=${VIEWERS:-60000} senders=${SENDERS:-2} rate=${RATE:-0.5} secs=${SECS:-30}
    ticker=${TICKER:-0} # ticker sessions, spread over the nodes (1 symbol each)
    start_nats
    start_feed --symbols 500 --updates-per-sec 1
    room='[[rooms]]
name = "chat"
kind = "chat"
tick_hz = 10
send_rate_per_sec = 10.0
send_burst = 20

'"$(ticker_room bus)"
    urls=()
    for i in $(seq 0 $((nodes - 1))); do
        start_node "n$i" $((18200 + i)) $((19200 + i)) "$(cluster "n$i")
[server]
max_connections = 20000
max_connections_per_ip = 0
connects_per_ip_per_sec = 0
$room"
        urls+=("ws://127.0.0.1:$((18200 + i))/ws")
    done
    url_list=$(IFS=,; echo "${urls[*]}")
    tickers=()
    if [ "$ticker" -gt 0 ]; then
        # Connected first and held through the chat run (its ramp and hold included).
        for i in $(seq 0 $((nodes - 1))); do
            taskset -c 1 $sim ticker --url "ws://127.0.0.1:$((18200 + i))/ws" \
                --metrics-url "http://127.0.0.1:$((19200 + i))/metrics" --clients $((ticker / nodes)) \
                --symbols 1 --ramp "${TICKER_RAMP:-200}" --duration $((secs + viewers / ${RAMP:-1000} + 40)) \
                --source-ips 2 --json "$out/ticker-n$i.json" >"$out/ticker-n$i.txt" 2>&1 &
            tickers+=($!)
        done
        sleep $((ticker / nodes / ${TICKER_RAMP:-200} + 5))
    fi
    taskset -c 1 $sim chat --urls "$url_list" --metrics-url http://127.0.0.1:19200/metrics \
        --viewers "$viewers" --senders "$senders" --rate "$rate" --ramp "${RAMP:-1000}" --duration "$secs" \
        --json "$out/chat.json" >"$out/chat.txt" 2>&1 &
    chat=$!
    # In the hold: every node's connections, memory and bus traffic, twice secs/4 apart.
    sleep $((viewers / ${RAMP:-1000} + 5 + secs / 3))
    snap() {
        for i in $(seq 0 $((nodes - 1))); do
            m=$(curl -s "http://127.0.0.1:$((19200 + i))/metrics")
            echo "n$i $(awk '$1=="tickroom_connections_active"{c=$2} $1=="process_resident_memory_bytes"{r=$2} $1=="tickroom_bus_messages_total{direction=\"in\",stream=\"chat\"}"{bi=$2} $1=="tickroom_bus_messages_total{direction=\"out\",stream=\"chat\"}"{bo=$2} $1=="tickroom_bus_messages_total{direction=\"in\",stream=\"feed\"}"{fi=$2} END{printf "%d %d %d %d %d", c, r, bi, bo, fi}' <<<"$m")"
        done
    }
    snap >"$tmp/s1"; t1=$(date +%s.%N); sleep $((secs / 4)); snap >"$tmp/s2"; t2=$(date +%s.%N)
    wait $chat || true
    tail -40 "$out/chat.txt"
    python3 - "$tmp/s1" "$tmp/s2" "$t1" "$t2" <<'PY' | tee "$out/nodes.txt"
import sys
a = {l.split()[0]: list(map(float, l.split()[1:])) for l in open(sys.argv[1])}
b = {l.split()[0]: list(map(float, l.split()[1:])) for l in open(sys.argv[2])}
dt = float(sys.argv[4]) - float(sys.argv[3])
tot_c = tot_r = 0
for n in sorted(a):
    c, r, bi, bo, fi = b[n]
    rate = lambda k: (b[n][k] - a[n][k]) / dt
    tot_c += c; tot_r += r
    print(f"{n}: connections {c:.0f}, RSS {r / 1e6:.0f} MB ({r / c / 1e3 if c else 0:.1f} KB/connection), "
          f"bus/s: chat in {rate(2):.1f}, chat out {rate(3):.1f}, feed in {rate(4):.1f}")
print(f"all nodes: {tot_c:.0f} connections, RSS {tot_r / 1e6:.0f} MB, {tot_r / tot_c / 1e3 if tot_c else 0:.1f} KB per connection")
PY
    for t in "${tickers[@]}"; do wait "$t" || true; done
    for f in "$out"/ticker-n*.json; do
        [ -f "$f" ] && echo "$(basename "$f"): feed -> client $(p99 "$f" feed_latency_us)"
    done
    ;;
*)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
echo "results: $out"
