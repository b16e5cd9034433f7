# servingbench llama.cpp image for machines without a GPU: llama-server built by the same script
# as the CPU demo (containers/llamacpp/build-llama-server.sh, the llama.cpp of llama-cpp-python's
# sdist) and servingbench beside it. Not in images.yaml (like transformers/cpu.Dockerfile).
# GGML_NATIVE=ON compiles for the build machine's CPU: build where it will run, or pass
# LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON ..." for an image other CPUs can run.
ARG BASE=python:3.10-slim-bookworm
FROM ${BASE}
ARG LLAMA_CMAKE_ARGS=""
LABEL org.opencontainers.image.title="servingbench-llamacpp-cpu" \
      org.opencontainers.image.licenses="MIT" \
      io.servingbench.arms="llamacpp"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends cmake ninja-build g++ libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
COPY . /opt/servingbench/src
RUN LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS" SERVINGBENCH_CACHE=/tmp/llama-cache \
    bash /opt/servingbench/src/containers/llamacpp/build-llama-server.sh /opt/venv \
 && rm -rf /tmp/llama-cache \
 && sh /opt/servingbench/src/containers/install-servingbench.sh lock /opt/venv/bin/python runtime.txt \
 && llama-server --version

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
