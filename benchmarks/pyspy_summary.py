"""Summarise a py-spy `record -f raw` profile: the share of samples in each part of a
request's path (inclusive), then the top functions inclusive and by own time.

    python -m benchmarks.pyspy_summary prof.txt [--top 45] > summary.txt

Shares are of the samples py-spy took of the server's active threads (idle threads are not
sampled without --idle), so they compare between runs on a loaded machine where absolute
throughput does not.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (label, a frame whose inclusive share is that part), in the order of a request's path
PARTS = [
    ("inference thread: ONNX Runtime Session.run", "Session.run (onnxruntime/"),
    ("event loop (everything on it)", "Runner.run (asyncio/runners.py)"),
    ("  ASGI stack: uvicorn -> middlewares -> route", "RequestResponseCycle.run_asgi ("),
    ("    FastAPI request handler", "get_request_handler.<locals>.app (fastapi/routing.py)"),
    ("      body parsing + validation", "solve_dependencies (fastapi/dependencies/utils.py)"),
    ("      route body (run_endpoint_function)", "run_endpoint_function (fastapi/routing.py)"),
    ("        tokenising", "ModelTokenizer.encode (service/engine/tokenizer.py)"),
    ("        response encoding (orjson)", "JSONResponse.render (service/api/responses.py)"),
    ("  uvicorn HTTP parsing", "HttpToolsProtocol.data_received ("),
]
FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    """(frames root first, as 'function (file)' without line numbers, count) per stack."""
    stacks = []
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            frames.append(f"{match[1]} ({match[2]})" if match else frame)
        stacks.append((frames, int(count)))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks)
    inclusive, own = Counter(), Counter()
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count

    def share(prefix: str) -> float:
        return sum(n for frame, n in inclusive.items() if frame.startswith(prefix)) / total

    lines = [f"total samples {total}", "== parts (inclusive share of samples)"]
    lines += [f"{100 * share(prefix):5.1f}%  {label}" for label, prefix in PARTS]
    lines.append("== top inclusive")
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines.append("== top own time")
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    print(summarise(read_samples(args.profile), args.top))


if __name__ == "__main__":
    main()
