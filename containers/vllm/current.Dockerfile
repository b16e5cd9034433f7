# servingbench vLLM image, profile current: vLLM's own OpenAI server image with servingbench added
# beside vLLM in vLLM's Python (the adapter starts `python -m vllm.entrypoints.openai.api_server`
# with the interpreter that runs servingbench). Only runtime packages vLLM lacks are added; none
# of vLLM's moves. v0.30.0 is built for CUDA 13 (driver >= 580); on an older driver use vLLM's
# -cu129 variant of the same tag as BASE.
ARG BASE=vllm/vllm-openai:v0.30.0
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.17
FROM ${UV_IMAGE} AS uv
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-vllm" \
      org.opencontainers.image.description="servingbench + vLLM 0.30.0 (vllm/vllm-openai)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="current" \
      io.servingbench.arms="vllm"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1

COPY --from=uv /uv /usr/local/bin/uv
COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh beside "$(python3 -c 'import sys; print(sys.executable)')" \
 && python3 -c "import importlib.metadata as m; v = m.version('vllm'); assert v.startswith('0.30.0'), v"

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"

# The base image's entrypoint starts a server; the rules run `servingbench ...` instead.
ENTRYPOINT []
CMD ["servingbench", "--help"]
