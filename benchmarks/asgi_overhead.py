"""The per-request Python work around the model, measured without the model: the app's
ASGI callable driven in-process (no sockets, no load client, no other thread), with
`engine.embed` replaced by a precomputed vector, so what is timed is middlewares, routing,
dependencies, body parsing and validation, the route and the response encoding.

    python -m benchmarks.asgi_overhead [--route /embed] [--requests 2000] [--repeats 5]

Prints microseconds per request (the minimum over the repeats, then all of them). One event
loop runs one request at a time: the figure is CPU time per request on this core, far less
sensitive to other load on the machine than a throughput run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np

BODIES = {
    "/embed": b'{"inputs": "A man is playing a guitar."}',
    "/v1/embeddings": b'{"input": "A man is playing a guitar.", "model": "m"}',
}


def scope_for(route: str, body: bytes) -> dict:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": route, "raw_path": route.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip


async def measure(
    route: str, requests: int, repeats: int, cache_dir: str | None = None
) -> list[float]:
    """Microseconds per request, one figure per repeat (after 200 warm-up requests), on the
    fp32 ONNX file (`cache_dir`: the export cache; None: the default)."""
    from service.app import create_app
    from service.config import Settings
    from service.engine.engine import Embeddings

    options = {"cache_dir": cache_dir} if cache_dir else {}
    app = create_app(Settings(onnx_file="model.onnx", **options))
    body = BODIES[route]
    scope = scope_for(route, body)
    async with app.router.lifespan_context(app):
        vector = np.random.default_rng(0).standard_normal((1, app.state.engine.spec.dimension))

        async def embed(texts, *args, **kwargs):
            return Embeddings(vector.astype(np.float32), [9])

        app.state.engine.embed = embed

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def one() -> None:
            status = []

            async def send(message):
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            await app(dict(scope, state={}), receive, send)
            if status != [200]:
                raise RuntimeError(f"{route} answered {status}")

        for _ in range(200):
            await one()
        figures = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(requests):
                await one()
            figures.append((time.perf_counter() - started) / requests * 1e6)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=sorted(BODIES), default="/embed")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = asyncio.run(measure(args.route, args.requests, args.repeats))
    print(f"{args.route}: {min(figures):.0f} us per request (min of {args.repeats}; all: "
          f"{', '.join(f'{f:.0f}' for f in figures)})")  # fmt: skip


if __name__ == "__main__":
    main()
