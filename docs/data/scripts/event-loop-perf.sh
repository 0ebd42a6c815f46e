#!/usr/bin/env bash
# perf samples of the default server's event-loop thread (its main thread) for 8 s in the
# middle of a 32 x 8 short load, by shared object and by symbol (docs/benchmarks.md,
# "Fifth session"). Run from the repository root: bash docs/data/scripts/event-loop-perf.sh
set -u
source .venv/bin/activate
python -m service --port 8252 --max-queued-inputs 100000 --max-queue-wait-s 50 > /tmp/srv.log 2>&1 &
SP=$!
for i in $(seq 60); do curl -sf localhost:8252/health >/dev/null && break; sleep 0.5; done
python -m benchmarks.load --url http://localhost:8252 --route /embed --concurrency 32 --inputs 8 \
    --length short --duration 16 --requests 100000 --client raw >/dev/null 2>&1 &
LP=$!
sleep 3
perf record -F 499 -t $SP -o /tmp/event-loop.perf -- sleep 8 >/dev/null 2>&1
wait $LP; kill $SP
perf report -i /tmp/event-loop.perf --sort dso --stdio 2>/dev/null | grep -v "^#" | head -15
perf report -i /tmp/event-loop.perf --sort sym --stdio 2>/dev/null | grep -v "^#" | head -20
