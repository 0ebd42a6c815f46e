"""The README documents every setting and metric the code has."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.metrics import Metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    for name in Settings.model_fields:
        assert f"`EMBED_{name.upper()}` / `--{name.replace('_', '-')}`" in README, name


def test_every_metric_is_in_the_metrics_table():
    for metric in Metrics().registry.collect():
        name = metric.name + ("_total" if metric.type == "counter" else "")
        if metric.type == "info":
            name += "_info" if not name.endswith("_info") else ""
        assert f"`{name}`" in README, name


def test_readme_gives_the_two_commands_ci_uses():
    assert "make serve" in README and "make test" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
