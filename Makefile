# tickroom: the two commands are `make run` and `make test`.

CARGO ?= cargo
SCENARIO ?= game
ARGS ?= --clients 100 --duration 10
LOAD_PORT ?= 18080
LOAD_OPS_PORT ?= 19090
# Server and swarm on different cores so neither measures the other's load.
SERVER_CPU ?= 0
CLIENT_CPU ?= 1
# flamegraph: the swarm must outlast the 5 s ramp plus FLAME_SECONDS of sampling.
FLAME_ARGS ?= --clients 1000 --duration 20
FLAME_SECONDS ?= 10
FLAME_FREQUENCY ?= 99
# true keeps samples inside libc (system calls); see docs/operations.md before using it.
FLAME_LIBC ?= false
# bench-load: flags of benches/load_targets.rs, e.g. "--quick --runs 1 --no-docs" or "--only game,chat".
BENCH_LOAD_ARGS ?=
# soak: seconds of mixed load (client-sim mix, MIX_ARGS for its sizes).
SOAK_SECONDS ?= 600
# A server already on the load ports would be measured instead of the one we start.
PORTS_FREE = for p in $(LOAD_PORT) $(LOAD_OPS_PORT); do \
	if curl -s -o /dev/null --max-time 1 http://127.0.0.1:$$p/; then \
		echo "port $$p is in use: stop what listens there or set LOAD_PORT/LOAD_OPS_PORT" >&2; exit 1; fi; done

.PHONY: run test lint fmt build release bench bench-load load soak flamegraph clean web web-deps

## run: serve the demo (arena game room) on 127.0.0.1:8080, ops on 127.0.0.1:9090
run:
	$(CARGO) run --release --bin tickroom -- serve

## test: formatting, lints, unit and integration tests (what CI runs); the browser tests need
## web/node_modules (web-deps) and Debian's chromium
test: lint web-deps
	$(CARGO) test --workspace

## web: regenerate web/src/gen from proto/ and rebuild web/dist (commit both: the server embeds
## web/dist, so `make run` needs no Node.js)
web: web-deps
	cd web && npm run build

## web-deps: web/node_modules as web/package-lock.json pins it (npm ci), when missing or older
web-deps: web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --workspace

## bench: micro benchmarks of the hot path (criterion)
bench:
	$(CARGO) bench --bench hot_path

## bench-load: issue #7's end-to-end targets, release binaries pinned, medians of 3 runs -> results/bench-load/, docs/benchmarks.md
bench-load:
	$(CARGO) build --release --workspace
	$(CARGO) bench --bench write_probe --no-run
	$(CARGO) bench --bench load_targets -- $(BENCH_LOAD_ARGS)

## soak: 10 minutes of mixed moderate load; server RSS and alive tasks: start, end, slope
soak: release
	benches/soak.sh $(SOAK_SECONDS)

## load: release server pinned to core $(SERVER_CPU), client-sim $(SCENARIO) pinned to core $(CLIENT_CPU)
load: release
	@$(PORTS_FREE); ulimit -n $$(ulimit -Hn); \
	taskset -c $(SERVER_CPU) target/release/tickroom serve \
		--listen 127.0.0.1:$(LOAD_PORT) --ops-listen 127.0.0.1:$(LOAD_OPS_PORT) --log warn & \
	pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 50); do curl -sf http://127.0.0.1:$(LOAD_OPS_PORT)/readyz >/dev/null && break; sleep 0.1; done; \
	taskset -c $(CLIENT_CPU) target/release/client-sim $(SCENARIO) --url ws://127.0.0.1:$(LOAD_PORT)/ws --metrics-url http://127.0.0.1:$(LOAD_OPS_PORT)/metrics $(ARGS); \
	rc=$$?; kill -TERM $$pid; wait $$pid; exit $$rc

## flamegraph: CPU flamegraph of the release server under a client-sim game swarm -> results/flamegraph-*.svg
flamegraph: release
	@$(PORTS_FREE); mkdir -p results; ulimit -n $$(ulimit -Hn); \
	taskset -c $(SERVER_CPU) target/release/tickroom serve \
		--listen 127.0.0.1:$(LOAD_PORT) --ops-listen 127.0.0.1:$(LOAD_OPS_PORT) --log warn & \
	pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 50); do curl -sf http://127.0.0.1:$(LOAD_OPS_PORT)/readyz >/dev/null && break; sleep 0.1; done; \
	taskset -c $(CLIENT_CPU) target/release/client-sim game --url ws://127.0.0.1:$(LOAD_PORT)/ws $(FLAME_ARGS) & \
	sim=$$!; trap 'kill $$pid $$sim 2>/dev/null' EXIT; \
	sleep 5; \
	svg=results/flamegraph-$$(date +%Y%m%d-%H%M%S).svg; \
	curl -sSf -o $$svg "http://127.0.0.1:$(LOAD_OPS_PORT)/debug/pprof/flamegraph?seconds=$(FLAME_SECONDS)&frequency=$(FLAME_FREQUENCY)&libc=$(FLAME_LIBC)"; \
	rc=$$?; wait $$sim; kill -TERM $$pid; wait $$pid; \
	if [ $$rc -ne 0 ]; then rm -f $$svg; echo "flamegraph: profile request failed" >&2; exit $$rc; fi; \
	echo "flamegraph: $$svg"

clean:
	$(CARGO) clean
