# servingbench SGLang image, profile current: SGLang's own CUDA image with servingbench added
# beside SGLang in SGLang's Python (the adapter starts `python -m sglang.launch_server` with the
# interpreter that runs servingbench). Only runtime packages SGLang lacks are added; none of
# SGLang's moves (its transformers pin, 5.12.1 for 0.5.16, stays). SGLang 0.5.16 is the release
# proven on the H200 from PyPI wheels (../shared/tools/sglang-wheelhouse); its images are built
# for CUDA 13 (driver >= 580). The tag was not pulled here: pin its digest when you build.
# No seed image: SGLang's first release (0.1.3, January 2024) came after the seed stack.
ARG BASE=lmsysorg/sglang:v0.5.16-cu130
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.17
FROM ${UV_IMAGE} AS uv
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-sglang" \
      org.opencontainers.image.description="servingbench + SGLang 0.5.16 (lmsysorg/sglang)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="current" \
      io.servingbench.arms="sglang"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

COPY --from=uv /uv /usr/local/bin/uv
COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh beside "$(python3 -c 'import sys; print(sys.executable)')" \
 && python3 -c "import importlib.metadata as m; v = m.version('sglang'); assert v.startswith('0.5.16'), v; print('sglang', v, 'sglang-kernel', m.version('sglang-kernel'))"

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"

# The base image's entrypoint may start a server; the rules run `servingbench ...` instead.
ENTRYPOINT []
CMD ["servingbench", "--help"]
