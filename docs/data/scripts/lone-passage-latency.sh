#!/usr/bin/env bash
# One passage at a time (1 client x 1 text, 8 s), the default (two inference workers) against
# EMBED_INFERENCE_WORKERS=1, twice each (docs/benchmarks.md, "A lone passage on every core").
# Run from the repository root: bash docs/data/scripts/lone-passage-latency.sh
set -u
source .venv/bin/activate
for W in 0 1 0 1; do
  EMBED_INFERENCE_WORKERS=$W python -m service --port 8253 > /tmp/srv2.log 2>&1 &
  SP=$!
  for i in $(seq 60); do curl -sf localhost:8253/health >/dev/null && break; sleep 0.5; done
  python -m benchmarks.load --url http://localhost:8253 --route /embed --concurrency 1 --inputs 1 --length passage --duration 8 --requests 100000 --client raw --json /tmp/lat.json >/dev/null 2>&1
  python3 -c "import json; r=json.load(open('/tmp/lat.json')); print('workers=$W', 'p50', r['p50_ms'], 'p99', r['p99_ms'], 'sent/s', r['sentences_per_s'])"
  kill $SP; wait $SP 2>/dev/null
done
