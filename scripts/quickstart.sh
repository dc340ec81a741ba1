#!/usr/bin/env bash
# Installs the dependencies, builds seekserve, serves the bundled tiny DeepSeek-V3 model
# (MLA attention, 16-expert MoE, YaRN; 10M parameters trained on the Brown corpus) with the
# OpenAI-compatible API, and sends it a chat completion and a streamed completion.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null

log=$(mktemp)
build/src/seekserve serve --model models/tiny-deepseek-v3 --port 0 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { cat "$log"; exit 1; }
head -1 "$log"

run() {
  printf '\n$'; printf ' %q' "$@"; echo
  "$@"
  echo
}
run curl -sS "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny-deepseek-v3", "messages": [{"role": "user", "content": "What did the jury say about the election?"}], "max_tokens": 48, "temperature": 0}'
run curl -sSN "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The jury said", "max_tokens": 12, "temperature": 0, "stream": true}'
