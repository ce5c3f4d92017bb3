# Build stage: compile the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests/support ./tests/support
RUN cargo build --release --locked

# Run stage: the binary, the shipped rule files, a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/sales-robot --create-home --uid 10001 robot
COPY --from=build /src/target/release/sales-robot /usr/local/bin/sales-robot
COPY config /etc/sales-robot
ENV ROBOT_CONFIG_DIR=/etc/sales-robot \
    ROBOT_DATA_DIR=/var/lib/sales-robot \
    ROBOT_LISTEN=0.0.0.0:8080
USER robot
WORKDIR /var/lib/sales-robot
VOLUME /var/lib/sales-robot
EXPOSE 8080
ENTRYPOINT ["sales-robot"]
CMD ["serve"]
