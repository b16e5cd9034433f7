# servingbench vLLM image, profile seed: vLLM 0.2.4 built for CUDA 11.8 on the seed's PyTorch base
# (vLLM's own images start at CUDA 12.1). 0.2.4 is the last 0.2.x that takes torch 2.1.0 and
# xFormers 0.0.22.post7 (0.2.5 wants torch 2.1.1, 0.2.6/0.2.7 torch 2.1.2), and vLLM published its
# +cu118 wheel as a GitHub release asset, as its installation page of the time says:
#   https://github.com/vllm-project/vllm/releases/download/v0.2.4/vllm-0.2.4+cu118-cp310-cp310-manylinux1_x86_64.whl
# xFormers' CUDA 11.8 build comes from the PyTorch index. The rest (pydantic 1.10.13, FastAPI,
# ray, ...) is the lock requirements/vllm-seed.txt, resolved as of 2023-12-31.
# Set VLLM_WHEEL_SHA256 (sha256sum of the wheel, once downloaded) to have pip verify it.
ARG BASE=pytorch/pytorch:2.1.0-cuda11.8-cudnn8-runtime
FROM ${BASE}
ARG VLLM_WHEEL=https://github.com/vllm-project/vllm/releases/download/v0.2.4/vllm-0.2.4+cu118-cp310-cp310-manylinux1_x86_64.whl
ARG VLLM_WHEEL_SHA256=""
ARG XFORMERS_INDEX=https://download.pytorch.org/whl/cu118

LABEL org.opencontainers.image.title="servingbench-vllm" \
      org.opencontainers.image.description="servingbench + vLLM 0.2.4+cu118 on PyTorch 2.1.0 / CUDA 11.8" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="seed" \
      io.servingbench.arms="vllm"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1

RUN python -c "import sys, torch; \
assert sys.version_info[:2] == (3, 10), sys.version; \
assert torch.__version__.split('+')[0] == '2.1.0' and torch.version.cuda == '11.8', (torch.__version__, torch.version.cuda)"

# vLLM and xFormers first (--no-deps: the lock brings the rest), then the lock and servingbench.
COPY . /opt/servingbench/src
RUN wheel="${VLLM_WHEEL}" \
 && if [ -n "${VLLM_WHEEL_SHA256}" ]; then wheel="vllm @ ${VLLM_WHEEL}#sha256=${VLLM_WHEEL_SHA256}"; fi \
 && pip install --no-deps "${wheel}" \
 && pip install --no-deps --index-url "${XFORMERS_INDEX}" "xformers==0.0.22.post7" \
 && sh /opt/servingbench/src/containers/install-servingbench.sh lock "$(command -v python)" vllm-seed.txt \
 && python -c "import importlib.metadata as m; \
v = m.version('vllm'); assert v.startswith('0.2.4'), v; \
x = m.version('xformers'); assert x.startswith('0.0.22.post7'), x"
# (vLLM itself is not imported here: a build host need not have a GPU or a driver.)

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
