# syntax=docker/dockerfile:1
# Two images from one file (see deploy/k8s/README.md):
#   docker build --target gateway -t maas-gateway:0.1.0 .   # gateway AND scheduler: no torch
#   docker build --target worker  -t maas-worker:0.1.0 .    # + torch, CPU wheel by default
#   docker build --target worker -t maas-worker:0.1.0-cu126 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# PyTorch's CUDA wheels carry the CUDA runtime and cuDNN, so the worker needs no CUDA base
# image: on a GPU node the NVIDIA container toolkit mounts the driver. WORKER_BASE_IMAGE
# swaps the worker's base (e.g. a CUDA image) if it provides `python3.11` with venv.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG WORKER_BASE_IMAGE=${PYTHON_IMAGE}

# --- the maas-cluster wheel (no dependencies) -------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
# README* : a glob, so a checkout without the README still builds.
COPY pyproject.toml README* ./
COPY maas/ maas/
COPY runtime/ runtime/
COPY scheduler/ scheduler/
COPY gateway/ gateway/
COPY worker/ worker/
COPY console/ console/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- virtual environments -----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS gateway-venv
COPY --from=wheel /wheels /wheels
RUN python3.11 -m venv /opt/maas \
 && /opt/maas/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[server]"

FROM ${WORKER_BASE_IMAGE} AS worker-venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
# torch first, from the index that decides CPU or CUDA; the [worker] extra then finds it
# there ([server] named too, not only through [worker]'s self-reference).
RUN python3.11 -m venv /opt/maas \
 && /opt/maas/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch>=2.4" \
 && /opt/maas/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[server,worker]"

# --- worker: python -m worker -----------------------------------------------------------
FROM ${WORKER_BASE_IMAGE} AS worker
RUN groupadd --system --gid 10001 maas \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin maas \
 && install -d -o 10001 -g 10001 /var/lib/maas
COPY --from=worker-venv /opt/maas /opt/maas
ENV PATH=/opt/maas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    MAAS_DATA_DIR=/var/lib/maas
USER 10001:10001
# Exec form: python is PID 1 and gets SIGTERM itself (the worker drains on it).
ENTRYPOINT ["python", "-m"]
CMD ["worker"]

# --- gateway (and scheduler: `python -m scheduler`); the default target -----------------
FROM ${PYTHON_IMAGE} AS gateway
RUN groupadd --system --gid 10001 maas \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin maas \
 && install -d -o 10001 -g 10001 /var/lib/maas
COPY --from=gateway-venv /opt/maas /opt/maas
ENV PATH=/opt/maas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    MAAS_DATA_DIR=/var/lib/maas \
    MAAS_GATEWAY_HOST=0.0.0.0
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
