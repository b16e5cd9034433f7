# servingbench TGI image, profile seed: TGI 1.1.1 (CUDA 11.8, PyTorch 2.0.1) with servingbench
# in a Python 3.10 venv of its own (/opt/servingbench/venv, made by uv), so TGI's Python and packages stay as
# Hugging Face built them. servingbench starts `text-generation-launcher` from TGI's PATH.
# DEVIATION from the seed stack: no TGI release has CUDA 11.8 with PyTorch 2.1. 1.1.1 keeps the
# seed's CUDA 11.8 with PyTorch 2.0.1 (1.2.0 would be CUDA 12.1 + PyTorch 2.1.1); its launcher
# takes --max-input-length (renamed --max-input-tokens in 2.0), as the tgi adapter expects.
# LICENCE: TGI from 1.0 until 2.0 is under HFOIL-1.0 (Hugging Face Optimized Inference License),
# not Apache-2.0. It restricts offering TGI as a hosted service; read it before you publish this
# image (a private registry is the safe default).
ARG BASE=ghcr.io/huggingface/text-generation-inference:1.1.1
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.17
FROM ${UV_IMAGE} AS uv
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-tgi" \
      org.opencontainers.image.description="servingbench + TGI 1.1.1 (CUDA 11.8, PyTorch 2.0.1)" \
      org.opencontainers.image.licenses="HFOIL-1.0 (TGI) AND Apache-2.0 (servingbench)" \
      io.servingbench.profile="seed" \
      io.servingbench.arms="tgi"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

# The deviation, checked: TGI 1.1.1's own Python has PyTorch 2.0.1 built for CUDA 11.8.
RUN python -c "import torch; \
assert torch.__version__.split('+')[0] == '2.0.1', torch.__version__; \
assert torch.version.cuda == '11.8', torch.version.cuda"

COPY --from=uv /uv /usr/local/bin/uv
COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh venv \
 && command -v text-generation-launcher

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"

# TGI's entrypoint is text-generation-launcher; the rules run `servingbench ...` instead.
ENTRYPOINT []
CMD ["servingbench", "--help"]
