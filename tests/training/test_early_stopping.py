"""`--early-stopping-patience`: transformers' EarlyStoppingCallback on the mean dev MSE,
the best checkpoint kept as the model, and `--resume` continuing the patience count."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.evaluation import MSEEvaluator

from tests.training.conftest import PAIRS, tiny_args
from training.config import DistillConfig, parse_args
from training.distill import run
from training.evaluators import DEV_MSE_METRIC, TrainingEvaluator
from training.trainer import stored_patience_counter, training_arguments


def _base(tmp_path) -> list[str]:
    return ["--train", "a.tsv", "--output", str(tmp_path)]


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        parse_args(argv)
    return capsys.readouterr().err


def test_flags_default_off_and_parse(tmp_path):
    config = parse_args(_base(tmp_path))
    assert (config.early_stopping_patience, config.early_stopping_threshold) == (0, 0.0)
    config = parse_args(
        [*_base(tmp_path), "--eval-steps", "50", "--dev", "d.tsv"]
        + ["--early-stopping-patience", "3", "--early-stopping-threshold", "0.01"]
    )
    assert (config.early_stopping_patience, config.early_stopping_threshold) == (3, 0.01)
    yaml = tmp_path / "run.yaml"
    yaml.write_text(
        "train: a.tsv\noutput: o\ndev: d.tsv\neval-steps: 10\nearly-stopping-patience: 2\n"
    )
    assert parse_args(["--config", str(yaml)]).early_stopping_patience == 2


def test_conflicting_flags_are_errors_naming_the_flag(tmp_path, capsys):
    base = _base(tmp_path)
    patience = ["--early-stopping-patience", "2"]
    assert "needs --eval-steps" in _error(capsys, [*base, *patience, "--dev", "d.tsv"])
    assert "needs --dev" in _error(capsys, [*base, *patience, "--eval-steps", "10"])
    assert "must be >= 0" in _error(capsys, [*base, "--early-stopping-patience", "-1"])
    threshold = ["--early-stopping-threshold", "0.1"]
    assert "only applies with --early-stopping-patience" in _error(capsys, [*base, *threshold])
    with pytest.raises(ValueError, match="needs --dev"):
        DistillConfig(output=tmp_path, train=["a"], eval_steps=5, early_stopping_patience=1)


def test_training_arguments_track_the_dev_mse_and_save_at_every_evaluation(tmp_path, caplog):
    config = DistillConfig(
        output=tmp_path, train=["a"], dev=["d"], eval_steps=5, save_steps=200,
        early_stopping_patience=2, device="cpu", precision="fp32",
    )  # fmt: skip
    args = training_arguments(config, tmp_path / "ckpt", has_eval=True)
    assert args.load_best_model_at_end and args.greater_is_better  # negative MSE
    assert args.metric_for_best_model == f"eval_{DEV_MSE_METRIC}" == "eval_dev_negative_mse"
    assert args.save_steps == 5 and args.eval_steps == 5
    assert "--save-steps 200 -> 5" in caplog.text
    plain = DistillConfig(
        output=tmp_path, train=["a"], eval_steps=5, save_steps=200, device="cpu", precision="fp32"
    )
    args = training_arguments(plain, tmp_path / "ckpt", has_eval=True)
    assert args.save_steps == 200 and not args.load_best_model_at_end
    with pytest.raises(ValueError, match="resolve the config first"):
        training_arguments(DistillConfig(output=tmp_path, train=["a"]), tmp_path, has_eval=False)


def test_stored_patience_counter(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 3, "stateful_callbacks": {}}))
    assert stored_patience_counter(tmp_path) == 0
    stored = {"args": {}, "attributes": {"early_stopping_patience_counter": 2}}
    for value in (stored, [stored]):
        state.write_text(json.dumps({"stateful_callbacks": {"EarlyStoppingCallback": value}}))
        assert stored_patience_counter(tmp_path) == 2


def test_dev_mse_metric_is_the_mean_over_languages(st_model):
    english = [en for en, _ in PAIRS]
    german = [de for _, de in PAIRS]
    evaluators = [
        MSEEvaluator(english[:8], german[:8], teacher_model=st_model, name="dev-de"),
        MSEEvaluator(english[8:], german[8:], teacher_model=st_model, name="dev-xx"),
    ]
    results = TrainingEvaluator(evaluators)(st_model)
    mean = (results["dev-de_negative_mse"] + results["dev-xx_negative_mse"]) / 2
    assert results[DEV_MSE_METRIC] == pytest.approx(mean) and mean < 0


def _early_args(tiny_tsv, output, *extra):
    nodata = output.parent / "no-data"  # no stsb dev split: only the --dev evaluators
    nodata.mkdir(exist_ok=True)
    return tiny_args(
        tiny_tsv, output, "--dev", str(tiny_tsv), "--data", str(nodata),
        "--eval-steps", "1", *extra,
    )  # fmt: skip


def _weights(path):
    return SentenceTransformer(str(path), device="cpu").state_dict()


def _same(a, b) -> bool:
    return all(np.array_equal(a[key].numpy(), b[key].numpy()) for key in a)


def test_stops_when_the_dev_mse_gets_worse_and_keeps_the_best_checkpoint(tiny_tsv, tmp_path):
    """A learning rate far too high (0.01) makes the dev MSE worse from the first steps:
    the run stops after `patience` evaluations without improvement, long before
    --max-steps, and the model written is the best checkpoint, not the last step."""
    output = tmp_path / "early"
    extra = ["--max-steps", "30", "--lr", "0.01", "--early-stopping-patience", "2"]
    run(parse_args(_early_args(tiny_tsv, output, *extra)))
    info = json.loads((output / "eval" / "run.json").read_text())
    stopping = info["early_stopping"]
    assert stopping["stopped_early"] and info["train_steps"] < 30
    assert stopping["best_step"] == info["train_steps"] - 2  # two evaluations, no better
    curve = {entry["step"]: entry["eval_dev_negative_mse"] for entry in info["learning_curve"]}
    assert stopping["best_metric"] == max(curve.values()) == curve[stopping["best_step"]]
    best = output / "checkpoints" / f"checkpoint-{stopping['best_step']}"
    last = output / "checkpoints" / f"checkpoint-{info['train_steps']}"
    assert stopping["best_checkpoint"] == str(best)
    final = _weights(output)
    assert _same(final, _weights(best)) and not _same(final, _weights(last))
    log = (output / "train.log").read_text()
    assert f"the final model is the best checkpoint {best}" in log
    assert "stopped at step" in log
    card = (output / "README.md").read_text()
    assert f"stopped early; this model is the best checkpoint, step {stopping['best_step']}" in card


def test_resume_continues_the_patience_count(tiny_tsv, tmp_path):
    """lr 0: the dev MSE never improves after the first evaluation. Patience 3, killed
    (--max-steps) at step 3 with two evaluations without improvement; the resumed run
    stops after one more (step 4), as the uninterrupted run would, not at step 6."""
    output = tmp_path / "resumed"
    extra = ["--lr", "0", "--early-stopping-patience", "3"]
    run(parse_args(_early_args(tiny_tsv, output, "--max-steps", "3", *extra)))
    first = json.loads((output / "eval" / "run.json").read_text())
    assert first["train_steps"] == 3 and not first["early_stopping"]["stopped_early"]
    assert stored_patience_counter(output / "checkpoints" / "checkpoint-3") == 2
    run(parse_args(_early_args(tiny_tsv, output, "--max-steps", "20", "--resume", *extra)))
    info = json.loads((output / "eval" / "run.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-3")
    assert info["train_steps"] == 4 and info["early_stopping"]["stopped_early"]
    assert info["early_stopping"]["best_step"] == 1  # kept across the resume
    assert (output / "checkpoints" / "checkpoint-1").is_dir()


def test_dev_without_non_english_pairs_is_an_error(tiny_tsv, tmp_path):
    english_only = tmp_path / "dev-en-en.tsv"
    english_only.write_text("".join(f"{en}\t{en}\n" for en, _ in PAIRS))
    args = _early_args(tiny_tsv, tmp_path / "x", "--early-stopping-patience", "2")
    args[args.index("--dev") + 1] = str(english_only)
    with pytest.raises(SystemExit, match="no non-English pairs"):
        run(parse_args(args))
