# syntax=docker/dockerfile:1
# tripwire worker image.
#
#   docker build -t tripwire:dev .
#   docker run --rm -p 6066:6066 tripwire:dev worker --broker kafka://HOST:9092
#
# Build context is the repository root; .dockerignore keeps it to pyproject.toml, the three
# packages and the default policy. Two stages: `builder` installs the project and its
# dependencies into /opt/venv (compilers available for any sdist), `runtime` copies only that
# venv onto python:3.11-slim and runs as the unprivileged user `tripwire` (uid/gid 10001).
# Configuration: TRIPWIRE_* environment variables (streams/settings.py) or CLI flags; flags win.
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip setuptools wheel
WORKDIR /src
# Dependencies change less often than code: pyproject first (README.md* may not exist: the glob
# keeps COPY from failing), then the packages.
COPY pyproject.toml README.md* ./
COPY streams/ streams/
COPY breakers/ breakers/
COPY detectors/ detectors/
RUN /opt/venv/bin/pip install ".[worker,rocksdb]" \
 && /opt/venv/bin/tripwire --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tripwire" \
      org.opencontainers.image.description="Stream-processing monitoring and circuit breakers for AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tripwire \
 && useradd --system --uid 10001 --gid tripwire --no-create-home \
        --home-dir /var/lib/tripwire --shell /usr/sbin/nologin tripwire \
 && mkdir -p /var/lib/tripwire /etc/tripwire \
 && chown tripwire:tripwire /var/lib/tripwire
COPY --from=builder /opt/venv /opt/venv
# The default policy; mount your own over /etc/tripwire/policy.yaml (ConfigMap, bind mount).
COPY deploy/policy/default.yaml /etc/tripwire/policy.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIPWIRE_WEB_HOST=0.0.0.0 \
    TRIPWIRE_WEB_PORT=6066 \
    TRIPWIRE_DATA_DIR=/var/lib/tripwire \
    TRIPWIRE_POLICY_FILE=/etc/tripwire/policy.yaml
# Numeric user so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/tripwire
VOLUME ["/var/lib/tripwire"]
EXPOSE 6066
# Liveness only (the process serves HTTP); readiness (/readyz) is the orchestrator's business.
# No curl in the image: the standard library does it. Port follows TRIPWIRE_WEB_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TRIPWIRE_WEB_PORT', '6066'); r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4); sys.exit(0 if r.status == 200 else 1)"]
ENTRYPOINT ["tripwire"]
CMD ["worker"]
