"""The docs document every setting and metric the code has; the README stays short and
gives the two commands."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.config import Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
README_MAX_LINES = 250


def test_every_setting_is_in_the_configuration_table():
    for name in Settings.model_fields:
        assert f"`EMBED_{name.upper()}` / `--{name.replace('_', '-')}`" in CONFIGURATION, name


def test_every_metric_is_in_the_metrics_table():
    for metric in Metrics().registry.collect():
        name = metric.name + ("_total" if metric.type == "counter" else "")
        if metric.type == "info":
            name += "_info" if not name.endswith("_info") else ""
        assert f"`{name}`" in CONFIGURATION, name


def test_readme_is_short_and_its_doc_links_resolve():
    assert len(README.splitlines()) <= README_MAX_LINES
    for page in ROOT.glob("docs/*.md"):
        assert f"docs/{page.name}" in README, page.name


def test_readme_gives_the_two_commands_ci_uses():
    assert "make serve" in README and "make test" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


def _locked() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = (line.split("==") for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins}


def test_lock_pins_every_declared_dependency():
    """requirements.lock is the audited set: it must cover what pyproject.toml asks for."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [
        dep for extra in ("dev", "bench") for dep in project["optional-dependencies"][extra]
    ]
    locked = _locked()
    for dep in declared:
        requirement = Requirement(dep)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} missing from requirements.lock: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, pyproject asks {requirement}"
        )


def test_installed_set_matches_the_lock():
    """`make install` uses the lock as constraints, so what runs is what was audited."""
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. the bench extra, not part of `make install`
        assert installed.split("+")[0] == version, f"{name}: {installed} installed, lock {version}"
