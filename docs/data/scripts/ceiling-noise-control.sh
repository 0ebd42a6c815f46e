#!/usr/bin/env bash
# The ceiling (in-process pipeline, batches of $1 texts, default 16) with and without a second
# process burning CPU in bursts: throughput and CPU per text (docs/benchmarks.md, "Fourth session").
# Run from the repository root: bash docs/data/scripts/ceiling-noise-control.sh 16
# Needs benchmarks/results/models/all-MiniLM-L6-v2 (prepared by any `python -m benchmarks.compare` run).
set -u
cat > /tmp/noise.py <<'EOF'
import time, sys
burst, period = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
end = time.time() + float(sys.argv[3])
x = 0
while time.time() < end:
    t = time.perf_counter()
    while time.perf_counter() - t < burst:
        x += 1
    time.sleep(max(0, period - burst))
EOF
PYTHONPATH=. .venv/bin/python - "${1:-16}" <<'EOF'
import time, os, sys
from benchmarks.compare import PipelineCeiling
from pathlib import Path
c = PipelineCeiling(Path("benchmarks/results/models/all-MiniLM-L6-v2"))
c.batch_size = int(sys.argv[1])
import subprocess
for noise in (None, ("1.8", "15"), None, ("0.5","4")):
    p = subprocess.Popen([sys.executable, "/tmp/noise.py", *noise, "12"]) if noise else None
    time.sleep(0.2)
    t0 = os.times(); w = time.perf_counter()
    r = c.measure((32, 8, "short"), 8, None)
    t1 = os.times(); w = time.perf_counter()-w
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    n = r["sentences_per_s"] * r["seconds"]
    if p: p.wait()
    print(noise, r["sentences_per_s"], "cpu/text ms", round(cpu / n * 1000, 3), "cpu%", round(cpu / w * 100), flush=True)
EOF
