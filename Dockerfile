# lmnt-local in a container: the local LMNT-compatible server with its speech engines (see
# docs/local-server.md).  Only the server distribution (server/) is installed: no VideoSDK
# package, no agent framework.
#   docker build -t lmnt-local .
#   docker run --rm -p 8765:8765 lmnt-local        # then LMNT_WS_URL=ws://HOST:8765/v1/ai/speech/stream
# Configuration is by environment (see docs/deploy.md): LMNT_WORKERS (default: 1 for the
# neural engine, whose inference uses every CPU the container may use), LMNT_DRAIN_TIMEOUT,
# LMNT_MAX_SESSIONS, LMNT_MAX_CONNECTIONS, LMNT_LIMITS_FILE, LMNT_KEY_MAX_SESSIONS,
# LMNT_KEY_CHARS_PER_MINUTE, LMNT_LOG_FORMAT.

FROM python:3.11-slim AS build
WORKDIR /src
COPY server ./server
# Wheels for the server and every dependency, built once and copied without the toolchain.
RUN pip wheel --no-cache-dir --wheel-dir /wheels "./server[local]"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LMNT_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "lmnt-local[local]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lmnt
# Never root: the server needs no privilege (port 8765 is above 1024).
USER 10001:10001
EXPOSE 8765
# Readiness, not liveness: "healthy" means loaded and not draining, which is what a balancer
# or `depends_on: condition: service_healthy` needs to know.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8765/readyz', timeout=2).status != 200)"]
# SIGTERM drains (in-flight turns finish, up to LMNT_DRAIN_TIMEOUT), then the server exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lmnt-local", "serve", "--host", "0.0.0.0", "--port", "8765"]
