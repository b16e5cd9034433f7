# servingbench Transformers image, profile current: Transformers 5.19 with `transformers serve`
# (its OpenAI-compatible server: FastAPI, uvicorn, openai types from the [serving] extra) on a
# current PyTorch CUDA image. Serves both Transformers arms (transformers-naive and
# transformers-serve), and transformers-serve in the seed profile too (seed-era Transformers has
# no `serve`), and runs prepare_model / build_workload.
# CUDA 12.8 images need an NVIDIA driver >= 570 on the host.
ARG BASE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-transformers" \
      org.opencontainers.image.description="servingbench + Transformers 5.19 (transformers serve) on PyTorch 2.11 / CUDA 12.8" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="current" \
      io.servingbench.arms="transformers-naive transformers-serve"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_UPDATE_CHECK=1 DO_NOT_TRACK=1

RUN python -c "import sys, torch; \
assert sys.version_info[:2] >= (3, 10), sys.version; \
assert torch.__version__.split('+')[0] == '2.11.0', torch.__version__"

COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh lock "$(command -v python)" transformers-current.txt \
 && python -c "import transformers, fastapi, uvicorn, openai; assert transformers.__version__ == '5.19.0'" \
 && python -m transformers.cli.transformers serve --help >/dev/null

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
