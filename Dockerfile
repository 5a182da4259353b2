# tickroom server image (also runs the `tickroom feed` publisher).
#
#   docker build -t tickroom:dev .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 tickroom:dev serve --listen 0.0.0.0:8080 --ops-listen 0.0.0.0:9090
#
# The default command serves /etc/tickroom/tickroom.toml, which the Kubernetes manifests
# (deploy/) mount; tests/deploy.rs checks that the ports and that path agree with deploy/.
# Plain layers, no BuildKit-only syntax, so any builder (docker, buildah, podman, kaniko)
# caches the dependency build.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src

# 1. Dependencies only: the manifests, the lock file and the protocol crate (whose schema
#    changes rarely), with empty stand-ins for the other targets. This layer is rebuilt only
#    when one of these files changes, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY proto/ proto/
COPY client-sim/Cargo.toml client-sim/
RUN mkdir -p src client-sim/src benches/load_targets \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs client-sim/src/lib.rs \
 && echo 'fn main() {}' > client-sim/src/main.rs \
 && for b in benches/hot_path.rs benches/write_probe.rs benches/load_targets/main.rs; do \
        echo 'fn main() {}' > "$b"; done \
 && cargo build --release --locked --bin tickroom \
 && rm -rf src

# 2. The server's sources (client-sim and the benches keep their stand-ins: the binary does
#    not use them) and the built browser page it embeds (web/dist/, committed). COPY keeps the
#    files' own modification times, which may be older than the stand-ins' build: touch them
#    so cargo rebuilds the tickroom crate itself.
COPY src/ src/
COPY config/ config/
COPY web/dist/ web/dist/
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin tickroom \
 && install -D -m 0755 target/release/tickroom /out/tickroom

# Runtime: glibc, libgcc and CA certificates, no shell, user 65532 ("nonroot"). The binary
# keeps its line tables (profile.release debug = "line-tables-only") so /debug/pprof
# flamegraphs have function names and lines; do not strip it.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/tickroom /usr/local/bin/tickroom
USER 65532:65532
# 8080: public (WebSocket /ws, /rooms, /api/v1); 9090: operations (/healthz, /readyz,
# /metrics, /debug/pprof, /admin): keep 9090 off public networks.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tickroom"]
CMD ["serve", "--config", "/etc/tickroom/tickroom.toml"]
