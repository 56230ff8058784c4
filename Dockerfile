# syntax=docker/dockerfile:1
# The relay's container image: a small runtime holding one virtualenv, run as a
# non-root user, with the durable queue on a declared volume.
#
#   docker build -t relay .
#   docker run -p 8080:8080 -e PROFOUND_API_KEY=... -v relay-queue:/var/lib/relay relay
#
# The install steps live in scripts/container-build.sh, which the tests also run
# outside Docker (tests/unit/test_container.py), so the image and the tests agree.

# --- builder: install the relay and its dependencies into /opt/relay ------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY relay ./relay
COPY configs/relay.toml ./configs/relay.toml
COPY scripts/container-build.sh ./scripts/container-build.sh
RUN sh scripts/container-build.sh /

# --- runtime: the virtualenv, the default config, nothing else ----------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="relay" \
      org.opencontainers.image.description="Durable HTTP relay from log shippers to the Profound custom-log API"

# A fixed uid/gid, so a Kubernetes securityContext (runAsUser/fsGroup 10001) matches.
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /var/lib/relay --no-create-home \
      --shell /usr/sbin/nologin relay \
 && mkdir -p /var/lib/relay /etc/relay \
 && chown relay:relay /var/lib/relay

COPY --from=builder /opt/relay /opt/relay
COPY --from=builder /etc/relay/relay.toml /etc/relay/relay.toml

# configs/relay.toml reads ${RELAY_QUEUE_PATH:-data/queue} and ${RELAY_ADDRESS:-0.0.0.0:8080}.
ENV PATH=/opt/relay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RELAY_QUEUE_PATH=/var/lib/relay/queue \
    RELAY_HEALTH_URL=http://127.0.0.1:8080/healthz

WORKDIR /var/lib/relay
USER 10001:10001
# The queue: everything acknowledged and not yet delivered. Keep it across restarts.
VOLUME ["/var/lib/relay"]
EXPOSE 8080

# No curl in slim images: python's urllib does the probe (RELAY_HEALTH_URL if the port moves).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['RELAY_HEALTH_URL'], timeout=4)"]

# Exec form: the relay is PID 1 and receives SIGTERM itself, then drains within
# server.shutdown_grace and exits 0. Give `docker stop -t` more than that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["relay", "serve"]
CMD ["-c", "/etc/relay/relay.toml"]
