"""Faults in the model's files and caches (issue 25): a damaged ONNX file is found by its
content hash before it is served and rebuilt from the source weights (or, where it cannot
be rebuilt, the start stops with one line naming it); no NaN vector is ever answered 200;
replicas starting together on one empty cache export once; a read-only cache is handled."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import artifacts, integrity
from service.backends.base import Backend
from service.backends.onnx import OnnxBackend
from service.config import Settings
from service.engine.model import load_model
from service.engine.pipeline import served_pipeline
from tests.service.conftest import (
    SENTENCES,
    free_port,
    metric_value,
    running,
    server_process,
    wait_healthy,
)


def damage_in_place(file, seed: int = 0, size: int = 1 << 20) -> None:
    """What the issue did: `size` random bytes written into the middle, same file size."""
    rng = np.random.default_rng(seed)
    length = file.stat().st_size
    size = min(size, length // 2)
    with file.open("r+b") as handle:
        handle.seek(length // 2 - size // 2)
        handle.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    assert file.stat().st_size == length


@pytest.fixture
def filled_cache(onnx_file, cache_dir, tmp_path):
    """A copy of the session's export cache (fp32 exported once, its hash beside it)."""
    return shutil.copytree(cache_dir, tmp_path / "cache")


def embed(url: str) -> np.ndarray:
    response = httpx.post(f"{url}/embed", json={"inputs": SENTENCES}, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json(), dtype=np.float32)


# ---------------------------------------------------------------- content hashes


def test_every_written_file_has_its_hash_and_damage_is_seen(onnx_file, tmp_path):
    assert integrity.recorded_hash(onnx_file) == integrity.sha256_of(onnx_file)
    copy = shutil.copy(onnx_file, tmp_path / "model.onnx")
    shutil.copy(integrity.hash_path(onnx_file), integrity.hash_path(copy))
    assert integrity.check(copy) is integrity.Integrity.INTACT
    damage_in_place(copy)
    assert integrity.check(copy) is integrity.Integrity.DAMAGED
    # the fingerprint sits in the metadata at the end: it still reads, so only the hash
    # tells the file is damaged
    assert artifacts.is_fresh(copy, artifacts.read_fingerprint(onnx_file))
    assert not artifacts.servable(copy, artifacts.read_fingerprint(onnx_file))
    assert not list(tmp_path.glob("*.partial"))  # unique temporary files, renamed away


def test_a_damaged_served_file_is_rebuilt_before_it_is_served(filled_cache):
    """The issue's case, on a real server: the served file (whichever `auto` picks on this
    CPU) gets 1 MiB of random bytes in the middle; the next start names it in a warning,
    rebuilds it, and serves the same vectors as before the damage."""
    env = {"EMBED_ONNX_FILE": "auto"}
    with server_process(filled_cache, **env) as (proc, url):
        info = httpx.get(f"{url}/info").json()
        clean = embed(url)
        proc.terminate()
        proc.wait(timeout=60)
    served = Path(info["onnx_file"])
    assert served.is_relative_to(filled_cache)
    damage_in_place(served)
    with server_process(filled_cache, **env) as (proc, url):
        again = httpx.get(f"{url}/info").json()
        vectors = embed(url)
        proc.terminate()
        log = proc.communicate(timeout=60)[0]
    assert f"damaged ONNX file {served}" in log, log[-3000:]
    assert integrity.check(served) is integrity.Integrity.INTACT  # rebuilt, hash matches
    assert again["onnx_file"] == info["onnx_file"]
    assert again["source_fingerprint"] == info["source_fingerprint"]
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, clean, atol=1e-5)


def test_an_unparsable_file_is_rebuilt(filled_cache, caplog):
    """Damage that breaks parsing (the start used to fail with INVALID_PROTOBUF every time)."""
    settings = Settings(_env_file=None, cache_dir=filled_cache, onnx_file="model.onnx")
    fp32 = next(filled_cache.rglob("model.onnx"))
    clean = served_pipeline(settings).encode(SENTENCES)
    with fp32.open("r+b") as handle:
        handle.write(os.urandom(4096))  # the protobuf header
    with caplog.at_level(logging.WARNING):
        pipeline = served_pipeline(settings)
    assert f"damaged ONNX file {fp32}" in caplog.text
    assert pipeline.backend.info.file == str(fp32)
    np.testing.assert_allclose(pipeline.encode(SENTENCES), clean, atol=1e-5)


def test_a_damaged_int8_file_is_rebuilt(filled_cache, caplog):
    settings = Settings(_env_file=None, cache_dir=filled_cache, onnx_file="auto")
    served_pipeline(settings).close()  # builds and checks the per-token int8 file once
    int8 = next(filled_cache.rglob(artifacts.PER_TOKEN_INT8_FILE))
    damage_in_place(int8)
    with caplog.at_level(logging.WARNING):
        served_pipeline(settings).close()
    assert f"damaged ONNX file {int8}" in caplog.text
    assert integrity.check(int8) is integrity.Integrity.INTACT


# ---------------------------------------------------------------- non-finite vectors


class NaNBackend(Backend):
    """A real backend whose output turns NaN for every text holding `token`."""

    def __init__(self, inner: Backend, token: int) -> None:
        self.inner, self.info, self.token = inner, inner.info, token

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.inner.forward(input_ids, attention_mask, token_type_ids)
        hidden[np.any(input_ids == self.token, axis=1)] = np.nan
        return hidden


def test_a_non_finite_vector_is_never_answered_200(bundled_model, onnx_file, settings):
    token = load_model(bundled_model)[1].tokens(["zebra"], add_special_tokens=False)[0][0]["id"]
    backend = NaNBackend(OnnxBackend(onnx_file, "cpu"), token)
    with running(settings, backend) as client:
        assert client.post("/embed", json={"inputs": ["fine", "also fine"]}).status_code == 200
        tei = client.post("/embed", json={"inputs": ["fine", "a zebra", "zebra too"]})
        openai = client.post("/v1/embeddings", json={"input": ["x", "y", "zebra"], "model": "m"})
        every = client.post("/embed_all", json={"inputs": ["ok", "zebra"]})
        metrics = client.get("/metrics").text
    assert tei.status_code == 500 and tei.json()["error_type"] == "Backend"
    assert "for input 1 (and 1 other" in tei.json()["error"]
    assert openai.status_code == 500
    assert openai.json()["error"]["code"] == "non_finite_vector"
    assert "for input 2" in openai.json()["error"]["message"]
    assert every.status_code == 500 and "for input 1" in every.json()["error"]
    assert metric_value(metrics, "embed_nonfinite_vectors_total") == 2 + 1 + 1


# ---------------------------------------------------------------- read-only caches


def read_only(folder: Path, then: str, *more: str) -> list[str]:
    """Run the shell command `then` in a private mount namespace where `folder` (and the
    folders `more`) are read-only bind mounts of themselves (what a Kubernetes
    readOnlyRootFilesystem or a read-only volume gives; a chmod is not enough: root
    ignores permissions)."""
    mounts = [
        f"mount --bind {path} {path} && mount -o remount,bind,ro {path}" for path in (folder, *more)
    ]
    return ["unshare", "-m", "sh", "-c", " && ".join([*mounts, then])]


def service_command(*flags: str) -> str:
    port = str(free_port())
    return " ".join(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", port, *flags]
    )


@pytest.fixture(scope="module")
def read_only_mounts(tmp_path_factory):
    """Skips unless read-only bind mounts can be made here (root, unshare, mount)."""
    folder = tmp_path_factory.mktemp("ro-probe")
    try:
        done = subprocess.run(
            read_only(folder, f"! touch {folder}/x"), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot make a read-only bind mount here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")


def start_failure(command: list[str], cache: Path, **env: str) -> tuple[int, str]:
    """(exit status, output) of a start that is expected to stop."""
    environment = {**os.environ, "EMBED_CACHE_DIR": str(cache), **env}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_an_empty_read_only_cache_serves_from_a_temporary_folder(tmp_path, read_only_mounts):
    cache, temp = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir()
    temp.mkdir()
    port = free_port()
    service = f"{sys.executable} -m service --host 127.0.0.1 --port {port}"
    env = {**os.environ, "EMBED_CACHE_DIR": str(cache), "TMPDIR": str(temp)}
    env["EMBED_ONNX_FILE"] = "model.onnx"
    proc = subprocess.Popen(
        read_only(cache, f"exec {service}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, url, 600, poll_s=1)
        info = httpx.get(f"{url}/info").json()
        assert np.isfinite(embed(url)).all()
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert info["onnx_file"].startswith(str(temp / "polyglot-embed-cache"))
    warning = next(line for line in output.splitlines() if "is not writable" in line)
    assert "WARNING" in warning and f"EMBED_CACHE_DIR={cache}" in warning
    assert "Read-only file system" in warning and "Traceback" not in output
    assert not any(cache.iterdir())


def test_no_writable_cache_nor_temporary_folder_is_one_line_naming_the_setting(
    bundled_model, monkeypatch
):
    """Folders under /proc take no new files (for root too). A real start cannot show this
    case: with no writable temporary folder at all, torch (imported by transformers) fails
    to import before the service runs, so docs/operations.md says to mount one."""
    import tempfile

    from service.variants import prepare_onnx

    monkeypatch.setattr(tempfile, "tempdir", "/proc/polyglot-embed-tmp")
    with pytest.raises(artifacts.CacheNotWritableError) as failure:
        prepare_onnx(bundled_model, bundled_model, Path("/proc/cache"), "model.onnx", "cpu")
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("the ONNX export cache EMBED_CACHE_DIR=/proc/cache is not writable")
    assert "set EMBED_CACHE_DIR (--cache-dir) to a writable folder" in message


def test_a_damaged_file_on_a_read_only_cache_stops_the_start_naming_it(
    filled_cache, read_only_mounts
):
    fp32 = next(filled_cache.rglob("model.onnx"))
    damage_in_place(fp32)
    command = read_only(filled_cache, f"exec {service_command()}")
    status, output = start_failure(command, filled_cache)
    assert status == 3, output[-3000:]
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(fp32) in errors[0] and "not writable" in errors[0], output
    assert "Traceback" not in output


# ---------------------------------------------------------------- replicas on one cache


@pytest.mark.slow
def test_four_replicas_on_one_empty_cache_export_once_and_serve_the_same_file(tmp_path):
    """4 servers started at once on one empty cache folder (a shared volume): one export
    and one int8 build under the folder's lock, and every replica serves the same file."""
    cache = tmp_path / "shared-cache"
    env = {**os.environ, "EMBED_CACHE_DIR": str(cache), "EMBED_ONNX_FILE": "auto"}
    ports = [free_port() for _ in range(4)]
    procs = [
        subprocess.Popen(
            [
                "nice",
                "-n",
                "10",
                sys.executable,
                "-m",
                "service",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for port in ports
    ]
    try:
        infos = []
        for proc, port in zip(procs, ports):
            url = f"http://127.0.0.1:{port}"
            wait_healthy(proc, url, 900, poll_s=1)
            infos.append(httpx.get(f"{url}/info").json())
    finally:
        for proc in procs:
            proc.terminate()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    logs = "\n".join(outputs)
    exports = [line for line in logs.splitlines() if "artifacts: exported " in line]
    builds = [line for line in logs.splitlines() if "per-token int8:" in line]
    assert len(exports) == 1, exports
    assert len(builds) == 1, builds
    keys = ("onnx_file", "source_fingerprint", "variant_reason", "model_dtype")
    assert all({k: i[k] for k in keys} == {k: infos[0][k] for k in keys} for i in infos), infos
    assert not list(cache.rglob("*.partial"))
