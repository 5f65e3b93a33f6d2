# billing-streams worker image: `docker build -t billing-streams .`
# Multi-stage: the build stage installs the project into a virtualenv; the runtime stage copies
# only that venv onto a slim base and runs as an unprivileged user. Entry point: `billing`.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/billing
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
RUN /opt/billing/bin/pip install --no-compile .

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 billing \
 && useradd --system --uid 10001 --gid billing --home-dir /var/lib/billing --shell /usr/sbin/nologin billing \
 && mkdir -p /var/lib/billing \
 && chown billing:billing /var/lib/billing
COPY --from=build /opt/billing /opt/billing
ENV PATH=/opt/billing/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BILLING_DATA_DIR=/var/lib/billing \
    BILLING_WEB_HOST=0.0.0.0 \
    BILLING_WEB_PORT=6066 \
    BILLING_API_HOST=0.0.0.0 \
    BILLING_LOG_FORMAT=json
WORKDIR /var/lib/billing
USER billing:billing
EXPOSE 6066 8080
# /health: the process answers (it does not depend on Kafka or Postgres; /ready does). The
# worker answers on BILLING_WEB_PORT, `billing api` on BILLING_API_PORT: either will do.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u\ndef ok(port):\n    try:\n        return u.urlopen(f'http://127.0.0.1:{port}/health', timeout=3).status == 200\n    except OSError:\n        return False\nports = os.environ.get('BILLING_WEB_PORT', '6066'), os.environ.get('BILLING_API_PORT', '8080')\nraise SystemExit(0 if any(ok(p) for p in ports) else 1)"]
ENTRYPOINT ["billing"]
CMD ["worker"]
