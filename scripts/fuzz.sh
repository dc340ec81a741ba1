#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 60).
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
bash scripts/setup.sh
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DSEEKSERVE_FUZZ=ON -DSEEKSERVE_TESTS=OFF >/dev/null
ninja -C build-fuzz safetensors_fuzzer tokenizer_fuzzer

corpus=build-fuzz/corpus/safetensors
mkdir -p "$corpus"
# Seeds: the fixture checkpoints' headers (and a little data after them).
for f in tests/fixtures/models/*/model.safetensors; do
  head -c 4096 "$f" >"$corpus/$(basename "$(dirname "$f")").seed"
done
build-fuzz/fuzz/safetensors_fuzzer -max_total_time="$seconds" -max_len=8192 "$corpus"

corpus=build-fuzz/corpus/tokenizer
mkdir -p "$corpus"
# Seeds: the evaluation text, a line per file.
split -l 1 -a 4 tests/fixtures/text/eval.txt "$corpus/line-"
build-fuzz/fuzz/tokenizer_fuzzer -max_total_time="$seconds" -max_len=2048 "$corpus"
