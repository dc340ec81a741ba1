#!/usr/bin/env bash
# Installs the dependencies, builds seekserve and runs the bundled tiny DeepSeek-V3 model
# (MLA attention, 16-expert MoE, YaRN; 10M parameters trained on the Brown corpus): a plain
# completion streamed as it is generated, then a chat turn through the model's chat template
# as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
model=models/tiny-deepseek-v3
run() {
  printf '$'; printf ' %q' "$@"; echo
  "$@"
  echo
}
run build/src/seekserve generate --model "$model" --prompt "The jury said" --max-tokens 48 --temperature 0
run build/src/seekserve generate --model "$model" --chat --prompt "What did the committee decide?" \
  --max-tokens 40 --temperature 0.7 --top-p 0.9 --seed 1 --json
