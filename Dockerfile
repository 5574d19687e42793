# Builds the `tributary` binary and ships it on a slim Debian image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tributary --bin tributary

FROM debian:bookworm-slim
# CA certificates for TLS to S3 (AWS) and other HTTPS endpoints.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tributary /usr/local/bin/tributary
ENTRYPOINT ["tributary"]
