# flock's image: the compiled `flock` executable (plugin, agent, installer in one) and BIRD 2.
#   docker build -t ghcr.io/fritzlab/flock:0.1.0 .
# The DaemonSet (deploy/daemonset.yaml) runs it three ways: `flock install` (init container),
# `flock agent`, and `bird` (sidecar).

# --- builder: a real `deno compile` (the denort runtime is downloadable here, unlike on the
# offline development machines, where scripts/build.ts falls back to a launcher script).
FROM denoland/deno:debian-2.9.6 AS build
WORKDIR /src
# Everything main.ts may import; .dockerignore keeps tests, benchmarks and local tools out.
COPY . .
# build.ts bakes the agent's V8 flags into the binary (V8_FLAGS: a 1 MiB young generation and
# --max-opt=1, no optimising JIT tiers), the same the launcher passes (bench/README.md, "Memory").
RUN deno run --allow-all --no-lock scripts/build.ts --compile \
  # build.ts writes a launcher script if compiling fails; the image must carry the real binary.
  && head -c 4 dist/flock | grep -q ELF \
  && dist/flock version

# --- runtime
FROM debian:bookworm-slim
# bird2 for the sidecar; its package scripts start nothing here (no init system in the image).
RUN apt-get update \
  && apt-get install -y --no-install-recommends bird2 ca-certificates \
  && rm -rf /var/lib/apt/lists/* \
  && mkdir -p /etc/flock/bird /run/flock /var/lib/flock
COPY --from=build /src/dist/flock /usr/local/bin/flock
# At most two glibc malloc arenas instead of one per thread, as the launcher sets it: a few MiB
# less RSS for the agent (a compiled binary cannot carry environment variables itself).
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT []
CMD ["/usr/local/bin/flock", "--help"]
