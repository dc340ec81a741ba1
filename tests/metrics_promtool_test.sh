#!/usr/bin/env bash
# /metrics of a running server passes `promtool check metrics`, and its counters move with traffic.
# Usage: metrics_promtool_test.sh SEEKSERVE_BINARY MODEL_DIR
set -euo pipefail
binary=$1
model=$2
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not installed (scripts/setup.sh installs Debian's prometheus package)"
  exit 77
fi
log=$(mktemp)
"$binary" serve --model "$model" --port 0 --threads 1 --no-access-log 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 200); do
  port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { cat "$log"; exit 1; }
url="http://127.0.0.1:$port"

metric() { curl -sS "$url/metrics" | sed -n "s|^$1{[^}]*} \\(.*\\)|\\1|p" | head -1; }

before=$(metric seekserve_generation_tokens_total)
curl -sS "$url/v1/completions" -H 'Content-Type: application/json' -d '{"prompt": "The jury said", "max_tokens": 7, "ignore_eos": true}' >/dev/null
curl -sS "$url/v1/completions" -H 'Content-Type: application/json' -d '{"prompt": "x", "temperature": 9}' >/dev/null
after=$(metric seekserve_generation_tokens_total)
curl -sS "$url/metrics" | promtool check metrics
[ "$before" = "0" ] || { echo "generation tokens started at $before"; exit 1; }
[ "$after" = "7" ] || { echo "generation tokens: expected 7, got $after"; exit 1; }
failed=$(curl -sS "$url/metrics" | sed -n 's|^seekserve_request_failure_total{[^}]*code="400"} \(.*\)|\1|p')
[ "$failed" = "1" ] || { echo "400 failures: expected 1, got $failed"; exit 1; }
echo "metrics OK: promtool accepts them, counters moved (7 tokens, one 400)"
