# syntax=docker/dockerfile:1
# multidentify-worker image: `docker build -t multidentify-worker:<version> .`
# Both stages use the same base so the venv's interpreter path (/usr/local/bin/python3.11) exists in the final one.
# For reproducible builds pin both FROM lines to the same digest (python:3.11-slim@sha256:…).

# ---- builder: install the project and its runtime dependencies into /opt/venv -------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
WORKDIR /src
# Every runtime dependency ships manylinux wheels (confluent-kafka bundles librdkafka), so no compiler is needed;
# --only-binary makes a missing wheel fail the build instead of silently pulling in a toolchain.
COPY pyproject.toml README.md ./
# worker/_schemas links to ../schemas: both are needed for the package to carry the record schemas.
COPY schemas/ schemas/
COPY worker/ worker/
# Runtime dependencies and the `tracing` extra (OpenTelemetry, enabled by OTEL_* variables at run time, idle
# otherwise); the `emulator`, `faces` and `dev` extras stay out of the image.
RUN /opt/venv/bin/pip install --only-binary=:all: --no-binary=multidentify-worker ".[tracing]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
# Fail the build, not the pod, when the entry point or a schema is missing. From outside /src: there `python -c`
# would import the source tree next to it (sys.path[0] is the working directory), not the installed package.
WORKDIR /
RUN /opt/venv/bin/multidentify-worker --version \
 && /opt/venv/bin/python -c "from worker import schemas; [schemas.validator(n) for n in schemas.NAMES]"

# ---- runtime: the venv and an unprivileged numeric user, nothing else --------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="multidentify-worker" \
      org.opencontainers.image.description="Kafka worker that identifies faces with Tencent Cloud's multidentify API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin worker
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
# /metrics, /healthz, /readyz (MDW_METRICS_PORT). No HEALTHCHECK: Kubernetes probes these endpoints.
EXPOSE 9400
# Exec form: the worker is PID 1 and receives SIGTERM directly, then drains within MDW_DRAIN_TIMEOUT_S.
ENTRYPOINT ["multidentify-worker"]
CMD ["run"]
