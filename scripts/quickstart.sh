#!/usr/bin/env bash
# Installs the dependencies, builds seekserve and runs the bundled tiny DeepSeek-V3 model
# (MLA + 16-expert MoE, trained on the Brown corpus) on a prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
model=models/tiny-deepseek-v3
echo "+ build/src/seekserve generate --model $model --prompt-ids 0,464,3140 --max-tokens 24 --temperature 0 --json"
build/src/seekserve generate --model "$model" --prompt-ids 0,464,3140 --max-tokens 24 --temperature 0 --json
