#!/usr/bin/env bash
# Batch-1 decode side by side under the CUDA backend's switches, in one run on a GPU machine:
# as built, without folding RMSNorm/SwiGLU into the GEMVs (SEEKSERVE_CUDA_NO_FUSION), without
# programmatic dependent launch (SEEKSERVE_CUDA_NO_PDL), without CUDA graphs, and any other
# builds found as BIN_DIR/seekserve-* (e.g. compiled with -DSEEKSERVE_PDL_EARLY_TRIGGER=0).
#   bash scripts/gpu_variants.sh [BIN_DIR=.devbin] [CONFIGS="r1-distill-qwen-1.5b r1-distill-llama-8b"]
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-.devbin}")
configs=${2:-"r1-distill-qwen-1.5b r1-distill-llama-8b"}
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
run() {  # label, binary, env...
  local label=$1 exe=$2
  shift 2
  for model in $configs; do
    env "$@" "$exe" bench --device cuda --dummy-weights --json --model "configs/$model.json" --prompt-tokens 128 --gen-tokens 64 2>&1 |
      python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f'{sys.argv[1]:24s} {sys.argv[2]:22s} {r[\"decode_tokens_per_s\"]:8.1f} tok/s  {100*r[\"bandwidth_share\"]:5.1f}% of {r[\"measured_bandwidth_GBps\"]:.0f} GB/s')" "$label" "$model" |
      tee -a "$out/variants.txt"
  done
}
run "as built" "$bin/seekserve"
run "no fusion" "$bin/seekserve" SEEKSERVE_CUDA_NO_FUSION=1
run "no PDL" "$bin/seekserve" SEEKSERVE_CUDA_NO_PDL=1
run "no graphs" "$bin/seekserve" SEEKSERVE_CUDA_NO_GRAPHS=1
for other in "$bin"/seekserve-*; do
  [ -x "$other" ] && run "$(basename "$other")" "$other"
done
