# novelstream in a container: a build stage with the libtorch/FFmpeg toolchain, a slim runtime.
#   docker build -t novelstream .                       # CPU
#   docker build --build-arg TORCH=cuda -t novelstream:cuda .   # with the CUDA libraries
# `docker compose up` (docker-compose.yml) runs it next to Apache Kafka.

FROM rust:1-bookworm AS build
ARG TORCH=cpu
ENV NOVELSTREAM_CACHE=/opt/novelstream \
    NOVELSTREAM_TORCH=${TORCH} \
    NOVELSTREAM_SKIP_TANSU=1 \
    DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip python3-venv npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Installs the FFmpeg/clang toolchain, libtorch, MNIST and the spoken digits, then builds the
# binary and the audio-visual digit set (scripts/setup.sh; the broker is not needed here), and
# trains the demo's model of the known digits alone (scripts/demo-model.sh, as `make setup` does).
RUN rm -f data && scripts/setup.sh \
    && LIBTORCH="$(readlink -f /opt/novelstream/libtorch)" cargo build --release --locked \
         --bin novelstream --example consume_assignments \
    && mkdir -p /opt/novelstream/bin \
    && cp target/release/novelstream target/release/examples/consume_assignments /opt/novelstream/bin/ \
    && scripts/demo-model.sh && cp "$(scripts/demo-model.sh --path)" /opt/novelstream/demo/known-only.ckpt \
    && rm -rf /opt/novelstream/data/mnist /opt/novelstream/data/spoken-digits

FROM debian:bookworm-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# The ffmpeg CLI brings the FFmpeg 5.1 libraries the binary links, TCMalloc is its allocator,
# the rest is librdkafka's.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg libssl3 libsasl2-2 \
      zlib1g libzstd1 libcurl4 ca-certificates curl libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*
# libtorch at the path baked into the binary's rpath, the binaries, and the demo data set.
COPY --from=build /opt/novelstream /opt/novelstream
RUN ln -s /opt/novelstream/bin/novelstream /usr/local/bin/novelstream \
    && ln -s /opt/novelstream/bin/consume_assignments /usr/local/bin/consume_assignments
COPY deploy/compose.toml /etc/novelstream/novelstream.toml
EXPOSE 9464
ENTRYPOINT ["novelstream"]
CMD ["run", "--config", "/etc/novelstream/novelstream.toml"]
