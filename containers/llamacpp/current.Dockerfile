# servingbench llama.cpp image, profile current: llama.cpp's llama-server built with CUDA from the
# llama.cpp sources vendored in the PyPI sdist of llama-cpp-python (the same commit the CPU demo
# builds, by the same script), and servingbench beside it in a venv whose bin/ holds the server
# (the llamacpp adapter looks there first). The seed profile maps llamacpp here too: no seed-era
# llama.cpp server had /v1/completions or usage in streams (images.yaml).
# CUDA 12.8 needs an NVIDIA driver >= 570. CUDA_ARCHS: the GPUs the kernels are built for
# (Ampere, Ada, Hopper, Blackwell); the CPU back-end is a portable x86-64 one (GGML_NATIVE=OFF),
# which matters little with every layer on the GPU (the adapter passes --n-gpu-layers 999).
ARG CUDA_DEVEL=nvidia/cuda:12.8.1-devel-ubuntu24.04
ARG CUDA_RUNTIME=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_DEVEL} AS build
ARG LLAMA_CPP_PYTHON=0.3.36
ARG CUDA_ARCHS="80;86;89;90;100;120"
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip cmake ninja-build g++ \
        ca-certificates && rm -rf /var/lib/apt/lists/*
COPY containers/llamacpp/build-llama-server.sh /build/
# The script pins the sdist (and its hash); the ARG names it for the image tag.
RUN grep -qx "VERSION=${LLAMA_CPP_PYTHON}" /build/build-llama-server.sh \
 && python3 -m venv /opt/venv \
 && LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS} -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" \
    SERVINGBENCH_CACHE=/tmp/llama-cache bash /build/build-llama-server.sh /opt/venv \
 && rm -rf /tmp/llama-cache

FROM ${CUDA_RUNTIME}
LABEL org.opencontainers.image.title="servingbench-llamacpp" \
      org.opencontainers.image.description="servingbench + llama.cpp llama-server (CUDA 12.8)" \
      org.opencontainers.image.licenses="MIT" \
      io.servingbench.profile="current" \
      io.servingbench.arms="llamacpp"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
COPY . /opt/servingbench/src
RUN sh /opt/servingbench/src/containers/install-servingbench.sh lock /opt/venv/bin/python runtime.txt
COPY --from=build /opt/venv/bin/llama-server /opt/venv/bin/llama-server.json /opt/venv/bin/
RUN llama-server --version

# Last, so that a new commit rebuilds only this layer.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
CMD ["servingbench", "--help"]
