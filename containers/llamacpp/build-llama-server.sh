#!/usr/bin/env bash
# Build llama.cpp's own server, llama-server, from the llama.cpp sources that the PyPI sdist of
# llama-cpp-python vendors, and put it in a Python environment's bin/ (where the llamacpp adapter
# looks first). Used by scripts/setup-env.sh (CPU) and containers/llamacpp/*.Dockerfile.
#
#   containers/llamacpp/build-llama-server.sh VENV
#
# VENV must have pip (it downloads the sdist, hash-checked). A build is cached by what defines it
# (sdist, CMake flags, compiler, the CPU that -march=native compiles for) under
# ${SERVINGBENCH_CACHE:-${XDG_CACHE_HOME:-~/.cache}/servingbench}/llama-server/KEY, so a second
# environment, a fresh clone or CI on the same machine copies it in seconds. LLAMA_CMAKE_ARGS adds
# flags (the CUDA image: -DGGML_CUDA=ON -DGGML_NATIVE=OFF ...); later flags win.
#
# Why these flags (measured on the 2-core demo machine; benchmarks/RESULTS.md):
# - static (BUILD_SHARED_LIBS=OFF) and only the llama-server target: llama-cpp-python's own wheel
#   build compiles the shared libraries and the multimodal library for its Python bindings, which
#   the server does not need; tests, examples and the other tools are not built.
# - GGML_NATIVE=ON, llama.cpp's default for a local build: one CPU back-end compiled for this
#   machine's instruction set (AVX-512 BF16 here), as a llama.cpp user gets from `cmake -B build`.
#   OFF would either build a baseline x86-64 back-end (slower at run time, not what users run) or,
#   with GGML_CPU_ALL_VARIANTS, a dozen back-ends (many times the build time).
# - no web UI (its assets would be downloaded at build time), no OpenSSL (loopback HTTP only).
set -euo pipefail
VENV=${1:?usage: build-llama-server.sh VENV}
PACKAGE=llama-cpp-python
VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# The llama.cpp commit that sdist vendors (its .git/modules/vendor/llama.cpp/HEAD); checked below.
LLAMA_CPP_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
       -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF)
# shellcheck disable=SC2206  # word splitting of the extra flags is wanted
FLAGS+=(${LLAMA_CMAKE_ARGS:-})

for tool in cmake c++ cc; do
  command -v "$tool" >/dev/null || { echo "build-llama-server: $tool is needed (apt-get install cmake g++)" >&2; exit 1; }
done
# (Readers that consume all input: an early exit would SIGPIPE the writer, and pipefail stop here.)
march=$(cc -march=native -Q --help=target 2>/dev/null | awk '$1 == "-march=" {m = $2} END {print m}')
compiler=$(c++ --version | sed -n 1p)
key=$(printf '%s\n' "$VERSION" "$SDIST_SHA256" "${FLAGS[*]}" "$compiler" "${march:-unknown}" | sha256sum | cut -c1-16)
cache=${SERVINGBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servingbench}/llama-server/$key

if [ -x "$cache/llama-server" ] && [ -f "$cache/llama-server.json" ]; then
  echo "llama-server: cached build $cache"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")  # outside any git checkout: see build-info
  trap 'rm -rf "$work"' EXIT
  t0=$SECONDS
  echo "llama-server: building llama.cpp ${LLAMA_CPP_COMMIT:0:9} from the $PACKAGE $VERSION sdist (once per machine; about 15 min of one core)"
  echo "$PACKAGE==$VERSION --hash=sha256:$SDIST_SHA256" > "$work/requirement.txt"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$work/requirement.txt" -d "$work"
  sdist="$work/llama_cpp_python-$VERSION.tar.gz"
  top="llama_cpp_python-$VERSION"
  tar -xzf "$sdist" -C "$work" "$top/.git/modules/vendor/llama.cpp/HEAD" --wildcards "$top/vendor/llama.cpp/*"
  got=$(tr -d '[:space:]' < "$work/$top/.git/modules/vendor/llama.cpp/HEAD")
  [ "$got" = "$LLAMA_CPP_COMMIT" ] || { echo "build-llama-server: sdist vendors llama.cpp $got, expected $LLAMA_CPP_COMMIT" >&2; exit 1; }
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$work/$top/vendor/llama.cpp" -B "$work/build" "${gen[@]}" "${FLAGS[@]}" > "$work/configure.log" 2>&1 \
    || { tail -30 "$work/configure.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc)" > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  mkdir -p "$cache"
  cp "$work/build/bin/llama-server" "$cache/llama-server.tmp"
  "$cache/llama-server.tmp" --version > "$work/version.txt" 2>&1 || true
  "$VENV/bin/python" - "$cache/llama-server.json" "$VERSION" "$SDIST_SHA256" "$LLAMA_CPP_COMMIT" "$((SECONDS - t0))" \
      "${march:-unknown}" "$compiler" "$work/version.txt" "${FLAGS[@]}" <<'EOF'
import datetime, json, sys
out, version, sha, commit, secs, march, compiler, vfile, *flags = sys.argv[1:]
json.dump({"source": f"llama-cpp-python=={version} sdist (PyPI), vendored llama.cpp",
           "sdist_sha256": sha, "llama_cpp_commit": commit, "cmake_flags": flags, "march": march,
           "compiler": compiler, "build_seconds": int(secs), "version_output": open(vfile).read().strip(),
           "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
          open(out, "w"), indent=2)
EOF
  mv "$cache/llama-server.tmp" "$cache/llama-server"
  echo "llama-server: built in $((SECONDS - t0)) s, cached in $cache"
fi
cp "$cache/llama-server" "$VENV/bin/llama-server.tmp" && mv "$VENV/bin/llama-server.tmp" "$VENV/bin/llama-server"
cp "$cache/llama-server.json" "$VENV/bin/llama-server.json"
