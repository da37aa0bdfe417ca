# syntax=docker/dockerfile:1
# hitl-bot: `hitl serve` (HTTP mode) with the PostgreSQL driver. See README "Deploying".

# Build stage: install the project and its dependencies into a virtualenv that the runtime
# stage copies whole; pip, the sources and the build tools stay behind.
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
RUN pip install --no-cache-dir '.[postgres]'

FROM python:3.12-slim
# /var/lib/hitl is the one writable place: the default SQLite file (hitl.db in the working
# directory) and, when HITL_MODEL_SIGNING_KEY is not set, the model signing key file. Replicas
# must share the key: set HITL_MODEL_SIGNING_KEY (or mount one key file) when running several.
# matplotlib (report charts) wants a writable cache directory, and the user has no home.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HITL_MODEL_KEY_FILE=/var/lib/hitl/model-signing.key \
    MPLCONFIGDIR=/tmp/matplotlib \
    HITL_HOST=0.0.0.0 \
    HITL_PORT=3000
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 hitl \
    && useradd --system --uid 10001 --gid hitl --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin hitl \
    && mkdir -p /var/lib/hitl \
    && chown hitl:hitl /var/lib/hitl \
    && chmod 0700 /var/lib/hitl
WORKDIR /var/lib/hitl
VOLUME ["/var/lib/hitl"]
USER 10001:10001
EXPOSE 3000
# urllib, not curl (slim images have none); a 503 from /healthz raises, so the exit code is 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HITL_PORT', '3000'), timeout=4)"]
ENTRYPOINT ["hitl"]
CMD ["serve"]
