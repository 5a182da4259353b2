# tickroom: the two commands are `make run` and `make test`.

CARGO ?= cargo
SCENARIO ?= game
ARGS ?= --clients 100 --duration 10
LOAD_PORT ?= 18080
LOAD_OPS_PORT ?= 19090
# Server and swarm on different cores so neither measures the other's load.
SERVER_CPU ?= 0
CLIENT_CPU ?= 1

.PHONY: run test lint fmt build release bench load clean

## run: serve the demo (arena game room) on 127.0.0.1:8080, ops on 127.0.0.1:9090
run:
	$(CARGO) run --release --bin tickroom -- serve

## test: formatting, lints, unit and integration tests (what CI runs)
test: lint
	$(CARGO) test --workspace

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

## load: release server pinned to core $(SERVER_CPU), client-sim $(SCENARIO) pinned to core $(CLIENT_CPU)
load: release
	@ulimit -n $$(ulimit -Hn); \
	taskset -c $(SERVER_CPU) target/release/tickroom serve \
		--listen 127.0.0.1:$(LOAD_PORT) --ops-listen 127.0.0.1:$(LOAD_OPS_PORT) --log warn & \
	pid=$$!; trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 50); do curl -sf http://127.0.0.1:$(LOAD_OPS_PORT)/readyz >/dev/null && break; sleep 0.1; done; \
	taskset -c $(CLIENT_CPU) target/release/client-sim $(SCENARIO) --url ws://127.0.0.1:$(LOAD_PORT)/ws $(ARGS); \
	rc=$$?; kill -TERM $$pid; wait $$pid; exit $$rc

clean:
	$(CARGO) clean
