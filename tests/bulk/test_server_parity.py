"""The job's vectors are the server's: `/embed` of the app (same settings, in process) for
the same texts, for fp32 and for the batch-invariant per-token int8 (what `auto` serves by
default when the file passes its check, else fp32)."""

from __future__ import annotations

import numpy as np
import pytest

from service.artifacts import PER_TOKEN_INT8_FILE
from service.bulk.batch import EmbedOptions
from service.bulk.job import run_embed
from service.bulk.output import read_manifest, read_output
from service.config import Settings
from service.engine.pipeline import served_pipeline
from tests.bulk.conftest import corpus, write_jsonl
from tests.service.conftest import SENTENCES, running


@pytest.mark.parametrize("onnx_file", ["model.onnx", PER_TOKEN_INT8_FILE])
def test_job_vectors_equal_the_servers_embed(tmp_path, cache_dir, make_config, onnx_file):
    if onnx_file == PER_TOKEN_INT8_FILE:  # built (and checked) by `auto` into the cache
        served_pipeline(Settings(_env_file=None, cache_dir=cache_dir, onnx_file="auto")).close()
    rows = corpus(30) + [{"id": f"s{i}", "text": t} for i, t in enumerate(SENTENCES)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    texts = [r["text"] for r in rows]
    config = make_config([path], id_field="id", shard_rows=16)
    config.settings["onnx_file"] = onnx_file
    cases = [
        (EmbedOptions(batch_size=8), {}),
        (EmbedOptions(batch_size=8, dimensions=96, normalize=False),
         {"dimensions": 96, "normalize": False}),
    ]  # fmt: skip
    settings = Settings(_env_file=None, cache_dir=cache_dir, onnx_file=onnx_file)
    with running(settings) as client:
        info = client.get("/info").json()
        served = [
            np.asarray(client.post("/embed", json={"inputs": texts, "truncate": True,
                                                   **request}).json(), np.float32)
            for _, request in cases
        ]  # fmt: skip
    for (options, _), expected in zip(cases, served):
        config.options, config.overwrite = options, True
        run_embed(config)
        job = np.asarray(read_output(config.output).column("vector").to_pylist(), np.float32)
        assert job.shape == expected.shape
        np.testing.assert_allclose(job, expected, atol=1e-5, rtol=0)
        meta = read_manifest(config.output)["meta"]
        assert info["onnx_file"].endswith(meta["variant"])
        assert info["model_dtype"] == meta["backend"]["dtype"]
    if onnx_file == PER_TOKEN_INT8_FILE:
        assert meta["backend"]["dtype"] == "int8"


def test_prompts_are_applied_as_the_server_applies_them(tmp_path, cache_dir, bundled_model):
    """A model with query / passage prompts: `--prompt-name passage` equals /embed's
    prompt_name=passage, and search embeds the query with the model's `query` prompt."""
    import json
    import shutil

    from service.bulk.search import search

    model = tmp_path / "prompted"
    shutil.copytree(bundled_model, model)
    config_file = model / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config["prompts"] = {"query": "query: ", "passage": "passage: "}
    config_file.write_text(json.dumps(config))
    rows = corpus(12)
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    texts = [r["text"] for r in rows]
    settings = {"cache_dir": str(cache_dir), "onnx_file": "model.onnx", "model": str(model)}
    from service.bulk.job import JobConfig

    out = tmp_path / "out"
    run_embed(JobConfig(inputs=[str(path)], output=out, id_field="id", settings=settings,
                        options=EmbedOptions(prompt_name="passage"), progress=False))  # fmt: skip
    job = np.asarray(read_output(out).column("vector").to_pylist(), np.float32)
    assert read_manifest(out)["meta"]["options"]["prompt"] == "passage: "
    with running(Settings(_env_file=None, **settings)) as client:
        passages = client.post("/embed", json={"inputs": texts, "prompt_name": "passage"}).json()
        plain = client.post("/embed", json={"inputs": texts}).json()
        query = client.post("/embed", json={"inputs": "a guitar", "prompt_name": "query"}).json()
    np.testing.assert_allclose(job, np.asarray(passages), atol=1e-5, rtol=0)
    assert not np.allclose(job, np.asarray(plain), atol=1e-3)  # the prompt changed them
    hits = search(out, "a guitar", k=len(rows), settings=settings)
    expected = job @ np.asarray(query[0], np.float32)
    by_id = {r["id"]: float(e) for r, e in zip(rows, expected)}
    for hit in hits:
        assert abs(hit["score"] - by_id[hit["id"]]) < 1e-5
