#!/usr/bin/env bash
# Builds the CUDA-enabled binaries here (where the Debian dependencies are) and gathers what a
# GPU machine without them needs into one folder: the seekserve CLI, the GPU test binary, the two
# shared libraries they use beyond glibc/libstdc++/cuBLASLt, and the peer benchmark.
#   bash scripts/gpu_build.sh [OUT_DIR=.devbin]
# On the GPU machine: tar xzf .devbin.tgz && bash scripts/gpu_check.sh .devbin
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.devbin}
cmake -S . -B build-cuda -G Ninja -DSEEKSERVE_CUDA=ON -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build-cuda --target seekserve cuda_test
rm -rf "$out" && mkdir -p "$out/lib"
cp build-cuda/src/seekserve build-cuda/tests/cuda_test "$out/"
strip "$out/seekserve" "$out/cuda_test"  # the device call carries at most 64 MiB with the tree
for lib in libpcre2-8.so.0 libutf8proc.so.2; do cp -L "$(ldconfig -p | awk -v l=$lib '$1 == l {print $NF; exit}')" "$out/lib/"; done
if [ -f ../shared/bench/peer_graph.py ]; then cp ../shared/bench/peer_graph.py "$out/"; fi
# The device call carries at most 64 MiB with the tracked tree: carry the packed copy and unpack
# it there (tar xzf .devbin.tgz).
tar czf "$out.tgz" "$out"
echo "built into $out (packed: $out.tgz, $(du -h "$out.tgz" | cut -f1))"
