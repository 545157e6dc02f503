# syntax=docker/dockerfile:1
# watchkeeper (and the reference core API, `python -m uvicorn --factory watchkeeper.demo.api:app_from_env`).
# Multi-stage: wheels are built in `build`; the runtime image has no compiler, runs as a non-root
# user and checks its own readiness.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml README.md ./
COPY watchkeeper ./watchkeeper
# the PostgreSQL driver and the Redis client are what a production deployment talks to
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres,redis]"

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHKEEPER_HOST=0.0.0.0 \
    WATCHKEEPER_PORT=9470 \
    WATCHKEEPER_DATA_DIR=/data
RUN groupadd --system --gid 10001 watchkeeper \
 && useradd --system --uid 10001 --gid watchkeeper --home-dir /data --shell /usr/sbin/nologin watchkeeper \
 && mkdir -p /data \
 && chown watchkeeper:watchkeeper /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "watchkeeper[postgres,redis]" \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9470
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/-/ready' % os.environ.get('WATCHKEEPER_PORT', '9470'), timeout=4).status == 200 else 1)"]
ENTRYPOINT ["watchkeeper"]
CMD ["serve"]
