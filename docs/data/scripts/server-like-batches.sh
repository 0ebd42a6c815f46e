#!/usr/bin/env bash
# In-process CPU per text on the batches the server forms (windows of shuffled short texts cut
# by plan_batches) against globally sorted batches (docs/benchmarks.md, "Fourth session").
# Run from the repository root: bash docs/data/scripts/server-like-batches.sh
# Needs benchmarks/results/models/all-MiniLM-L6-v2 (prepared by any `python -m benchmarks.compare` run).
set -u
PYTHONPATH=. .venv/bin/python - <<'EOF'
import random, time, os, collections
from benchmarks.texts import texts as load_texts
from service.config import Settings
from service.engine.pipeline import served_pipeline
from service.engine import batcher as B
p = served_pipeline(Settings(model="benchmarks/results/models/all-MiniLM-L6-v2"))
corpus = load_texts("short", None)
random.Random(0).shuffle(corpus)
items = p.tokenizer.encode(corpus[:3000])
lim = B.BatchLimits(16384, 256, 0.002, 4096)
def run(batches):
    p.embed_batches(batches[:10])
    t0 = os.times(); w = time.perf_counter()
    p.embed_batches(batches)
    w = time.perf_counter() - w; t1 = os.times()
    n = sum(len(b) for b in batches)
    real = sum(t.length for b in batches for t in b); pad = sum(len(b)*max(t.length for t in b) for b in batches)
    return round(n / w), round(((t1.user-t0.user)+(t1.system-t0.system))/n*1000, 3), round(pad/real, 3), round(n/len(batches),1)
for rnd in range(2):
    for window in (32, 64, 128, 256):
        batches = []
        for s in range(0, len(items), window):
            wi = [B.WorkItem(t, None, 0, 0.0) for t in items[s:s+window]]
            batches += [[w.text for w in b] for b in B.plan_batches(wi, lim)]
        print(rnd, "window", window, "texts/s, cpu ms/text, padding, mean batch:", run(batches), flush=True)
    srt = sorted(items, key=lambda t: t.length)
    print(rnd, "global sort 16:", run([srt[i:i+16] for i in range(0, len(srt), 16)]), flush=True)
EOF
