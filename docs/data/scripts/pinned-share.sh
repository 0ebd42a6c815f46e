#!/usr/bin/env bash
# docs/benchmarks.md, "Fifth session": how the biased ceiling was found. Run from the repository
# root: bash docs/data/scripts/pinned-share.sh (the figures quoted there came from the ceiling
# before its fix; with the fixed ceiling this script measures the corrected one-worker share).
# The 32 x 8 share when the HTTP layer has a core of its own: one inference worker (one
# thread) pinned to core 0; the server's other threads and the load client on core 1;
# against the in-process pipeline with one worker on core 0 alone. Interleaved rounds.
set -u
source .venv/bin/activate
export EMBED_INFERENCE_WORKERS=1 EMBED_INTRA_OP_THREADS=1
ceiling() {
  taskset -c 0 python - <<'P'
from pathlib import Path
from benchmarks.compare import PipelineCeiling
c = PipelineCeiling(Path("benchmarks/results/models/all-MiniLM-L6-v2"))
r = c.measure((32, 8, "short"), 8, None)
print("ceiling", r["sentences_per_s"], "workers", r["inference_workers"], flush=True)
P
}
m() { curl -s localhost:8252/metrics | awk '/^embed_batch_size_sum/{s=$2} END{print s}'; }
server() {
  taskset -c 1 python -m service --port 8252 --max-queued-inputs 100000 --max-queue-wait-s 50 > /tmp/srv-pin.log 2>&1 &
  SP=$!
  for i in $(seq 120); do curl -sf localhost:8252/health >/dev/null && break; sleep 0.5; done
  taskset -c 1 python -m benchmarks.load --url http://localhost:8252 --route /embed --concurrency 32 --inputs 8 --length short --duration 16 --requests 100000 --client raw >/dev/null 2>&1 &
  LP=$!
  snap() { for t in /proc/$SP/task/*; do echo "$(basename $t) $(awk '{print $14+$15}' $t/stat)"; done; }
  snap > /tmp/p1; sleep 2; snap > /tmp/p2
  TID=$(join /tmp/p1 /tmp/p2 | awk '{d=$3-$2; if (d>best){best=d; t=$1}} END{print t}')
  taskset -p -c 0 $TID >/dev/null
  sleep 2
  A=$(m); T1=$(date +%s.%N); snap > /tmp/p3
  sleep 8
  B=$(m); T2=$(date +%s.%N); snap > /tmp/p4
  wait $LP; kill $SP; wait $SP 2>/dev/null
  python3 -c "print('server', round(($B-$A)/($T2-$T1),1), 'inference tid $TID')"
  join /tmp/p3 /tmp/p4 | awk -v s="$T1" -v e="$T2" '{d=($3-$2)/100; if (d>0.05) printf "  tid %s %.2f cpu-s (%.0f%% of a core)\n", $1, d, d/(e-s)*100}'
}
for r in 1 2 3; do
  if [ $((r % 2)) = 1 ]; then ceiling; server; else server; ceiling; fi
done
