# servingbench Transformers image on CPU: the same lock as a GPU Transformers image, on a plain
# Python base with CPU torch. For machines without a GPU and for the build check that
# benchmarks/build_images.sh --check runs where no registry is reachable (it swaps in a
# debootstrapped Debian base and a local torch wheel through the build args below).
#   REQUIREMENTS  transformers-seed.txt (default) or transformers-current.txt
#   TORCH_SPEC    the torch to install (default torch==2.1.0, the seed's, CPU build)
#   TORCH_PIP_ARGS where pip finds it (default the PyTorch CPU index)
#   EXTRA_PINS    pins laid over the lock (only when TORCH_SPEC is not the lock's torch: a newer
#                 torch needs newer typing-extensions / sympy than a seed-era lock has)
ARG BASE=python:3.10-slim-bookworm
FROM ${BASE}
ARG TORCH_SPEC=torch==2.1.0
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

LABEL org.opencontainers.image.title="servingbench-transformers-cpu" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.arms="transformers-naive transformers-serve"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_UPDATE_CHECK=1 DO_NOT_TRACK=1 \
    PATH=/opt/venv/bin:$PATH

# A venv works on both bases (python:3.10-slim, or Debian's python3 + python3-venv).
RUN python3 -m venv /opt/venv \
 && pip install --no-deps $TORCH_PIP_ARGS "$TORCH_SPEC"

# Declared here, not above, so that every variant shares the torch layer.
ARG REQUIREMENTS=transformers-seed.txt
ARG EXTRA_PINS=""
COPY . /opt/servingbench/src
RUN EXTRA_PINS="$EXTRA_PINS" sh /opt/servingbench/src/containers/install-servingbench.sh lock /opt/venv/bin/python "$REQUIREMENTS" \
 && python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
