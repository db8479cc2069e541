# One image for CPU and GPU: the pinned torch wheel carries CUDA and falls
# back to the CPU when no GPU is visible. It installs exactly as the README
# does (`make install`), in a build stage whose image has the C compiler for
# codec/_rans.c; the service image gets the installed /app and runs as a
# non-root user, with its data in a volume. Both stages use the same Python
# build (the official image's /usr/local), so the virtual environment moves.
FROM python:3.11-bookworm AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 codec \
    && mkdir -p /app \
    && chown codec:codec /app

WORKDIR /app
COPY --chown=codec:codec pyproject.toml Makefile README.md ./
COPY --chown=codec:codec codec ./codec
COPY --chown=codec:codec protocol ./protocol
COPY --chown=codec:codec client ./client
COPY --chown=codec:codec server ./server
COPY --chown=codec:codec bench ./bench
COPY --chown=codec:codec static ./static
COPY --chown=codec:codec scripts ./scripts
COPY --chown=codec:codec weights ./weights

USER 10001
RUN make install

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CODEC_SERVER_HOST=0.0.0.0 \
    CODEC_SERVER_PORT=8000 \
    CODEC_SERVER_DATA_DIR=/data

RUN useradd --create-home --uid 10001 codec \
    && mkdir -p /data \
    && chown codec:codec /data

WORKDIR /app
COPY --from=build --chown=codec:codec /app /app

USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD [".venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD [".venv/bin/python", "-m", "server"]
