"""`python -m service` / `polyglot-embed`: settings from flags and EMBED_* variables,
then uvicorn in this process (`--workers 1`) or N front ends and one engine core."""

from __future__ import annotations

import logging
import os
import sys

from pydantic_settings import CliApp

from service.config import Settings


def main(argv: list[str] | None = None) -> None:
    settings = CliApp.run(Settings, cli_args=argv) if argv is not None else CliApp.run(Settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from service.supervisor import resolve_workers, serve_workers

    workers = resolve_workers(settings)
    if workers > 1:
        sys.exit(serve_workers(settings, workers))
    from service.app import create_app
    from service.server import serve

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
