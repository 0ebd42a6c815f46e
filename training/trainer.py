"""The training loop: sentence-transformers' trainer with MSELoss, plus what a long
unattended run needs (non-finite loss stops with the step, sentences/s in the logs,
a higher learning rate for the projection, AMP on CUDA, resumable checkpoints, early
stopping on the dev MSE with the best checkpoint kept as the model), fed by
`training.input_pipeline` (cached token ids, length-bucketed batches, data-loader workers,
pinned memory on CUDA) and evaluated every `--eval-steps` by sentence-transformers'
evaluators (`training.evaluators`)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, losses
from sentence_transformers.training_args import SentenceTransformerTrainingArguments
from transformers import EarlyStoppingCallback, TrainerCallback

from training import distributed
from training.config import DistillConfig
from training.evaluators import DEV_MSE_METRIC
from training.input_pipeline import BucketSamplerFactory, PretokenizedCollator, default_workers

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of saving a broken model."""


class CheckedMSELoss(losses.MSELoss):
    """MSELoss that raises NonFiniteLossError naming the optimiser step."""

    step = 0

    def forward(self, sentence_features, labels):
        loss = super().forward(sentence_features, labels)
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.step}: stopping (lower --lr, check the "
                "data, or use --precision fp32); the last good checkpoint is kept"
            )
        return loss


class ProgressCallback(TrainerCallback):
    """Keeps the loss's step current and adds sentences/s to every log line."""

    def __init__(self, loss: CheckedMSELoss, batch_size: int) -> None:
        self.loss, self.batch_size = loss, batch_size
        self.last_time, self.last_step = time.time(), 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.loss.step = state.global_step + 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        if "loss" not in logs:
            if any(key.startswith("eval_") for key in logs):
                log.info("step %d, evaluation: %s", state.global_step, logs)
            return
        now = time.time()
        steps = state.global_step - self.last_step
        if steps > 0 and now > self.last_time:
            logs["sentences_per_second"] = round(
                steps * self.batch_size / (now - self.last_time), 1
            )
        self.last_time, self.last_step = now, state.global_step
        log.info("step %d: %s", state.global_step, logs)


def build_optimizer(model, lr: float, projection, projection_lr: float | None, weight_decay=0.01):
    """AdamW with the projection in its own parameter group (its own learning rate)."""
    projection_params = set()
    if projection is not None and projection_lr:
        projection_params = {id(p) for p in projection.parameters()}
    encoder = [p for p in model.parameters() if p.requires_grad and id(p) not in projection_params]
    groups = [{"params": encoder, "lr": lr, "weight_decay": weight_decay}]
    if projection_params:
        groups.append(
            {"params": list(projection.parameters()), "lr": projection_lr, "weight_decay": 0.0}
        )
    return torch.optim.AdamW(groups, lr=lr)


BEST_METRIC = f"eval_{DEV_MSE_METRIC}"  # negative MSE x 100: greater is better


def checkpoint_steps(config: DistillConfig) -> int:
    """Steps between checkpoints: `--save-steps`, but with `--early-stopping-patience` the
    `--eval-steps`: the best checkpoint must exist for every evaluation that can be the
    best (transformers only records a best checkpoint that was saved at that step)."""
    if config.early_stopping_patience and config.save_steps != config.eval_steps:
        log.warning(
            "--early-stopping-patience: saving a checkpoint at every evaluation "
            "(--save-steps %d -> %d, the --eval-steps)",
            config.save_steps,
            config.eval_steps,
        )
        return config.eval_steps
    return config.save_steps


def stored_patience_counter(checkpoint: Path) -> int:
    """Evaluations without improvement so far, as `checkpoint`'s trainer_state.json
    recorded them (0 when the run that wrote it had no early stopping)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    stored = state.get("stateful_callbacks", {}).get("EarlyStoppingCallback") or {}
    if isinstance(stored, list):
        stored = stored[0] if stored else {}
    return int(stored.get("attributes", {}).get("early_stopping_patience_counter", 0))


def early_stopping_callback(
    config: DistillConfig, resume_from: Path | None
) -> EarlyStoppingCallback | None:
    """transformers' `EarlyStoppingCallback` for `--early-stopping-patience` (None when 0).
    On `--resume` its count of evaluations without improvement continues from the
    checkpoint (the best metric and best checkpoint come back with the trainer's state), so
    a resumed run stops where an uninterrupted one would; patience and threshold are this
    run's flags."""
    if not config.early_stopping_patience:
        return None
    callback = EarlyStoppingCallback(
        early_stopping_patience=config.early_stopping_patience,
        early_stopping_threshold=config.early_stopping_threshold,
    )
    if resume_from is not None:
        callback.early_stopping_patience_counter = stored_patience_counter(resume_from)
    return callback


def same_weights(model, checkpoint: Path) -> bool:
    """Whether `model`'s parameters and buffers equal those saved in `checkpoint`."""
    saved = type(model)(str(checkpoint), device="cpu").state_dict()
    current = model.state_dict()
    return saved.keys() == current.keys() and all(
        torch.equal(current[key].detach().cpu(), saved[key]) for key in current
    )


def early_stopping_summary(trainer, config: DistillConfig, model) -> dict:
    """After an early-stopping run: log where it stopped and which checkpoint the model is
    now (the trainer loads the best one at the end); RuntimeError if the model's weights
    are not that checkpoint's. Returns the figures for run.json."""
    state = trainer.state
    best = state.best_model_checkpoint
    stopped_early = state.global_step < state.max_steps
    if stopped_early:
        log.info(
            "early stopping: %s did not improve by more than %g for %d evaluations; "
            "stopped at step %d of %d",
            BEST_METRIC,
            config.early_stopping_threshold,
            config.early_stopping_patience,
            state.global_step,
            state.max_steps,
        )
    if best is None:
        log.warning("early stopping: no checkpoint was evaluated; the model is the last step's")
    elif not same_weights(model, Path(best)):
        raise RuntimeError(
            f"the best checkpoint {best} was not loaded into the model at the end of training"
        )
    else:
        log.info(
            "the final model is the best checkpoint %s (step %s, %s %.5f)",
            best,
            state.best_global_step,
            BEST_METRIC,
            state.best_metric,
        )
    return {
        "metric": BEST_METRIC,
        "patience": config.early_stopping_patience,
        "threshold": config.early_stopping_threshold,
        "stopped_early": stopped_early,
        "best_step": state.best_global_step,
        "best_metric": state.best_metric,
        "best_checkpoint": best,
    }


def training_arguments(
    config: DistillConfig,
    checkpoint_dir: Path,
    has_eval: bool,
    pretokenized: bool = False,
):
    """The trainer's arguments from the run's resolved config (its device and precision;
    ValueError while either is still "auto"). Pre-tokenised input gets the
    length-bucketed batch sampler; workers default to `default_workers(device)`, pinned
    memory on CUDA. `--early-stopping-patience` tracks the best `BEST_METRIC` (greater is
    better), saves at every evaluation and loads the best checkpoint at the end."""
    config.check_resolved()
    device, precision = config.device, config.precision
    workers = config.dataloader_workers
    if workers is None:
        workers = default_workers(device)
    extra = {}
    if pretokenized:
        extra["batch_sampler"] = BucketSamplerFactory(config.seed, config.bucket_chunk)
    if config.early_stopping_patience:
        extra.update(
            load_best_model_at_end=True, metric_for_best_model=BEST_METRIC, greater_is_better=True
        )
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        warmup_ratio=config.warmup_ratio,
        seed=config.seed,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        use_cpu=device == "cpu",
        save_strategy="steps",
        save_steps=checkpoint_steps(config),
        save_total_limit=2,
        eval_strategy="steps" if has_eval and config.eval_steps else "no",
        eval_steps=config.eval_steps or None,
        logging_steps=config.logging_steps,
        report_to="none",
        ddp_timeout=distributed.TIMEOUT_S,
        dataloader_drop_last=False,
        dataloader_num_workers=workers,
        dataloader_pin_memory=device == "cuda",
        dataloader_persistent_workers=workers > 0,
        disable_tqdm=False,
        **extra,
    )


def train_student(
    model,
    dataset: Dataset,
    config: DistillConfig,
    checkpoint_dir: Path,
    projection,
    resume_from: Path | None,
    collator: PretokenizedCollator | None = None,
    evaluator=None,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Train in place on the resolved `config`'s device and precision; returns throughput
    figures for the model card.

    `dataset`: rows of `training.input_pipeline.build_inputs` (pre-tokenised, with
    `collator`) or `sentence`/`label` text rows (collator None: tokenised per batch).
    `evaluator`: sentence-transformers evaluator(s) run every `--eval-steps`; without
    one, `--eval-steps` holds out up to 500 training rows for an eval loss.
    `callbacks`: extra `transformers.TrainerCallback`s (benchmarks time steps with one).
    With `--early-stopping-patience`, `evaluator` must report `BEST_METRIC` (a `--dev`
    `training.evaluators.TrainingEvaluator`); the model ends as the best checkpoint."""
    loss = CheckedMSELoss(model)
    eval_dataset = None
    if config.eval_steps and evaluator is None:
        split = dataset.train_test_split(
            test_size=min(500, max(1, len(dataset) // 20)), seed=config.seed
        )
        dataset, eval_dataset = split["train"], split["test"]
    optimizer = None
    if config.projection_lr and projection is not None:
        optimizer = build_optimizer(model, config.lr, projection, config.projection_lr)
    has_eval = eval_dataset is not None or evaluator is not None
    stopper = early_stopping_callback(config, resume_from)
    if stopper is not None and evaluator is None:
        raise ValueError("--early-stopping-patience needs the dev evaluators (--dev data)")
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_arguments(config, checkpoint_dir, has_eval, collator is not None),
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=collator,
        callbacks=[
            ProgressCallback(loss, config.batch_size * config.grad_accum),
            *([stopper] if stopper is not None else []),
            *(callbacks or []),
        ],
        optimizers=(optimizer, None),
    )
    started = time.time()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - started
    metrics = output.metrics
    final_loss = metrics.get("train_loss", float("nan"))
    if not math.isfinite(final_loss):
        raise NonFiniteLossError(f"training ended with a non-finite mean loss ({final_loss})")
    peak_memory = torch.cuda.max_memory_allocated() if config.device == "cuda" else None
    stopping = early_stopping_summary(trainer, config, model) if stopper is not None else None
    return {
        "train_seconds": round(seconds, 1),
        "train_steps": trainer.state.global_step,
        "train_loss": final_loss,
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "peak_cuda_memory_bytes": peak_memory,
        "resumed_from": str(resume_from) if resume_from else None,
        "early_stopping": stopping,
        "learning_curve": [
            entry
            for entry in trainer.state.log_history
            if any(k.startswith("eval_") for k in entry)
        ],
    }
