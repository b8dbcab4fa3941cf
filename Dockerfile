# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on distroless (glibc, CA certificates,
# no shell, no package manager) as the unprivileged "nonroot" user (uid 65532), which the
# Helm chart's securityContext expects.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds; the binary is copied
# out of the mount because it is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p coalition-server \
    && cp target/release/coalition /usr/local/bin/coalition

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/coalition /usr/local/bin/coalition
COPY LICENSE /usr/share/doc/coalition/LICENSE
USER 65532:65532
# Listen on every interface inside the container; the embedded SQLite default would need
# a writable directory, so a deployment sets DATABASE_URL to PostgreSQL.
ENV COALITION_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/coalition"]
CMD ["serve"]
