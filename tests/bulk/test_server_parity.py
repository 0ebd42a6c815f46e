"""The job's vectors are the server's: `/embed` of the app (same settings, in process) for
the same texts, for fp32, for what `auto` serves, and for the batch-invariant per-token int8
(the default when it passes its check)."""

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


@pytest.mark.parametrize("onnx_file", ["model.onnx", "auto", PER_TOKEN_INT8_FILE])
def test_job_vectors_equal_the_servers_embed(tmp_path, cache_dir, make_config, onnx_file):
    if onnx_file == PER_TOKEN_INT8_FILE:  # built (and checked) by `auto` into the cache
        served_pipeline(Settings(_env_file=None, cache_dir=cache_dir, onnx_file="auto")).close()
    rows = corpus(30) + [{"id": f"s{i}", "text": t} for i, t in enumerate(SENTENCES)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    texts = [r["text"] for r in rows]
    config = make_config([path], id_field="id", shard_rows=16)
    config.settings["onnx_file"] = onnx_file
    for options, request in [
        (EmbedOptions(batch_size=8), {}),
        (EmbedOptions(batch_size=8, dimensions=96, normalize=False),
         {"dimensions": 96, "normalize": False}),
    ]:  # fmt: skip
        config.options, config.overwrite = options, True
        run_embed(config)
        job = np.asarray(read_output(config.output).column("vector").to_pylist(), np.float32)
        settings = Settings(_env_file=None, cache_dir=cache_dir, onnx_file=onnx_file)
        with running(settings) as client:
            info = client.get("/info").json()
            answer = client.post("/embed", json={"inputs": texts, "truncate": True, **request})
        served = np.asarray(answer.json(), np.float32)
        assert job.shape == served.shape
        np.testing.assert_allclose(job, served, atol=1e-5, rtol=0)
        meta = read_manifest(config.output)["meta"]
        assert info["onnx_file"].endswith(meta["variant"])
        assert info["model_dtype"] == meta["backend"]["dtype"]
        if onnx_file == PER_TOKEN_INT8_FILE:
            assert meta["backend"]["dtype"] == "int8"
