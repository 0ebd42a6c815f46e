"""Evaluation during training (`--eval-steps N`): evaluators on sentence-transformers'
evaluator hook (`SentenceEvaluator`), run by its trainer every N steps, so the learning
curves land in `train.log`, in each checkpoint's `trainer_state.json` and in
`eval/run.json` ("learning_curve"). Every figure is computed by `training.metrics`, the
functions the evaluation after training (`training.scores`) and the export report use.

- `DevMSE` per language on the `--dev` pairs: student(xx) against teacher(en), the
  quantity the run minimises (`eval_dev-<lang>_negative_mse`, MSE x 100, negated), and
  their mean over the languages (`eval_dev_negative_mse`, `DEV_MSE_METRIC`: what
  `--early-stopping-patience` watches; greater is better);
- `DevRetrieval` per language on the same pairs: student(en) <-> student(xx) translation
  retrieval accuracy, both ways and their mean (`eval_dev-<lang>_mean_accuracy`, a
  fraction as sentence-transformers' TranslationEvaluator reports it);
- `StsDev` on the stsb-multi-mt **dev** split (never test), en-en and en-xx for the
  evaluation languages, first `STS_DEV_ROWS` rows (`eval_sts-dev-en-<lang>_spearman_cosine`,
  Spearman as a correlation in [-1, 1]).

The final report stays with `training.evaluate` (test splits, Tatoeba, both spaces).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sentence_transformers.evaluation import SentenceEvaluator, SequentialEvaluator

from training.config import DistillConfig
from training.data import ParallelCorpus
from training.languages import parse_languages
from training.metrics import mse_x100, retrieval_accuracy, sts_spearman
from training.testsets import load_sts

log = logging.getLogger(__name__)
STS_DEV_ROWS = 500  # per language: bounds each evaluation on CPU
DEV_MSE_METRIC = "dev_negative_mse"  # the trainer logs it as eval_dev_negative_mse


def encode(model, sentences: list[str], batch_size: int) -> np.ndarray:
    """float32 [len(sentences), dim] vectors of `model` (no progress bar)."""
    return np.asarray(
        model.encode(
            sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )


class MetricEvaluator(SentenceEvaluator):
    """A `SentenceEvaluator` whose `measure(model)` returns its figures by name; the hook
    prefixes them with `name` and records them in the model card data."""

    def __init__(self, name: str, primary_metric: str, batch_size: int) -> None:
        super().__init__()
        self.name, self.primary_metric, self.batch_size = name, primary_metric, batch_size

    def measure(self, model) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict:
        metrics = self.prefix_name_to_metrics(self.measure(model), self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class DevMSE(MetricEvaluator):
    """`mse_x100(student(texts), teacher(english))`, negated (`negative_mse`: greater is
    better); the teacher's vectors are computed once, here."""

    def __init__(self, english, texts, teacher, name: str, batch_size: int = 64) -> None:
        super().__init__(name, "negative_mse", batch_size)
        self.texts = list(texts)
        self.targets = encode(teacher, list(english), batch_size)

    def measure(self, model) -> dict[str, float]:
        return {"negative_mse": -mse_x100(encode(model, self.texts, self.batch_size), self.targets)}


class DevRetrieval(MetricEvaluator):
    """`retrieval_accuracy` of student(english) -> student(texts) and back, as fractions."""

    def __init__(self, english, texts, name: str, batch_size: int = 64) -> None:
        super().__init__(name, "mean_accuracy", batch_size)
        self.english, self.texts = list(english), list(texts)

    def measure(self, model) -> dict[str, float]:
        en = encode(model, self.english, self.batch_size)
        xx = encode(model, self.texts, self.batch_size)
        src2trg = retrieval_accuracy(en, xx) / 100.0
        trg2src = retrieval_accuracy(xx, en) / 100.0
        return {
            "src2trg_accuracy": src2trg,
            "trg2src_accuracy": trg2src,
            "mean_accuracy": (src2trg + trg2src) / 2,
        }


class StsDev(MetricEvaluator):
    """`sts_spearman` of the sentence pairs against the gold scores, as a correlation."""

    def __init__(self, first, second, gold, name: str, batch_size: int = 64) -> None:
        super().__init__(name, "spearman_cosine", batch_size)
        self.first, self.second, self.gold = list(first), list(second), np.asarray(gold)

    def measure(self, model) -> dict[str, float]:
        first = encode(model, self.first, self.batch_size)
        second = encode(model, self.second, self.batch_size)
        return {"spearman_cosine": sts_spearman(first, second, self.gold) / 100.0}


class TrainingEvaluator(SequentialEvaluator):
    """sentence-transformers' `SequentialEvaluator`, plus `DEV_MSE_METRIC`: the mean of the
    MSE evaluators' negative MSE (x 100) over the dev languages (absent without one): those
    whose primary metric is the negative MSE (`DevMSE`, or sentence-transformers'
    `MSEEvaluator`)."""

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict:
        results = super().__call__(model, output_path, epoch, steps)
        scores = [
            results[f"{evaluator.name}_negative_mse"]
            for evaluator in self.evaluators
            # the hook prefixes primary_metric with the evaluator's name after a call
            if str(getattr(evaluator, "primary_metric", "")).endswith("negative_mse")
        ]
        if scores:
            results[DEV_MSE_METRIC] = float(sum(scores) / len(scores))
        return results


def dev_pair_evaluators(teacher, dev: ParallelCorpus, batch_size: int = 64) -> list:
    """MSE (against the teacher's English vectors) and translation retrieval, one pair of
    evaluators per non-English language of `dev`."""
    by_language: dict[str, list[tuple[str, str]]] = {}
    for english, text, lang in dev.triples:
        if lang != "en":
            by_language.setdefault(lang, []).append((english, text))
    evaluators = []
    for lang, pairs in sorted(by_language.items()):
        english = [e for e, _ in pairs]
        texts = [t for _, t in pairs]
        name = f"dev-{lang}"
        evaluators.append(DevMSE(english, texts, teacher, name=name, batch_size=batch_size))
        evaluators.append(DevRetrieval(english, texts, name=name, batch_size=batch_size))
    return evaluators


def sts_dev_evaluators(
    data_dir: Path, languages: list[str], rows: int = STS_DEV_ROWS, batch_size: int = 64
) -> list:
    """Spearman on the stsb-multi-mt dev split: en-en, and en-xx (English sentence1,
    translated sentence2) for each other language whose dev file exists."""
    folder = Path(data_dir) / "stsb-multi-mt"
    if not (folder / "stsb-en-dev.csv").is_file():
        log.warning("no stsb-multi-mt dev split in %s: no STS learning curve", data_dir)
        return []
    en1, en2, gold = load_sts(data_dir, "en", split="dev", limit=rows)
    evaluators = [StsDev(en1, en2, gold, name="sts-dev-en-en", batch_size=batch_size)]
    for lang in languages:
        if lang == "en" or not (folder / f"stsb-{lang}-dev.csv").is_file():
            continue
        _, xx2, _ = load_sts(data_dir, lang, split="dev", limit=rows)
        evaluators.append(StsDev(en1, xx2, gold, name=f"sts-dev-en-{lang}", batch_size=batch_size))
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
