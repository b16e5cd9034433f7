# servingbench TGI image, profile current: TGI 3.3.7 with servingbench in a Python 3.10 venv
# of its own (/opt/servingbench/venv, made by uv), so TGI's Python and packages stay as
# Hugging Face built them. servingbench starts `text-generation-launcher` from TGI's PATH.
# TGI 3.x is under Apache-2.0 (Hugging Face has put TGI in maintenance mode).
ARG BASE=ghcr.io/huggingface/text-generation-inference:3.3.7
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.17
FROM ${UV_IMAGE} AS uv
FROM ${BASE}

LABEL org.opencontainers.image.title="servingbench-tgi" \
      org.opencontainers.image.description="servingbench + TGI 3.3.7" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.servingbench.profile="current" \
      io.servingbench.arms="tgi"

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

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
