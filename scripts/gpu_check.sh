#!/usr/bin/env bash
# One run on a GPU machine: device facts, the GPU tests (op tests under compute-sanitizer too),
# then the benchmarks of docs/PERF.md beside the PyTorch CUDA-graph peer. Binaries come from
# scripts/gpu_build.sh; results go to $OUT (or ./gpu-results) as well as stdout.
#   bash scripts/gpu_check.sh [BIN_DIR=.devbin] [SECTIONS=tests,dense,deepseek,fp8,peer] (also: mla, fp8ab, fp8lite, heads, ab)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-.devbin}")
sections=",${2:-tests,dense,deepseek,fp8,peer},"
want() { [[ $sections == *",$1,"* ]]; }
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export SEEKSERVE_SOURCE_DIR="$PWD"  # where the test binary finds its fixtures
if ldd "$bin/seekserve" | grep -q "libcublasLt.*not found"; then  # e.g. only PyTorch's copy is installed
  lt=$(find / -name 'libcublasLt.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)
  [ -n "$lt" ] && export LD_LIBRARY_PATH="$(dirname "$lt"):$LD_LIBRARY_PATH"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
if want tests; then
  echo "== GPU tests"
  # Three processes: a CUDA error is sticky, so a fault in the newer kernels (FP8; the tensor-core
  # MLA kernel and the device-generated dummy weights) cannot take the results of the others with it.
  for filter in '-*Fp8*:*MlaAttention*:*DummyWeights*' '*Fp8*' '*MlaAttention*:*DummyWeights*'; do
    "$bin/cuda_test" --gtest_filter="$filter" 2>&1 | tee -a "$out/tests.txt" |
      grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure|error|rel|Which is|Expected" | head -40
  done
  echo "== compute-sanitizer (op tests)"
  if command -v compute-sanitizer > /dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/cuda_test" --gtest_filter='CudaTest.*' > "$out/sanitizer.txt" 2>&1
    echo "memcheck exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/sanitizer.txt") clean summaries)"
  fi
  echo "== generate on the GPU (random-qwen2 and tiny-deepseek-v3)"
  "$bin/seekserve" generate --device cuda --dtype bf16 --model tests/fixtures/models/random-qwen2 --prompt-ids 1,2,3,4,5 --max-tokens 8 2>&1 | tail -3
  "$bin/seekserve" generate --device cuda --dtype bf16 --model models/tiny-deepseek-v3 --prompt "The jury said" --max-tokens 24 2>&1 | tail -3
fi
# stdout (the JSON line) to bench.jsonl; stderr (phase times, errors) to the console. Each run
# has a time limit (BENCH_TIMEOUT seconds) so one slow run cannot take a call's others with it.
bench() { timeout "${BENCH_TIMEOUT:-240}" "$bin/seekserve" bench --device cuda --dummy-weights --json "$@" | tee -a "$out/bench.jsonl"; }
# with_env "NAME=value ..." command...: the command with those variables set (none when empty).
with_env() { (for assignment in $1; do export "$assignment"; done; shift; "$@"); }
mla_bench() {
  timeout "${BENCH_TIMEOUT:-240}" "$bin/seekserve" bench --kernel mla-decode --device cuda --model configs/deepseek-v3.json --context 8192 --json "$@" 2>&1 |
    tee -a "$out/bench.jsonl"
}
if want dense; then
  echo "== benchmarks: dense"
  for model in r1-distill-qwen-1.5b r1-distill-llama-8b; do
    bench --model configs/$model.json --prompt-tokens 128 --gen-tokens 64
    bench --model configs/$model.json --prompt-tokens 4096 --gen-tokens 4
  done
  bench --model configs/r1-distill-llama-8b.json --prompt-tokens 128 --gen-tokens 128 --batch 256
fi
if want deepseek; then
  echo "== benchmarks: DeepSeek"
  bench --model configs/deepseek-v2-lite.json --prompt-tokens 128 --gen-tokens 64
  bench --model configs/deepseek-v2-lite.json --prompt-tokens 128 --gen-tokens 64 --batch 32
  bench --model configs/deepseek-v2-lite.json --prompt-tokens 4096 --gen-tokens 4
  # The MLA decode kernel alone at V3 widths, batch 64, 8k positions (the issue's 80% goal): all
  # 128 heads on one GPU (compute-bound) and the 16 heads a GPU holds under 8-way tensor parallelism.
  mla_bench --heads 128 --batch 64
  mla_bench --heads 16 --batch 64
  # bf16 experts at batch 1: the tensor cores (default) against the CUDA-core GEMV, alternating.
  for i in 1 2; do
    bench --model configs/deepseek-v2-lite.json --prompt-tokens 16 --gen-tokens 64
    SEEKSERVE_CUDA_MOE_GEMV=1 bench --model configs/deepseek-v2-lite.json --prompt-tokens 16 --gen-tokens 64
  done
fi
if want fp8; then
  # DeepSeek-V3 shapes in FP8 (W8A8), first 8 layers (3 dense + 5 MoE), the issue's batches.
  echo "== benchmarks: DeepSeek-V3 FP8, 8 layers"
  for b in 1 32 128; do
    bench --model configs/deepseek-v3.json --dtype fp8 --num-layers 8 --prompt-tokens 128 --gen-tokens 32 --batch $b
  done
fi
if want fp8ab; then
  echo "== DeepSeek-V3 FP8, 8 layers: prefill with the experts as GEMMs or through the grouped kernels, alternating"
  for tokens in 256 512 1024 2048; do
    for i in 1 2; do
      SEEKSERVE_CUDA_MOE_GEMM_MIN_TOKENS=1 bench --model configs/deepseek-v3.json --dtype fp8 --num-layers 8 --prompt-tokens $tokens --gen-tokens 2
      SEEKSERVE_CUDA_FP8_EXPERT_KERNELS=1 bench --model configs/deepseek-v3.json --dtype fp8 --num-layers 8 --prompt-tokens $tokens --gen-tokens 2
    done
  done
fi
if want heads; then
  echo "== MLA per-head matmuls: tensor cores (default) or CUDA cores (SEEKSERVE_CUDA_HEAD_SIMT=1), alternating"
  for run in "deepseek-v3.json --dtype fp8 --num-layers 8 --batch 1" "deepseek-v3.json --dtype fp8 --num-layers 8 --batch 32" \
    "deepseek-v3.json --dtype fp8 --num-layers 8 --batch 128" "deepseek-v2-lite.json --batch 1" "deepseek-v2-lite.json --batch 32" \
    "deepseek-v2-lite.json --dtype fp8 --batch 32"; do
    for i in 1 2; do
      bench --model configs/$run --prompt-tokens 128 --gen-tokens 32
      SEEKSERVE_CUDA_HEAD_SIMT=1 bench --model configs/$run --prompt-tokens 128 --gen-tokens 32
    done
  done
fi
if want ab; then
  # Side by side: each run with the environment AB_A (default: none) then AB_B, alternating twice.
  # AB_RUNS="model.json args;model.json args". The decode attention kernels, for example:
  # AB_A=SEEKSERVE_CUDA_ATTENTION_MMA=1 AB_B=SEEKSERVE_CUDA_ATTENTION_SIMT=1.
  echo "== side by side: [${AB_A:-}] against [${AB_B:-}]"
  IFS=';' read -ra runs <<< "${AB_RUNS:-r1-distill-qwen-1.5b.json --prompt-tokens 128 --gen-tokens 64;r1-distill-llama-8b.json --prompt-tokens 128 --gen-tokens 64}"
  for run in "${runs[@]}"; do
    for i in 1 2; do
      with_env "${AB_A:-}" bench --model configs/$run
      with_env "${AB_B:-}" bench --model configs/$run
    done
  done
fi
if want mla; then
  # The MLA decode kernels side by side: tensor cores (16/32/64 heads a block) and CUDA cores
  # (SEEKSERVE_CUDA_MLA_SIMT=1), alternating.
  echo "== MLA decode kernels, V3 widths"
  for args in "--heads 128 --batch 64" "--heads 16 --batch 64" "--heads 128 --batch 1" "--heads 16 --batch 128"; do
    for i in 1 2; do
      mla_bench $args
      SEEKSERVE_CUDA_MLA_SIMT=1 mla_bench $args
    done
  done
fi
if want fp8lite; then
  # DeepSeek-V2-Lite quantized to FP8 at load (the issue's batch-32 goal; bf16 cannot reach it).
  echo "== benchmarks: DeepSeek-V2-Lite FP8"
  for b in 1 32; do bench --model configs/deepseek-v2-lite.json --dtype fp8 --prompt-tokens 128 --gen-tokens 64 --batch $b; done
fi
if want peer && [ -f "$bin/peer_graph.py" ]; then
  echo "== peer (PyTorch CUDA graph)"
  python3 "$bin/peer_graph.py" configs r1-distill-qwen-1.5b r1-distill-llama-8b 2>&1 | tee "$out/peer.jsonl"
fi
