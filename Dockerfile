# The floodgate image: built from this repository, run as a non-root user.
#
#   docker build -t floodgate:0.1.0 .
#   docker run --rm -p 8081:8081 -p 8080:8080 -v "$PWD/examples/rules:/etc/floodgate/rules:ro" floodgate:0.1.0
#
# Build stage: the binary, built with the dist profile (the root Cargo.toml:
# the release profile with fat LTO and one codegen unit; what bench/run
# measures). No protoc is needed (protox compiles proto/).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p floodgate-server --bin floodgate \
    && install -m 0755 target/dist/floodgate /usr/local/bin/floodgate \
    && mkdir -p /out/bin \
    && ln -s /usr/local/bin/floodgate /out/bin/ratelimit

# Runtime: distroless (glibc, CA certificates, no shell), user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/floodgate /usr/local/bin/floodgate
# /bin/ratelimit, a link to floodgate, for where envoyproxy/ratelimit ran
# (Envoy Gateway's command is exactly /bin/ratelimit): started under that
# name, floodgate serves with envoyproxy/ratelimit's environment. The link
# is made in the build stage (distroless has no shell) and its directory is
# copied, so that COPY keeps the link a link (a link named as COPY's source
# would be followed and copied as a file).
COPY --from=build /out/bin/ /bin/
COPY examples/rules /etc/floodgate/rules
USER 65532:65532
EXPOSE 8081 8080
ENTRYPOINT ["/usr/local/bin/floodgate"]
CMD ["serve"]
