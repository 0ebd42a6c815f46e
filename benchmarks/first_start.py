"""Seconds from `python -m service` to a healthy server, on an empty export cache (first
start: fp32 export, per-token int8 build and check) and again on the filled cache.

    python -m benchmarks.first_start [--port 8765] [-- extra service flags]

Prints one line a start: seconds, the served ONNX file and /info's variant_reason."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import httpx

from benchmarks.compare import wait_healthy


def start_once(cache: str, port: int, flags: list[str]) -> tuple[float, dict]:
    """Start the service, wait for /health 200, read /info, stop it."""
    env = {**os.environ, "EMBED_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, *flags], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, poll_s=0.1)
        seconds = time.perf_counter() - started
        return seconds, httpx.get(f"http://127.0.0.1:{port}/info").json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("flags", nargs="*", help="extra `python -m service` flags")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        for label in ("first start (empty cache)", "second start (cache filled)"):
            seconds, info = start_once(cache, args.port, args.flags)
            served = os.path.basename(info["onnx_file"] or "")
            print(f"{label}: {seconds:.1f} s to healthy, serving {served} "
                  f"({info.get('variant_reason')})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
