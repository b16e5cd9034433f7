# servingbench Transformers image, profile seed: the users' reference stack (CUDA 11.8, cuDNN 8,
# PyTorch 2.1.0, Python 3.10; matrix.yaml) with Transformers 4.36.2, the first 4.3x release that has
# Phi (the Hugging Face format phi-2 now uses) beside GPT-2, Llama and Mistral.
# Runs: the transformers-naive arm, prepare_model and build_workload.
# Build context: the folder benchmarks/build_images.sh stages (pyproject.toml, README.md,
# servingbench/, containers/), e.g.  benchmarks/build_images.sh --profile seed
ARG BASE=pytorch/pytorch:2.1.0-cuda11.8-cudnn8-runtime
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-transformers" \
      org.opencontainers.image.description="servingbench + Transformers 4.36.2 on PyTorch 2.1.0 / CUDA 11.8" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="seed" \
      io.servingbench.arms="transformers-naive"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

# The base is the pin: refuse a base that is not Python 3.10 + torch 2.1.0.
RUN python -c "import sys, torch; \
assert sys.version_info[:2] == (3, 10), sys.version; \
assert torch.__version__.split('+')[0] == '2.1.0', torch.__version__"

COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh lock "$(command -v python)" transformers-seed.txt \
 && python -c "import transformers, accelerate; assert transformers.__version__ == '4.36.2'; \
from transformers import PhiForCausalLM, MistralForCausalLM, LlamaForCausalLM, GPT2LMHeadModel"

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
