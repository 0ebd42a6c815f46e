"""Evaluation during training (`--eval-steps N`): sentence-transformers' evaluators, run by
its trainer every N steps, so the learning curves land in `train.log`, in each
checkpoint's `trainer_state.json` and in `eval/run.json` ("learning_curve").

- `MSEEvaluator` per language on the `--dev` pairs: student(xx) against teacher(en), the
  quantity the run minimises (`eval_dev-<lang>_negative_mse`, MSE x 100, negated), and
  their mean over the languages (`eval_dev_negative_mse`, `DEV_MSE_METRIC`: what
  `--early-stopping-patience` watches; greater is better);
- `TranslationEvaluator` per language on the same pairs: student(en) <-> student(xx)
  retrieval accuracy (`eval_dev-<lang>_mean_accuracy`);
- `EmbeddingSimilarityEvaluator` on the stsb-multi-mt **dev** split (never test), en-en
  and en-xx for the evaluation languages, first `STS_DEV_ROWS` rows
  (`eval_sts-dev-en-<lang>_spearman_cosine`).

The final report stays with `training.evaluate` (test splits, Tatoeba, both spaces).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sentence_transformers.evaluation import MSEEvaluator, SequentialEvaluator

from training.config import DistillConfig
from training.data import ParallelCorpus
from training.evaluate import load_sts
from training.languages import parse_languages

log = logging.getLogger(__name__)
STS_DEV_ROWS = 500  # per language: bounds each evaluation on CPU
DEV_MSE_METRIC = "dev_negative_mse"  # the trainer logs it as eval_dev_negative_mse


class TrainingEvaluator(SequentialEvaluator):
    """sentence-transformers' `SequentialEvaluator`, plus `DEV_MSE_METRIC`: the mean of the
    `MSEEvaluator`s' negative MSE (x 100) over the dev languages (absent without one)."""

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict:
        results = super().__call__(model, output_path, epoch, steps)
        scores = [
            results[f"{evaluator.name}_negative_mse"]
            for evaluator in self.evaluators
            if isinstance(evaluator, MSEEvaluator)
        ]
        if scores:
            results[DEV_MSE_METRIC] = float(sum(scores) / len(scores))
        return results


def dev_pair_evaluators(teacher, dev: ParallelCorpus, batch_size: int = 64) -> list:
    """MSE (against the teacher's English vectors) and translation retrieval, one pair of
    evaluators per non-English language of `dev`."""
    from sentence_transformers.evaluation import TranslationEvaluator

    by_language: dict[str, list[tuple[str, str]]] = {}
    for english, text, lang in dev.triples:
        if lang != "en":
            by_language.setdefault(lang, []).append((english, text))
    evaluators = []
    for lang, pairs in sorted(by_language.items()):
        english = [e for e, _ in pairs]
        texts = [t for _, t in pairs]
        name = f"dev-{lang}"
        # MSEEvaluator(source, target): teacher.encode(source) against model.encode(target)
        evaluators.append(
            MSEEvaluator(english, texts, teacher_model=teacher, name=name, batch_size=batch_size)
        )
        evaluators.append(TranslationEvaluator(english, texts, name=name, batch_size=batch_size))
    return evaluators


def sts_dev_evaluators(
    data_dir: Path, languages: list[str], rows: int = STS_DEV_ROWS, batch_size: int = 64
) -> list:
    """Spearman on the stsb-multi-mt dev split: en-en, and en-xx (English sentence1,
    translated sentence2) for each other language whose dev file exists."""
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    folder = Path(data_dir) / "stsb-multi-mt"
    if not (folder / "stsb-en-dev.csv").is_file():
        log.warning("no stsb-multi-mt dev split in %s: no STS learning curve", data_dir)
        return []
    en1, en2, scores = load_sts(data_dir, "en", split="dev", limit=rows)
    gold = [float(s) / 5.0 for s in scores]
    evaluators = [
        EmbeddingSimilarityEvaluator(en1, en2, gold, name="sts-dev-en-en", batch_size=batch_size)
    ]
    for lang in languages:
        if lang == "en" or not (folder / f"stsb-{lang}-dev.csv").is_file():
            continue
        _, xx2, _ = load_sts(data_dir, lang, split="dev", limit=rows)
        evaluators.append(
            EmbeddingSimilarityEvaluator(
                en1, xx2, gold, name=f"sts-dev-en-{lang}", batch_size=batch_size
            )
        )
    return evaluators


def training_evaluators(
    teacher, dev: ParallelCorpus | None, data_dir: Path | None, config: DistillConfig
):
    """A `TrainingEvaluator` of the above (what the run's data allows), or None when
    there is neither `--dev` data nor an stsb dev split (the trainer then falls back to
    an eval loss on held-out training rows)."""
    evaluators = []
    if dev is not None and dev.triples:
        evaluators += dev_pair_evaluators(teacher, dev, config.batch_size)
    if data_dir is not None:
        languages = parse_languages(config.eval_languages or config.languages)
        evaluators += sts_dev_evaluators(data_dir, languages, batch_size=config.batch_size)
    if not evaluators:
        return None
    log.info(
        "evaluation every %d steps: %s", config.eval_steps, ", ".join(e.name for e in evaluators)
    )
    return TrainingEvaluator(evaluators)
