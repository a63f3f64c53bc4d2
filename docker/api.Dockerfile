# The API image: FastAPI under uvicorn, and the `migrate` one-shot (docker-compose.yml).
# No torch: it installs the `api` extra only, and the API's import graph never pulls torch in
# (tests/test_architecture.py).
#
#   docker build -f docker/api.Dockerfile -t paec-api .
#   docker run -e PAEC_DATABASE_URL=... -e PAEC_BROKER_URL=... -p 8000:8000 paec-api
#
# Worker processes of uvicorn: WEB_CONCURRENCY (uvicorn reads it when --workers is not given).
# Each process keeps its own Prometheus counters (api/telemetry.py), so 1 is the default.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEB_CONCURRENCY=1 \
    PAEC_DATA_DIR=/var/lib/paec

# bubblewrap: the isolation of python graders, which the API runs on /graders/validate and
# /graders/run (paec/grading/sandbox.py; without it, python graders are refused).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# The same uid as the worker image, so that the shared artifacts volume is writable by both.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin paec \
    && mkdir -p /var/lib/paec/artifacts \
    && chown -R paec:paec /var/lib/paec

WORKDIR /app
# An editable install keeps the source tree at /app: `python -m store.admin migrate` finds
# alembic.ini and migrations/ next to the packages.
COPY . .
# Every version from the lock (requirements.lock as constraints: only what `api` needs is
# installed), the build backend too.
RUN pip install -c requirements.lock pip setuptools \
    && pip install -c requirements.lock --no-build-isolation -e '.[api]'

USER paec
EXPOSE 8000
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000"]
