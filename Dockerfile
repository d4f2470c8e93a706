# syntax=docker/dockerfile:1
# One image, three entry points (docs/architecture.md, "Layout"):
#   python -m ponder.operator    the kopf operator (charts/ponder runs it)
#   python -m ponder.scheduler   the OpenAI-compatible scheduler of one ReasoningService
#   python -m ponder.workers     the worker loop beside `vllm serve` in each GPU pod
# The operator renders scheduler and worker containers with this same image; the engine runs
# from the upstream vllm/vllm-openai image. tests/unit/test_dockerfile.py keeps this file honest.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The five source roots of the `ponder` namespace package, and what hatchling needs to build it
# (`local` is ponder.local, the launcher of the stack without Kubernetes; it ships in the wheel).
COPY pyproject.toml README.md ./
COPY crds/ponder crds/ponder
COPY local/ponder local/ponder
COPY operator/ponder operator/ponder
COPY scheduler/ponder scheduler/ponder
COPY workers/ponder workers/ponder
# Wheels for Ponder and its dependencies (the operator extra brings kopf and lightkube), so the
# final stage installs them without a compiler or the sources.
RUN pip wheel --wheel-dir /wheels ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ponder" \
      org.opencontainers.image.description="Serve LLMs with test-time compute on Kubernetes" \
      org.opencontainers.image.source="https://github.com/ponder-dev/ponder" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.ponder.entrypoints="ponder.operator ponder.scheduler ponder.workers"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "ponder[operator]" \
 && groupadd --gid 10001 ponder \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ponder
# A numeric user, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# The chart and the operator's renderer name the entry point; this default serves the API.
CMD ["python", "-m", "ponder.scheduler"]
