"""The typed run config: the CLI and a YAML/TOML file fill the same DistillConfig."""

from __future__ import annotations

import dataclasses

import pytest

from training.config import DistillConfig, build_parser, parse_args


def test_every_flag_is_a_config_field_with_the_same_default(tmp_path):
    parser = build_parser()
    fields = {f.name: f for f in dataclasses.fields(DistillConfig)}
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.dest in fields, f"--{action.dest} has no DistillConfig field"
        field = fields[action.dest]
        if field.default is not dataclasses.MISSING:
            assert action.default == field.default, action.dest
        elif field.default_factory is not dataclasses.MISSING:
            assert action.default == field.default_factory(), action.dest
    config = parse_args(["--train", "a.tsv", "--output", str(tmp_path)])
    assert isinstance(config, DistillConfig)
    assert config.train == ["a.tsv"] and config.output == tmp_path
    assert config.argv == ["--train", "a.tsv", "--output", str(tmp_path)]
    assert config.to_dict()["lr"] == "2e-05"


def test_input_pipeline_flags(tmp_path):
    base = ["--train", "a.tsv", "--output", str(tmp_path)]
    config = parse_args(base)
    assert (config.pretokenize, config.bucket_chunk, config.dataloader_workers) == (True, 64, None)
    config = parse_args([*base, "--no-pretokenize", "--bucket-chunk", "0"])
    assert config.pretokenize is False and config.bucket_chunk == 0
    assert parse_args([*base, "--dataloader-workers", "3"]).dataloader_workers == 3
    assert parse_args([*base, "--dataloader-workers", "auto"]).dataloader_workers is None
    for bad in (["--dataloader-workers", "-1"], ["--bucket-chunk", "-2"]):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])


def test_file_keys_fill_the_config_and_unknown_keys_fail(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "train: [a.tsv, b.tsv]\noutput: out\ndataloader-workers: 2\npretokenize: false\n"
    )
    parsed = parse_args(["--config", str(config), "--bucket-chunk", "8"])
    assert parsed.train == ["a.tsv", "b.tsv"] and parsed.dataloader_workers == 2
    assert parsed.pretokenize is False and parsed.bucket_chunk == 8
    with pytest.raises(ValueError, match="unknown option.*learning_rate"):
        DistillConfig.from_mapping({"train": ["a"], "output": "o", "learning-rate": 1})
    built = DistillConfig.from_mapping({"train": "a.tsv", "output": "o", "batch-size": 8})
    assert built.train == ["a.tsv"] and built.batch_size == 8 and built.output.name == "o"


def test_projection_sample_flag(tmp_path, capsys):
    base = ["--train", "a.tsv", "--output", str(tmp_path)]
    assert parse_args(base).projection_max_samples is None
    assert parse_args([*base, "--projection-max-samples", "20000"]).projection_max_samples == 20000
    with pytest.raises(SystemExit):
        parse_args([*base, "--projection-max-samples", "0"])
    assert "the count must be >= 1, got 0" in capsys.readouterr().err


def test_resolve_config_decides_every_auto_once(tmp_path):
    """The phases and the trainer take a config whose device, precision, teacher and
    projection are decided; a copy of the teacher is loaded from the teacher's path."""
    from training.distill import default_teacher, resolve_config

    config = DistillConfig(output=tmp_path, train=["a"], student="teacher")
    resolved = resolve_config(config)
    assert config.device == "auto" and config.projection == "auto"  # the input is untouched
    assert resolved.device in {"cpu", "cuda"} and resolved.precision in {"fp32", "fp16", "bf16"}
    assert resolved.teacher == default_teacher() == resolved.student_source
    assert resolved.projection == "none" and resolved.copies_teacher
    resolved.check_resolved()
    with pytest.raises(ValueError, match="resolve the config first"):
        config.check_resolved()
    other = resolve_config(DistillConfig(output=tmp_path, train=["a"], student="some/model"))
    assert other.projection == "lstsq" and other.student_source == "some/model"
    cpu = resolve_config(DistillConfig(output=tmp_path, train=["a"], device="cpu"))
    assert (cpu.device, cpu.precision) == ("cpu", "fp32")
