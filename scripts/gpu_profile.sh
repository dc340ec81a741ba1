#!/usr/bin/env bash
# Per-kernel device time (Nsight Compute, clocks left alone): where a decode step or a prefill
# spends its time. Binaries from scripts/gpu_build.sh.
#   bash scripts/gpu_profile.sh [BIN_DIR=.devbin] [CONFIG=configs/r1-distill-qwen-1.5b.json] [BATCH=1] \
#        [PROMPT=16] [GEN=12] [SKIP=step] [COUNT=600]
# SKIP=step (default): exactly the middle decode step (the bench opens the profiler's window
# around it). SKIP=N: COUNT launches after the first N (e.g. a 4,096-token prefill: the warm-up
# and both prefill passes: ... configs/r1-distill-llama-8b.json 1 4096 1 0 700).
# BENCH_ARGS adds bench flags (e.g. BENCH_ARGS="--num-layers 4" for a DeepSeek model's first layers).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-.devbin}")
config=${2:-configs/r1-distill-qwen-1.5b.json}
batch=${3:-1}
prompt=${4:-16}
gen=${5:-12}
skip=${6:-step}
count=${7:-600}
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ "$skip" = step ]; then
  export SEEKSERVE_CUDA_PROFILE_STEP=1
  window=(--profile-from-start off)
else
  window=(--launch-skip "$skip" --launch-count "$count")
fi
ncu --clock-control none --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum "${window[@]}" --csv \
  "$bin/seekserve" bench --device cuda --dummy-weights --model "$config" --prompt-tokens "$prompt" --gen-tokens "$gen" --batch "$batch" --json ${BENCH_ARGS:-} \
  > "$out/ncu.csv" 2> "$out/ncu.err"
python3 - "$out/ncu.csv" <<'PY'
import csv, sys, collections
lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))  # the program's own output comes first
rows = list(csv.reader(lines[start:]))
head = rows[0]; rows = [r for r in rows[1:] if len(r) == len(head)]
ki, mi, vi = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
t = collections.defaultdict(float); b = collections.defaultdict(float); c = collections.Counter()
for r in rows:
    name = (r[ki].split("(")[0][-40:] + " " + r[head.index("Grid Size")])[-58:]
    v = float(r[vi].replace(",", ""))
    if r[mi] == "gpu__time_duration.sum": t[name] += v; c[name] += 1
    else: b[name] += v
total = sum(t.values())
print(f"{'kernel, grid':58s} {'calls':>6s} {'us/call':>8s} {'share':>6s} {'GB/s':>7s}")
for k in sorted(t, key=t.get, reverse=True):
    print(f"{k:58s} {c[k]:6d} {t[k]/c[k]/1e3:8.2f} {100*t[k]/total:5.1f}% {b[k]/t[k]:7.0f}")
print(f"total kernel time {total/1e6:.3f} ms over {sum(c.values())} launches")
PY
