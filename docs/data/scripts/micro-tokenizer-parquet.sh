#!/usr/bin/env bash
# Two micro-measurements of the fourth session (docs/benchmarks.md): the tokenizer's
# encode_batch against encode_batch_fast (8 short texts, 8 passages, 4,000 short texts), and a
# 4,000 x 384 shard written with and without dictionary encoding of the vector column.
# Run from the repository root: bash docs/data/scripts/micro-tokenizer-parquet.sh
set -u
PYTHONPATH=. .venv/bin/python - <<'EOF'
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.texts import passages, sentences
from service.config import Settings
from service.engine.pipeline import served_pipeline

tok = served_pipeline(Settings()).tokenizer._full
s = sentences(limit=8000)
for name, texts, n in [("short8", s[:8], 3000), ("pass8", passages(s)[:8], 500),
                       ("short4000", s[:4000], 5)]:
    for fn in ("encode_batch", "encode_batch_fast"):
        f = getattr(tok, fn)
        f(texts)
        t = time.perf_counter()
        for _ in range(n):
            f(texts, add_special_tokens=True)
        print(name, fn, round((time.perf_counter() - t) / n * 1e6), "us")

v = np.random.default_rng(0).standard_normal((4000, 384)).astype(np.float32)
t = pa.table({"id": pa.array([f"d{i}" for i in range(4000)]),
              "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 384)})
for kw in [{}, {"use_dictionary": ["id"]}]:
    for _ in range(2):
        started = time.perf_counter()
        pq.write_table(t, "/tmp/x.parquet", **kw)
        took = time.perf_counter() - started
    print(kw or "default", round(took * 1000, 1), "ms", os.path.getsize("/tmp/x.parquet") // 1024, "KiB")
EOF
